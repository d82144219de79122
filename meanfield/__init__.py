"""meanfield: signal propagation in deep residual networks at initialization.

Three methods that must agree where theory says they should: closed forms
(:mod:`meanfield.theory`), exact infinite-width mean-field recursions
(:mod:`meanfield.recursions`) and Monte-Carlo over sampled finite-width networks
(:mod:`meanfield.montecarlo`; :func:`profile` and :func:`simulate` at the top level);
initialization schemes in :mod:`meanfield.inits`, and
:func:`solve_init`, the largest weight variance that keeps a network inside a growth band.

    >>> import jax, meanfield
    >>> block = meanfield.Block(activation="relu", norm="bn_post", residual=True)
    >>> prof = meanfield.recursions.profile(block, depth=100, width=256, var_w=1 / 256)
    >>> est = meanfield.simulate(block, key=jax.random.key(0), depth=10, width=64,
    ...                          var_w=1 / 64, networks=8, batch=16)
    >>> est.m2_z.mean.shape, est.m2_z.stderr.shape
    ((11,), (11,))
"""

from meanfield import architecture, gaussian, inits, montecarlo, recursions, solver, theory
from meanfield.architecture import Block, all_blocks
from meanfield.montecarlo import Estimate, simulate
from meanfield.recursions import Profile, profile
from meanfield.solver import InitSolution, solve_init

__version__ = "0.1.0"

__all__ = [
    "Block",
    "Estimate",
    "InitSolution",
    "Profile",
    "all_blocks",
    "architecture",
    "gaussian",
    "inits",
    "montecarlo",
    "profile",
    "recursions",
    "simulate",
    "solve_init",
    "solver",
    "theory",
    "__version__",
]
