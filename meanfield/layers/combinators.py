"""serial and residual: the layers one after another, and z + β branch(z)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from meanfield.core import architecture as arch
from meanfield.layers.base import Cotangent, Flags, Layer, Signal, State, meet, merge


@dataclasses.dataclass(frozen=True)
class Serial(Layer):
    """The layers one after another."""

    layers: tuple[Layer, ...]

    def children(self) -> tuple[Layer, ...]:
        return self.layers

    @property
    def name(self) -> str:
        return "-".join(layer.name for layer in self.layers)

    def finite(self, x: Signal, net: Any) -> Signal:
        for layer in self.layers:
            x = layer.finite(x, net)
        return x

    def mean_field(self, s: State, mf: Any) -> State:
        for layer in self.layers:
            s = layer.mean_field(s, mf)
        return s

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        for layer in reversed(self.layers):
            ct = layer.backward(ct, mf)
        return ct

    def flags(self, f: Flags) -> Flags:
        for layer in self.layers:
            f = layer.flags(f)
        return f

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        for layer in self.layers:
            v = layer.conv(v, net)
        return v


@dataclasses.dataclass(frozen=True)
class Residual(Layer):
    """z + β branch(z), β = ``scale`` (>= 0), or the init rule's branch scale when None. In the
    mean field a branch whose every path from z passes a Dense is independent of the skip:
    second moments, variances and kernel gaps add, and so do the cotangent moments going back.
    Otherwise (an inner residual's skip, norms, activations on the way) the sums gain the cross
    terms 2E[z h] forward and 2E[δ·J^T δ] backward that the branch output's state carries
    (:class:`~meanfield.layers.base.Cross`, docs/theory.md §10)."""

    branch: Layer
    scale: float | None = None

    def __post_init__(self):
        if not isinstance(self.branch, Layer):
            raise ValueError(f"residual's branch must be a layer, got {self.branch!r}")
        if self.scale is not None:
            arch.check_scalar("scale", self.scale, "meanfield.sweep takes branch_scale arrays")
            arch.check_nonnegative("scale", self.scale)
            object.__setattr__(self, "scale", float(self.scale))

    def children(self) -> tuple[Layer, ...]:
        return (self.branch,)

    @property
    def name(self) -> str:
        beta = "" if self.scale is None else f"*{self.scale!r}"
        return f"res[{self.branch.name}]{beta}"

    def _log_scale(self, mf: Any) -> jax.Array:
        if self.scale is None:
            return mf.log_scale
        return math.log(self.scale) if self.scale > 0 else -math.inf

    def finite(self, x: Signal, net: Any) -> Signal:
        h = self.branch.finite(x, net)
        beta = net.scale if self.scale is None else self.scale
        value = beta * h.x
        if x.relative and not h.relative:  # bring a scale-free branch to the skip's scale
            value = value * jnp.exp(-net.log_s)
        return Signal(x.x + value, x.relative, False)

    def mean_field(self, s: State, mf: Any) -> State:
        h = self.branch.mean_field(mf.open(s), mf)
        log_beta = self._log_scale(mf)
        h = dataclasses.replace(
            h,
            a=h.a + 2.0 * log_beta,
            w=h.w + 2.0 * log_beta,
            r=h.r + 2.0 * log_beta,
            cross=tuple(None if e is None else e.times(log_beta) for e in h.cross),
        )
        if s.relative and not h.relative:
            h = mf.to_relative(h)
        own = h.cross[-1]  # h against this residual's skip s: None where every path has a Dense
        mf.push(own)
        flags = self.flags(s.flags)
        out = merge(s, h, flags) if own is None else mf.merge(s, h, own, flags)
        return mf.combine(s, h, out)

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        own = mf.pop()
        inner = self.branch.backward(ct.plus(2.0 * self._log_scale(mf)), mf)
        if own is None:
            return Cotangent(*(jnp.logaddexp(x, y) for x, y in zip(ct, inner, strict=True)))
        return mf.add_cotangents(ct, inner, own)

    def flags(self, f: Flags) -> Flags:
        return meet(f, self.branch.flags(f))

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return v + net.branch_output(self.branch.conv(v, net), self.scale)


def serial(*layers: Layer) -> Serial:
    """The layers one after another (nested serials are flattened)."""
    flat: list[Layer] = []
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ValueError(f"serial takes layers, got {layer!r}")
        flat.extend(layer.layers if isinstance(layer, Serial) else (layer,))
    if not flat:
        raise ValueError("serial needs at least one layer")
    return Serial(tuple(flat))


def residual(branch: Layer, scale: float | None = None) -> Residual:
    """z + β branch(z): β = ``scale``, or the init's branch scale (1 for most schemes, 0 for
    SkipInit and ReZero) when None."""
    return Residual(branch, scale)
