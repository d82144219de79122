"""Many networks: :func:`simulate`, its argument checks, and the jitted, sharded chunk.

:func:`simulate` checks its arguments and resolves the init rule and the engine, runs the
networks in chunks (:func:`chunk_fn`: :func:`meanfield.montecarlo.network_statistics` vmapped
over a chunk's network keys, jitted, the network axis sharded over all devices), and reduces the
per-network values into an :class:`~meanfield.montecarlo.Estimate`
(:func:`meanfield.montecarlo.estimates.reduce_networks`), warning where its mean is unreliable.
"""

from __future__ import annotations

import functools
import math
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from meanfield import inits, layers
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.montecarlo.checks import (
    PRECISIONS,
    check_input_law,
    check_run,
    check_scalars,
    networks_per_call,
    resolve_engine,
)
from meanfield.montecarlo.chunks import run_chunks
from meanfield.montecarlo.estimates import (
    Estimate,
    HeavyTailWarning,
    RankDeficitWarning,
    heavy_tail_message,
    rank_deficit_message,
    reduce_networks,
)
from meanfield.montecarlo.memory import bytes_per_network, streaming_seconds
from meanfield.montecarlo.network import network_statistics
from meanfield.montecarlo.progress import (
    AUTO_SECONDS,
    LAYER_PROGRESS,
    estimated_seconds,
    layer_every,
)

ENGINES = ("explicit", "weightfree", "auto")


@functools.lru_cache(maxsize=64)
def chunk_fn(
    block,
    depth,
    width,
    batch,
    precision_name,
    chunk,
    n_devices,
    scheme=None,
    engine="explicit",
    has_branch_scale=False,
    progress_every=0,
    key_impl=None,
    grid=False,
):
    """(jitted function of (values, a chunk of network keys as raw key data) -> per-network
    statistics, the
    sharding of the keys' network axis over the first ``n_devices`` devices); cached, so a
    second :func:`simulate` with the same static arguments reuses the compiled chunk.

    Only what fixes the program is static: the tree, sizes, precision, the init scheme's name
    (its law and which weights are zero), the engine, whether a branch scale is given. The
    values (:func:`chunk_values`: var_w, the scheme's c and gain, the input scale, β) are
    traced, so another var_w, c, β, input scale or seed runs the same compiled program.
    With ``grid`` every network carries its own values (a leading axis, sharded like the
    keys), and a ``"depth"`` among them makes the depth traced too, up to ``depth``
    (:func:`meanfield.montecarlo.simulate_grid`)."""
    precision = PRECISIONS[precision_name]

    def one(values, raw_key):
        key = jax.random.wrap_key_data(raw_key, impl=key_impl)
        return network_statistics(
            block,
            depth,
            width,
            batch,
            values["var_w"],
            key,
            precision=precision,
            init=None if scheme is None else (scheme, values["c"], values["gain"]),
            engine=engine,
            input_std=values["input_std"],
            log_input_std=values["log_input_std"],
            branch_scale=values["branch_scale"] if has_branch_scale else None,
            progress_every=progress_every,
            active_depth=values.get("depth"),
            input_shift=values["input_shift"],
            input_corr=values["input_corr"],
        )

    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("networks",))
    sharded = NamedSharding(mesh, PartitionSpec("networks"))
    replicated = NamedSharding(mesh, PartitionSpec())
    fn = jax.jit(
        jax.vmap(one, in_axes=(0 if grid else None, 0)),
        in_shardings=(sharded if grid else replicated, sharded),
        out_shardings=sharded,
    )
    return fn, sharded


def _resolve_rule(
    block: Block, tree: layers.Layer, width, depth, var_w, init, c, gain, branch_scale
):
    """(the init rule, the static ``init`` of :func:`chunk_fn`, var_w) for simulate's
    arguments: RISOTTO's network, a scheme of :func:`meanfield.inits.branch_init`, or
    N(0, var_w) weights."""
    if init == "risotto":
        if block != inits.RISOTTO_BLOCK or branch_scale is not None:
            raise ValueError(
                "init='risotto' simulates RISOTTO's type-C network (y -> relu(W2 relu(W1 h) + h) "
                f"on 2n looks-linear channels): give block={inits.RISOTTO_BLOCK!r} and no "
                f"branch_scale, got block={block!r}, branch_scale={branch_scale!r}"
            )
        rule = inits.BranchInit("risotto", "orthogonal", (1.0, 1.0), 1.0)
        init_key = ("risotto", 1.0, 1.0)
        var_w = 1.0
    elif init is not None:
        rule = inits.branch_init(
            init,
            width=width,
            depth=depth,
            activations=layers.dense_activations(tree),
            c=c,
            gain=gain,
            branch_scale=branch_scale,
        )
        init_key = (init, float(c), float(gain))
        var_w = float(max(rule.var_w))
    else:
        arch.check_var_w(var_w)
        shortcut = layers.dense_count(tree)
        rule = inits.var_w_rule(var_w, shortcut=shortcut, branch_scale=branch_scale)
        init_key = None
    return rule, init_key, var_w


def chunk_values(
    var_w,
    c=1.0,
    gain=1.0,
    input_std=1.0,
    branch_scale=None,
    dtype=None,
    input_mean=0.0,
    input_corr=0.0,
) -> dict:
    """The traced arguments of a :func:`chunk_fn` program, as arrays of ``dtype``."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    values = dict(var_w=var_w, c=c, gain=gain, input_std=input_std, input_corr=input_corr)
    values["input_shift"] = input_mean / input_std
    values["log_input_std"] = math.log(input_std)  # on the host, as the one-network code did
    values["branch_scale"] = 0.0 if branch_scale is None else branch_scale
    return {k: jnp.asarray(v, dtype) for k, v in values.items()}


def _warn_unreliable(block: Block, estimate: Estimate) -> None:
    """Warn where the estimate's mean is not reliable (:class:`HeavyTailWarning`) or the
    weight-free engine lost rank (:class:`RankDeficitWarning`), at the caller of simulate
    (through :func:`_simulate`)."""
    message = heavy_tail_message(block, estimate.spread)
    if message:
        warnings.warn(message, HeavyTailWarning, stacklevel=4)
    message = rank_deficit_message(block, estimate.rank_deficit, estimate.rank_deficit_max)
    if message:
        warnings.warn(message, RankDeficitWarning, stacklevel=4)


def simulate(
    block: Block,
    *,
    key: jax.Array,
    depth: int,
    width: int,
    var_w: float | None = None,
    init: str | None = None,
    c: float = 1.0,
    gain: float = 1.0,
    networks: int,
    batch: int,
    chunk_size: int | None = None,
    precision: str = "highest",
    engine: str = "auto",
    progress: bool | None = None,
    input_std: float = 1.0,
    warn: bool = True,
    branch_scale: float | None = None,
    input_mean: float = 0.0,
    input_corr: float = 0.0,
) -> Estimate:
    """Monte-Carlo estimate of the per-layer statistics of ``networks`` sampled networks.

    Args:
        block: the architecture.
        key: a JAX PRNG key (``jax.random.key(seed)``); network r uses
            ``jax.random.split(key, networks)[r]``, so results do not depend on chunking.
        depth: L, number of blocks. width: n.
        var_w: variance of one weight entry, weights i.i.d. N(0, var_w) (e.g.
            ``meanfield.theory.he_var_w(n)``). Give either ``var_w`` or ``init``.
        init: a scheme of :data:`meanfield.inits.BRANCH_SCHEMES` ("he", "glorot",
            "depth_scaled" with ``c``, "orthogonal" with ``gain``, "zero", "fixup",
            "skipinit", "rezero", "weight_norm"); the k weights of every branch are drawn by
            its rule (:func:`meanfield.inits.branch_init`: per-layer variance, law, and the
            scalar β that multiplies the branch). Or "risotto" with
            ``block=inits.RISOTTO_BLOCK``: RISOTTO's type-C network on 2n looks-linear
            channels (:func:`meanfield.inits.risotto_type_c`), whose statistics are those of
            the signal y it carries (n units) and of dE/dy; ``var_dw`` is over its
            2n x 2n weights. Every block maps y to M_l y (M_l orthogonal), so ``m2_z`` and
            ``m2_dz`` are exactly flat in every network.
        networks: R, sampled networks. batch: B inputs per network (>= 2 with BN, which uses
            their batch statistics).
        chunk_size: networks per compiled call (default from memory; a device-count multiple).
        precision: "highest" (full float32 matmuls, the default) or "default" (TF32 on NVIDIA
            GPUs; faster, less accurate).
        engine: "explicit" draws every weight matrix; "weightfree" samples each layer's
            output U = A W and, in the backward pass, W^T D from their exact conditional laws
            (:func:`weightfree_linear`), O(nB² + B³) per layer instead of O(n²B) and n²
            normals; "auto" (default) takes weight-free for Gaussian and orthogonal weights
            when 4B <= n (:func:`weightfree_orthogonal` samples Haar weights the same way).
            Both are exact: the same statistics in distribution, not the same numbers.
        progress: the call's size and estimated time, then a line per chunk to stderr and,
            inside a chunk estimated to take over ``progress.AUTO_SECONDS``, the layer reached
            (every max(1, L/50)). None (default): on when the call is estimated to be longer.
        input_std: the inputs are x ~ N(0, input_std² I) (default 1), e.g. to start where
            the stem of a real network starts (:mod:`meanfield.training.initcheck`).
        input_mean, input_corr: x_b = input_mean + input_std·(√ρ·c + √(1 - ρ)·e_b), ρ =
            input_corr in [0, 1), c shared by the batch (:func:`network_statistics`).
        warn: issue a :class:`HeavyTailWarning` when some statistic's standard deviation over
            networks of its log exceeds :data:`HEAVY_TAIL_SD_LN` at some layer, or it is
            exactly zero in some networks but not in all; and a :class:`RankDeficitWarning`
            when a weight-free layer lost rank beyond its structure (``Estimate.rank_deficit``).
        branch_scale: β >= 0, the scalar multiplying every branch, z^l = z^{l-1} + β h
            (default: the scheme's, 0 for skipinit and rezero, else 1; SkipInit's small
            variant needs β < 1/sqrt(depth)).

    With ``block.shortcut`` = k > 1 the statistic ``var_dw`` is the mean over the k weights
    of each branch of (1/(n² B)) Σ (dE/dW)².

    Returns:
        :class:`Estimate` with per-layer :class:`Stat` (mean over networks, standard error)
        and, in ``spread``, each statistic's :class:`Spread` over networks.

    Raises:
        NetworkMemoryError: (a ``MemoryError``) before compiling, when one network, a chunk
            or the results need more memory than is available (the estimate, how to shrink).
    """
    # Every argument, by name: as the first statement, locals() holds exactly them.
    return _simulate(**locals())


def _progress_plan(progress, engine, networks, chunk_size, depth, n, batch, dense, risotto):
    """(whether to report per chunk, every how many layers to report inside one: 0 for none,
    the estimated seconds). ``progress=None`` reports when the call is estimated to be long;
    layers are reported only inside a chunk that is long itself. The estimate is the larger
    of the per-product costs and the lower bound from the values the layers produce
    (:func:`~meanfield.montecarlo.memory.streaming_seconds`, what a wide weight-free network
    costs)."""

    def seconds(count: int) -> float:
        per_product = estimated_seconds(engine, count, depth, n, batch, dense)
        return max(per_product, count * streaming_seconds(depth, n, batch, dense))

    total = seconds(networks)
    if progress is None:
        progress = total > AUTO_SECONDS
    long_chunk = seconds(chunk_size) > AUTO_SECONDS
    every = (layer_every(depth) or 1) if progress and long_chunk and not risotto else 0
    return bool(progress), every, total


def _announce(block, engine, networks, chunk_size, depth, n, batch, dense, itemsize, total):
    """The line a reported call starts with: its size, memory and estimated time."""
    per = bytes_per_network(depth, n, batch, itemsize, engine, dense)
    print(
        f"  montecarlo {block.name}: {networks} networks of width {n}, depth {depth}, batch "
        f"{batch} ({engine}), about {per / 2**30:.3g} GiB each, {-(-networks // chunk_size)} "
        f"chunk(s) of {chunk_size}; estimated {total:.0f} s on a 2-core CPU",
        file=sys.stderr,
        flush=True,
    )


def _simulate(
    block: Block,
    *,
    key: jax.Array,
    depth: int,
    width: int,
    var_w: float | None,
    init: str | None,
    c: float,
    gain: float,
    networks: int,
    batch: int,
    chunk_size: int | None,
    precision: str,
    engine: str,
    progress: bool | None,
    input_std: float,
    warn: bool,
    branch_scale: float | None,
    input_mean: float,
    input_corr: float,
) -> Estimate:
    """:func:`simulate`, given all its arguments: check and resolve them, run the chunks,
    reduce over networks and warn."""
    tree = layers.as_tree(block)
    shortcut = layers.dense_count(tree)
    depth = arch.static_int("depth", depth)
    width = arch.static_int("width", width)
    networks = arch.static_int("networks", networks)
    batch = arch.static_int("batch", batch)
    if (var_w is None) == (init is None):
        raise ValueError(f"give exactly one of var_w and init, got var_w={var_w!r}, init={init!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    check_scalars(
        var_w=var_w, c=c, gain=gain, input_std=input_std, branch_scale=branch_scale,
        input_mean=input_mean, input_corr=input_corr,
    )  # fmt: skip
    rule, init_key, var_w = _resolve_rule(
        block, tree, width, depth, var_w, init, c, gain, branch_scale
    )
    branch_scale = None if branch_scale is None else float(branch_scale)
    inits.check_plain(block, rule)
    engine = resolve_engine(engine, rule, init, width, batch)
    input_std = check_run(tree, block, batch, networks, precision, input_std, key)
    check_input_law(input_mean, input_corr)

    dtype, n_devices = jnp.result_type(float), jax.device_count()
    itemsize = jnp.dtype(dtype).itemsize
    n = 2 * width if init == "risotto" else width  # RISOTTO's network runs on 2n channels
    chunk_size = networks_per_call(
        block, chunk_size, depth, n, batch, networks, itemsize, engine, shortcut, n_devices
    )
    progress, every, total = _progress_plan(
        progress, engine, networks, chunk_size, depth, n, batch, shortcut, init == "risotto"
    )
    if progress:
        _announce(block, engine, networks, chunk_size, depth, n, batch, shortcut, itemsize, total)
    scheme = None if init_key is None else init_key[0]
    fn, sharded = chunk_fn(
        tree, depth, width, batch, precision, chunk_size, n_devices, scheme, engine,
        branch_scale is not None, every, str(jax.random.key_impl(key)),
    )  # fmt: skip

    start = time.perf_counter()
    keys = jax.random.split(key, networks)
    c_gain = (1.0, 1.0) if init_key is None else init_key[1:]
    values = chunk_values(
        var_w, *c_gain, input_std, branch_scale, dtype, float(input_mean), float(input_corr)
    )
    LAYER_PROGRESS.begin(block.name, depth, networks, -(-networks // chunk_size))
    per = run_chunks(fn, sharded, keys, values, chunk_size, progress)
    seconds = time.perf_counter() - start
    estimate = reduce_networks(
        per, depth=depth, networks=networks, batch=batch, seconds=seconds, dtype=dtype
    )
    if warn:
        _warn_unreliable(block, estimate)
    return estimate
