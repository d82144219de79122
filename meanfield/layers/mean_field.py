"""The recursion's side of the language: the context (``mf``) that each layer's
``mean_field`` and ``backward`` read and write while :mod:`meanfield.recursions` interprets a
block, and the block-level forward step and backward map built from them."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from meanfield.core import activations as acts
from meanfield.layers.base import (
    Cotangent,
    Cross,
    Layer,
    Signed,
    State,
    log_of,
    merge_correlated,
    signed_sum,
)
from meanfield.layers.combinators import Residual

__all__ = [
    "MeanField",
    "block_backward",
    "block_forward",
    "forward_step",
    "log_var_dw",
    "mean_slope",
]


class MeanField:
    """What a block's layers read and write while the recursion interprets its tree
    (:mod:`meanfield.layers`): the block input's state in absolute logs (``log_q0``, ``log_w0``
    = log(v0/q0), ``log_r0`` = log(u0/q0)), log α of each Dense in order, log β, the records a
    layer's forward map keeps for its backward rule, and the weight-gradient terms."""

    def __init__(self, log_q0, log_w0, log_r0, log_alphas, log_scale):
        self.log_q0, self.log_w0, self.log_r0 = log_q0, log_w0, log_r0
        self.log_alphas, self.log_scale = log_alphas, log_scale
        self.dense = 0
        self.stack: list = []
        self.weights: list = []

    def next_log_alpha(self):
        log_alpha = self.log_alphas[self.dense]
        self.dense += 1
        return log_alpha

    def push(self, record) -> None:
        self.stack.append(record)

    def pop(self):
        return self.stack.pop()

    def absolute(self, s: State):
        """(log q, log gap) of ``s`` in absolute terms."""
        if not s.relative:
            return s.a, s.r
        return s.a + self.log_q0, s.r + self.log_q0 + self.log_r0

    def log_delta(self, s: State):
        """log(gap / q) = log(1 - ρ) of ``s``, from O(1) terms where it is relative."""
        return s.r + self.log_r0 - s.a if s.relative else s.r - s.a

    def to_relative(self, s: State) -> State:
        return dataclasses.replace(
            s,
            a=s.a - self.log_q0,
            w=s.w - self.log_q0 - self.log_w0,
            r=s.r - self.log_q0 - self.log_r0,
            relative=True,
        )

    def record_weight(self, ct: Cotangent, log_gap, log_k) -> None:
        self.weights.append((ct, log_gap, log_k))

    # The cross terms between a signal and the skip inputs of the residuals around it
    # (:class:`~meanfield.layers.base.Cross`, docs/theory.md §10).

    def log_vq(self, s: State):
        """log(v/q) of ``s`` in absolute terms."""
        return s.w - s.a + (self.log_w0 if s.relative else 0.0)

    def open(self, s: State) -> State:
        """``s`` as the input of its residual's branch: a new reference, s itself."""
        one = jnp.ones_like(s.a)
        log_uv = s.r - s.w + (self.log_r0 - self.log_w0 if s.relative else 0.0)
        unit = Signed(jnp.zeros_like(s.a), one)
        return dataclasses.replace(s, cross=(*s.cross, Cross(one, one, log_uv, unit, unit)))

    def rescale(self, s: State, out: State, log_scale) -> State:
        """``out`` = s / e^log_scale (absolute; a per-input norm): correlations kept."""
        return dataclasses.replace(out, cross=_each(s.cross, lambda e: e.times(-log_scale)))

    def standardize(self, s: State, out: State, log_unitvar) -> State:
        """``out`` = BatchNorm(s) = (s - μ_j)/σ, σ² = e^log_unitvar the (uniform) unit variance:
        the part common to the inputs goes, so the covariance with a reference R is the
        within-unit one over σ, and since out has v = u = 1, rho_v = rho_u √(u_R/v_R); its
        backward pass has zero batch sum, so no path through it reaches S."""

        def one(e: Cross) -> Cross:
            return e._replace(
                rho_v=e.rho_u * jnp.exp(0.5 * e.log_uv),
                gain=e.gain.times(-0.5 * log_unitvar),
                gain_s=Signed(jnp.full_like(e.gain_s.log, -jnp.inf), e.gain_s.sign),
            )

        return dataclasses.replace(out, cross=_each(s.cross, one))

    def through_activation(self, layer: Layer, s: State, out: State) -> State:
        """``out`` = f(s) elementwise. s is Gaussian (the activation's mean field needs it), and
        so is every reference it is correlated with (only Dense outputs, a Gaussian input and
        linear maps of them are), so by Stein's lemma E[R f(y)] = m_R E f(y) + Cov(R, y)
        E f'(y), for one input and across two: both covariances scale by E f'(y)."""
        if all(e is None for e in s.cross):
            return dataclasses.replace(out, cross=s.cross)
        slope = mean_slope(layer, s, self)
        log_slope, sign = jnp.log(jnp.abs(slope)), jnp.where(slope < 0, -1.0, 1.0)
        ratio_v = _ratio(s.w, out.w) * slope
        ratio_u = _ratio(s.r, out.r) * slope

        def one(e: Cross) -> Cross:
            return Cross(
                e.rho_v * ratio_v,
                e.rho_u * ratio_u,
                e.log_uv,
                e.gain.times(log_slope, sign),
                e.gain_s.times(log_slope, sign),
            )

        return dataclasses.replace(out, cross=_each(s.cross, one))

    def merge(self, s: State, h: State, own: Cross, flags) -> State:
        """The state of s + h (same form) for a branch output h with the entry ``own`` for s:
        E[s h] = m_s m_h + rho_v √(v_s v_h), and the within-unit covariance rho_u √(u_s u_h)."""
        c_q = s.t * h.t + own.rho_v * jnp.exp(0.5 * (self.log_vq(s) + self.log_vq(h)))
        return merge_correlated(s, h, c_q, own.rho_v, own.rho_u, flags)

    def combine(self, s: State, h: State, out: State) -> State:
        """``out`` = s + h with the cross terms to the outer references: covariances add, and so
        do the mean derivatives."""
        entries = []
        for es, eh in zip(s.cross, h.cross, strict=False):
            present = [(e, x) for e, x in ((es, s), (eh, h)) if e is not None]
            if not present:
                entries.append(None)
                continue
            rho_v = sum(e.rho_v * _ratio(x.w, out.w) for e, x in present)
            rho_u = sum(e.rho_u * _ratio(x.r, out.r) for e, x in present)
            gain = signed_sum([e.gain for e, _ in present])
            gain_s = signed_sum([e.gain_s for e, _ in present])
            entries.append(Cross(rho_v, rho_u, present[0][0].log_uv, gain, gain_s))
        return dataclasses.replace(out, cross=tuple(entries))

    def add_cotangents(self, ct: Cotangent, inner: Cotangent, own: Cross) -> Cotangent:
        """The residual's backward sum: dE/ds = δ + J^T δ with J's mean E[D] = ``own.gain``
        along the paths without a Dense (whose factors are independent of δ), so p_s =
        p(1 + 2 gain) + p_branch, and S_s = S(1 + 2 gain_s) + S_branch."""
        one = Signed(jnp.zeros_like(own.gain.log), jnp.ones_like(own.gain.sign))
        factor_p = signed_sum([one, own.gain.times(math.log(2.0))])
        factor_s = signed_sum([one, own.gain_s.times(math.log(2.0))])

        def add(x, y, factor):
            return log_of(
                signed_sum([Signed(x, 1.0).times(factor.log, factor.sign), Signed(y, 1.0)])
            )

        return Cotangent(
            add(ct.lpp, inner.lpp, factor_p),
            add(ct.lsp, inner.lsp, factor_s),
            add(ct.lss, inner.lss, factor_s),
        )


def _each(cross: tuple, fn) -> tuple:
    return tuple(None if e is None else fn(e) for e in cross)


def _ratio(log_x, log_out):
    """√(x/out) from two logs of one form, 0 where out = 0 (then so is x)."""
    return jnp.where(jnp.isneginf(log_out), 0.0, jnp.exp(0.5 * (log_x - log_out)))


def mean_slope(layer: Layer, s: State, mf: MeanField) -> jax.Array:
    """E f'(y) for the Gaussian input y ~ N(m, v) of the activation ``layer`` with state ``s``:
    (1 + s)/2 for the centred arc-cosine family s·u + (1 - s)·relu(u), closed forms for erf
    and sin, f'(0) for an identically zero input, and otherwise E[(y - m) f(y)]/v (Stein's
    lemma once more) by Gauss-Hermite quadrature: f is smooth on the scale √v where f' is a
    spike (tanh' at v = 1000: 0.4% off, against 99% for the quadrature of f' itself)."""
    zero = jnp.isneginf(s.a)
    dtype = s.a.dtype
    at_zero = jax.jvp(layer.fn, (jnp.zeros((), dtype),), (jnp.ones((), dtype),))[1]
    leaky = acts.leaky_slope(layer.activation, layer.slope)
    if leaky is not None:  # centred: a kinked activation of a mean is refused by its flags
        return jnp.where(zero, at_zero, 0.5 * (1.0 + leaky))
    log_q = jnp.where(zero, 0.0, mf.absolute(s)[0])
    m = s.t * jnp.exp(0.5 * log_q)
    v = jnp.exp(log_q) * (1.0 - jnp.minimum(s.t * s.t, 1.0))
    if layer.activation == "erf":  # (2/√π) E e^{-y²}
        slope = jnp.exp(-m * m / (1.0 + 2.0 * v)) / jnp.sqrt(0.25 * math.pi * (1.0 + 2.0 * v))
    elif layer.activation == "sin":
        slope = jnp.cos(m) * jnp.exp(-0.5 * v)
    else:
        x, w = np.polynomial.hermite_e.hermegauss(acts.DEGREE_1D)
        lead = (1,) * jnp.ndim(m)  # the nodes get the states' leading axes
        x, w = (jnp.asarray(a, dtype).reshape(lead + a.shape) for a in (x, w / w.sum()))
        sd = jnp.sqrt(jnp.where(v > 0, v, 1.0))[..., None]
        slope = jnp.sum(w * x * layer.fn(m[..., None] + sd * x) / sd, axis=-1)
        at_mean = jax.jvp(layer.fn, (m,), (jnp.ones_like(m),))[1]
        slope = jnp.where(v > 0, slope, at_mean)
    return jnp.where(zero, at_zero, slope)


def block_forward(tree: Layer, flags, mf: MeanField, t) -> State:
    """The block's output state, relative to its input, whose mean is t·√q0."""
    zero = jnp.zeros_like(t)
    out = tree.mean_field(State(zero, t, zero, zero, True, flags), mf)
    if not isinstance(tree, Residual):  # plain: the block is the branch, times β
        two_log_beta = 2.0 * mf.log_scale
        out = dataclasses.replace(
            out, a=out.a + two_log_beta, w=out.w + two_log_beta, r=out.r + two_log_beta
        )
    return out if out.relative else mf.to_relative(out)


def forward_step(tree: Layer, flags, log_alphas: tuple, log_scale, state):
    """One block of the mean-field map on the state (t = m/√q, log(v/q), log(u/q), log q),
    v = q - m² the pooled variance.

    Returns the new t and the increments of the three logs (the caller sums them with
    compensation). Each increment is formed from O(1) terms (the block's states are carried
    relative to its input, :class:`meanfield.State`), so that none is a difference of
    the large logs themselves (v/q = 1 - t² is ~1e-4 at depth 10,000 of relu-bn_post, which
    1 - t² in float32 would get 17% wrong).
    """
    t, log_w, log_r, logq = state
    out = block_forward(tree, flags, MeanField(logq, log_w, log_r, log_alphas, log_scale), t)
    return out.t, out.w - out.a, out.r - out.a, out.a


def logsumexp(terms: list) -> jax.Array:
    """log Σ exp(terms), -inf (not NaN) where every term is -inf."""
    stacked = jnp.stack(jnp.broadcast_arrays(*terms))
    top = jnp.max(stacked, axis=0, keepdims=True)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    return jnp.log(jnp.sum(jnp.exp(stacked - safe), axis=0)) + safe[0]


def block_backward(tree: Layer, flags, log_alphas, log_scale, state):
    """The backward map of blocks whose inputs have ``state``: the :class:`~meanfield.layers.
    Cotangent` from the block output to its input (skip included), and per Dense (cotangent
    at its output, log gap and log k of its input), from which the weight gradient is
    p·gap + S·k (docs/theory.md §2)."""
    t, log_w, log_r, logq = state
    mf = MeanField(logq, log_w, log_r, log_alphas, log_scale)
    block_forward(tree, flags, mf, t)
    zero = jnp.zeros_like(logq)
    ct = Cotangent(zero, jnp.full_like(zero, -jnp.inf), zero)
    if not isinstance(tree, Residual):
        ct = ct.plus(2.0 * log_scale)
    return tree.backward(ct, mf), mf.weights


def log_var_dw(weights: list, logp, logs):
    """log of the weight gradient E (dE/dW_ji)² / B, averaged over the block's Dense layers,
    from the output cotangent's log p and log S."""
    terms = []
    for ct, log_gap, log_k in weights:
        log_p = ct.lpp + logp
        log_s = jnp.logaddexp(ct.lsp + logp, ct.lss + logs)
        terms.append(jnp.logaddexp(log_p + log_gap, log_s + log_k))
    return logsumexp(terms) - math.log(len(terms))
