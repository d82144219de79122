"""Activation: f elementwise, with its Gaussian expectations (a new activation goes here)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from meanfield.core import architecture as arch
from meanfield.core.gaussian import activation_moments, relu_kernel_gap_ratio
from meanfield.layers.base import Cotangent, Flags, Layer, Signal, State, times


@dataclasses.dataclass(frozen=True)
class Activation(Layer):
    """f applied elementwise. The mean field needs a centred Gaussian input (a Dense output,
    or a BatchNorm of a Gaussian signal); its expectations are closed forms
    (:mod:`meanfield.core.gaussian`: the arc-cosine kernels of ReLU)."""

    activation: str = "relu"

    def __post_init__(self):
        if self.activation not in arch.ACTIVATIONS:
            raise ValueError(
                f"Activation.activation must be one of {arch.ACTIVATIONS}, got {self.activation!r}"
            )

    @property
    def name(self) -> str:
        return self.activation

    @property
    def identity(self) -> bool:
        return self.activation == "identity"

    def finite(self, x: Signal, net: Any) -> Signal:
        if self.identity:
            return x
        return Signal(jax.nn.relu(x.x), x.relative, False)

    def mean_field(self, s: State, mf: Any) -> State:
        flags = self.flags(s.flags)
        if self.identity:
            return State(s.a, s.t, s.w, s.r, s.relative, flags)
        zero = jnp.isneginf(s.a)  # an identically zero input (a zero weight before it)
        log_delta = jnp.where(zero, 0.0, mf.log_delta(s))
        mf.push((zero, log_delta))
        fm = activation_moments(self.activation)
        ratio = relu_kernel_gap_ratio(1.0, jnp.exp(log_delta))  # gap out / gap in
        log_w_ref = mf.log_w0 if s.relative else 0.0
        return State(
            s.a + math.log(fm.e2),
            jnp.full_like(s.t, fm.e1 / math.sqrt(fm.e2)),
            s.a + math.log(fm.b) - log_w_ref,
            s.r + jnp.log(ratio),
            s.relative,
            flags,
        )

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        if self.identity:
            return ct
        zero, log_delta = mf.pop()
        # E f'(u)² = 1/2; E f'(u_a) f'(u_b) = (π - θ)/2π for inputs of correlation cos θ, so
        # a - d = θ/2π. relu'(0) = 0 (JAX's and PyTorch's convention): nothing flows back
        # through an identically zero input.
        theta = 2.0 * jnp.arcsin(jnp.sqrt(jnp.clip(jnp.exp(log_delta), 0.0, 2.0) / 2.0))
        log_a = jnp.where(zero, -jnp.inf, math.log(0.5))
        log_d = jnp.where(zero, -jnp.inf, jnp.log((jnp.pi - theta) / (2.0 * jnp.pi)))
        log_a_minus_d = jnp.where(zero, -jnp.inf, jnp.log(theta / (2.0 * jnp.pi)))
        lsp = jnp.logaddexp(times(ct.lpp, log_a_minus_d), times(ct.lsp, log_d))
        return Cotangent(times(ct.lpp, log_a), lsp, times(ct.lss, log_d))

    def flags(self, f: Flags) -> Flags:
        if self.identity:
            return f
        if not (f.gaussian and f.centred):
            raise ValueError(
                f"Activation({self.activation!r}) has no exact mean field here: its input must "
                "be a centred Gaussian signal (the output of a Dense, or a BatchNorm of a "
                f"Gaussian signal), got a signal with {f}"
            )
        # Units differ in their variance over inputs unless distinct inputs are uncorrelated.
        return Flags(gaussian=False, centred=False, kzero=False, uniform=f.kzero)

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return v if self.identity else jax.nn.relu(net.pre_activation(v))
