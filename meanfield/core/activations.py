"""Activations by name or as any elementwise JAX function, with the Gaussian expectations the
mean field needs.

For a centred Gaussian pair (u, u') of variance q and correlation ρ = 1 - δ, the recursion
needs, in logs (:class:`Expectations`): E f(u)², E f(u) / √(E f(u)²), Var f(u), the ratio of
the output's kernel gap E f(u)² - E f(u) f(u') to the input's q·δ, E f'(u)², E f'(u) f'(u')
and E f'(u)² - E f'(u) f'(u').

* **Closed forms** where they exist: the arc-cosine family f(u) = s·u + (1 - s)·relu(u)
  (identity s = 1, relu s = 0, leaky_relu s = slope, abs s = -1; Cho & Saul 2009), erf (the
  arcsine kernel, Williams 1997) and sin (exponential kernels). Gaps are formed without the
  cancellation of E f² - E f f' (θ = 2 arcsin √(δ/2), expm1, differences of arcsines as
  one arctangent), so they keep full relative precision as δ -> 0.
* **Gauss-Hermite quadrature** otherwise (tanh, gelu, gelu_tanh, silu, softplus, elu,
  sigmoid, any callable): :data:`DEGREE_1D` nodes for E f, E f², E f'²; a tensor grid of
  :data:`DEGREE_2D`² nodes for the pair. A gap is ½ E (g(u) - g(u'))², the difference taken
  directly where the two arguments are far apart and, where they are close (√(qδ/2) <
  :data:`NEAR`), as 2√q·d·y times the mean of g' over the segment between them
  (:data:`LEGENDRE` Gauss-Legendre points), so it has no cancellation down to δ = 0. g' and
  g'' come from JAX autodiff of f. Measured accuracy against scipy's adaptive quadrature:
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

__all__ = [
    "ACTIVATION_FUNCTIONS",
    "DEGREE_1D",
    "DEGREE_2D",
    "Expectations",
    "activation_fn",
    "expectations",
    "is_homogeneous",
    "leaky_slope",
]

DEGREE_1D = 128
DEGREE_2D = 96
LEGENDRE = 6
NEAR = 0.05

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


def _theta(delta):
    return 2.0 * jnp.arcsin(jnp.sqrt(jnp.clip(delta, 0.0, 2.0) / 2.0))


def _leaky(s: float, log_q, log_delta) -> Expectations:
    from meanfield.core.gaussian import relu_kernel_gap_ratio

    delta = jnp.exp(log_delta)
    theta = _theta(delta)
    e2 = (1.0 + s * s) / 2.0
    e1 = (1.0 - s) / _SQRT_2PI
    var = e2 - e1 * e1 if s != 0.0 else (math.pi - 1.0) / (2.0 * math.pi)
    relu_ratio = relu_kernel_gap_ratio(1.0, delta)
    ratio = relu_ratio if s == 0.0 else s + (1.0 - s) ** 2 * relu_ratio
    d = (math.pi - theta) / (2.0 * math.pi)
    d = d if s == 0.0 else s + (1.0 - s) ** 2 * d
    a_minus_d = theta / (2.0 * math.pi)
    a_minus_d = a_minus_d if s == 0.0 else (1.0 - s) ** 2 * a_minus_d
    full = jnp.ones_like(log_q)
    return Expectations(
        log_q + math.log(e2),
        full * (e1 / math.sqrt(e2)),
        log_q + math.log(var),
        jnp.log(ratio),
        full * math.log(e2),
        jnp.log(d),
        jnp.log(a_minus_d),
    )


def _erf(log_q, log_delta) -> Expectations:
    q, delta = jnp.exp(log_q), jnp.exp(log_delta)
    x = 2.0 * q / (1.0 + 2.0 * q)
    # arcsin(x) - arcsin(xρ) as one arctangent: x - xρ = xδ exactly.
    b = x * (1.0 - delta)
    num = x * delta * (x + b) / (x * jnp.sqrt(1.0 - b * b) + b * jnp.sqrt(1.0 - x * x))
    gap = (2.0 / jnp.pi) * jnp.arctan2(num, jnp.sqrt((1.0 - x * x) * (1.0 - b * b)) + x * b)
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
    )


def _expm1_ratio(x):
    """expm1(x)/x, 1 at x = 0."""
    safe = jnp.where(x == 0, 1.0, x)
    return jnp.where(x == 0, 1.0, jnp.expm1(safe) / safe)


def _sin(log_q, log_delta) -> Expectations:
    q, delta = jnp.exp(log_q), jnp.exp(log_delta)
    qd = q * delta
    e2q = jnp.exp(-2.0 * q)
    e2 = -0.5 * jnp.expm1(-2.0 * q)
    # gap = ½[(1 - e^{-qδ}) - e^{-2q}(1 - e^{qδ})]; a - d = ½[(1 - e^{-qδ}) + e^{-2q}(1 - e^{qδ})]
    ratio = 0.5 * (_expm1_ratio(-qd) + e2q * _expm1_ratio(qd))
    a = 0.5 * (1.0 + e2q)
    d = 0.5 * (jnp.exp(-qd) + jnp.exp(-q * (2.0 - delta)))
    a_minus_d = 0.5 * qd * (_expm1_ratio(-qd) - e2q * _expm1_ratio(qd))
    return Expectations(
        jnp.log(e2),
        jnp.zeros_like(q),
        jnp.log(e2),
        jnp.log(ratio),
        jnp.log(a),
        jnp.log(d),
        jnp.log(a_minus_d),
    )


def _nodes(degree: int, dtype):
    """Probabilists' Gauss-Hermite nodes and weights (summing to 1): E g(x) ≈ Σ w g(x)."""
    x, w = np.polynomial.hermite_e.hermegauss(degree)
    return jnp.asarray(x, dtype), jnp.asarray(w / w.sum(), dtype)


def _derivative(g: Callable) -> Callable:
    """g' elementwise, by forward-mode autodiff."""
    return lambda x: jax.jvp(g, (x,), (jnp.ones_like(x),))[1]


def _half_sq_diff_ratio(g, dg, mu, sq, c, d, x, y, w2):
    """½ E (g(u) - g(u'))² / (v δ) with u, u' = μ + √v (c x ± d y), δ = 2d², on the 2-D grid:
    directly where the arguments are apart, through g' on the segment where they are close."""
    near = sq * d < NEAR
    base, step = mu + sq * c * x, sq * d * y
    t, tw = np.polynomial.legendre.leggauss(LEGENDRE)
    mean_slope = sum(
        float(wk) / 2.0 * dg(base + float(tk) * step) for tk, wk in zip(t, tw, strict=True)
    )
    via_slope = jnp.sum(w2 * y * y * mean_slope**2, axis=(-2, -1))
    diff = g(base + step) - g(base - step)
    scale = jnp.where(near, 1.0, sq * d)
    direct = jnp.sum(w2 * (diff / (2.0 * scale)) ** 2, axis=(-2, -1))
    return jnp.where(near[..., 0, 0], via_slope, direct)


def _quadrature(f: Callable, log_v, log_delta, mu) -> Expectations:
    """By Gauss-Hermite quadrature, for u ~ N(μ, v) (each unit) and centred parts of
    correlation 1 - δ; the gap ratio is to the input's gap v·δ."""
    dtype = jnp.result_type(log_v, float)
    df = _derivative(f)
    ddf = _derivative(df)
    k = jnp.ndim(log_v)  # the nodes get the leading axes of the states (no rank promotion)
    sq = jnp.exp(0.5 * log_v)[..., None]
    x1, w1 = (v.reshape((1,) * k + v.shape) for v in _nodes(DEGREE_1D, dtype))
    u = mu[..., None] + sq * x1
    # f is read relative to the signal's scale s = √(v + μ²), so that E f² and Var f stay
    # representable where f² would underflow (a shrinking plain network) or overflow.
    log_s2 = jnp.logaddexp(log_v, jnp.log(mu * mu))
    scale = jnp.exp(0.5 * log_s2)[..., None]
    fu, dfu = f(u) / scale, df(u)
    e1, e2 = jnp.sum(w1 * fu, -1), jnp.sum(w1 * fu * fu, -1)
    a = jnp.sum(w1 * dfu * dfu, -1)
    x2, w2 = _nodes(DEGREE_2D, dtype)
    lead = (1,) * k
    xs, ys = x2.reshape(lead + (-1, 1)), x2.reshape(lead + (1, -1))
    w22 = w2.reshape(lead + (-1, 1)) * w2.reshape(lead + (1, -1))
    sq2, mu2 = sq[..., None], mu[..., None, None]
    delta = jnp.clip(jnp.exp(log_delta), 0.0, 2.0)[..., None, None]
    c, d = jnp.sqrt(1.0 - delta / 2.0), jnp.sqrt(delta / 2.0)
    ratio = _half_sq_diff_ratio(f, df, mu2, sq2, c, d, xs, ys, w22)
    half = jnp.full_like(delta, math.sqrt(0.5))
    var = _half_sq_diff_ratio(f, df, mu2, sq2, half, half, xs, ys, w22)  # Var f / v
    base, step = mu2 + sq2 * c * xs, sq2 * d * ys
    cross = jnp.sum(w22 * df(base + step) * df(base - step), (-2, -1))
    a_minus_d = _half_sq_diff_ratio(df, ddf, mu2, sq2, c, d, xs, ys, w22)  # / (v δ)
    t = jnp.where(e2 > 0, e1 / jnp.sqrt(jnp.where(e2 > 0, e2, 1.0)), 0.0)
    return Expectations(
        log_s2 + jnp.log(e2),
        t,
        log_v + jnp.log(var),
        jnp.log(ratio),
        jnp.log(a),
        jnp.log(cross),
        jnp.log(a_minus_d) + log_v + log_delta,
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
    if t is not None:
        t = jnp.broadcast_to(jnp.asarray(t, log_q.dtype), log_q.shape)
        log_v = log_q + jnp.log1p(-jnp.minimum(t * t, 1.0))
        mu = t * jnp.exp(0.5 * log_q)
        return _quadrature(activation_fn(activation, slope), log_v, log_delta, mu)
    s = leaky_slope(activation, slope)
    if s is not None:
        return _leaky(s, log_q, log_delta)
    if activation == "erf":
        return _erf(log_q, log_delta)
    if activation == "sin":
        return _sin(log_q, log_delta)
    return _quadrature(activation_fn(activation, slope), log_q, log_delta, jnp.zeros_like(log_q))
