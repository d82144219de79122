"""What every layer kind shares: the static flags of the mean field, the finite-width
signal, the mean-field state and cotangent, the base class, and the sum of independent
states (docs/design.md, "The network language")."""

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


@dataclasses.dataclass(frozen=True)
class State:
    """Mean-field state of a signal: ``a`` = log q, ``t`` = m / √q, ``w`` = log v, ``r`` = log of
    the kernel gap q - k (the unit variance over inputs), relative to the block input's q0, v0
    and u0 when ``relative`` (so O(1) within a block, however large the input), else absolute
    (after a BatchNorm)."""

    a: jax.Array
    t: jax.Array
    w: jax.Array
    r: jax.Array
    relative: bool
    flags: Flags


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
    log v_out = log v_s + softplus(log v_h - log v_s) (likewise the gap)."""
    ratio = h.a - s.a
    sqrt_ratio = jnp.exp(0.5 * ratio)
    log_growth = jnp.log1p(jnp.exp(ratio) + 2.0 * sqrt_ratio * h.t * s.t)
    t = (s.t + sqrt_ratio * h.t) * jnp.exp(-0.5 * log_growth)
    w = s.w + softplus(h.w - s.w)
    r = s.r + softplus(h.r - s.r)
    return State(s.a + log_growth, t, w, r, s.relative, flags)


def softplus(x: jax.Array) -> jax.Array:
    """log(1 + e^x), 0 at x = -inf."""
    return jnp.logaddexp(0.0, x)
