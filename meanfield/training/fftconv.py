"""Circularly padded convolution by the FFT: :class:`CircularConv`, ``flax.linen.Conv`` with
``padding="CIRCULAR"`` computed as a product per spatial frequency.

With circular padding a k x k convolution on an H x W image is a circular cross-correlation,
diagonal in the 2-D discrete Fourier basis. With Flax's padding of (k-1)//2 = p rows before,

    y[i, j, o] = Σ_{a, b, c} x[(i + a - p) mod H, (j + b - p) mod W, c] · K[a, b, c, o]
    Y(u, v, o) = Σ_c X(u, v, c) · S(u, v, c, o),
    S(u, v, c, o) = Σ_{a, b} K[a, b, c, o] · exp(+2πi (u (a - p)/H + v (b - p)/W)),

where X and Y are the real FFTs (rfft2) of x and y over the image. The kernel's spectrum S is
two small products with cosine and sine tables (k x H and k x (W/2 + 1)), so no H x W kernel
is ever padded or transformed, and a kernel larger than the image wraps around as the
circular padding does. Each frequency's channel mixing is one real product of the stacked
real and imaginary parts [Re X, Im X] (2C columns) with [[Re S, Im S], [-Im S, Re S]]: every
frequency is a (B, 2C) x (2C, 2C') matrix product, batched over the H x (W/2 + 1)
frequencies, with the batch axes leading so that no operand is transposed for it.

For the paper's 8x8 kernels with 16 channels on 32x32 images this is ~2 MFLOP per image and
layer against 33 MFLOP for the direct convolution; :func:`fft_is_faster` is the measured rule
that picks the path (docs/performance.md). Gradients are JAX's own through the transforms (the
FFT's transpose is an FFT), so the backward pass is transforms and products too.

The layer has ``nn.Conv``'s parameters, names, shapes and initializers, so a checkpoint, a
kernel initializer and a parameter tree are shared by both paths; outputs and gradients
agree to float32 rounding (tests/test_fftconv.py). It computes in float32 (complex64), also
when ``dtype`` is bfloat16 (no FFT in 16 bits), and returns the ``dtype`` asked for. Anything
other than a stride-1, undilated, ungrouped circular convolution takes ``nn.Conv``'s own path.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import dtypes as flax_dtypes
from jax import lax

__all__ = [
    "CONV_METHODS",
    "CircularConv",
    "circular_conv_fft",
    "fft_is_faster",
    "kernel_spectrum",
    "uses_fft",
]

CONV_METHODS = ("auto", "fft", "direct")


def fft_is_faster(backend: str, kernel_size: tuple[int, int], features: int) -> bool:
    """The rule of ``method="auto"``: whether the FFT path is the faster one, as measured by
    ``benchmarks/bench_fftconv.py`` (docs/performance.md, "Circular convolution").

    On CPU (one layer forward and backward, batch 32, H = 8..32, C = 16 and 64) the FFT path
    was 1.8-16x faster from 5x5 kernels on, 1.3-1.5x for 3x3 kernels with 64 channels, even
    (0.9-1.0x) for 3x3 with 16, and 0.4-0.7x for 1x1, which has no padding. XLA:CPU's direct
    circular convolution pads the input and takes a slow path for the weight gradient. On
    GPU and TPU the backend's convolution is kept until measured otherwise
    (``benchmarks/device_suite.py`` measures both).
    """
    k = max(kernel_size)  # the image size (8 to 32) did not change the outcome
    return backend == "cpu" and (k >= 5 or (k >= 3 and features >= 64))


def uses_fft(
    method: str,
    padding: str,
    kernel_size: tuple[int, int],
    features: int,
    backend: str | None = None,
) -> bool:
    """Whether a stride-1 2-D :class:`CircularConv` with these settings takes the FFT path:
    Flax's ``padding="CIRCULAR"``, and ``method="fft"``, or ``"auto"`` where
    :func:`fft_is_faster` (on ``backend``, the default backend when None)."""
    if method not in CONV_METHODS:
        raise ValueError(f"method must be one of {CONV_METHODS}, got {method!r}")
    if padding != "CIRCULAR" or method == "direct":
        return False
    backend = jax.default_backend() if backend is None else backend
    return method == "fft" or fft_is_faster(backend, tuple(kernel_size), features)


def _tables(n: int, k: int, frequencies: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2π u (a - p)/n, shape (frequencies, k), in float64."""
    angle = 2 * np.pi * np.outer(np.arange(frequencies), np.arange(k) - p) / n
    return np.cos(angle), np.sin(angle)


def kernel_spectrum(kernel: jax.Array, spatial: tuple[int, int], precision=None) -> jax.Array:
    """The real (H, W/2 + 1, 2C, 2C') matrices M with [Re X, Im X] @ M = [Re Y, Im Y] at each
    frequency, for a (k1, k2, C, C') kernel on an H x W image (module docstring)."""
    (h, w), (k1, k2) = spatial, kernel.shape[:2]
    ch, sh = (jnp.asarray(t, kernel.dtype) for t in _tables(h, k1, h, (k1 - 1) // 2))
    cw, sw = (jnp.asarray(t, kernel.dtype) for t in _tables(w, k2, w // 2 + 1, (k2 - 1) // 2))

    def contract(table_h, table_w):
        kw = jnp.einsum("vb,abco->avco", table_w, kernel, precision=precision)
        return jnp.einsum("ua,avco->uvco", table_h, kw, precision=precision)

    # exp(i(α + β)) = cos α cos β - sin α sin β + i (sin α cos β + cos α sin β)
    re = contract(ch, cw) - contract(sh, sw)
    im = contract(sh, cw) + contract(ch, sw)
    # (a + ib)(re + i im) = (a re - b im) + i (a im + b re)
    return jnp.concatenate(
        [jnp.concatenate([re, im], axis=-1), jnp.concatenate([-im, re], axis=-1)], axis=-2
    )


def circular_conv_fft(x: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
    """The stride-1 circular convolution of NHWC images ``x`` with an HWIO ``kernel``, with
    Flax's padding ((k-1)//2 before, k//2 after), by the FFT; equal to
    ``flax.linen.Conv(padding="CIRCULAR")`` to rounding. Float32 or float64 throughout."""
    b, h, w, c = x.shape
    if kernel.ndim != 4 or kernel.shape[2] != c:
        raise ValueError(
            f"kernel must have shape (k1, k2, {c}, features) for inputs with {c} channels, "
            f"got {kernel.shape}"
        )
    out = kernel.shape[3]
    # The transforms run over the two minor axes: NHWC -> NCHW (fused into the copy).
    spectrum = jnp.fft.rfft2(x.transpose(0, 3, 1, 2))  # (B, C, H, W/2 + 1)
    by_freq = spectrum.transpose(2, 3, 0, 1)  # (H, W/2 + 1, B, C)
    stacked = jnp.concatenate([by_freq.real, by_freq.imag], axis=-1)
    mixed = lax.dot_general(
        stacked,
        kernel_spectrum(kernel, (h, w), precision),
        (((3,), (2,)), ((0, 1), (0, 1))),
        precision=precision,
    )  # (H, W/2 + 1, B, 2C')
    y = lax.complex(mixed[..., :out], mixed[..., out:]).transpose(2, 3, 0, 1)
    return jnp.fft.irfft2(y, s=(h, w)).transpose(0, 2, 3, 1)


class CircularConv(nn.Conv):
    """``flax.linen.Conv`` whose circularly padded 2-D convolutions may run by the FFT
    (module docstring): the same fields, parameters and initialization, plus ``method``:
    ``"fft"`` (required to be possible: an error otherwise), ``"direct"`` (``nn.Conv``'s own
    path) or ``"auto"`` (:func:`fft_is_faster` on the default backend).

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
        >>> fft = CircularConv(4, (3, 3), padding="CIRCULAR", method="fft")
        >>> params = fft.init(jax.random.key(1), x)
        >>> direct = nn.Conv(4, (3, 3), padding="CIRCULAR").apply(params, x)
        >>> bool(jnp.allclose(fft.apply(params, x), direct, atol=1e-5))
        True
    """

    method: str = "auto"

    def _fft_unsupported(self, inputs) -> str | None:
        """Why the FFT path cannot compute this layer (None when it can)."""
        ks = (self.kernel_size,) if isinstance(self.kernel_size, int) else self.kernel_size
        ones = (None, 1, (1,) * len(ks), [1] * len(ks))
        checks = [
            (self.padding == "CIRCULAR", "padding"),
            (len(ks) == 2 and inputs.ndim >= 3, "a 2-D convolution"),
            (self.strides in ones, "strides"),
            (self.input_dilation in ones, "input_dilation"),
            (self.kernel_dilation in ones, "kernel_dilation"),
            (self.feature_group_count == 1, "feature_group_count"),
            (self.shared_weights and self.mask is None, "shared weights without a mask"),
        ]
        bad = [what for ok, what in checks if not ok]
        return None if not bad else ", ".join(bad)

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if self.method not in CONV_METHODS:
            raise ValueError(f"method must be one of {CONV_METHODS}, got {self.method!r}")
        why = self._fft_unsupported(inputs)
        if self.method == "fft" and why is not None:
            raise ValueError(
                "method='fft' computes stride-1, undilated, ungrouped 2-D convolutions with "
                f"padding='CIRCULAR' and shared, unmasked weights; this layer differs in: {why}"
            )
        if why is not None:
            return super().__call__(inputs)
        ks = tuple(self.kernel_size)
        if not uses_fft(self.method, self.padding, ks, self.features):
            return super().__call__(inputs)
        return self._fft_call(inputs, ks)

    def _fft_call(self, inputs: jax.Array, ks: tuple[int, int]) -> jax.Array:
        kernel = self.param(
            "kernel", self.kernel_init, ks + (inputs.shape[-1], self.features), self.param_dtype
        )
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        inputs, kernel, bias = flax_dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        out_dtype = inputs.dtype
        compute = jnp.promote_types(out_dtype, jnp.float32)  # no FFT in 16 bits
        batch_shape = inputs.shape[:-3]
        flat = inputs.reshape((-1,) + inputs.shape[-3:]).astype(compute)
        y = circular_conv_fft(flat, kernel.astype(compute), self.precision)
        y = y.reshape(batch_shape + y.shape[1:]).astype(out_dtype)
        if bias is not None:  # explicit ranks (no implicit rank promotion)
            y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
        return y
