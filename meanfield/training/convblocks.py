"""The residual blocks of :class:`meanfield.training.models.ResNet`, as Flax modules that
:class:`~meanfield.training.models.ResNet` scans over the depth: :class:`ResidualBlock` (a block of
:mod:`meanfield.layers`, with the init's kernels and what a companion scheme adds around them)
and :class:`RisottoBlock` (RISOTTO's own type-C block on looks-linear channels).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from meanfield import inits, layers
from meanfield.training.fftconv import CircularConv
from meanfield.training.modelstats import gradient_tap, layer_stats

if TYPE_CHECKING:
    from meanfield.training.models import ResNetConfig

__all__ = ["FLAX_PADDING", "ResidualBlock", "RisottoBlock"]

FLAX_PADDING = {"circular": "CIRCULAR", "same": "SAME"}


class ResidualBlock(nn.Module):
    """One block of ``config``'s :mod:`meanfield.layers` tree on C channels (the plain branch
    when the tree has no residual): its convolutions from the init's rule, BN, and what the
    scheme adds (:class:`_ConvNet`); with ``measure``, also the tap and the statistics of the
    block's output."""

    config: ResNetConfig
    train: bool
    measure: bool
    dtype: Any
    conv_method: str = "auto"  # of the circular convolutions (fftconv.CircularConv)

    @nn.compact
    def __call__(self, z, tap):
        cfg = self.config
        rule = cfg.rule
        fixup = cfg.init == "fixup" and not layers.has_batchnorm(cfg.tree)

        def conv(i, v):
            layer = CircularConv(
                cfg.channels,
                (cfg.kernel_size, cfg.kernel_size),
                padding=FLAX_PADDING[cfg.padding],
                use_bias=False,
                kernel_init=cfg.kernel_init(i),
                dtype=self.dtype,
                method=self.conv_method,
                name=f"Conv_{i}",
            )
            if rule.law != "weight_norm":
                return layer(v)
            # w = g v/||v|| per output channel, g² = γ (Arpit et al.: sqrt(γ fan_in/fan_out)
            # with fan-in and fan-out both counting the k·k taps).
            g = math.sqrt(float(rule.var_w[i]) * cfg.fan_in)
            return nn.WeightNorm(layer, scale_init=nn.initializers.constant(g))(v)

        def bn(v):
            return nn.BatchNorm(
                use_running_average=not self.train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
            )(v)

        def scalar(name, value):
            return self.param(name, nn.initializers.constant(value), (), jnp.float32)

        tree = cfg.tree
        net = _ConvNet(conv, bn, scalar, fixup, float(rule.scale) if cfg.learned_scale else None)
        if isinstance(tree, layers.Residual):
            z = tree.conv(z, net)
        else:  # plain: the block is the branch
            z = net.branch_output(tree.conv(z, net), None)
        if not self.measure:
            return z, None
        return gradient_tap(z, tap), layer_stats(z)


class _ConvNet:
    """The ``net`` of :meth:`meanfield.layers.Layer.conv` inside :class:`ResidualBlock`: the
    block's convolutions in order (kernel ``i`` from the init's rule), Flax's BatchNorm, and
    what a scheme adds around them: Fixup's scalar biases (0 at init) before each convolution
    and each activation and its multiplier (1) and bias at the end of the branch, and a learned
    branch scale β (SkipInit, ReZero, or any ``branch_scale``)."""

    def __init__(self, conv, bn, scalar, fixup: bool, learned_scale: float | None):
        self._conv, self._bn, self._scalar = conv, bn, scalar
        self.fixup, self.learned_scale, self.used = fixup, learned_scale, 0

    def conv(self, v):
        i = self.used
        self.used += 1
        if self.fixup:
            v = v + self._scalar(f"bias_in_{i}", 0.0)
        return self._conv(i, v)

    def pre_activation(self, v):
        return v + self._scalar(f"bias_act_{self.used - 1}", 0.0) if self.fixup else v

    def batch_norm(self, v):
        return self._bn(v)

    def branch_output(self, h, scale: float | None):
        if self.fixup:
            h = self._scalar("multiplier", 1.0) * h + self._scalar("bias_out", 0.0)
        if self.learned_scale is not None:
            h = self._scalar("branch_scale", self.learned_scale) * h
        if scale is not None:  # a fixed β of the tree
            h = scale * h
        # The residual stream stays float32 under mixed precision: 100 bfloat16 additions
        # would lose the small branch contributions of the depth-scaled init.
        return h.astype(jnp.float32)


def _delta_kernel(matrix: jax.Array, k: int, dtype) -> jax.Array:
    """A k x k kernel whose only non-zero tap, the one aligned with the output position, is
    ``matrix`` (in, out): the convolution then acts pixel by pixel (a delta-orthogonal
    kernel when ``matrix`` is orthogonal)."""
    c = (k - 1) // 2  # with (k-1)//2 padding before, tap c reads the output's own pixel
    kernel = jnp.zeros((k, k) + matrix.shape, dtype)
    return kernel.at[c, c].set(matrix.astype(dtype))


class RisottoBlock(nn.Module):
    """RISOTTO type C on 2C looks-linear channels h = [relu(y); relu(-y)]:
    h -> relu(W2 * relu(W1 * h) + h) with delta kernels W1 = [[I, -I], [-I, I]] and
    W2 = [[M - I, -M], [-M, M - I]], M Haar-orthogonal per block (:func:`inits.risotto_type_c`;
    α = β = 1): each block maps y to M y exactly, pixel by pixel."""

    config: ResNetConfig
    measure: bool
    dtype: Any
    conv_method: str = "auto"

    @nn.compact
    def __call__(self, h, tap):
        cfg = self.config
        k, width = cfg.kernel_size, 2 * cfg.channels

        def kernel(position):
            def init(key, shape, dtype=jnp.float32):
                w = inits.risotto_type_c(key, cfg.channels, dtype=jnp.float32)[position]
                return _delta_kernel(w.T, k, dtype)  # h @ Wᵀ: the Flax (in, out) layout

            return init

        def conv(position, v):
            return CircularConv(
                width,
                (k, k),
                padding=FLAX_PADDING[cfg.padding],
                use_bias=False,
                kernel_init=kernel(position),
                dtype=self.dtype,
                method=self.conv_method,
                name=f"Conv_{position}",
            )(v)

        h = jax.nn.relu(conv(1, jax.nn.relu(conv(0, h))).astype(jnp.float32) + h)
        if not self.measure:
            return h, None
        return gradient_tap(h, tap), layer_stats(h)
