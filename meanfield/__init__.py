"""meanfield: signal propagation in deep residual networks at initialization.

Three methods that must agree where theory says they should: closed forms
(:mod:`meanfield.theory`), exact infinite-width mean-field recursions
(:mod:`meanfield.recursions`) and Monte-Carlo over sampled finite-width networks
(:mod:`meanfield.montecarlo`; :func:`profile` and :func:`simulate` at the top level), all of
one network language (:mod:`meanfield.layers`: each layer kind defined once; ``Block`` names
the presets); initialization schemes in :mod:`meanfield.inits`, and :func:`solve_init`, the
largest weight variance that keeps a network inside a growth band; :func:`sweep` runs a grid
of configurations (var_w or c, depth, seeds) by both engines, each grid one compiled program.

    >>> import jax, meanfield
    >>> block = meanfield.Block(activation="relu", norm="bn_post", residual=True)
    >>> prof = meanfield.recursions.profile(block, depth=100, width=256, var_w=1 / 256)
    >>> est = meanfield.simulate(block, key=jax.random.key(0), depth=10, width=64,
    ...                          var_w=1 / 64, networks=8, batch=16)
    >>> est.m2_z.mean.shape, est.m2_z.stderr.shape
    ((11,), (11,))

The layout (docs/design.md): ``core`` (Block, Gaussian expectations, sampling) <- ``layers``
<- ``theory`` <- ``inits`` <- {``recursions``, ``montecarlo``} <- ``analysis`` <- ``training``,
with ``io.results`` below everything and ``io.plots`` above. The modules that moved into
``core``, ``analysis``, ``training`` and ``io`` stay reachable by their former attribute
names (``meanfield.solver``, ``meanfield.models``, ...), imported on first use.
"""

import importlib

from meanfield import inits, layers, montecarlo, recursions, theory
from meanfield.analysis import solver
from meanfield.analysis.grid import Sweep, sweep
from meanfield.analysis.solver import InitSolution, solve_init
from meanfield.core import architecture, gaussian
from meanfield.core.architecture import Block, all_blocks
from meanfield.montecarlo import Estimate, simulate
from meanfield.recursions import Profile, profile
from meanfield.theory import closed_forms

__version__ = "0.1.0"

# Former top-level modules -> where they live now (loaded lazily: the trainer's modules import
# Flax and optax, plots import matplotlib, and `import meanfield` should not).
_MOVED = {
    "sampling": "meanfield.core.sampling",
    "batchfile": "meanfield.training.batchfile",
    "data": "meanfield.training.data",
    "models": "meanfield.training.models",
    "train": "meanfield.training.train",
    "initcheck": "meanfield.training.initcheck",
    "finitewidth": "meanfield.analysis.finitewidth",
    "sweeps": "meanfield.analysis.sweeps",
    "calibration": "meanfield.analysis.calibration",
    "hessian": "meanfield.analysis.hessian",
    "jacobian": "meanfield.analysis.jacobian",
    "results": "meanfield.io.results",
    "plots": "meanfield.io.plots",
}


def __getattr__(name: str):
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'meanfield' has no attribute {name!r}")


__all__ = [
    "Block",
    "Estimate",
    "InitSolution",
    "Profile",
    "Sweep",
    "all_blocks",
    "architecture",
    "closed_forms",
    "gaussian",
    "inits",
    "layers",
    "montecarlo",
    "profile",
    "recursions",
    "simulate",
    "solve_init",
    "solver",
    "sweep",
    "theory",
    "__version__",
]
