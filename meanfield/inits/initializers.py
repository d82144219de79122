"""The per-entry weight variances of the plain schemes and their Flax-style initializers.

Every sampler here has the signature ``init(key, shape, dtype=jnp.float32)`` (with keyword
arguments where a scheme needs them); :func:`var_w` gives the variance of one entry and
:func:`get` an initializer for ``flax.linen.Dense(kernel_init=...)``. The shape and argument
checks that the other modules of :mod:`meanfield.inits` share live here too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from meanfield import theory
from meanfield.core import architecture as arch

Array = jax.Array
Initializer = Callable[..., Array]

SCHEMES = ("he", "glorot", "depth_scaled", "orthogonal", "zero")
LAWS = ("gaussian", "orthogonal", "weight_norm")


def check_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of Python ints, each >= 0; ValueError for anything else."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of integers, got {shape!r}") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:
            raise ValueError(f"shape must be a tuple of integers >= 0, got {shape!r}")
    return tuple(int(d) for d in dims)


def fan_in_out(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out) = (prod(shape[:-1]), shape[-1])`` of a weight (Flax convention).

    Example:
        >>> fan_in_out((8, 8, 16, 32))  # an 8x8 convolution from 16 to 32 channels
        (1024, 32)
    """
    dims = check_shape(shape)
    if len(dims) < 2:
        raise ValueError(
            f"shape must have at least 2 dimensions (..., fan_in, fan_out), got {shape!r}"
        )
    if 0 in dims:
        raise ValueError(f"shape must have every dimension >= 1, got {shape!r}")
    return math.prod(dims[:-1]), dims[-1]


def normal(
    key: Array, shape: Sequence[int], var_w: ArrayLike, dtype: DTypeLike = jnp.float32
) -> Array:
    """I.i.d. N(0, var_w) entries of the given shape (any shape; no fan-in is needed).

    ``var_w`` is the variance of one entry: a Python number or a scalar array, which may be
    traced (e.g. vmapped over var_w); a concrete one must be finite and > 0.
    """
    arch.check_key(key)
    arch.check_scalar("var_w", var_w)
    arch.check_var_w(var_w)
    # Cast the scale to dtype: under jax_enable_x64 a float64 var_w would promote the draw.
    std = jnp.sqrt(jnp.asarray(var_w, dtype))
    return std * jax.random.normal(key, check_shape(shape), dtype)


def he_normal(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    """N(0, 2/fan_in) entries (He et al. 2015): keeps E[z^2] of a plain ReLU net constant."""
    fan_in, _ = fan_in_out(shape)
    return normal(key, shape, theory.he_var_w(fan_in), dtype)


def glorot_normal(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    """N(0, 2/(fan_in + fan_out)) entries (Glorot & Bengio 2010); 1/n for a square weight."""
    fan_in, fan_out = fan_in_out(shape)
    return normal(key, shape, theory.glorot_var_w(fan_in, fan_out), dtype)


def depth_scaled(
    key: Array,
    shape: Sequence[int],
    *,
    depth: ArrayLike,
    c: ArrayLike = 1.0,
    dtype: DTypeLike = jnp.float32,
) -> Array:
    """N(0, c/(fan_in · depth)) entries, Taki (2017) eq. (10) and (28).

    With the identity activation this bounds the forward growth of a ResNet of ``depth``
    blocks by e^c (:func:`meanfield.theory.depth_scaled_growth`); with ReLU it does not.
    """
    fan_in, _ = fan_in_out(shape)
    require_depth(depth)
    arch.check_scalar("depth", depth)
    arch.check_scalar("c", c)
    return normal(key, shape, theory.depth_scaled_var_w(fan_in, depth, c), dtype)


def check_square(shape: Any) -> int:
    """n of a square 2-D ``shape`` (n, n), n >= 1; ValueError for any other shape."""
    dims = check_shape(shape)
    if len(dims) != 2 or dims[0] != dims[1] or dims[0] < 1:
        raise ValueError(
            f"shape must be square and 2-D, (n, n), for orthogonal (the engine's branch "
            f"weights are square), got {shape!r}"
        )
    return dims[0]


def orthogonal(
    key: Array, shape: Sequence[int], *, gain: ArrayLike = 1.0, dtype: DTypeLike = jnp.float32
) -> Array:
    """A Haar-random orthogonal n x n matrix times ``gain`` (Saxe et al. 2014).

    .. math:: W = \\mathrm{gain}\\cdot Q\\,\\mathrm{diag}(\\mathrm{sign}(\\mathrm{diag}\\,R)),
        \\quad QR = G,\\ G_{ij} \\sim N(0, 1)

    W^T W = gain² I, and each entry has variance gain²/n. The sign correction makes the
    distribution Haar (Mezzadri 2007): a Householder QR alone returns a Q whose diagonal is
    biased (LAPACK makes Q_11 = -|G_11|/||G_1|| < 0 always).

    Only square 2-D shapes are allowed: the branch weights of the engine are square, and a
    non-square "orthogonal" weight has no single per-entry variance gain²/n.
    """
    arch.check_key(key)
    n = check_square(shape)
    arch.check_scalar("gain", gain)
    arch.check_positive("gain", gain)
    # QR needs float32 or float64; draw in at least float32 and cast at the end.
    work = jnp.promote_types(dtype, jnp.float32)
    q, r = jnp.linalg.qr(jax.random.normal(key, (n, n), work))
    d = jnp.diagonal(r)
    signs = jnp.where(d < 0, -1.0, 1.0).astype(work)  # sign(0) would zero a column
    w = q * signs[None, :]
    return (jnp.asarray(gain, work) * w).astype(dtype)


def zero(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    """All zeros (any shape; ``key`` is unused and kept for the initializer signature)."""
    del key
    return jnp.zeros(check_shape(shape), dtype)


def check_scheme(scheme: Any) -> str:
    """``scheme`` if it is one of :data:`SCHEMES`; ValueError otherwise."""
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def require_depth(depth: Any) -> None:
    """Raise ValueError unless ``depth`` is given and valid (the depth_scaled scheme's L)."""
    if depth is None:
        raise ValueError(
            "depth must be given for the depth_scaled scheme (an integer >= 1), got None"
        )
    arch.check_depth(depth)


def var_w(
    scheme: str,
    *,
    fan_in: ArrayLike,
    fan_out: ArrayLike | None = None,
    depth: ArrayLike | None = None,
    c: ArrayLike = 1.0,
    gain: ArrayLike = 1.0,
) -> Array:
    """The per-entry weight variance of ``scheme`` (see the table in the docstring of
    :mod:`meanfield.inits`).

    ``fan_out`` defaults to ``fan_in`` (a square weight); ``depth`` is required for
    ``depth_scaled`` and ignored otherwise, as are ``c`` and ``gain`` where they do not apply.
    ``orthogonal`` is defined for square weights only, so a different ``fan_out`` is an error.
    Takes scalars or arrays (broadcast), like :mod:`meanfield.theory`.

    Example:
        >>> float(var_w("he", fan_in=512)), float(var_w("glorot", fan_in=512, fan_out=1536))
        (0.00390625, 0.0009765625)
    """
    scheme = check_scheme(scheme)
    if scheme == "he":
        return theory.he_var_w(fan_in)
    if scheme == "glorot":
        return theory.glorot_var_w(fan_in, fan_out)
    if scheme == "depth_scaled":
        require_depth(depth)
        return theory.depth_scaled_var_w(fan_in, depth, c)
    arch.check_width(fan_in)
    if scheme == "orthogonal":
        if fan_out is not None and not (arch.is_traced(fan_in) or arch.is_traced(fan_out)):
            if jnp.any(jnp.asarray(fan_out) != jnp.asarray(fan_in)):
                raise ValueError(
                    f"fan_out must equal fan_in for orthogonal (a square weight), "
                    f"got fan_in={fan_in!r}, fan_out={fan_out!r}"
                )
        arch.check_positive("gain", gain)
        return jnp.asarray(gain) ** 2 / jnp.asarray(fan_in)
    return jnp.zeros(jnp.shape(fan_in))  # zero


def get(
    scheme: str,
    *,
    depth: ArrayLike | None = None,
    c: ArrayLike = 1.0,
    gain: ArrayLike = 1.0,
) -> Initializer:
    """A Flax-compatible initializer ``init(key, shape, dtype=jnp.float32)`` for ``scheme``.

    Arguments are checked here, when the initializer is made, not when it is called.

    Example:
        >>> import flax.linen as nn
        >>> layer = nn.Dense(64, kernel_init=get("depth_scaled", depth=100))
    """
    scheme = check_scheme(scheme)
    if scheme == "he":
        return he_normal
    if scheme == "glorot":
        return glorot_normal
    if scheme == "zero":
        return zero
    if scheme == "depth_scaled":
        require_depth(depth)
        arch.check_positive("c", c)
        arch.check_scalar("depth", depth)
        arch.check_scalar("c", c)

        def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
            return depth_scaled(key, shape, depth=depth, c=c, dtype=dtype)

        return init
    arch.check_positive("gain", gain)
    arch.check_scalar("gain", gain)

    def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        return orthogonal(key, shape, gain=gain, dtype=dtype)

    return init
