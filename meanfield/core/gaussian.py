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

Any other elementwise f goes through the quadrature rules at the end of this module, built for
functions whose features sit at |u| ~ 1 around u = 0 (a kink, an inflection, a saturation),
seen through a Gaussian of any scale: :func:`radial_rule` and :func:`angular_rule` (trapezoid
rules on maps that are uniform in the logarithm of the distance to a feature and compress
double-exponentially where nothing happens) and :func:`polar_nodes`, the plane of a correlated
pair in polar coordinates, split at the rays where one argument changes sign.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
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


# The quadrature rules (docs/activations.md, "How the expectations are computed"). Their node
# counts and map constants were tuned against scipy's adaptive quadrature for the named
# activations over q in [1e-4, 1e4] (tests/test_activation_accuracy.py).
_ANGULAR_SCALE = 0.1  # a feature at u ~ 1 is an angle ~ 1/(σ r), r up to ~10
_ANGULAR_TAIL = 0.5  # κ of the angular map's double-exponential ends


class Rules(NamedTuple):
    """The rules' size and reach for the precision of a float type: what they leave out is
    below its rounding, and no further (float32 needs a third of float64's nodes)."""

    radial_nodes: int
    angular_nodes: int  # on each of the two pieces
    r_max: float  # r^3 e^{-r^2/2} beyond it: 2e-21 (float64), 8e-9 (float32)
    radial_start: float  # t of the first radial node: r = ℓ·e^{-38} (float64), ℓ·e^{-18}
    angular_reach: float  # A of the angular map: κ e^A = 36 (float64), 18: ends e^{-36}, e^{-18}


FLOAT64_RULES = Rules(72, 48, 10.5, -3.6, math.log(36.0 / _ANGULAR_TAIL))
FLOAT32_RULES = Rules(40, 28, 7.5, -2.9, math.log(18.0 / _ANGULAR_TAIL))


def rules(dtype) -> Rules:
    """:data:`FLOAT64_RULES` for float64, else :data:`FLOAT32_RULES`."""
    return FLOAT64_RULES if jnp.finfo(dtype).eps < 1e-10 else FLOAT32_RULES


class PolarNodes(NamedTuple):
    """The plane of (x, y) ~ N(0, I) in polar coordinates (r, θ), arranged for a pair
    u = σ r a, u' = σ r b (plus a common mean) of correlation ρ = 1 - δ: a = cos(θ - β),
    b = cos(θ + β), sin β = √(δ/2), on θ in [0, π/2] (the other quadrants follow by symmetry),
    split at θ* = π/2 - β where b changes sign. Arrays of shape (..., 2·angular_nodes,
    radial_nodes) (:func:`rules`) or broadcasting to it; ``weight`` integrates against the Gaussian:
    E F = Σ weight·(F(a, b) + F(-a, -b)) for F symmetric in its two arguments. Centred at
    (o, 0) instead of 0, the Gaussian's weight gains the factor exp(∓ r o cos θ - o²/2) on the
    two halves."""

    r: jax.Array
    a: jax.Array
    b: jax.Array
    cos: jax.Array  # a - b = 2 cos·sin β: the pair's separation without cancellation
    sin_beta: jax.Array
    weight: jax.Array
    along: jax.Array  # cos θ: the node's direction along x, the axis of u = u'
    cos_beta: jax.Array  # u + u' = 2σ cos β·x


def _unit_steps(n: int, like: jax.Array) -> jax.Array:
    """0, 1/(n - 1), ..., 1 on a last axis, with the leading axes of ``like`` (no rank
    promotion)."""
    k = jnp.arange(n, dtype=like.dtype) / (n - 1)
    return k.reshape((1,) * jnp.ndim(like) + (n,))


def radial_rule(sigma: jax.Array, reach=0.0):
    """Nodes r and weights of ∫_0^∞ F(r) dr (shape (..., n) for ``sigma`` of shape (...), n of
    :func:`rules`) for
    F = (Gaussian in r) × (a function of σr with its features at σr ~ 1): the trapezoid rule in
    t for r = ℓ·exp(t + 1 - e^{-t}), uniform in log r from ℓ = min(1, 1/σ)/2 up to r = 10.5
    (7.5 in float32) and double-exponentially compressed below ℓ, where F is a polynomial in r
    (up to 10.5 + ``reach`` for a Gaussian centred that far from r = 0). The step grows with
    log σ, so accuracy degrades slowly (not abruptly) past σ = 100."""
    ell = 0.5 * jnp.minimum(1.0, 1.0 / sigma)
    ends = rules(ell.dtype)
    n = ends.radial_nodes
    span = jnp.log((ends.r_max + reach) / ell)
    stop = span - 1.0 + jnp.exp(1.0 - span)  # where t + 1 - e^{-t} ≈ span
    k = _unit_steps(n, ell)
    t = ends.radial_start + (stop - ends.radial_start)[..., None] * k
    step = (stop - ends.radial_start)[..., None] / (n - 1)
    r = ell[..., None] * jnp.exp(t + 1.0 - jnp.exp(-t))
    return r, step * r * (1.0 + jnp.exp(-t))


def angular_rule(width: jax.Array, sigma: jax.Array):
    """Nodes ε and weights of ∫_0^width F(ε) dε for F with a feature at ε ~ 0.1/σ (the angle at
    which an argument σ r sin ε reaches 1): ε = width·S(τ), S the logistic function and
    τ = t + κ(e^t - e^{t_ℓ - t}), so that ε is uniform in log ε above ℓ = 0.1/σ and both ends
    are reached double-exponentially. A zero ``width`` gives zero weights."""
    safe = jnp.where(width > 0, width, 1.0)
    start = jnp.minimum(jnp.log(_ANGULAR_SCALE / (sigma * safe)), -1.0)
    reach, n = rules(safe.dtype).angular_reach, rules(safe.dtype).angular_nodes
    lo = start - reach
    k = _unit_steps(n, safe)
    t = lo[..., None] + (reach - lo)[..., None] * k
    step = (reach - lo)[..., None] / (n - 1)
    right, left = _ANGULAR_TAIL * jnp.exp(t), _ANGULAR_TAIL * jnp.exp(start[..., None] - t)
    tau = t + right - left
    s = jax.nn.sigmoid(tau)
    w = width[..., None]
    return w * s, w * s * jax.nn.sigmoid(-tau) * (1.0 + right + left) * step


def polar_nodes(delta: jax.Array, sigma: jax.Array, reach=0.0) -> PolarNodes:
    """The :class:`PolarNodes` of a pair at correlation 1 - δ (δ in [0, 2]) seen at scale σ.
    Both pieces of [0, π/2] are parametrized by the angle ε from θ*, where b = ∓sin ε exactly,
    so the sign change and the pair's separation keep full precision as δ -> 0. ``reach``:
    how far from the origin the Gaussian is centred (:func:`radial_rule`)."""
    beta = jnp.arcsin(jnp.sqrt(jnp.clip(delta, 0.0, 2.0) / 2.0))
    ea, wa = angular_rule(0.5 * jnp.pi - beta, sigma)  # θ from θ* down to 0: a, b > 0
    eb, wb = angular_rule(beta, sigma)  # θ from θ* up to π/2: a > 0 > b
    two = 2.0 * beta[..., None]
    a = jnp.concatenate([jnp.sin(two + ea), jnp.sin(two - eb)], -1)[..., None]
    b = jnp.concatenate([jnp.sin(ea), -jnp.sin(eb)], -1)[..., None]
    half = 0.5 * two
    cos = jnp.concatenate([jnp.cos(half + ea), jnp.cos(half - eb)], -1)[..., None]
    along = jnp.concatenate([jnp.sin(half + ea), jnp.sin(half - eb)], -1)[..., None]
    r, wr = radial_rule(sigma, reach=reach)
    wr = (wr * r * jnp.exp(-0.5 * r * r) / math.pi)[..., None, :]
    weight = jnp.concatenate([wa, wb], -1)[..., None] * wr
    sin_beta, cos_beta = (x[..., None, None] for x in (jnp.sin(beta), jnp.cos(beta)))
    return PolarNodes(r[..., None, :], a, b, cos, sin_beta, weight, along, cos_beta)


def normal_nodes(sigma: jax.Array, reach=0.0):
    """Nodes x >= 0 and weights of E F(X), X ~ N(0, 1), as Σ weight·(F(x) + F(-x)), for F with
    its features at σ|x| ~ 1 (:func:`radial_rule`; centred at o instead of 0, with ``reach``
    >= |o|, the weights gain the factor exp(∓ x o - o²/2) on the two sides)."""
    x, w = radial_rule(sigma, reach=reach)
    return x, w * jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
