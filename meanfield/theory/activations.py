"""Closed forms for any activation in the plain network z = f(W z) without normalization,
from the Gaussian expectations of :mod:`meanfield.core.activations` (closed forms for the
arc-cosine family, erf and sin; Gauss-Hermite quadrature otherwise).

With α = n·var_w and u ~ N(0, α q) the pre-activation of a layer whose input has second
moment q, the classic mean-field maps (Poole et al. 2016; Schoenholz et al. 2017):

* :func:`he_like_alpha`: α = 1 / E f'(u)² at u ~ N(0, 1), the weight scale at which χ₁ = 1
  for unit pre-activations (He's 2 for relu, 1 for identity); exact.
* :func:`chi1`: χ₁ = α E f'(u)², the slope of the correlation map at c = 1 where q is at its
  fixed point (below 1: distinct inputs converge, above 1: they separate); exact.
* :func:`plain_correlation_map`: the correlation of the next layer's outputs given this
  layer's q and raw correlation c of centred inputs (1 - gap / q_out); exact.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.typing import ArrayLike

from meanfield.core import activations as acts

__all__ = ["chi1", "he_like_alpha", "plain_correlation_map"]


def he_like_alpha(activation, slope: float = 0.01) -> jnp.ndarray:
    """α = 1 / E f'(u)², u ~ N(0, 1): χ₁ = 1 at unit pre-activation variance."""
    return jnp.exp(-acts.expectations(activation, 0.0, 0.0, slope).log_a)


def chi1(activation, alpha: ArrayLike, q: ArrayLike, slope: float = 0.01) -> jnp.ndarray:
    """χ₁ = α E f'(u)², u ~ N(0, α q): the correlation map's slope at c = 1 (at q's fixed
    point; elsewhere it is multiplied by α q / q_out)."""
    log_var = jnp.log(jnp.asarray(alpha) * jnp.asarray(q))
    return jnp.asarray(alpha) * jnp.exp(acts.expectations(activation, log_var, 0.0, slope).log_a)


def plain_correlation_map(
    activation, alpha: ArrayLike, q: ArrayLike, c: ArrayLike, slope: float = 0.01
) -> jnp.ndarray:
    """c_out = 1 - gap_out / q_out for z_out = f(W z), z centred with second moment q and
    correlation c between distinct inputs (so u ~ N(0, α q), correlation c)."""
    log_var = jnp.log(jnp.asarray(alpha) * jnp.asarray(q))
    log_delta = jnp.log1p(-jnp.asarray(c))
    ex = acts.expectations(activation, log_var, log_delta, slope)
    return -jnp.expm1(ex.log_gap_ratio + log_var + log_delta - ex.log_e2)
