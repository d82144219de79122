"""Weight variances of the common initializations and the paper's depth-scaled one, eq. (9)-(10)
and (28): He, Glorot, c/(nL), and the forward growth (1 + c/L)^L it gives."""

from __future__ import annotations

import jax.numpy as jnp
from jax.typing import ArrayLike

from meanfield.core import architecture as arch
from meanfield.theory.common import Array, domain


@domain()
def he_var_w(fan_in: ArrayLike) -> Array:
    """He et al. (2015) variance 2 / fan_in (the paper's "He's initialization", ref. [10])."""
    arch.check_width(fan_in, "fan_in")
    return 2.0 / jnp.asarray(fan_in)


@domain()
def glorot_var_w(fan_in: ArrayLike, fan_out: ArrayLike | None = None) -> Array:
    """Glorot & Bengio (2010) variance 2 / (fan_in + fan_out); fan_out defaults to fan_in."""
    arch.check_width(fan_in, "fan_in")
    fan_out = fan_in if fan_out is None else fan_out
    arch.check_width(fan_out, "fan_out")
    return 2.0 / (jnp.asarray(fan_in) + jnp.asarray(fan_out))


@domain()
def depth_scaled_var_w(width: ArrayLike, depth: ArrayLike, c: ArrayLike = 1.0) -> Array:
    """The paper's depth-scaled initialization, eq. (10) and (28).

    .. math:: \\mathrm{Var}[w] = \\frac{c}{nL}

    The paper's experiment uses c = 1 with n = 8·8·16 (fan-in of an 8x8 convolution with 16
    channels) and L = 100.
    """
    arch.check_width(width)
    arch.check_depth(depth)
    arch.check_positive("c", c)
    return jnp.asarray(c) / (jnp.asarray(width) * jnp.asarray(depth))


@domain()
def depth_scaled_growth(depth: ArrayLike, c: ArrayLike = 1.0) -> Array:
    """Exact forward growth (1 + c/L)^L of an identity ResNet at Var[w] = c/(nL), eq. (9).

    The paper writes ≈ e^c; the exact value is below e^c for every L (2.594 at L = 10, c = 1)
    and tends to it as L -> ∞. For ReLU this init does *not* bound the growth: see
    :func:`relu_depth_scaled_log_second_moment`.
    """
    arch.check_depth(depth)
    arch.check_positive("c", c)
    depth = jnp.asarray(depth)
    return jnp.exp(depth * jnp.log1p(jnp.asarray(c) / depth))


@domain()
def depth_scaled_growth_limit(c: ArrayLike = 1.0) -> Array:
    """e^c, the L -> ∞ limit (and upper bound) of :func:`depth_scaled_growth`, eq. (9)."""
    arch.check_positive("c", c)
    return jnp.exp(jnp.asarray(c))
