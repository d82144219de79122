"""Gaussian expectations of the activations, shared by ``theory`` and ``recursions``.

For s ~ N(0, 1) and f in {identity, relu}:

=============  ======  =========  ========================
f              E f(s)  E f(s)^2   E f'(s)^2
=============  ======  =========  ========================
identity       0       1          1
relu           1/√2π   1/2        1/2
=============  ======  =========  ========================

and b_f = E f(s)^2 - (E f(s))^2 = 1 (identity), (π-1)/(2π) (relu). For a centred Gaussian
pair (u, u') with common variance v and correlation ρ = cos θ, the degree-1 arc-cosine kernel
(Cho & Saul 2009) gives

.. math::
    E[\\mathrm{relu}(u)\\,\\mathrm{relu}(u')]
    = \\frac{v}{2\\pi}\\,[\\sin\\theta + (\\pi - \\theta)\\cos\\theta].

Deep ReLU networks drive ρ to 1, where the per-unit variance E relu(u)^2 - E relu(u)relu(u')
is a tiny difference of two large numbers; :func:`relu_kernel_gap` evaluates it without
that cancellation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
from jax.typing import ArrayLike

from meanfield.core.architecture import ACTIVATIONS


class ActivationMoments(NamedTuple):
    """Moments of f(s), s ~ N(0, 1)."""

    e1: float  # E f(s)
    e2: float  # E f(s)^2
    a: float  # E f'(s)^2 (the backward gain; 'a' of the paper's eq. 39)
    b: float  # Var f(s) = e2 - e1^2


_MOMENTS = {
    "identity": ActivationMoments(e1=0.0, e2=1.0, a=1.0, b=1.0),
    "relu": ActivationMoments(
        e1=1.0 / math.sqrt(2.0 * math.pi), e2=0.5, a=0.5, b=(math.pi - 1.0) / (2.0 * math.pi)
    ),
}


def activation_moments(activation: str) -> ActivationMoments:
    """The Gaussian moments (e1, e2, a, b) of ``activation``."""
    if activation not in _MOMENTS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return _MOMENTS[activation]


def relu_mean(v: ArrayLike) -> jnp.ndarray:
    """E relu(u) = sqrt(v / 2π) for u ~ N(0, v)."""
    return jnp.sqrt(jnp.asarray(v) / (2.0 * jnp.pi))


def relu_second_moment(v: ArrayLike) -> jnp.ndarray:
    """E relu(u)^2 = v / 2 for u ~ N(0, v)."""
    return jnp.asarray(v) / 2.0


def _sin_minus_theta_cos(theta: jnp.ndarray) -> jnp.ndarray:
    """sin θ - θ cos θ, accurate for small θ (where both terms are ≈ θ)."""
    t2 = theta * theta
    # Taylor series: sum_k (-1)^(k+1) 2k θ^(2k+1) / (2k+1)!, truncated after θ^11; at θ < 0.3 the
    # first omitted term is below 1e-16 relative.
    series = theta * t2 * (1 / 3 - t2 * (1 / 30 - t2 * (1 / 840 - t2 * (1 / 45360 - t2 / 3991680))))
    direct = jnp.sin(theta) - theta * jnp.cos(theta)
    return jnp.where(theta < 0.3, series, direct)


def relu_kernel_gap(v: ArrayLike, one_minus_rho: ArrayLike) -> jnp.ndarray:
    """E relu(u)^2 - E relu(u) relu(u') for a centred pair of variance v, correlation 1 - δ.

    .. math::
        \\frac{v}{2\\pi}\\,[\\pi(1-\\cos\\theta) - (\\sin\\theta - \\theta\\cos\\theta)],
        \\quad 1 - \\cos\\theta = \\delta.

    θ = 2 arcsin(sqrt(δ/2)) keeps full relative precision as δ -> 0 (arccos(1 - δ) does not).

    Args:
        v: variance of u and u'.
        one_minus_rho: δ = 1 - ρ in [0, 2].
    """
    v = jnp.asarray(v)
    delta = jnp.clip(jnp.asarray(one_minus_rho), 0.0, 2.0)
    theta = 2.0 * jnp.arcsin(jnp.sqrt(delta / 2.0))
    return v / (2.0 * jnp.pi) * (jnp.pi * delta - _sin_minus_theta_cos(theta))


def relu_kernel_gap_ratio(v: ArrayLike, one_minus_rho: ArrayLike) -> jnp.ndarray:
    """:func:`relu_kernel_gap` divided by δ = 1 - ρ, finite as δ -> 0 (limit v/2).

    .. math::
        \\frac{v}{2\\pi}\\,\\Bigl[\\pi - \\frac{\\sin\\theta - \\theta\\cos\\theta}{\\delta}\\Bigr]

    Lets a recursion carry log δ when δ itself would underflow (deep ReLU ResNets without BN).
    """
    v = jnp.asarray(v)
    delta = jnp.clip(jnp.asarray(one_minus_rho), 0.0, 2.0)
    theta = 2.0 * jnp.arcsin(jnp.sqrt(delta / 2.0))
    positive = delta > 0
    correction = jnp.where(
        positive, _sin_minus_theta_cos(theta) / jnp.where(positive, delta, 1.0), 0.0
    )
    return v / (2.0 * jnp.pi) * (jnp.pi - correction)


def relu_cross_moment(v: ArrayLike, rho: ArrayLike) -> jnp.ndarray:
    """E relu(u) relu(u') = (v/2π)[sqrt(1-ρ^2) + ρ(π - arccos ρ)] (degree-1 arc-cosine kernel)."""
    v = jnp.asarray(v)
    return relu_second_moment(v) - relu_kernel_gap(v, 1.0 - jnp.asarray(rho))
