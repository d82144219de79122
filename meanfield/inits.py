"""Initialization schemes for weights, as pure functions of (key, shape, ...).

Every sampler has the Flax initializer signature ``init(key, shape, dtype=jnp.float32)`` (with
extra keyword arguments where a scheme needs them), so :func:`get` can hand one to
``flax.linen.Dense(kernel_init=...)`` or ``flax.linen.Conv(kernel_init=...)``. The variance of
one weight entry that each scheme gives is :func:`var_w`:

================  ===========================  ==============================================
scheme            per-entry variance           reference
================  ===========================  ==============================================
``he``            2 / fan_in                   He et al. (2015), "Delving deep into rectifiers"
``glorot``        2 / (fan_in + fan_out)       Glorot & Bengio (2010)
``depth_scaled``  c / (fan_in · depth)         Taki (2017), eq. (10) and (28)
``orthogonal``    gain² / n  (Haar, n x n)     Saxe et al. (2014); Mezzadri (2007) for Haar QR
``zero``          0                            Li et al. (2016), "Demystifying ResNet"
================  ===========================  ==============================================

and :func:`normal` draws i.i.d. N(0, var_w) for any given ``var_w``.

The companion papers' rules for residual branches are functions of their own, since each
needs more than one number: :func:`fixup` (Zhang et al. 2019), :func:`branch_scale`
(SkipInit, ReZero), :func:`risotto_type_c` (an exact looks-linear orthogonal block) and
:func:`weight_norm` with :func:`weight_norm_gamma` (Arpit et al. 2019). They are not yet
schemes of :func:`get`, :mod:`meanfield.montecarlo` or the trainer (docs/companions.md).

Shape convention (the same as Flax): a weight of shape ``(..., fan_in_last, fan_out)`` maps
inputs on the second-to-last axis to outputs on the last, so ``fan_in = prod(shape[:-1])`` and
``fan_out = shape[-1]`` (:func:`fan_in_out`). A dense n x n weight has fan-in n; a convolution
kernel ``(k, k, C_in, C_out)`` has fan-in k·k·C_in (the paper's n = 8·8·16). The residual-branch
weights of the mean-field engine are square, where the convention does not matter.

Keys are explicit typed keys from ``jax.random.key``; the shape is static. Every function works
under ``jax.jit`` (with ``shape`` static) and ``jax.vmap`` over keys.

Example:
    >>> import jax
    >>> from meanfield import inits
    >>> inits.he_normal(jax.random.key(0), (8, 8, 16, 16)).shape
    (8, 8, 16, 16)
    >>> float(inits.var_w("depth_scaled", fan_in=8 * 8 * 16, depth=64))  # 1 / (1024 · 64)
    1.52587890625e-05
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from meanfield import architecture as arch
from meanfield import theory

Array = jax.Array
Initializer = Callable[..., Array]

__all__ = [
    "SCHEMES",
    "fan_in_out",
    "normal",
    "he_normal",
    "glorot_normal",
    "depth_scaled",
    "orthogonal",
    "zero",
    "var_w",
    "get",
    "fixup",
    "branch_scale",
    "risotto_type_c",
    "weight_norm",
    "weight_norm_gamma",
]

SCHEMES = ("he", "glorot", "depth_scaled", "orthogonal", "zero")


def _shape(shape: Any) -> tuple[int, ...]:
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
    dims = _shape(shape)
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
    if jnp.ndim(var_w) != 0:
        raise ValueError(f"var_w must be a scalar, got an array of shape {jnp.shape(var_w)}")
    arch.check_var_w(var_w)
    # Cast the scale to dtype: under jax_enable_x64 a float64 var_w would promote the draw.
    std = jnp.sqrt(jnp.asarray(var_w, dtype))
    return std * jax.random.normal(key, _shape(shape), dtype)


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
    _require_depth(depth)
    return normal(key, shape, theory.depth_scaled_var_w(fan_in, depth, c), dtype)


def _check_square(shape: Any) -> int:
    dims = _shape(shape)
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
    n = _check_square(shape)
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
    return jnp.zeros(_shape(shape), dtype)


def _check_scheme(scheme: Any) -> str:
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def _require_depth(depth: Any) -> None:
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
    """The per-entry weight variance of ``scheme`` (see the table in the module docstring).

    ``fan_out`` defaults to ``fan_in`` (a square weight); ``depth`` is required for
    ``depth_scaled`` and ignored otherwise, as are ``c`` and ``gain`` where they do not apply.
    ``orthogonal`` is defined for square weights only, so a different ``fan_out`` is an error.
    Takes scalars or arrays (broadcast), like :mod:`meanfield.theory`.

    Example:
        >>> float(var_w("he", fan_in=512)), float(var_w("glorot", fan_in=512, fan_out=1536))
        (0.00390625, 0.0009765625)
    """
    scheme = _check_scheme(scheme)
    if scheme == "he":
        return theory.he_var_w(fan_in)
    if scheme == "glorot":
        return theory.glorot_var_w(fan_in, fan_out)
    if scheme == "depth_scaled":
        _require_depth(depth)
        return theory.depth_scaled_var_w(fan_in, depth, c)
    arch.check_width(fan_in)
    if scheme == "orthogonal":
        if fan_out is not None and not (arch._is_traced(fan_in) or arch._is_traced(fan_out)):
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
    scheme = _check_scheme(scheme)
    if scheme == "he":
        return he_normal
    if scheme == "glorot":
        return glorot_normal
    if scheme == "zero":
        return zero
    if scheme == "depth_scaled":
        _require_depth(depth)
        arch.check_positive("c", c)

        def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
            return depth_scaled(key, shape, depth=depth, c=c, dtype=dtype)

        return init
    arch.check_positive("gain", gain)

    def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        return orthogonal(key, shape, gain=gain, dtype=dtype)

    return init


# ------------------------------------------------------------------------------------------
# The companion papers' schemes (residual-branch rules; docs/companions.md)


def fixup(
    key: Array,
    shape: Sequence[int],
    *,
    depth: int,
    layers_per_branch: int = 2,
    last: bool = False,
    dtype: DTypeLike = jnp.float32,
) -> Array:
    """A Fixup weight (Zhang et al. 2019) of a residual branch with m = ``layers_per_branch``
    weight layers in a network of L = ``depth`` branches: zero for the branch's last layer
    (``last=True``), else He, N(0, 2/fan_in), with the standard deviation times
    L^(-1/(2m-2)), so the variance is 2/fan_in · L^(-1/(m-1)). (The code of the paper confirms
    the minus sign that some summaries drop.) Fixup's scalar multipliers start at 1 and its
    scalar biases at 0; they do not change the function at init."""
    m = arch.static_int("layers_per_branch", layers_per_branch)
    if m < 2:
        raise ValueError(f"layers_per_branch must be >= 2 (Fixup scales by L^(-1/(2m-2))), got {m}")
    arch.check_depth(depth)
    if last:
        return zero(key, shape, dtype)
    fan_in, _ = fan_in_out(_shape(shape))
    std = math.sqrt(2.0 / fan_in) * float(depth) ** (-1.0 / (2 * m - 2))
    return normal(key, shape, var_w=std**2, dtype=dtype)


def branch_scale(scheme: str, *, depth: int | None = None, value: float = 0.0) -> float:
    """The scalar that multiplies every residual branch at init: ``"skipinit"`` (De & Smith
    2020): ``value``, 0 by default, which must stay below 1/sqrt(depth) when depth is given
    (their "small" variant); ``"rezero"`` (Bachlechner et al. 2021): 0. Either way a
    zero-scaled network is the identity at init."""
    if scheme == "rezero":
        return 0.0
    if scheme != "skipinit":
        raise ValueError(f"scheme must be one of ('skipinit', 'rezero'), got {scheme!r}")
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise ValueError(f"value must be a finite number >= 0, got {value!r}")
    if depth is not None:
        arch.check_depth(depth)
        if value >= 1.0 / math.sqrt(depth):
            raise ValueError(
                f"value must be < 1/sqrt(depth) = {1 / math.sqrt(depth):.3g} for SkipInit, "
                f"got {value!r}"
            )
    return float(value)


def risotto_type_c(
    key: Array,
    n: int,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    dtype: DTypeLike = jnp.float32,
) -> tuple[Array, Array]:
    """(W_1, W_2), 2n x 2n, of a RISOTTO-style type-C block h -> relu(α W_2 relu(W_1 h) + β h)
    on looks-linear channels h = [relu(y); relu(-y)]: W_1 = [[I, -I], [-I, I]] and
    W_2 = (1/α) [[M - βI, -M], [-M, M - βI]] with M Haar-orthogonal, so the block maps y to
    M y exactly (an exact construction; the paper's own parametrization is unverified,
    docs/companions.md). Matrices act on column vectors (h -> W h)."""
    n = arch.static_int("n", n)
    arch.check_positive("alpha", alpha)
    if not (isinstance(beta, numbers.Real) and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number, got {beta!r}")
    m = orthogonal(key, (n, n), dtype=dtype)
    eye = jnp.eye(n, dtype=dtype)
    w1 = jnp.block([[eye, -eye], [-eye, eye]])
    w2 = jnp.block([[m - beta * eye, -m], [-m, m - beta * eye]]) / alpha
    return w1, w2


def weight_norm_gamma(position: str, blocks: int | None = None) -> float:
    """γ of Arpit et al. (2019) for a layer of a weight-normalized ResNet: 2 for a layer
    followed by ReLU (``"first"`` of a branch), 1/B for the ``"last"`` layer of a branch in a
    stage of B blocks, 1 for the ``"stem"`` and a ``"shortcut"`` projection."""
    if position == "first":
        return 2.0
    if position in ("stem", "shortcut"):
        return 1.0
    if position != "last":
        raise ValueError(
            f"position must be one of ('first', 'last', 'stem', 'shortcut'), got {position!r}"
        )
    return 1.0 / arch.static_int("blocks", blocks)


def weight_norm(
    key: Array, shape: Sequence[int], *, gamma: float, dtype: DTypeLike = jnp.float32
) -> tuple[Array, Array]:
    """(g, v) of a weight-normalized layer w = g v/||v|| (Arpit et al. 2019): v Gaussian (only
    its direction matters), normalized per output unit (the last axis: a column in the Flax
    convention), and g = sqrt(γ fan_in / fan_out) for every unit (their forward rule; γ from
    :func:`weight_norm_gamma`). Returns g with shape (fan_out,) and v of ``shape``."""
    shape = _shape(shape)
    arch.check_positive("gamma", gamma)
    fan_in, fan_out = fan_in_out(shape)
    v = normal(key, shape, var_w=1.0 / fan_in, dtype=dtype)
    g = jnp.full((fan_out,), math.sqrt(gamma * fan_in / fan_out), dtype)
    return g, v
