"""Activation: f elementwise, with its Gaussian expectations (a new activation goes in
:mod:`meanfield.core.activations`)."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from meanfield.core import activations as acts
from meanfield.core import architecture as arch
from meanfield.layers.base import Cotangent, Flags, Layer, Signal, State, times


@dataclasses.dataclass(frozen=True)
class Activation(Layer):
    """f applied elementwise: a name of :data:`meanfield.core.activations.ACTIVATION_FUNCTIONS`
    (``slope`` is leaky_relu's), or any elementwise JAX function. The mean field needs a
    Gaussian input (a Dense output, or a norm of a Gaussian signal); its expectations are
    closed forms where they exist (for a centred input) and Gauss-Hermite quadrature otherwise
    (:func:`meanfield.core.activations.expectations`). Positively homogeneous activations (the
    arc-cosine family) act on the signal as the engines carry it, relative to the block input's
    scale; the others are evaluated at the absolute scale."""

    activation: Any = "relu"
    slope: float = 0.01

    def __post_init__(self):
        if not callable(self.activation) and self.activation not in arch.ACTIVATION_NAMES:
            raise ValueError(
                f"Activation.activation must be one of {arch.ACTIVATION_NAMES} or an "
                f"elementwise JAX function, got {self.activation!r}"
            )
        arch.check_all("slope", self.slope, np.isfinite, "a finite number", integer=False)
        object.__setattr__(self, "slope", float(self.slope))
        _at_zero(self.activation, self.slope)  # now, outside any trace (cached)

    @property
    def name(self) -> str:
        if callable(self.activation):
            return getattr(self.activation, "__name__", "f")
        if self.activation == "leaky_relu" and self.slope != 0.01:
            return f"leaky_relu:{self.slope!r}"
        return self.activation

    @property
    def identity(self) -> bool:
        return self.activation == "identity"

    @property
    def homogeneous(self) -> bool:
        return acts.is_homogeneous(self.activation, self.slope)

    @property
    def fn(self):
        return acts.activation_fn(self.activation, self.slope)

    def _at_zero(self) -> tuple[float, float]:
        """(f(0), f'(0)) by JAX's convention (relu'(0) = 0): an identically zero input."""
        return _at_zero(self.activation, self.slope)

    def finite(self, x: Signal, net: Any) -> Signal:
        if self.identity:
            return x
        if self.homogeneous or not x.relative:
            return Signal(self.fn(x.x), x.relative, False)
        scale = jnp.exp(net.log_s)  # the block input's scale: f acts on the signal itself
        return Signal(self.fn(x.x * scale) / scale, x.relative, False)

    def mean_field(self, s: State, mf: Any) -> State:
        flags = self.flags(s.flags)
        if self.identity:
            return State(s.a, s.t, s.w, s.r, s.relative, flags, s.cross)
        zero = jnp.isneginf(s.a)  # an identically zero input (a zero weight before it)
        log_delta = jnp.where(zero, 0.0, mf.log_delta(s))
        # Homogeneous: every log scales with q, so the relative log q serves; else absolute.
        log_q = s.a if self.homogeneous else mf.absolute(s)[0]
        if s.flags.centred:
            ex = acts.expectations(
                self.activation, jnp.where(zero, 0.0, log_q), log_delta, self.slope
            )
        else:  # a Gaussian of mean m = t√q in every unit (an RMSNorm of a signal with a mean)
            log_delta = log_delta - jnp.log1p(-jnp.minimum(s.t * s.t, 1.0))  # of the centred parts
            ex = acts.expectations(
                self.activation, jnp.where(zero, 0.0, log_q), log_delta, self.slope, t=s.t
            )
        f0, df0 = self._at_zero()
        log_f0 = math.log(f0 * f0) if f0 else -math.inf
        log_df0 = math.log(df0 * df0) if df0 else -math.inf
        mf.push((zero, ex, log_df0))
        log_q_ref = 0.0 if self.homogeneous or not s.relative else mf.log_q0
        log_w_ref = mf.log_w0 if s.relative else 0.0
        out = State(
            jnp.where(zero, log_f0, ex.log_e2) - log_q_ref,
            jnp.where(zero, math.copysign(1.0, f0) if f0 else 0.0, ex.t),
            jnp.where(zero, -jnp.inf, ex.log_var) - log_q_ref - log_w_ref,
            s.r + jnp.where(zero, 0.0, ex.log_gap_ratio),
            s.relative,
            flags,
        )
        return mf.through_activation(self, s, out)  # its cross terms, by Stein's lemma

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        if self.identity:
            return ct
        zero, ex, log_df0 = mf.pop()
        # p_in = p·E f'², S_in = (a - d)·p + d·S with a = E f'(u)², d = E f'(u) f'(u') over
        # distinct inputs; an identically zero input passes f'(0)² (relu'(0) = 0: nothing).
        log_a = jnp.where(zero, log_df0, ex.log_a)
        log_d = jnp.where(zero, log_df0, ex.log_d)
        log_a_minus_d = jnp.where(zero, -jnp.inf, ex.log_a_minus_d)
        lsp = jnp.logaddexp(times(ct.lpp, log_a_minus_d), times(ct.lsp, log_d))
        return Cotangent(times(ct.lpp, log_a), lsp, times(ct.lss, log_d))

    def flags(self, f: Flags) -> Flags:
        if self.identity:
            return f
        if not f.gaussian:
            raise ValueError(
                f"Activation({self.name!r}) has no exact mean field here: its input must "
                "be a Gaussian signal (the output of a Dense, or a norm of a Gaussian "
                f"signal), got a signal with {f}"
            )
        if not f.centred and self.homogeneous:
            raise ValueError(
                f"Activation({self.name!r}) has no exact mean field here: its input may have "
                "a mean (inputs with input_mean, through an RMSNorm or the residual stream), "
                "and for this kinked activation only the centred Gaussian has closed forms "
                f"(quadrature of its kink would be off by percent); got a signal with {f}"
            )
        # Units differ in their variance over inputs unless distinct inputs are uncorrelated.
        return Flags(gaussian=False, centred=False, kzero=False, uniform=f.kzero)

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return v if self.identity else self.fn(net.pre_activation(v))


@functools.lru_cache(maxsize=256)
def _at_zero(activation, slope: float) -> tuple[float, float]:
    """(f(0), f'(0)) as Python floats, computed eagerly once per activation (a tree is built
    outside the engines' traces, where these must already be constants)."""
    # Outside every trace, even when the layer is built inside one (a solver that builds its
    # tree under vmap or jvp): ensure_compile_time_eval does not leave a vmap.
    with jax.core.eval_context():
        value, derivative = jax.jvp(
            acts.activation_fn(activation, slope), (jnp.zeros(()),), (jnp.ones(()),)
        )
        return float(value), float(derivative)
