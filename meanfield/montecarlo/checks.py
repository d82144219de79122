"""The checks of a Monte-Carlo run shared by :func:`~meanfield.montecarlo.simulate` and
:func:`~meanfield.montecarlo.simulate_grid`: the engine "auto" resolves to, the batch, network
count, precision, input law and key, the values that must be scalars, and the networks per
compiled call (refused before anything is compiled when they do not fit in memory)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from meanfield import layers
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.montecarlo.memory import auto_chunk_size, check_call_fits, check_one_network_fits

__all__ = [
    "PRECISIONS",
    "check_input_law",
    "check_run",
    "check_scalars",
    "networks_per_call",
    "resolve_engine",
]

PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": jax.lax.Precision.DEFAULT}


def resolve_engine(engine: str, rule, init, width: int, batch: int) -> str:
    """The engine "auto" stands for (weight-free for Gaussian and orthogonal weights when
    4B <= n), after checking that the weight-free engine can sample the rule's weights."""
    sampled = rule.law in ("gaussian", "orthogonal")  # laws the weight-free engine samples
    if engine == "auto":
        engine = "weightfree" if sampled and 4 * batch <= width else "explicit"
    if engine == "weightfree" and not sampled:
        raise ValueError(
            "engine='weightfree' needs Gaussian or orthogonal weights; "
            f"init={init!r} draws {rule.law} ones"
        )
    if engine == "weightfree" and rule.law == "orthogonal" and 2 * batch > width:
        raise ValueError(
            "engine='weightfree' with orthogonal weights needs width >= 2 * batch (room for "
            f"the fresh frame of the backward pass), got width={width}, batch={batch}"
        )
    return engine


def check_run(
    tree: layers.Layer, block: Block, batch, networks, precision, input_std, key
) -> float:
    """Check the batch, network count, precision, input scale and key; returns input_std as
    a float."""
    if layers.has_batchnorm(tree) and batch < 2:
        raise ValueError(
            f"batch must be >= 2 for {block.name} (its BatchNorm uses the batch statistics), "
            f"got {batch}"
        )
    if networks < 2:
        raise ValueError(f"networks must be >= 2 to give a standard error, got {networks}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    arch.check_positive("input_std", input_std)
    input_std = float(input_std)
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError(f"key must be a typed PRNG key from jax.random.key(seed), got {key!r}")
    arch.check_key(key)
    return input_std


def check_scalars(**values) -> None:
    """Raise ValueError naming the first of ``values`` (None passes) that is an array of
    several numbers: one call simulates one configuration (meanfield.sweep takes arrays)."""
    for name, value in values.items():
        if value is not None:
            arch.check_scalar(name, value, "meanfield.sweep takes arrays")


def networks_per_call(
    block: Block, chunk_size, depth, width, batch, networks, itemsize, engine, shortcut, n_devices
) -> int:
    """Networks per compiled call: ``chunk_size`` or the default from available memory, at
    most ``networks``, rounded up to a multiple of the device count; raises
    :class:`~meanfield.montecarlo.NetworkMemoryError` when one network alone, a chunk or the
    call's results do not fit."""
    check_one_network_fits(block, depth, width, batch, itemsize, engine, shortcut)
    if chunk_size is None:
        chunk_size = auto_chunk_size(
            depth, width, batch, networks, itemsize, engine=engine, shortcut=shortcut
        )
    chunk_size = arch.static_int("chunk_size", chunk_size)
    chunk_size = min(chunk_size, networks)
    chunk_size = -(-chunk_size // n_devices) * n_devices
    check_call_fits(block, depth, width, batch, networks, chunk_size, itemsize, engine, shortcut)
    return chunk_size


def check_input_law(input_mean, input_corr) -> None:
    """input_mean finite, input_corr in [0, 1) (numbers or arrays)."""
    arch.check_finite("input_mean", input_mean)
    arch.check_all(
        "input_corr",
        input_corr,
        lambda r: (r >= 0) & (r < 1),
        "a number in [0, 1)",
        integer=False,
    )
