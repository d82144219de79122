"""Normalization layers: BatchNorm at finite batch and in the mean field (a new norm goes here)."""

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
        mf.push(mf.absolute(s)[1])  # log of the unit variance it divides by
        zero = jnp.zeros_like(s.a)
        return State(zero, zero, zero, zero, False, self.flags(s.flags))

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
