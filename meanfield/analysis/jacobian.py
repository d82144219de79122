"""Dynamical isometry: the singular values of the input-output Jacobian of sampled residual
networks at initialization (Saxe et al.; Gadhikar & Burkholz 2022, "RISOTTO").

A network maps x ∈ R^n to z^L ∈ R^n; its Jacobian J = dz^L/dx is n x n. Dynamical isometry
means every singular value of J is near 1; the spread is measured by the standard deviation of
ln σ_i and by the condition number σ_max/σ_min. Initializations (``INITS``):

===================  =====================================================================
``he``               the paper's block z + f(W z) (norm none / bn_post / bn_pre), var_w = 2/n
``depth_scaled``     the same block, var_w = c/(nL)
``fixup``            z + W_2 relu(W_1 z): W_1 He times L^(-1/(2m-2)) = L^(-1/2) (m = 2 weight
                     layers), W_2 = 0 (Zhang et al. 2019; scalar multiplier 1 and biases 0,
                     which do not change the function at init)
``skipinit``         z + α relu(W z), W He, α = ``alpha`` (De & Smith 2020: 0, or small)
``weight_norm``      z + W_2 relu(W_1 z), weight-normalized with γ = 2, 1/L (Arpit et al.)
``risotto``          looks-linear orthogonal, exact (below)
===================  =====================================================================

and any other scheme of :data:`meanfield.inits.BRANCH_SCHEMES` on any
:class:`~meanfield.core.architecture.Block` given as ``block`` (the rows above name each scheme's
default block; weights follow :func:`meanfield.inits.branch_init`).

**RISOTTO (the construction implemented).** The paper's code could not be read; this is an
exact construction for its block type C (identity skip, ReLU after the sum, two weight layers),
derived and checked here. The network carries 2n channels h = [relu(y); relu(-y)] for a
signal y ∈ R^n: a stem h^0 = relu([x; -x]); blocks h' = relu(α W_2 relu(W_1 h) + β h) with
W_1 = [[I, -I], [-I, I]] and W_2 = (1/α) [[M - βI, -M], [-M, M - βI]], M Haar-orthogonal; a
readout z = top - bottom half. Since relu(y) - relu(-y) = y, each block maps y to M y exactly,
so J = M_L ⋯ M_1 is orthogonal: every singular value is 1 at any width and depth, to rounding.
What is not verified against the paper: its exact parametrization of the sub-matrices, its
type-B (projection skip) variant, and its convolutional delta-orthogonal kernels.

**BN.** The Jacobian of one input's output with respect to that input, with BN's batch mean
and variance (from the network's B inputs) held fixed: the map an input sees when the batch
statistics are given. Only ``he`` and ``depth_scaled`` take a norm; the others are
normalization-free by design.

**How.** Exact: ``jax.jacfwd`` and ``jnp.linalg.svd`` per network, vmapped over networks, up to
width :data:`MAX_EXACT_WIDTH`. Beyond, :func:`extreme_singular_values` estimates σ_max and
σ_min by Lanczos on JᵀJ from Jacobian-vector and vector-Jacobian products (no n x n matrix).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from meanfield import inits, layers
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block

__all__ = [
    "INITS",
    "MAX_EXACT_WIDTH",
    "SpectrumStats",
    "default_block",
    "extreme_singular_values",
    "network",
    "singular_values",
    "spectrum_stats",
]

INITS = inits.BRANCH_SCHEMES + ("risotto",)
MAX_EXACT_WIDTH = 1024
# The block each companion scheme was made for: two weight layers, no f after the last.
_LINEAR_LAST = Block("relu", "none", True, shortcut=2, final_activation=False)
_DEFAULT_BLOCKS = {"fixup": _LINEAR_LAST, "weight_norm": _LINEAR_LAST}


def default_block(init: str, norm: str = "none") -> Block:
    """The block :func:`network` uses for ``init`` when none is given: the paper's ReLU block
    with ``norm``, or for fixup and weight_norm their papers' z + W_2 relu(W_1 z)."""
    return _DEFAULT_BLOCKS.get(init, Block("relu", norm))


def _check(init: str, norm: str, depth: int, width: int, batch: int, block=None):
    """The validated block (a preset or a :mod:`meanfield.layers` tree) of ``init``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if norm not in ("none", "bn_post", "bn_pre"):
        raise ValueError(f"norm must be one of ('none', 'bn_post', 'bn_pre'), got {norm!r}")
    if block is not None and not isinstance(block, (Block, layers.Layer)):
        raise ValueError(
            f"block must be a meanfield.Block, a meanfield.layers tree or None, got {block!r}"
        )
    if init == "risotto" and (block is not None or norm != "none"):
        raise ValueError("init='risotto' is its own normalization-free block; give no block/norm")
    if isinstance(block, layers.Layer) and norm != "none":
        raise ValueError(f"norm={norm!r}: a layers tree names its own norms; give one")
    if isinstance(block, Block) and norm != "none" and norm != block.norm:
        raise ValueError(f"norm={norm!r} contradicts block.norm={block.norm!r}; give one")
    if block is None and norm != "none" and init in _DEFAULT_BLOCKS:
        raise ValueError(f"norm={norm!r}: give a block for init {init!r} with BN")
    arch.static_int("depth", depth)
    arch.static_int("width", width)
    arch.static_int("batch", batch)
    block = block if block is not None else default_block(init, norm)
    if layers.has_batchnorm(layers.as_tree(block)) and batch < 2:
        raise ValueError(f"batch must be >= 2 with BN, got {batch}")
    return block


class _FixedStatistics:
    """The ``net`` of :meth:`meanfield.layers.Layer.finite` for the Jacobian: the block's
    pre-drawn weights applied in order, signals at their own scale, and BatchNorm's batch mean
    and variance held fixed (the map one input sees when the batch statistics are given)."""

    fixed_batch_statistics = True

    def __init__(self, weights, scale):
        self.weights, self.scale, self.used = weights, scale, 0
        self.log_s = jnp.zeros((), scale.dtype)

    def dense(self, a: jax.Array, centred: bool) -> jax.Array:
        w = self.weights[self.used]
        self.used += 1
        return a @ w


def network(
    init: str,
    *,
    key: jax.Array,
    depth: int,
    width: int,
    norm: str = "none",
    c: float = 1.0,
    alpha: float = 0.0,
    block: Block | layers.Layer | None = None,
):
    """The function x (B x n) -> z^L (B x n) of one sampled network with this init; weights
    drawn per block from ``fold_in(key, l)`` (position i > 0 of a branch from
    ``fold_in(fold_in(key, l), i)``) and applied by one ``lax.scan`` over blocks.
    ``alpha`` is SkipInit's branch scale; ``block`` defaults to :func:`default_block`."""
    block = _check(init, norm, depth, width, 2, block)  # the batch is the caller's
    n, L = width, depth
    dtype = jnp.result_type(float)
    keys = jax.vmap(lambda layer: jax.random.fold_in(key, layer))(jnp.arange(1, L + 1))

    def scan(step, params):  # one block per layer, compiled once whatever the depth
        return lambda x: jax.lax.scan(lambda z, p: (step(z, p), None), x, params)[0]

    if init != "risotto":
        tree = layers.as_tree(block)
        shortcut = layers.dense_count(tree)
        rule = inits.branch_init(
            init,
            width=n,
            depth=L,
            activations=layers.dense_activations(tree),
            c=c,
            branch_scale=alpha if init == "skipinit" else None,
        )
        inits.check_plain(block, rule)

        def draw(k, i):
            k = k if i == 0 else jax.random.fold_in(k, i)
            return inits.branch_weight(k, (n, n), rule, i, dtype)

        ws = tuple(jax.vmap(lambda k, i=i: draw(k, i))(keys) for i in range(shortcut))
        scale = jnp.asarray(rule.scale, dtype)

        def step(z, w):
            out = tree.finite(layers.Signal(z, False, False), _FixedStatistics(w, scale))
            return out.x if isinstance(tree, layers.Residual) else scale * out.x

        return scan(step, ws)
    w1, w2 = jax.vmap(lambda k: inits.risotto_type_c(k, n, dtype=dtype))(keys)

    def block(h, p):  # α = β = 1
        return jax.nn.relu(jax.nn.relu(h @ p[0].T) @ p[1].T + h)

    body = scan(block, (w1, w2))

    def f(x):
        h = body(jax.nn.relu(jnp.concatenate([x, -x], axis=-1)))
        return h[..., :n] - h[..., n:]

    return f


def singular_values(
    init: str,
    *,
    key: jax.Array,
    depth: int,
    width: int,
    networks: int,
    norm: str = "none",
    batch: int = 1,
    c: float = 1.0,
    alpha: float = 0.0,
    block: Block | None = None,
) -> np.ndarray:
    """Singular values (networks x width, descending) of dz^L/dx for the first of ``batch``
    inputs x ~ N(0, I_n) of each of ``networks`` sampled networks (network r uses
    ``split(key, networks)[r]``; ``key`` a typed key from ``jax.random.key``). Exact:
    ``jax.jacfwd`` and an SVD, vmapped over networks."""
    from meanfield.analysis.hessian import check_key

    check_key(key)
    _check(init, norm, depth, width, batch, block)
    networks = arch.static_int("networks", networks)
    if width > MAX_EXACT_WIDTH:
        raise ValueError(
            f"width {width} is above MAX_EXACT_WIDTH = {MAX_EXACT_WIDTH} for the exact SVD; "
            "use extreme_singular_values"
        )

    def one(k):
        kx, kw = jax.random.split(k)
        x = jax.random.normal(kx, (batch, width))
        f = network(
            init, key=kw, depth=depth, width=width, norm=norm, c=c, alpha=alpha, block=block
        )
        jac = jax.jacfwd(lambda x0: f(x.at[0].set(x0))[0])(x[0])
        return jnp.linalg.svd(jac, compute_uv=False)

    keys = jax.random.split(key, networks)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def extreme_singular_values(
    init: str,
    *,
    key: jax.Array,
    depth: int,
    width: int,
    norm: str = "none",
    batch: int = 1,
    c: float = 1.0,
    alpha: float = 0.0,
    steps: int = 60,
    block: Block | None = None,
) -> tuple[float, float]:
    """(σ_max, σ_min) of one network's Jacobian at any width, by Lanczos (full
    reorthogonalization, float64 NumPy loop) on JᵀJ applied through ``jax.jvp`` and
    ``jax.vjp``: exact once ``steps`` reaches the number of distinct singular values, an
    estimate (σ_max converges first) otherwise.

    ``key`` is a typed key: ``split(key)`` gives the inputs and the weights (the network
    :func:`singular_values` draws from the same key), ``fold_in(key, 1)`` the Lanczos start."""
    from meanfield.analysis.hessian import check_key, lanczos_ritz_values

    check_key(key)
    _check(init, norm, depth, width, batch, block)
    steps = arch.static_int("steps", steps)
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (batch, width))
    f = network(init, key=kw, depth=depth, width=width, norm=norm, c=c, alpha=alpha, block=block)

    def g(x0):
        return f(x.at[0].set(x0))[0]

    _, vjp = jax.vjp(g, x[0])

    @jax.jit
    def gram(v):
        jv = jax.jvp(g, (x[0],), (v.astype(x.dtype),))[1]
        return vjp(jv)[0].astype(jnp.float64)

    with jax.enable_x64(True):
        ritz = lanczos_ritz_values(gram, width, min(steps, width), key=jax.random.fold_in(key, 1))
    ritz = np.clip(ritz, 0.0, None)
    return float(math.sqrt(ritz.max())), float(math.sqrt(ritz.min()))


class SpectrumStats(NamedTuple):
    """Per network: spread of the singular values (arrays over networks)."""

    sd_log: np.ndarray  # standard deviation of ln σ_i
    mean_log: np.ndarray  # mean of ln σ_i
    condition: np.ndarray  # σ_max / σ_min
    max_abs_log: np.ndarray  # max_i |ln σ_i|: 0 for perfect isometry


def spectrum_stats(sv: np.ndarray) -> SpectrumStats:
    """Spread of each network's singular values (rows of ``sv``)."""
    sv = np.asarray(sv, np.float64)
    with np.errstate(divide="ignore"):
        logs = np.log(sv)
    return SpectrumStats(
        sd_log=logs.std(axis=-1),
        mean_log=logs.mean(axis=-1),
        condition=sv.max(axis=-1) / sv.min(axis=-1),
        max_abs_log=np.abs(logs).max(axis=-1),
    )
