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
:func:`weight_norm` with :func:`weight_norm_gamma` (Arpit et al. 2019).

**Branch rules.** The simulator and the trainer take any of :data:`BRANCH_SCHEMES` (the five
above and ``fixup``, ``skipinit``, ``rezero``, ``weight_norm``) through :func:`branch_init`,
which gives, for a branch of k weight layers, each layer's per-entry variance, how it is
drawn (Gaussian, Haar-orthogonal, or weight-normalized columns) and the scalar β that
multiplies the branch output; :func:`branch_weight` draws one of the k weights:

===============  ===========================================  =====  ====================
scheme           var_w of W_1 .. W_k (n = fan-in)              β      law
===============  ===========================================  =====  ====================
he, glorot, ...  the scheme's, every layer                     1      Gaussian (orthogonal)
``fixup``        2/n · L^(-1/(k-1)) for i < k; 0 for W_k       1      Gaussian
``skipinit``     2/n (He)                                      α = 0  Gaussian
``rezero``       2/n (Glorot with gain √2, their notebook)     0      Gaussian
``weight_norm``  γ_i/n, γ = 2 (ReLU after W_i, i < k), 1       1      columns of norm² γ_i
                 (no ReLU), 1/L for W_k (one stage of L)
===============  ===========================================  =====  ====================

With k = 1 Fixup's only layer is the last, so every branch starts at zero.

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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from meanfield import architecture as arch
from meanfield import layers, theory
from meanfield.sampling import standard_normal

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
    "RISOTTO_BLOCK",
    "weight_norm",
    "weight_norm_gamma",
    "BRANCH_SCHEMES",
    "BranchInit",
    "branch_init",
    "branch_weight",
    "check_plain",
    "var_w_rule",
]

SCHEMES = ("he", "glorot", "depth_scaled", "orthogonal", "zero")
# Schemes for a whole residual branch (per-layer variances, law, branch scale): branch_init.
BRANCH_SCHEMES = SCHEMES + ("fixup", "skipinit", "rezero", "weight_norm")
LAWS = ("gaussian", "orthogonal", "weight_norm")


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
    return normal(key, shape, var_w=_fixup_var_w(fan_in, depth, m), dtype=dtype)


def _fixup_var_w(fan_in: ArrayLike, depth: ArrayLike, m: int) -> Array:
    """He's 2/fan_in times (L^(-1/(2m-2)))², the variance of Fixup's inner branch layers."""
    depth = jnp.asarray(depth, jnp.result_type(float))
    return theory.he_var_w(fan_in) * depth ** (-1.0 / (m - 1))


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


# RISOTTO's type-C block as a Block value: two weights per branch, ReLU, no BN (its ReLU comes
# after the sum, on looks-linear channels; the simulator and the trainer build it themselves).
RISOTTO_BLOCK = arch.Block("relu", "none", True, shortcut=2)


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
    stage of B blocks, 1 for the ``"stem"``, a ``"shortcut"`` projection and any other layer
    with no nonlinearity after it (``"linear"``)."""
    if position == "first":
        return 2.0
    if position in ("stem", "shortcut", "linear"):
        return 1.0
    if position != "last":
        raise ValueError(
            "position must be one of ('first', 'last', 'stem', 'shortcut', 'linear'), "
            f"got {position!r}"
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


# ------------------------------------------------------------------------------------------
# Branch rules: the simulator's and the trainer's view of every scheme


class BranchInit(NamedTuple):
    """How the k weights of one residual branch start: ``var_w[i]`` is the per-entry variance
    of W_{i+1} (0: a zero matrix), ``law`` how it is drawn (one of :data:`LAWS`), ``scale``
    the scalar β that multiplies the branch output (z^l = z^{l-1} + β h)."""

    scheme: str
    law: str
    var_w: tuple
    scale: Any


def branch_init(
    scheme: str,
    *,
    width: ArrayLike,
    depth: ArrayLike,
    activations: Sequence[str] = ("relu",),
    c: ArrayLike = 1.0,
    gain: ArrayLike = 1.0,
    branch_scale: ArrayLike | None = None,
) -> BranchInit:
    """The rule of ``scheme`` for a branch whose k = len(``activations``) weight layers are
    each followed (or, bn_pre, preceded) by the given activation
    (:meth:`meanfield.Block.activations`), in a network of ``depth`` blocks of ``width``
    (square weights). ``branch_scale`` overrides β (default: 0 for skipinit and rezero, else
    1); for SkipInit it must stay below 1/sqrt(depth). Values may be traced (vmap over depth
    or width). See the table in the module docstring.

    Example:
        >>> r = branch_init("fixup", width=64, depth=16, activations=("relu", "relu"))
        >>> r.law, [float(v) * 64 for v in r.var_w], r.scale   # 2 · 16^(-1), then zero
        ('gaussian', [0.125, 0.0], 1.0)
    """
    if not isinstance(scheme, str) or scheme not in BRANCH_SCHEMES:
        raise ValueError(f"init must be one of {BRANCH_SCHEMES}, got {scheme!r}")
    acts = tuple(activations)
    k = len(acts)
    if k < 1:
        raise ValueError(f"activations must name at least one layer, got {activations!r}")
    arch.check_width(width)
    arch.check_depth(depth)
    if branch_scale is not None:
        arch.check_nonnegative("branch_scale", branch_scale)
    scale = 1.0
    law = "gaussian"
    he = theory.he_var_w(width)
    if scheme in SCHEMES:
        v = var_w(scheme, fan_in=width, depth=depth, c=c, gain=gain)
        if scheme == "depth_scaled":
            arch.check_positive("c", c)
        variances = (v,) * k
        law = "orthogonal" if scheme == "orthogonal" else "gaussian"
    elif scheme == "fixup":
        inner = (_fixup_var_w(width, depth, k),) * (k - 1) if k > 1 else ()
        variances = inner + (jnp.zeros_like(he),)
    elif scheme in ("skipinit", "rezero"):
        variances = (he,) * k
        scale = 0.0
        if scheme == "rezero" and branch_scale is not None:
            raise ValueError(
                f"branch_scale must be None for rezero (0 at init), got {branch_scale!r}"
            )
        if scheme == "skipinit" and branch_scale is not None:
            if not (arch._is_traced(depth) or arch._is_traced(branch_scale)):
                bound = 1.0 / np.sqrt(np.asarray(depth, float))  # SkipInit's "small" α
                if np.any(np.asarray(branch_scale) >= bound):
                    raise ValueError(
                        f"branch_scale must be < 1/sqrt(depth) = {float(np.min(bound)):.3g} "
                        f"for skipinit, got {branch_scale!r}"
                    )
    else:  # weight_norm
        law = "weight_norm"
        gammas = [weight_norm_gamma("first" if a == "relu" else "linear") for a in acts[:-1]]
        inv_depth = 1.0 / jnp.asarray(depth, jnp.result_type(float))  # γ of "last", B = L
        n = jnp.asarray(width, jnp.result_type(float))
        variances = tuple(g / n for g in gammas) + (inv_depth / n,)
    if branch_scale is not None:
        scale = branch_scale
    return BranchInit(scheme, law, tuple(variances), scale)


def var_w_rule(
    var_w: ArrayLike,
    *,
    shortcut: int = 1,
    branch_scale: ArrayLike | None = None,
    scheme: str = "var_w",
    law: str = "gaussian",
) -> BranchInit:
    """The rule of a branch whose k = ``shortcut`` weights all have per-entry variance
    ``var_w`` (validated by the caller; 0 is a zero weight), scaled by ``branch_scale``
    (checked >= 0; default 1)."""
    if branch_scale is not None:
        arch.check_nonnegative("branch_scale", branch_scale)
    scale = 1.0 if branch_scale is None else branch_scale
    return BranchInit(scheme, law, (var_w,) * shortcut, scale)


def check_plain(block: Any, rule: BranchInit) -> None:
    """Raise ValueError when a plain (non-residual) ``block`` would start every branch at zero
    under ``rule`` (β = 0 or a zero weight): the network then computes 0 and its statistics
    are not defined. Traced values are not checked."""
    tree = layers.as_tree(block)
    if isinstance(tree, layers.Residual):
        return
    if any(arch._is_traced(v) for v in (rule.scale, *rule.var_w)):
        return
    if bool(jnp.any(jnp.asarray(rule.scale) == 0)) or any(
        bool(jnp.any(jnp.asarray(v) == 0)) for v in rule.var_w
    ):
        raise ValueError(
            f"init={rule.scheme!r} starts every branch at zero, so the plain network "
            f"{tree.name if not isinstance(block, arch.Block) else block.name} computes 0; "
            "use a residual block"
        )


def branch_weight(
    key: Array,
    shape: Sequence[int],
    rule: BranchInit,
    position: int,
    dtype: DTypeLike = jnp.float32,
) -> Array:
    """Draw W_{position+1} of a branch under ``rule`` (:func:`branch_init`); ``shape`` is
    (..., fan_in, fan_out) with fan-in = fan-out for the orthogonal law. Gaussian: i.i.d.
    N(0, var_w); orthogonal: sqrt(var_w·n) times a Haar matrix; weight_norm: w = g v/||v|| per
    output unit (column) with g² = var_w · fan_in (Arpit et al.'s g = sqrt(γ fan_in/fan_out)
    for a square weight). A zero variance gives zeros under every law. The Gaussian and
    weight-norm draws use :func:`meanfield.sampling.standard_normal` (the Monte-Carlo engine's
    sampler: ``jax.random.normal``'s numbers in JAX's original counter layout)."""
    v = jnp.asarray(rule.var_w[position], dtype)
    if rule.law == "gaussian":
        return jnp.sqrt(v) * standard_normal(key, _shape(shape), dtype)
    fan_in, _ = fan_in_out(shape)
    if rule.law == "orthogonal":
        n = _check_square(shape)
        return jnp.sqrt(v * n) * orthogonal(key, shape, dtype=dtype)
    v_dir = standard_normal(key, _shape(shape), dtype)
    flat = v_dir.reshape(fan_in, -1)
    norms = jnp.sqrt(jnp.sum(flat**2, axis=0, keepdims=True))
    return (jnp.sqrt(v * fan_in) * flat / norms).reshape(_shape(shape))
