"""What every layer kind shares: the static flags of the mean field, the finite-width
signal, the mean-field state (with its cross terms to the skips of the enclosing residuals)
and cotangent, the base class, and the sum of two states (docs/design.md, "The network
language")."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Flags(NamedTuple):
    """What the mean field knows about a signal (static, per position in the tree).

    ``gaussian``: each unit is Gaussian over the network's weights, jointly over inputs (a Dense
    output, or a sum of such and the Gaussian input); ``centred``: zero mean; ``kzero``: distinct
    inputs uncorrelated (k = 0, a BatchNorm output); ``uniform``: every unit has the same
    variance over inputs (what BatchNorm's backward rule divides by)."""

    gaussian: bool
    centred: bool
    kzero: bool
    uniform: bool


# The network input x: Gaussian, one law for every unit; mean and cross moments as given.
INPUT_FLAGS = Flags(gaussian=True, centred=False, kzero=False, uniform=True)
# The same input known to have zero mean (the default x ~ N(0, I)).
CENTRED_INPUT_FLAGS = INPUT_FLAGS._replace(centred=True)


def meet(f: Flags, g: Flags) -> Flags:
    return Flags(*(a and b for a, b in zip(f, g, strict=True)))


@dataclasses.dataclass(frozen=True)
class Signal:
    """One network's signal at a point of the block: ``x`` (batch x width) is the signal itself
    when ``relative`` is False, else the signal divided by the block input's scale s (carried
    by the engine as log s). ``centred``: the rows sum to zero over the batch (structural rank
    of the weight-free engine)."""

    x: jax.Array
    relative: bool
    centred: bool


class Signed(NamedTuple):
    """A real number x as log|x| and its sign (±1): a mean derivative, which may be negative,
    as a product of factors whose sizes range over the float exponents (1/σ of a deep
    network's BatchNorm)."""

    log: jax.Array
    sign: jax.Array

    def times(self, log_factor: jax.Array, sign: jax.Array | float = 1.0) -> Signed:
        return Signed(times(self.log, log_factor), self.sign * sign)


def signed_sum(terms: list) -> Signed:
    """Σ x_i of :class:`Signed` terms, formed relative to the largest |x_i|."""
    logs = jnp.stack(jnp.broadcast_arrays(*(x.log for x in terms)))
    signs = jnp.stack(jnp.broadcast_arrays(*(x.sign for x in terms)))
    top = jnp.max(logs, axis=0, keepdims=True)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    total = jnp.sum(signs * jnp.exp(logs - safe), axis=0)
    sign = jnp.where(total < 0, -1.0, 1.0)
    return Signed(jnp.log(jnp.abs(total)) + safe[0], sign)


def log_of(x: Signed) -> jax.Array:
    """log x of a number known to be >= 0 (NaN if it is not)."""
    return jnp.where(x.sign < 0, jnp.nan, x.log)


class Cross(NamedTuple):
    """How a signal y of a residual's branch is related to the residual's skip input R (the
    reference; docs/theory.md §10): the correlations of their parts centred over the network
    (``rho_v`` = (E[R y] - m_R m_y)/√(v_R v_y)) and over the inputs of one unit (``rho_u``,
    the within-unit covariance over √(u_R u_y)); ``log_uv`` = log(u_R/v_R) of the reference;
    and the mean derivative E[∂y/∂R] along the paths from R to y that pass no Dense, absolute
    (``gain``), and along those that pass no BatchNorm either (``gain_s``, what the batch-sum
    moment S of the cotangent sees). A Dense output is independent of R in the mean field: its
    entry is None."""

    rho_v: jax.Array
    rho_u: jax.Array
    log_uv: jax.Array
    gain: Signed
    gain_s: Signed

    def times(self, log_factor: jax.Array) -> Cross:
        """The entry of y·e^log_factor (a positive factor): the same correlations."""
        return self._replace(gain=self.gain.times(log_factor), gain_s=self.gain_s.times(log_factor))


@dataclasses.dataclass(frozen=True)
class State:
    """Mean-field state of a signal: ``a`` = log q, ``t`` = m / √q, ``w`` = log v, ``r`` = log of
    the kernel gap q - k (the unit variance over inputs), relative to the block input's q0, v0
    and u0 when ``relative`` (so O(1) within a block, however large the input), else absolute
    (after a BatchNorm). ``cross`` holds one :class:`Cross` (or None where the signal is
    independent of it) per enclosing residual's skip input, the innermost last."""

    a: jax.Array
    t: jax.Array
    w: jax.Array
    r: jax.Array
    relative: bool
    flags: Flags
    cross: tuple = ()


class Cotangent(NamedTuple):
    """The backward map from the block output to a point of the block, in logs: the second
    moment p of dE/d(signal) there is e^lpp · p_out, its batch-sum moment S = (1/B) Σ_{b,b'}
    E dE_b dE_b' is e^lsp · p_out + e^lss · S_out (both linear in the output's (p, S))."""

    lpp: jax.Array
    lsp: jax.Array
    lss: jax.Array

    def plus(self, c: jax.Array) -> Cotangent:
        return Cotangent(*(times(x, c) for x in self))


def times(log_x: jax.Array, log_factor: jax.Array) -> jax.Array:
    """log(x · factor), -inf where x = 0 (a zero cotangent stays zero through 0/0)."""
    return jnp.where(jnp.isneginf(log_x), -jnp.inf, log_x + log_factor)


def neg_inf(x: jax.Array) -> jax.Array:
    return jnp.full_like(x, -jnp.inf)


class Layer:
    """A layer kind. Subclasses are frozen dataclasses (hashable: trees are static arguments of
    the compiled engines) and define ``finite``, ``mean_field``, ``backward`` and ``flags``."""

    def children(self) -> tuple[Layer, ...]:
        return ()

    @property
    def name(self) -> str:
        return type(self).__name__


def merge(s: State, h: State, flags: Flags) -> State:
    """The state of s + h for independent s and h given in the same form: each increment is
    formed from O(1) terms, q_out/q_s = 1 + q_h/q_s + 2 t_s t_h √(q_h/q_s) and
    log v_out = log v_s + softplus(log v_h - log v_s) (likewise the gap). The cross terms of
    the sum are the caller's (:meth:`meanfield.layers.mean_field.MeanField.combine`)."""
    ratio = h.a - s.a
    sqrt_ratio = jnp.exp(0.5 * ratio)
    log_growth = jnp.log1p(jnp.exp(ratio) + 2.0 * sqrt_ratio * h.t * s.t)
    t = (s.t + sqrt_ratio * h.t) * jnp.exp(-0.5 * log_growth)
    w = s.w + softplus(h.w - s.w)
    r = s.r + softplus(h.r - s.r)
    return State(s.a + log_growth, t, w, r, s.relative, flags)


def merge_correlated(s: State, h: State, c_q, rho_v, rho_u, flags: Flags) -> State:
    """The state of s + h given in the same form, for h correlated with s: ``c_q`` =
    E[s h]/√(q_s q_h) and the correlations ``rho_v``, ``rho_u`` of their centred parts, so
    that q_out/q_s = 1 + 2 c_q √(q_h/q_s) + q_h/q_s, and likewise v and the gap."""
    log_growth = log_grow(h.a - s.a, c_q)
    t = (s.t + jnp.exp(0.5 * (h.a - s.a)) * h.t) * jnp.exp(-0.5 * log_growth)
    w = s.w + log_grow(h.w - s.w, rho_v)
    r = s.r + log_grow(h.r - s.r, rho_u)
    return State(s.a + log_growth, t, w, r, s.relative, flags)


def log_grow(d: jax.Array, c: jax.Array) -> jax.Array:
    """log(1 + 2c·e^{d/2} + e^d) = log(|s + h|²/|s|²) for |h|²/|s|² = e^d and correlation c,
    through log1p of terms <= 1 in size on either side of d = 0 (0 at d = -inf)."""
    x = -jnp.abs(d)  # the same sum over |h|² when h is the larger
    inner = jnp.log1p(2.0 * c * jnp.exp(0.5 * x) + jnp.exp(x))
    return jnp.where(d > 0, d + inner, inner)


def softplus(x: jax.Array) -> jax.Array:
    """log(1 + e^x), 0 at x = -inf."""
    return jnp.logaddexp(0.0, x)
