"""How much memory the training state of K networks takes, known before anything is allocated.

The state of a run (:class:`~meanfield.training.trainer.TrainState`) is K copies of one
network's parameters, BN statistics and optimizer slots (SGD with momentum keeps one slot per
parameter, Adam two), all on one device. :func:`state_footprint` takes their shapes from the
initialization traced without running it (``jax.eval_shape``), and :func:`check_state_fits`
refuses a run whose state alone exceeds the memory of the device (an accelerator's memory, or
the machine's physical memory on a CPU): such a run would otherwise allocate networks one seed
at a time until the machine runs out, which at ``--seeds 100000`` looks like a hang. The
state is a lower bound of what training needs (the step also holds gradients, activations and
the data), so a run that passes can still run out of memory; one that fails cannot fit.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import numpy as np

from meanfield.training.trainer import TrainConfig, init_model, init_network, make_optimizer

__all__ = ["Footprint", "StateMemoryError", "check_state_fits", "memory_limit", "state_footprint"]


class StateMemoryError(MemoryError):
    """The training state of a run's K networks does not fit in the device's memory."""


@dataclasses.dataclass(frozen=True)
class Footprint:
    """The training state of one run: per network and for all ``seeds`` of them."""

    seeds: int
    parameters: int  # trainable parameters of one network
    optimizer_slots: int  # optimizer values per parameter (SGD with momentum: 1, Adam: 2)
    bytes_per_network: int  # parameters, BN statistics and optimizer state of one network
    total_bytes: int  # of all seeds


@functools.lru_cache(maxsize=32)
def state_footprint(config: TrainConfig) -> Footprint:
    """The bytes of the state of ``config``'s networks, from shapes alone (nothing allocated,
    nothing compiled: about a third of a second for the paper's 100 blocks; kept per
    configuration)."""
    tx = make_optimizer(config)
    shapes = jax.eval_shape(lambda k: init_network(init_model(config), tx, k), jax.random.key(0))
    params, stats, opt_state = shapes

    def nbytes(tree) -> int:
        leaves = jax.tree_util.tree_leaves(tree)
        return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)

    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    per = nbytes(params) + nbytes(stats) + nbytes(opt_state) + 4  # + diverged_at (int32)
    k = len(config.seeds)
    slots = round(nbytes(opt_state) / nbytes(params)) if count else 0
    return Footprint(k, count, slots, per, per * k)


def memory_limit() -> tuple[int, str]:
    """(bytes, what): the memory of the default device, or the machine's physical memory
    where the device reports none (a CPU)."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (backends without memory statistics)
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"the memory of {device.device_kind}"
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's memory"
    except (ValueError, OSError, AttributeError):  # no sysconf: nothing to compare with
        return 2**63, "this machine's memory"


def gib(nbytes: float) -> str:
    """``nbytes`` readably: '1,224 GiB', '12.5 MiB'."""
    if nbytes < 2**30:
        return f"{nbytes / 2**20:.3g} MiB"
    return f"{nbytes / 2**30:,.0f} GiB" if nbytes >= 100 * 2**30 else f"{nbytes / 2**30:.3g} GiB"


def check_state_fits(config: TrainConfig) -> Footprint:
    """The :class:`Footprint` of ``config``; raises :class:`StateMemoryError` (naming the
    numbers and the settings to change) when the state alone exceeds :func:`memory_limit`."""
    found = state_footprint(config)
    have, where = memory_limit()
    if found.total_bytes > have:
        m = config.model
        raise StateMemoryError(
            f"the training state of {found.seeds} networks ({found.parameters:,} parameters "
            f"each, with {found.optimizer_slots} optimizer value(s) per parameter: "
            f"{gib(found.bytes_per_network)} a network) needs {gib(found.total_bytes)}, more "
            f"than the {gib(have)} of {where}: train fewer seeds ({found.seeds}) or a smaller "
            f"network (channels {m.channels}, depth {m.depth}, kernel_size {m.kernel_size})"
        )
    return found
