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
with ``io.results`` below everything and ``io.plots`` above. ``import meanfield`` imports
neither Flax nor matplotlib: the trainer (:mod:`meanfield.training`) and the figures
(:mod:`meanfield.io.plots`) are imported by their module names.
"""

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
