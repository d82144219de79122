"""A grid of Monte-Carlo configurations as one compiled program: :func:`simulate_grid`.

Every (configuration, network) pair is one item of a single vmapped, jitted chunk program
(:func:`meanfield.montecarlo.runner.chunk_fn` with ``grid``): the values that make a
configuration (var_w, or the scheme's c and gain, the depth up to ``max_depth``, the input
scale, β) travel with each network as traced arguments, and the flat item axis is chunked and
sharded over the devices of every process like the network axis of :func:`simulate`. So a
sweep over 64 weight variances, a few depths and several seeds compiles once and keeps every
device busy, however small each configuration is.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from meanfield import inits, layers
from meanfield.core import architecture as arch
from meanfield.montecarlo.checks import (
    PRECISIONS,
    check_input_law,
    networks_per_call,
    resolve_engine,
)
from meanfield.montecarlo.chunks import run_chunks
from meanfield.montecarlo.estimates import Estimate, Spread, Stat, reduce_networks
from meanfield.montecarlo.progress import LAYER_PROGRESS
from meanfield.montecarlo.runner import ENGINES, chunk_fn

__all__ = ["configuration", "grid_values", "simulate_grid", "stack_estimates"]


def grid_values(
    var_w, init, c, gain, depth, input_std, branch_scale, input_mean=0.0, input_corr=0.0
) -> dict[str, np.ndarray]:
    """The configuration axis: every value broadcast to one 1-D shape (C,), checked."""
    if (var_w is None) == (init is None):
        raise ValueError(f"give exactly one of var_w and init, got var_w={var_w!r}, init={init!r}")
    if var_w is not None:
        arch.check_var_w(var_w)
    arch.check_positive("c", c)
    arch.check_positive("gain", gain)
    arch.check_depth(depth)
    arch.check_positive("input_std", input_std)
    if branch_scale is not None:
        arch.check_nonnegative("branch_scale", branch_scale)
    check_input_law(input_mean, input_corr)
    given = {
        "var_w": 1.0 if var_w is None else var_w,
        "c": c,
        "gain": gain,
        "depth": depth,
        "input_std": input_std,
        "branch_scale": 0.0 if branch_scale is None else branch_scale,
        "input_mean": input_mean,
        "input_corr": input_corr,
    }
    arrays = {k: np.asarray(v) for k, v in given.items()}
    for k, v in arrays.items():
        if v.ndim > 1 or v.size == 0:
            raise ValueError(
                f"{k} must be a number or a non-empty 1-D array of them, got shape {v.shape}"
            )
    try:
        shape = np.broadcast_shapes(*(v.shape for v in arrays.values()))
    except ValueError:
        shapes = {k: v.shape for k, v in arrays.items()}
        raise ValueError(f"the grid's values must broadcast to one shape, got {shapes}") from None
    shape = shape or (1,)
    return {k: np.broadcast_to(v, shape) for k, v in arrays.items()}


def _grid_keys(key, configs: int) -> np.ndarray:
    """One key per configuration, as raw key data: ``key`` for all (the same networks in every
    configuration: common random numbers), or ``key[i]`` for configuration i."""
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError(
            f"key must be a typed PRNG key from jax.random.key(seed), or an array of "
            f"{configs} of them (one per configuration), got {key!r}"
        )
    if key.ndim == 0:
        key = jnp.broadcast_to(key, (configs,))
    if key.shape != (configs,):
        raise ValueError(
            f"key must be one key or one per configuration (shape ({configs},)), got shape "
            f"{key.shape}"
        )
    return key


def _per_configuration(per: dict, configs: int, networks: int) -> list[dict]:
    """The per-network outputs of the flat item axis, cut into one dict per configuration."""
    return [
        {k: v[i * networks : (i + 1) * networks] for k, v in per.items()} for i in range(configs)
    ]


def _per_network_values(grid: dict, networks: int, dtype) -> dict[str, np.ndarray]:
    """The traced values of every (configuration, network) item, configuration-major."""
    grid = dict(grid)
    std = grid["input_std"].astype(np.float64)
    grid["log_input_std"] = np.log(std)  # on the host, as simulate does
    grid["input_shift"] = grid.pop("input_mean") / std
    out = {k: np.repeat(v, networks).astype(dtype) for k, v in grid.items()}
    out["depth"] = np.repeat(grid["depth"], networks).astype(np.int32)
    return out


def stack_estimates(estimates: list[Estimate], seconds: float) -> Estimate:
    """One :class:`Estimate` whose arrays have a leading configuration axis."""
    first = estimates[0]
    fields = {}
    for name in ("mean_z", "m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw", "corr_z"):
        for key in (name, f"log10_{name}"):
            if key in ("log10_mean_z", "log10_corr_z"):
                continue
            stats = [getattr(e, key) for e in estimates]
            fields[key] = Stat(*(np.stack(x) for x in zip(*stats, strict=True)))
    spread = {
        name: Spread(*(np.stack(x) for x in zip(*(e.spread[name] for e in estimates), strict=True)))
        for name in first.spread
    }
    return Estimate(
        **fields,
        overflow=np.stack([e.overflow for e in estimates]),
        networks=first.networks,
        batch=first.batch,
        seconds=seconds,
        spread=spread,
        rank_deficit=np.stack([e.rank_deficit for e in estimates]),
        rank_deficit_max=np.stack([e.rank_deficit_max for e in estimates]),
    )


def _grid_program(
    tree, init, width, batch, max_depth, items, chunk_size, precision, engine, has_scale, impl
):
    """(the compiled grid program, the sharding of its item axis, items per call), after
    checking the batch, precision and engine against the tree and the scheme's law."""
    if layers.has_batchnorm(tree) and batch < 2:
        raise ValueError(f"batch must be >= 2 for {tree.name} (its BatchNorm), got {batch}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    shortcut = layers.dense_count(tree)
    # The law of the weights (what the engine can sample) does not depend on the values.
    if init is None:
        rule = inits.var_w_rule(1.0, shortcut=shortcut)
    else:
        acts = layers.dense_activations(tree)
        rule = inits.branch_init(init, width=width, depth=max_depth, activations=acts)
    inits.check_plain(tree, rule)
    engine = resolve_engine(engine, rule, init, width, batch)
    n_devices = jax.device_count()
    itemsize = jnp.dtype(jnp.result_type(float)).itemsize
    chunk = networks_per_call(
        tree, chunk_size, max_depth, width, batch, items, itemsize, engine, shortcut, n_devices
    )
    fn, sharded = chunk_fn(
        tree,
        max_depth,
        width,
        batch,
        precision,
        chunk,
        n_devices,
        init,
        engine,
        has_scale,
        0,
        impl,
        True,
    )
    return fn, sharded, chunk


def configuration(est: Estimate, i: int) -> Estimate:
    """Configuration ``i`` of a grid's :class:`Estimate`, as the Estimate of its own run
    (``seconds``: the grid's, shared out evenly)."""
    configs = est.overflow.shape[0]
    fields = {
        f.name: getattr(est, f.name)
        for f in dataclasses.fields(est)
        if f.name not in ("networks", "batch", "seconds")
    }
    picked = jax.tree.map(lambda v: v[i], fields, is_leaf=lambda v: v is None)
    return Estimate(**picked, networks=est.networks, batch=est.batch, seconds=est.seconds / configs)


def simulate_grid(
    block,
    *,
    key: jax.Array,
    depth,
    width: int,
    networks: int,
    batch: int,
    var_w=None,
    init: str | None = None,
    c=1.0,
    gain=1.0,
    max_depth: int | None = None,
    input_std=1.0,
    branch_scale=None,
    input_mean=0.0,
    input_corr=0.0,
    chunk_size: int | None = None,
    precision: str = "highest",
    engine: str = "auto",
    progress: bool = False,
) -> Estimate:
    """Monte-Carlo estimates of a grid of configurations of one block, in one program.

    ``var_w`` (or the ``c`` and ``gain`` of the scheme ``init``), ``depth``, ``input_std``,
    ``input_mean``, ``input_corr`` and ``branch_scale`` are numbers or 1-D arrays that
    broadcast to the grid's C configurations (build a product grid with ``np.meshgrid``);
    ``key`` is one key, shared by every configuration (the same inputs, loss vectors and
    normals, which makes differences between configurations far less noisy), or C keys (seeds).
    Configuration i with key k samples exactly the networks of ``simulate(block, key=k,
    depth=depth[i], ...)``, to float rounding: the same ``jax.random.split(k, networks)`` and
    the same weights per layer.

    Every (configuration, network) is one item of one compiled program (values traced, the
    depth up to ``max_depth``, default the largest), ``chunk_size`` items per call (default
    from memory), sharded over all devices; other arguments as in :func:`simulate`.

    Returns:
        :class:`Estimate` whose arrays have shape (C, max_depth + 1), NaN past each
        configuration's depth; ``seconds`` is the wall time of the whole grid.
    """
    tree = layers.as_tree(block)
    width = arch.static_int("width", width)
    networks = arch.static_int("networks", networks)
    batch = arch.static_int("batch", batch)
    if networks < 2:
        raise ValueError(f"networks must be >= 2 to give a standard error, got {networks}")
    if init == "risotto":
        raise ValueError("init='risotto' has no grid; call simulate for RISOTTO's network")
    grid = grid_values(var_w, init, c, gain, depth, input_std, branch_scale, input_mean, input_corr)
    max_depth = arch.check_max_depth(int(grid["depth"].max()), max_depth)
    arch.check_max_depth(grid["depth"], max_depth)
    keys = _grid_keys(key, configs := grid["depth"].shape[0])
    items = configs * networks
    fn, sharded, chunk = _grid_program(
        tree,
        init,
        width,
        batch,
        max_depth,
        items,
        chunk_size,
        precision,
        engine,
        branch_scale is not None,
        str(jax.random.key_impl(keys)),
    )
    dtype = jnp.result_type(float)
    start = time.perf_counter()
    network_keys = jax.vmap(lambda k: jax.random.split(k, networks))(keys).reshape(items)
    per_network = _per_network_values(grid, networks, dtype)
    LAYER_PROGRESS.begin(tree.name, max_depth, items, -(-items // chunk))
    per = run_chunks(fn, sharded, network_keys, None, chunk, progress, per_network)
    estimates = [
        reduce_networks(
            part, depth=max_depth, networks=networks, batch=batch, seconds=0.0, dtype=dtype
        )
        for part in _per_configuration(per, configs, networks)
    ]
    return stack_estimates(estimates, time.perf_counter() - start)
