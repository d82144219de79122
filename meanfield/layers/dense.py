"""Dense: u = a W with the weight an init rule assigns by position."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from meanfield.layers.base import Cotangent, Flags, Layer, Signal, State


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """u = a W with a fresh n x n weight per block; its variance and law come from the init
    rule, by the Dense's position in the block (0 = first)."""

    def finite(self, x: Signal, net: Any) -> Signal:
        return Signal(net.dense(x.x, x.centred), x.relative, x.centred)

    def mean_field(self, s: State, mf: Any) -> State:
        log_alpha = mf.next_log_alpha()
        mf.push((s, log_alpha))
        a = s.a + log_alpha
        # Centred Gaussian with kernel α(q, k): v = q, gap = α·gap.
        w = a - mf.log_w0 if s.relative else a
        # A fresh weight: in the mean field each unit is independent of everything before it.
        return State(
            a,
            jnp.zeros_like(s.t),
            w,
            s.r + log_alpha,
            s.relative,
            self.flags(s.flags),
            (None,) * len(s.cross),
        )

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        s, log_alpha = mf.pop()
        log_q, log_gap = mf.absolute(s)
        log_delta = jnp.minimum(mf.log_delta(s), 0.0)
        log_k = log_q + jnp.log1p(-jnp.exp(log_delta))  # k = q - gap: -inf when k = 0
        mf.record_weight(ct, log_gap, log_k)
        return ct.plus(log_alpha)

    def flags(self, f: Flags) -> Flags:
        return Flags(gaussian=True, centred=True, kzero=f.kzero, uniform=True)

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return net.conv(v)
