"""Normalization layers at finite width and in the mean field: BatchNorm (per unit over the
batch), LayerNorm and RMSNorm (per input over the units); a new norm goes here."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from meanfield.layers.base import Cotangent, Flags, Layer, Signal, State, neg_inf, times


@dataclasses.dataclass(frozen=True)
class BatchNorm(Layer):
    """(z - mean_b z) / std_b z per unit over the batch (biased variance, no ε, no affine); a
    unit constant over the batch maps to 0. In the mean field (population statistics) the
    output has q = 1, m = 0, k = 0, and the backward pass divides p by the unit variance of the
    input (the batch-mean terms of BN's backward are O(1/B); its batch sum is exactly 0)."""

    def finite(self, x: Signal, net: Any) -> Signal:
        z = x.x
        mean = jnp.mean(z, axis=0, keepdims=True)
        fixed = getattr(net, "fixed_batch_statistics", False)  # the Jacobian's convention
        centred = z - (jax.lax.stop_gradient(mean) if fixed else mean)
        var = jnp.mean(centred**2, axis=0, keepdims=True)
        if fixed:
            var = jax.lax.stop_gradient(var)
        positive = var > 0
        inv = jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, var, 1.0)), 0.0)
        return Signal(centred * inv, False, True)

    def mean_field(self, s: State, mf: Any) -> State:
        log_unitvar = mf.absolute(s)[1]  # what it divides by
        mf.push(log_unitvar)
        zero = jnp.zeros_like(s.a)
        out = State(zero, zero, zero, zero, False, self.flags(s.flags))
        return mf.standardize(s, out, log_unitvar)

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        log_unitvar = mf.pop()
        return Cotangent(times(ct.lpp, -log_unitvar), neg_inf(ct.lsp), neg_inf(ct.lss))

    def flags(self, f: Flags) -> Flags:
        if not f.uniform:
            raise ValueError(
                "BatchNorm() has no exact mean field here: the variance over inputs of its "
                "input differs between units (a nonlinear activation of correlated inputs "
                "before it, with no BatchNorm or Dense in between), so its backward pass is "
                "not a division by one unit variance"
            )
        return Flags(gaussian=f.gaussian, centred=True, kzero=True, uniform=True)

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return net.batch_norm(v)


def _per_input(z: jax.Array, centre: bool) -> jax.Array:
    """z normalized per input (row, or example of a conv map) over everything else: by its
    mean and variance (``centre``) or its root mean square; an all-equal row maps to 0."""
    axes = tuple(range(1, z.ndim))
    if centre:
        z = z - jnp.mean(z, axis=axes, keepdims=True)
    m2 = jnp.mean(z * z, axis=axes, keepdims=True)
    positive = m2 > 0
    return jnp.where(positive, z * jax.lax.rsqrt(jnp.where(positive, m2, 1.0)), 0.0)


def _absolute_log_v(s: State, mf: Any) -> jax.Array:
    """log of the variance over units v = q - m² of ``s``, in absolute terms."""
    return s.w + mf.log_q0 + mf.log_w0 if s.relative else s.w


@dataclasses.dataclass(frozen=True)
class LayerNorm(Layer):
    """(z - mean_j z) / std_j z per input over the units (biased variance, no ε, no affine).
    In the mean field the mean and variance over units of one input are those of the
    signal's law, m and v = q - m², for every input: LN(z) = (z - m)/√v exactly, so q = 1,
    m = 0, the kernel gap is divided by v, and so is the cotangent going back (the terms of
    LN's backward through its own statistics are O(1/n))."""

    def finite(self, x: Signal, net: Any) -> Signal:
        return Signal(_per_input(x.x, True), False, False)

    def mean_field(self, s: State, mf: Any) -> State:
        log_v = _absolute_log_v(s, mf)
        mf.push(log_v)
        zero = jnp.zeros_like(s.a)
        r = mf.absolute(s)[1] - log_v
        out = State(zero, zero, zero, r, False, self.flags(s.flags))
        return mf.rescale(s, out, 0.5 * log_v)

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        log_v = mf.pop()
        return Cotangent(*(times(x, -log_v) for x in ct))

    def flags(self, f: Flags) -> Flags:
        # k' = (k - m²)/v: distinct inputs stay uncorrelated only if they were and m = 0.
        return Flags(
            gaussian=f.gaussian, centred=True, kzero=f.kzero and f.centred, uniform=f.uniform
        )

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return _per_input(v, True)  # per example over space and channels


@dataclasses.dataclass(frozen=True)
class RMSNorm(Layer):
    """z / rms_j z per input over the units (no ε, no gain). In the mean field the mean square
    over units of one input is q for every input: RMS(z) = z/√q exactly, so q = 1, m/√q is
    kept, the variance and kernel gap are divided by q, and so is the cotangent going back."""

    def finite(self, x: Signal, net: Any) -> Signal:
        return Signal(_per_input(x.x, False), False, False)

    def mean_field(self, s: State, mf: Any) -> State:
        log_q, log_gap = mf.absolute(s)
        mf.push(log_q)
        zero = jnp.zeros_like(s.a)
        w = _absolute_log_v(s, mf) - log_q
        out = State(zero, s.t, w, log_gap - log_q, False, self.flags(s.flags))
        return mf.rescale(s, out, 0.5 * log_q)

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        log_q = mf.pop()
        return Cotangent(*(times(x, -log_q) for x in ct))

    def flags(self, f: Flags) -> Flags:
        return f

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return _per_input(v, False)
