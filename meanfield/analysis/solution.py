"""The record :func:`meanfield.solve_init` returns: the solved initialization, what the
recursion says of it, and a Flax initializer drawing from it.

:class:`InitSolution` lives here so that :mod:`meanfield.analysis.solver` holds the solver alone; it
is re-exported there and from :mod:`meanfield`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from meanfield import inits
from meanfield.core.architecture import Block
from meanfield.layers import Layer

__all__ = ["InitSolution"]


@dataclasses.dataclass(frozen=True)
class InitSolution:
    """The solved initialization and what the recursion says of it."""

    block: Block | Layer  # a preset, or a meanfield.layers tree
    depth: int
    width: float
    var_w: float  # the solved variance of one weight entry
    forward_growth: float  # q_L / q_0 at var_w
    gradient_spread: float  # max_l / min_l Var[dE/dW^l] at var_w
    binding: str  # which bound is met with equality: "forward_growth" or "gradient_spread"
    max_forward_growth: float
    max_gradient_spread: float

    @property
    def alpha(self) -> float:
        """n·Var[w]."""
        return self.width * self.var_w

    @property
    def c(self) -> float:
        """The c of the paper's c/(nL) that gives this variance: Var[w]·n·L."""
        return self.var_w * self.width * self.depth

    def initializer(self) -> inits.Initializer:
        """A Flax initializer ``init(key, shape, dtype)`` drawing N(0, var_w), for any shape.

        For a convolution with another fan-in than ``width``, solve at that fan-in, or use
        ``inits.get("depth_scaled", depth=L, c=solution.c)``, which scales with the fan-in.
        """
        var_w = self.var_w
        return functools.partial(_normal, var_w=var_w)

    def as_dict(self) -> dict:
        """The fields, with the block by name, and alpha and c."""
        d = dataclasses.asdict(self)
        d.update(block=self.block.name, alpha=self.alpha, c=self.c)
        return d


def _normal(key, shape, dtype=jnp.float32, *, var_w):
    return inits.normal(key, shape, var_w, dtype)
