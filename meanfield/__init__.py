"""meanfield: signal propagation in deep residual networks at initialization.

Three methods that must agree where theory says they should: closed forms
(:mod:`meanfield.theory`), exact infinite-width mean-field recursions
(:mod:`meanfield.recursions`) and, later, Monte-Carlo over sampled networks.

    >>> import meanfield
    >>> block = meanfield.Block(activation="relu", norm="bn_post", residual=True)
    >>> prof = meanfield.recursions.profile(block, depth=100, width=256, var_w=1 / 256)
"""

from meanfield import architecture, gaussian, recursions, theory
from meanfield.architecture import Block, all_blocks
from meanfield.recursions import Profile, profile

__version__ = "0.1.0"

__all__ = [
    "Block",
    "Profile",
    "all_blocks",
    "architecture",
    "gaussian",
    "profile",
    "recursions",
    "theory",
    "__version__",
]
