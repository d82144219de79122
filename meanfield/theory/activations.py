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
* :func:`critical_alpha`: the α at which the plain network keeps its second moment at q
  (E f(u)² = q); exact to the bisection's tolerance, NaN where none exists.
* :func:`plain_fixed_point`: the fixed points (q*, c*) the plain network settles at, by
  iterating those exact maps (the order-to-chaos picture: c* = 1 iff χ₁(q*) <= 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from meanfield.core import activations as acts
from meanfield.core.architecture import check_finite, check_positive
from meanfield.theory.common import check_activation, check_correlation, check_count, domain

__all__ = ["chi1", "critical_alpha", "he_like_alpha", "plain_correlation_map", "plain_fixed_point"]

# The arguments every function here checks (see meanfield.theory's rule for traced ones).
_F = dict(activation=check_activation, slope=check_finite)


@domain(**_F)
def he_like_alpha(activation, slope: float = 0.01) -> jnp.ndarray:
    """α = 1 / E f'(u)², u ~ N(0, 1): χ₁ = 1 at unit pre-activation variance."""
    return jnp.exp(-acts.expectations(activation, 0.0, 0.0, slope).log_a)


@domain(alpha=check_positive, q=check_positive, **_F)
def chi1(activation, alpha: ArrayLike, q: ArrayLike, slope: float = 0.01) -> jnp.ndarray:
    """χ₁ = α E f'(u)², u ~ N(0, α q): the correlation map's slope at c = 1 (at q's fixed
    point; elsewhere it is multiplied by α q / q_out)."""
    log_var = jnp.log(jnp.asarray(alpha) * jnp.asarray(q))
    return jnp.asarray(alpha) * jnp.exp(acts.expectations(activation, log_var, 0.0, slope).log_a)


@domain(alpha=check_positive, q=check_positive, c=check_correlation, **_F)
def plain_correlation_map(
    activation, alpha: ArrayLike, q: ArrayLike, c: ArrayLike, slope: float = 0.01
) -> jnp.ndarray:
    """c_out = 1 - gap_out / q_out for z_out = f(W z), z centred with second moment q and
    correlation c between distinct inputs (so u ~ N(0, α q), correlation c)."""
    log_var = jnp.log(jnp.asarray(alpha) * jnp.asarray(q))
    log_delta = jnp.log1p(-jnp.asarray(c))
    ex = acts.expectations(activation, log_var, log_delta, slope)
    return -jnp.expm1(ex.log_gap_ratio + log_var + log_delta - ex.log_e2)


def _variance_map(activation, alpha, log_q, slope):
    """log q_out = log E f(u)², u ~ N(0, α q), of the plain network without a norm."""
    return acts.expectations(activation, jnp.log(alpha) + log_q, 0.0, slope).log_e2


@domain(alpha=check_positive, q0=check_positive, c0=check_correlation, steps=check_count, **_F)
def plain_fixed_point(
    activation,
    alpha: ArrayLike,
    slope: float = 0.01,
    q0: ArrayLike = 1.0,
    c0: ArrayLike = 0.5,
    steps: int = 4000,
):
    """(q*, c*): where the plain network z = f(W z) without a norm settles from inputs of
    second moment ``q0`` and correlation ``c0``, by iterating its exact variance map and then
    its exact correlation map at q*: c* = 1 when χ₁(q*) <= 1 (distinct inputs merge), else
    c* < 1 (0 for odd f). q* is 0 or inf where the variance map has no finite non-zero fixed
    point from ``q0`` (e.g. relu off α = 2), and c* is then NaN. jit-able; ``steps``
    iterations of each map."""
    alpha = jnp.asarray(alpha, jnp.result_type(float))

    def q_step(_, log_q):
        return jnp.where(jnp.isfinite(log_q), _variance_map(activation, alpha, log_q, slope), log_q)

    log_q = jax.lax.fori_loop(0, steps, q_step, jnp.log(jnp.asarray(q0, alpha.dtype)))
    q = jnp.exp(log_q)

    def c_step(_, c):
        # unchecked: q* may be 0 or inf here, and c* is then NaN (docstring)
        c = jnp.minimum(c, 1.0 - 1e-7)
        return plain_correlation_map.__wrapped__(activation, alpha, q, c, slope)

    c = jax.lax.fori_loop(0, steps, c_step, jnp.full_like(q, c0))
    return q, c


@domain(q=check_positive, steps=check_count, **_F)
def critical_alpha(activation, q: ArrayLike = 1.0, slope: float = 0.01, steps: int = 60):
    """The α = n·var_w at which a plain network without a norm keeps its second moment at
    ``q`` (E f(u)² = q for u ~ N(0, α q)), by bisection of the exact variance map in log α
    over [1e-4, 1e4]; NaN where none exists there (a bounded f whose E f² stays below q:
    tanh, erf, sin, sigmoid at q >= 1). 2 for relu, 1 for identity, at any q."""
    log_q = jnp.log(jnp.asarray(q, jnp.result_type(float)))

    def excess(log_alpha):
        return _variance_map(activation, jnp.exp(log_alpha), log_q, slope) - log_q

    lo, hi = jnp.full_like(log_q, jnp.log(1e-4)), jnp.full_like(log_q, jnp.log(1e4))
    exists = (excess(lo) < 0) & (excess(hi) > 0)

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = excess(mid) < 0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, steps, step, (lo, hi))
    return jnp.where(exists, jnp.exp(0.5 * (lo + hi)), jnp.nan)
