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
    closed forms where they exist (for a centred input) and quadrature otherwise
    (:func:`meanfield.core.activations.expectations`). Positively homogeneous activations (the
    arc-cosine family) act on the signal as the engines carry it, relative to the block input's
    scale; the others are evaluated at the absolute scale. A function is checked when the layer
    is built: it must be traceable by JAX and elementwise (:func:`check_elementwise`)."""

    activation: Any = "relu"
    slope: float = 0.01

    def __post_init__(self):
        if not callable(self.activation) and self.activation not in arch.ACTIVATION_NAMES:
            raise ValueError(
                f"Activation.activation must be one of {arch.ACTIVATION_NAMES} or an "
                f"elementwise JAX function, got {self.activation!r}"
            )
        if callable(self.activation):
            check_elementwise(self.activation)
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
        log_e2 = jnp.where(zero, log_f0, ex.log_e2) - log_q_ref
        # The output's gap from its own second moment where the outputs are apart (E f(u)f(u')
        # <= E f²/2): the gap is then the second moment itself, exactly, wherever E f(u)f(u')
        # = 0 (an odd f of uncorrelated inputs); else from the input's gap, which keeps its
        # precision as the correlation goes to 1.
        apart = ex.log_decorrelation >= -math.log(2.0)
        own = log_e2 + ex.log_decorrelation - (mf.log_r0 if s.relative else 0.0)
        log_gap = jnp.where(apart, own, s.r + ex.log_gap_ratio)
        out = State(
            log_e2,
            jnp.where(zero, math.copysign(1.0, f0) if f0 else 0.0, ex.t),
            jnp.where(zero, -jnp.inf, ex.log_var) - log_q_ref - log_w_ref,
            jnp.where(zero, s.r, log_gap),
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


# A probe of distinct values, not in order, on both sides of 0 and past the saturation of the
# usual activations.
_PROBE = np.array([-2.3, 0.7, -0.05, 1.9, 0.3, -1.1, 2.8, -0.6, 0.0, -3.4, 1.3, 0.15]).reshape(3, 4)


def check_elementwise(fn) -> None:
    """Raise ValueError unless ``fn`` is an elementwise JAX function: traced (forward-mode
    autodiff) on a 3 x 4 probe of distinct values, it must return real floats of the probe's
    shape, each what it gives for that element alone (a vmap over the scalars) and its Jacobian
    diagonal. NaN or inf values are allowed (the engines propagate them as NaN, flagged). Run
    outside every trace (the layer may be built inside one) and cached per function."""
    reason = _not_elementwise(fn)
    if reason is not None:
        raise ValueError(
            f"Activation.activation must be one of {arch.ACTIVATION_NAMES} or an elementwise "
            f"JAX function of an array (jnp.tanh, not np.tanh or math.tanh), got {fn!r}, which "
            f"{reason}"
        )


@functools.lru_cache(maxsize=256)
def _not_elementwise(fn) -> str | None:
    """Why ``fn`` is not an elementwise JAX function (see :func:`check_elementwise`), or None."""
    with jax.core.eval_context():
        x = jnp.asarray(_PROBE, jnp.result_type(float))
        ones = jnp.ones_like(x)
        try:
            value, slope = jax.jvp(fn, (x,), (ones,))
        except Exception as error:  # noqa: BLE001 - any failure to trace is the answer
            return f"JAX cannot trace ({_first_line(error)})"
        shape, dtype = jnp.shape(value), jnp.result_type(value)
        if shape != x.shape:
            return f"maps an array of shape {x.shape} to one of shape {shape}"
        if not jnp.issubdtype(dtype, jnp.floating):
            return f"returns {dtype} values, not real floats"
        try:
            alone = jax.vmap(lambda v: jax.jvp(fn, (v,), (jnp.ones_like(v),)))(x.ravel())
        except Exception as error:  # noqa: BLE001
            return f"fails on one element alone ({_first_line(error)})"
        if jnp.shape(alone[0]) != (x.size,):
            return f"maps one element to shape {jnp.shape(alone[0])[1:]}"
        eps = 64 * float(jnp.finfo(dtype).eps)
        for got, own in zip((value, slope), alone, strict=True):
            got, own = np.asarray(got).ravel(), np.asarray(own)
            scale = np.nanmax(np.abs(np.where(np.isfinite(got), got, 0.0)), initial=1.0)
            if not np.allclose(got, own, rtol=eps, atol=eps * scale, equal_nan=True):
                return "gives an element a different value next to other elements than on its own"
        jac = np.asarray(jax.jacfwd(fn)(x)).reshape(x.size, x.size)
        off = jac[~np.eye(x.size, dtype=bool)]
        if np.any((off != 0) & ~np.isnan(off)):
            return "makes an element depend on the others (its Jacobian is not diagonal)"
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
