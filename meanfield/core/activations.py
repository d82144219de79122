"""Activations by name or as any elementwise JAX function, with the Gaussian expectations the
mean field needs.

For a centred Gaussian pair (u, u') of variance q and correlation ρ = 1 - δ, the recursion
needs, in logs (:class:`Expectations`): E f(u)², E f(u) / √(E f(u)²), Var f(u), the ratio of
the output's kernel gap E f(u)² - E f(u) f(u') to the input's q·δ, E f'(u)², E f'(u) f'(u'),
E f'(u)² - E f'(u) f'(u') and the output's 1 - E f(u) f(u') / E f(u)².

* **Closed forms** where they exist: the arc-cosine family f(u) = s·u + (1 - s)·relu(u)
  (identity s = 1, relu s = 0, leaky_relu s = slope, abs s = -1; Cho & Saul 2009), erf (the
  arcsine kernel, Williams 1997) and sin (exponential kernels). Gaps are formed without the
  cancellation of E f² - E f f' (θ = 2 arcsin √(δ/2), expm1, differences of arcsines as
  one arctangent), so they keep full relative precision as δ -> 0.
* **Quadrature** otherwise (tanh, gelu, gelu_tanh, silu, softplus, elu, sigmoid, any
  callable), in polar coordinates of the pair's plane, split at the rays where an argument
  changes sign and resolved in the logarithm of the distance to them
  (:func:`meanfield.core.gaussian.polar_nodes`): f's kink or inflection at 0 lies on a split,
  and its features at |u| ~ 1 are resolved whatever the Gaussian's scale. A gap is
  ½ E (g(u) - g(u'))², the difference taken directly where the two arguments are apart and,
  where they are close (closer than :data:`NEAR`), as their distance times the mean of g' over
  the segment between them (:data:`LEGENDRE` Gauss-Legendre points, split at 0 for a kinked
  g), so it has no cancellation down to δ = 0. g' and g'' come from JAX autodiff of f. An odd
  activation has E f = 0 and, at ρ = 0, E f(u) f(u') = 0 by construction (the pair's moment
  antisymmetrized in ρ). Measured accuracy against scipy's adaptive quadrature:
  docs/activations.md.

Positively homogeneous activations (the arc-cosine family) are evaluated at q = 1 and scaled;
the others at the absolute q the recursion carries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from meanfield.core import gaussian

__all__ = [
    "ACTIVATION_FUNCTIONS",
    "DEGREE_1D",
    "Expectations",
    "activation_fn",
    "expectations",
    "is_homogeneous",
    "leaky_slope",
]

DEGREE_1D = 128  # Gauss-Hermite degree of the E f'(y) of layers.mean_field (Stein's lemma)
LEGENDRE = 4
NEAR = 0.05
REACH = 3.0  # how far from the mean, in standard deviations, the rules are centred at most

_SQRT_2PI = math.sqrt(2.0 * math.pi)

ACTIVATION_FUNCTIONS: dict[str, Callable] = {
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "leaky_relu": None,  # takes its slope: activation_fn("leaky_relu", slope)
    "abs": jnp.abs,
    "tanh": jnp.tanh,
    "erf": jax.scipy.special.erf,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
    "sin": jnp.sin,
}
# The arc-cosine family s·u + (1 - s)·relu(u), by name: its slope s.
_SLOPES = {"identity": 1.0, "relu": 0.0, "abs": -1.0}
# Named activations known to be odd (f(-u) = -f(u)), and those smooth at 0 (every other f,
# a callable included, may have a kink there, and its segments are split at 0).
_ODD = frozenset({"identity", "tanh", "erf", "sin"})
_SMOOTH = frozenset(
    {"identity", "tanh", "erf", "sin", "gelu", "gelu_tanh", "silu", "softplus", "sigmoid"}
)


def leaky_slope(activation, slope: float) -> float | None:
    """The s of s·u + (1 - s)·relu(u) for the arc-cosine family, else None."""
    if activation == "leaky_relu":
        return float(slope)
    return _SLOPES.get(activation) if isinstance(activation, str) else None


def is_homogeneous(activation, slope: float = 0.01) -> bool:
    """Positively homogeneous (f(cx) = c f(x), c > 0): the arc-cosine family."""
    return leaky_slope(activation, slope) is not None


def activation_fn(activation, slope: float = 0.01) -> Callable:
    """f as an elementwise JAX function: the named one, or ``activation`` itself."""
    if callable(activation):
        return activation
    if activation == "leaky_relu":
        return lambda x: jax.nn.leaky_relu(x, slope)
    return ACTIVATION_FUNCTIONS[activation]


class Expectations(NamedTuple):
    """Gaussian expectations of f for u, u' ~ N(0, q), corr 1 - δ, in logs (see module)."""

    log_e2: jax.Array  # log E f(u)²
    t: jax.Array  # E f(u) / sqrt(E f(u)²)
    log_var: jax.Array  # log Var f(u)
    log_gap_ratio: jax.Array  # log of (E f(u)² - E f(u) f(u')) / (q δ)
    log_a: jax.Array  # log E f'(u)²
    log_d: jax.Array  # log E f'(u) f'(u')
    log_a_minus_d: jax.Array  # log (E f'(u)² - E f'(u) f'(u'))
    # log (1 - E f(u) f(u') / E f(u)²) = log(gap / E f²): exactly 0 where E f(u) f(u') = 0
    log_decorrelation: jax.Array


def _decorrelation(c, log_gap, log_e2):
    """log(1 - c) for c = E f(u) f(u')/E f(u)²: through log1p where c <= ½ (exactly 0 at c = 0),
    else from the gap itself, which keeps its relative precision as c -> 1."""
    return jnp.where(c <= 0.5, jnp.log1p(-jnp.minimum(c, 0.5)), log_gap - log_e2)


def _theta(delta):
    return 2.0 * jnp.arcsin(jnp.sqrt(jnp.clip(delta, 0.0, 2.0) / 2.0))


def _leaky(s: float, log_q, log_delta) -> Expectations:
    delta = jnp.exp(log_delta)
    theta = _theta(delta)
    e2 = (1.0 + s * s) / 2.0
    e1 = (1.0 - s) / _SQRT_2PI
    var = e2 - e1 * e1 if s != 0.0 else (math.pi - 1.0) / (2.0 * math.pi)
    relu_ratio = gaussian.relu_kernel_gap_ratio(1.0, delta)
    ratio = relu_ratio if s == 0.0 else s + (1.0 - s) ** 2 * relu_ratio
    # E f'(u) f'(u') = s + (1 - s)²(π - θ)/(2π) = (1 + s)²/4 + (1 - s)² arcsin(ρ)/(2π): exactly 0
    # for abs at ρ = 0 (arcsin 0 = 0; π - 2θ is not), never a negative rounding to take a log of.
    rho = jnp.clip(1.0 - delta, -1.0, 1.0)
    d = (1.0 + s) ** 2 / 4.0 + (1.0 - s) ** 2 * jnp.arcsin(rho) / (2.0 * math.pi)
    d = jnp.maximum(d, 0.0) if s >= 0 else d  # f' >= 0: 0 at ρ = -1 for relu, not -1e-17
    a_minus_d = theta / (2.0 * math.pi)
    a_minus_d = a_minus_d if s == 0.0 else (1.0 - s) ** 2 * a_minus_d
    # E f(u) f(u') = q[sρ + (1 - s)² (sin θ + (π - θ) ρ)/(2π)], ρ = cos θ = 1 - δ.
    cross = s * rho + (1.0 - s) ** 2 * (jnp.sin(theta) + (math.pi - theta) * rho) / (2 * math.pi)
    full = jnp.ones_like(log_q)
    return Expectations(
        log_q + math.log(e2),
        full * (e1 / math.sqrt(e2)),
        log_q + math.log(var),
        jnp.log(ratio),
        full * math.log(e2),
        jnp.log(d),
        jnp.log(a_minus_d),
        _decorrelation(cross / e2, jnp.log(ratio) + log_delta, math.log(e2)),
    )


def _erf(log_q, log_delta) -> Expectations:
    q, delta = jnp.exp(log_q), jnp.exp(log_delta)
    x = 2.0 * q / (1.0 + 2.0 * q)
    # arcsin(x) - arcsin(xρ) as one arctangent, its numerator x√(1 - b²) - b√(1 - x²) times
    # its conjugate where b >= 0 (x - xρ = xδ exactly), as it is where b < 0 (no cancellation).
    b = x * (1.0 - delta)
    root_x, root_b = jnp.sqrt(1.0 - x * x), jnp.sqrt(1.0 - b * b)
    conjugate = x * root_b + jnp.where(b >= 0, b, 0.0) * root_x
    num = jnp.where(b >= 0, x * delta * (x + b) / conjugate, x * root_b - b * root_x)
    gap = (2.0 / jnp.pi) * jnp.arctan2(num, root_x * root_b + x * b)
    e2 = (2.0 / jnp.pi) * jnp.arcsin(x)
    a = (4.0 / jnp.pi) / jnp.sqrt(1.0 + 4.0 * q)
    cross = (1.0 + 2.0 * q) ** 2 - 4.0 * q * q * (1.0 - delta) ** 2
    d = (4.0 / jnp.pi) / jnp.sqrt(cross)
    # a - d = (4/π)(1/√A - 1/√B) = (4/π)(B - A)/(√A √B (√A + √B)), B - A = 4q²δ(2 - δ).
    root_a, root_b = jnp.sqrt(1.0 + 4.0 * q), jnp.sqrt(cross)
    a_minus_d = (4.0 / jnp.pi) * 4.0 * q * q * delta * (2.0 - delta)
    a_minus_d = a_minus_d / (root_a * root_b * (root_a + root_b))
    ratio = jnp.where(delta > 0, gap / jnp.where(delta > 0, q * delta, 1.0), a)  # δ -> 0: a
    return Expectations(
        jnp.log(e2),
        jnp.zeros_like(q),
        jnp.log(e2),
        jnp.log(ratio),
        jnp.log(a),
        jnp.log(d),
        jnp.log(a_minus_d),
        _decorrelation(jnp.arcsin(b) / jnp.arcsin(x), jnp.log(gap), jnp.log(e2)),  # b = 0 at ρ = 0
    )


def _expm1_ratio(x):
    """expm1(x)/x, 1 at x = 0."""
    safe = jnp.where(x == 0, 1.0, x)
    return jnp.where(x == 0, 1.0, jnp.expm1(safe) / safe)


def _sin(log_q, log_delta) -> Expectations:
    q, delta = jnp.exp(log_q), jnp.exp(log_delta)
    qd, far = q * delta, jnp.exp(-q * (2.0 - delta))
    e2 = -0.5 * jnp.expm1(-2.0 * q)
    # With A = e^{-qδ}, B = e^{-q(2 - δ)}: gap = ½(1 - A)(1 + B) and a - d = ½(1 - A)(1 - B),
    # products without cancellation for every δ in [0, 2].
    ratio = 0.5 * _expm1_ratio(-qd) * (1.0 + far)
    a = 0.5 * (1.0 + jnp.exp(-2.0 * q))
    d = 0.5 * (jnp.exp(-qd) + far)
    a_minus_d = 0.5 * jnp.expm1(-qd) * jnp.expm1(-q * (2.0 - delta))
    cross = 0.5 * (jnp.exp(-qd) - far)  # e^{-q} sinh(qρ): 0 at δ = 1
    return Expectations(
        jnp.log(e2),
        jnp.zeros_like(q),
        jnp.log(e2),
        jnp.log(ratio),
        jnp.log(a),
        jnp.log(d),
        jnp.log(a_minus_d),
        _decorrelation(cross / e2, jnp.log(ratio) + log_q + log_delta, jnp.log(e2)),
    )


def _jet(f: Callable) -> Callable:
    """x -> (f(x), f'(x), f''(x)) elementwise, by forward-mode autodiff."""

    def first(x):
        return jax.jvp(f, (x,), (jnp.ones_like(x),))

    def jet(x):
        (value, slope), (_, curvature) = jax.jvp(first, (x,), (jnp.ones_like(x),))
        return value, slope, curvature

    return jet


def _halves(odd: bool, like):
    """The two halves of the plane, on an axis after the leading axes of ``like``: (their
    signs ±1, a function that adds that axis, the axes to sum over). An odd f's halves agree,
    so it takes one, with no axis (a size-1 axis made XLA's float32 code three times slower)."""
    if odd:
        return 1.0, lambda x: x, (-2, -1)
    sides = jnp.asarray([1.0, -1.0], like.dtype).reshape((1,) * jnp.ndim(like) + (2, 1, 1))
    return sides, lambda x: x[..., None, :, :], (-3, -2, -1)


def _origin(mu, sigma):
    """Where the rules are centred, in standard deviations from the mean: at f's kink or
    inflection u = 0 (-μ/σ), so that it lies on their split, but no further than
    :data:`REACH` from the mean, where the Gaussian's bulk would leave their fine part."""
    o = jnp.where(sigma > 0, -mu / jnp.where(sigma > 0, sigma, 1.0), 0.0)
    return jnp.clip(o, -REACH, REACH)


def _moments(f: Callable, mu, sigma, scale, odd: bool):
    """E f/s, E (f/s)², Var f/s² and E f'² for u ~ N(μ, σ²), s = ``scale``
    (:func:`meanfield.core.gaussian.normal_nodes`, centred at :func:`_origin`); E f = 0 exactly
    for an odd f (μ = 0, one half-line counted twice)."""
    o = _origin(mu, sigma)
    x, w = gaussian.normal_nodes(sigma, reach=jnp.abs(o))
    center, o, sx = (mu + sigma * o)[..., None], o[..., None], sigma[..., None] * x
    if odd:
        u, w, s, axes = center + sx, 2.0 * w, scale[..., None], -1
    else:  # the two half-lines on an axis before the nodes'
        side = jnp.asarray([1.0, -1.0], w.dtype).reshape((1,) * jnp.ndim(sigma) + (2, 1))
        u = center[..., None, :] + side * sx[..., None, :]
        s, axes = scale[..., None, None], (-2, -1)
        w = w[..., None, :] * jnp.exp(-side * (x * o)[..., None, :] - 0.5 * (o * o)[..., None, :])
    value, slope = jax.jvp(f, (u,), (jnp.ones_like(u),))
    e1 = jnp.zeros_like(sigma) if odd else jnp.sum(w * value / s, axes)
    e2 = jnp.sum(w * (value / s) ** 2, axes)
    var = jnp.sum(w * (value / s - e1.reshape(e1.shape + (1,) * (value.ndim - e1.ndim))) ** 2, axes)
    return e1, e2, var, jnp.sum(w * slope * slope, axes)


def _segment_points(lo, hi, kinked: bool):
    """Gauss-Legendre points of the segment from ``lo`` to ``hi`` on a new last axis, a
    function that takes the mean over the segment of values there, and 1 where the segment
    crosses 0 (else 0): split at 0 where f may have a kink there."""
    nodes, weights = np.polynomial.legendre.leggauss(LEGENDRE)
    tau = jnp.asarray(0.5 + 0.5 * nodes, lo.dtype).reshape((1,) * lo.ndim + (-1,))
    half = jnp.asarray(0.5 * weights, lo.dtype).reshape((1,) * lo.ndim + (-1,))
    if not kinked:
        points = lo[..., None] + (hi - lo)[..., None] * tau
        return points, lambda v: jnp.sum(half * v, -1), jnp.zeros_like(lo)
    span = hi - lo
    frac = jnp.where(span != 0, jnp.clip(-lo / jnp.where(span != 0, span, 1.0), 0.0, 1.0), 0.0)
    split = lo + frac * span
    first = lo[..., None] + (split - lo)[..., None] * tau
    points = jnp.concatenate([first, split[..., None] + (hi - split)[..., None] * tau], -1)

    def mean(v):
        n = LEGENDRE
        return frac * jnp.sum(half * v[..., :n], -1) + (1.0 - frac) * jnp.sum(half * v[..., n:], -1)

    return points, mean, jnp.where((frac > 0) & (frac < 1), 1.0, 0.0)


def _pair(f: Callable, mu, sigma, delta, scale, odd: bool, kinked: bool):
    """For u, u' = μ + σ(x, ρx + √(1 - ρ²) y): ½ E (f(u) - f(u'))² / (σ²δ), the same of f',
    E f(u) f(u') / s² and E f'(u) f'(u') (:func:`meanfield.core.gaussian.polar_nodes`). f is
    called once, on every point stacked: the nodes' pair and the Gauss-Legendre points of the
    segment between them, for both halves of the plane."""
    # Centred on the axis u = u' at (o, 0), o from the kink at u = u' = 0 (:func:`_origin`):
    # u = u' = μ + σ cos β·x there.
    stretch = sigma * jnp.sqrt(1.0 - 0.5 * delta)
    o = _origin(mu, stretch)
    nodes = gaussian.polar_nodes(delta, sigma, reach=jnp.abs(o))
    radius = sigma[..., None, None] * nodes.r
    side, lift, axes = _halves(odd, sigma)
    sr, m = lift(radius), lift((mu + stretch * o)[..., None, None])
    u1, u2 = m + side * sr * lift(nodes.a), m + side * sr * lift(nodes.b)
    segment, mean, crossing = _segment_points(u2, u1, kinked)
    jet = _jet(f)
    value, slope, curvature = jet(jnp.concatenate([u1[..., None], u2[..., None], segment], -1))
    apart = lift(2.0 * radius * nodes.cos * nodes.sin_beta)  # |u - u'|, without cancellation
    near, safe = apart < NEAR, jnp.where(apart > 0, apart, 1.0)
    o = lift(o[..., None, None])
    weight = lift(nodes.weight) * jnp.exp(-side * lift(nodes.r * nodes.along) * o - 0.5 * o * o)
    geometry = 2.0 * lift((nodes.r * nodes.cos) ** 2) * weight  # ·(u - u')²/(σ²δ)
    jump, djump = 0.0, 0.0
    # A jump of f or f' at 0 (relu') is no integral of the next derivative: (f(u) - f(u'))/|u - u'|
    # is ±(the mean of f' + the jump/|u - u'|) where the segment crosses 0.
    if kinked:
        tiny = jnp.finfo(u1.dtype).tiny
        at, dat, _ = jet(jnp.asarray([tiny, -tiny], u1.dtype))
        jump, djump = crossing * (at[0] - at[1]) / safe, crossing * (dat[0] - dat[1]) / safe
    ratio = jnp.where(near, mean(slope[..., 2:]) + jump, (value[..., 0] - value[..., 1]) / safe)
    dratio = jnp.where(
        near, mean(curvature[..., 2:]) + djump, (slope[..., 0] - slope[..., 1]) / safe
    )
    s2 = lift((scale * scale)[..., None, None])
    cross = jnp.sum(weight * value[..., 0] * value[..., 1] / s2, axes)
    k = 2.0 if odd else 1.0
    if odd:  # E f(u) f(u') is odd in ρ: antisymmetrized, it is 0 at ρ = 0 by construction
        mirror = gaussian.polar_nodes(2.0 - delta, sigma)
        sr = sigma[..., None, None] * mirror.r
        both = f(jnp.stack([sr * mirror.a, sr * mirror.b], -1))
        cross = 0.5 * (cross - jnp.sum(mirror.weight * both[..., 0] * both[..., 1] / s2, axes))
    return (
        0.5 * k * jnp.sum(geometry * ratio**2, axes),
        0.5 * k * jnp.sum(geometry * dratio**2, axes),
        k * cross,
        k * jnp.sum(weight * slope[..., 0] * slope[..., 1], axes),
    )


def _quadrature(f: Callable, log_v, log_delta, mu, odd: bool, kinked: bool) -> Expectations:
    """By quadrature, for u ~ N(μ, v) (each unit) and centred parts of correlation 1 - δ; the
    gap ratio is to the input's gap v·δ."""
    sigma = jnp.exp(0.5 * log_v)
    delta = jnp.clip(jnp.exp(log_delta), 0.0, 2.0)
    # f is read relative to the signal's scale s = √(v + μ²), so that E f² and Var f stay
    # representable where f² would underflow (a shrinking plain network) or overflow.
    log_s2 = jnp.logaddexp(log_v, jnp.log(mu * mu))
    scale = jnp.exp(0.5 * log_s2)
    e1, e2, var, a = _moments(f, mu, sigma, scale, odd)
    ratio, dratio, cross, dcross = _pair(f, mu, sigma, delta, scale, odd, kinked)
    t = jnp.where(e2 == 0, 0.0, e1 / jnp.sqrt(jnp.where(e2 == 0, 1.0, e2)))  # NaN stays NaN
    c = cross / e2
    return Expectations(
        log_s2 + jnp.log(e2),
        t,
        log_s2 + jnp.log(var),
        jnp.log(ratio),
        jnp.log(a),
        jnp.log(dcross),
        jnp.log(dratio) + log_v + log_delta,
        _decorrelation(c, jnp.log(ratio) + log_v + log_delta, jnp.log(e2) + log_s2),
    )


def expectations(activation, log_q, log_delta, slope: float = 0.01, t=None) -> Expectations:
    """The :class:`Expectations` of ``activation`` (a name of :data:`ACTIVATION_FUNCTIONS` or
    an elementwise JAX function) for u ~ N(0, q), log q = ``log_q``, at correlation 1 - δ,
    log δ = ``log_delta`` (arrays of one shape; jit- and vmap-able). For the homogeneous
    family ``log_q`` may be relative: every log that scales with q is shifted by it.

    With ``t`` = m/√q (a signal of mean m in every unit) the law is N(m, v), v = q - m², and
    ``log_delta`` is log(gap/v) of the centred parts: always by quadrature, and the gap ratio
    is then to the input's gap v·δ."""
    log_q, log_delta = jnp.broadcast_arrays(jnp.asarray(log_q), jnp.asarray(log_delta))
    named = isinstance(activation, str)
    kinked = not (named and activation in _SMOOTH)
    fn = activation_fn(activation, slope)
    if t is not None:
        t = jnp.broadcast_to(jnp.asarray(t, log_q.dtype), log_q.shape)
        log_v = log_q + jnp.log1p(-jnp.minimum(t * t, 1.0))
        mu = t * jnp.exp(0.5 * log_q)
        return _quadrature(fn, log_v, log_delta, mu, False, kinked)
    s = leaky_slope(activation, slope)
    if s is not None:
        return _leaky(s, log_q, log_delta)
    if activation == "erf":
        return _erf(log_q, log_delta)
    if activation == "sin":
        return _sin(log_q, log_delta)
    odd = named and activation in _ODD
    return _quadrature(fn, log_q, log_delta, jnp.zeros_like(log_q), odd, kinked)
