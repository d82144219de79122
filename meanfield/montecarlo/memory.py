"""How much memory one simulated network needs, and how many networks a chunk can hold.

:func:`bytes_per_network` is the estimate (what the backward pass stores per network, and the
weight buffers of the layer being recomputed), :func:`auto_chunk_size` the default chunk size
of :func:`meanfield.montecarlo.simulate`; before anything is compiled,
:func:`check_one_network_fits` refuses a network that alone does not fit and
:func:`check_call_fits` a call whose chunk and per-network results do not
(:class:`NetworkMemoryError`). :func:`streaming_seconds` is a lower bound on a network's run
time from the values it produces, which tells a long call from a short one.
"""

from __future__ import annotations

import os

import jax

# On a CPU a chunk runs fastest when what it stores stays small: memory-sized chunks were
# 1.2x to 3x slower per network than chunks of about 64 MiB (2-core CPU, explicit engine,
# depth 100: width 256 and batch 64, 24 MB per network, took 4.7 s for 128 networks in
# chunks of 2 to 8, 5.8 s in chunks of 64, and 256 networks 10.7 s in chunks of 32 against
# 36 s in one chunk; width 128 and batch 16: 3.2-3.3 s in chunks of 8-32, 3.6 s in 64).
CPU_CHUNK_BYTES = 64 * 2**20
# Host bytes per network and layer of a call's results: the per-network values gathered from
# every chunk (about 8 float32 statistics) and the reduction's float64 copies (measured: 86
# bytes per network-layer in reduce_networks at 20,000 networks of depth 200, 28 gathered).
HOST_BYTES_PER_NETWORK_LAYER = 128
# Seconds per value of a network's (L + 1) x B x n activations, per Dense layer, forward and
# backward, on a 2-core CPU: drawing, normalizing and storing them (measured 4.5e-8 to 1.2e-7
# with the weight-free engine from width 256 to 10^6, batch 4 to 16).
SECONDS_PER_VALUE = 6e-8


class NetworkMemoryError(MemoryError):
    """One network does not fit in the device memory available to the simulation."""


def bytes_per_network(
    depth: int,
    width: int,
    batch: int,
    itemsize: int,
    engine: str = "explicit",
    shortcut: int = 1,
) -> int:
    """Estimated bytes one network needs (``itemsize`` bytes a float; ``shortcut`` = k Dense
    layers per block); :func:`auto_chunk_size` and :func:`check_one_network_fits` use it."""
    # Stored per network for the backward pass: z_hat per layer (the checkpointed scan's
    # carry), the weight-free layers' outputs u (k per layer; counted for both engines) and k
    # B x B Gram matrices per layer; plus about one more L·B·n of temporaries, and a few n x n
    # weight buffers alive at once inside the layer being recomputed (explicit engine only).
    # XLA's figure is 50-70% of this (benchmarks/memory_montecarlo.py).
    weights = 4 * width**2 if engine == "explicit" else 8 * batch * width
    stored = (2 + shortcut) * (depth + 1) * batch * width + 2 * shortcut * depth * batch**2
    return itemsize * (stored + weights)


def streaming_seconds(depth: int, width: int, batch: int, shortcut: int = 1) -> float:
    """A lower bound on the seconds one network takes on a 2-core CPU: its L x k layers each
    produce and pass over B x n values (:data:`SECONDS_PER_VALUE`), whatever the engine;
    at large widths this, not the products, is what the weight-free engine's time is."""
    return SECONDS_PER_VALUE * float(depth) * shortcut * float(batch) * float(width)


def _host_available_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**31


def _available_bytes() -> int:
    dev = jax.local_devices()[0]
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001  (backends without memory stats)
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return _host_available_bytes()


def auto_chunk_size(
    depth: int,
    width: int,
    batch: int,
    networks: int,
    itemsize: int = 4,
    engine: str = "explicit",
    shortcut: int = 1,
) -> int:
    """Networks per chunk: a quarter of the available device memory, at most ``networks``;
    on a CPU at most :data:`CPU_CHUNK_BYTES` (what runs fastest there, not what fits); the
    networks are split into chunks of equal size as far as the cap allows."""
    per = bytes_per_network(depth, width, batch, itemsize, engine, shortcut)
    budget = _available_bytes() // 4
    if jax.default_backend() == "cpu":
        budget = min(budget, CPU_CHUNK_BYTES)
    cap = max(1, min(networks, budget // per))
    chunks = -(-networks // cap)
    return int(-(-networks // chunks))  # as even as the cap allows: little padding


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB ({int(nbytes):,} bytes)"


def check_one_network_fits(block, depth, width, batch, itemsize, engine, shortcut) -> None:
    """Raise :class:`NetworkMemoryError` before compiling when one network alone needs more
    than the available device memory (by :func:`bytes_per_network`'s estimate)."""
    need = bytes_per_network(depth, width, batch, itemsize, engine, shortcut)
    have = _available_bytes()
    if need <= have:
        return
    if engine == "explicit":
        what = (
            f"its {width} x {width} weight matrices ({_gib(4 * itemsize * width**2)} for the "
            "few alive at once)"
        )
        hint = "engine='weightfree' (Gaussian or orthogonal weights; no n x n matrix) or "
    else:
        what = f"its stored activations (about {2 + shortcut} x (L + 1) x B x n values)"
        hint = ""
    raise NetworkMemoryError(
        f"one network does not fit in memory: {block.name} at width {width}, depth {depth}, "
        f"batch {batch}, engine={engine!r} needs about {_gib(need)} for {what} and the "
        f"backward pass, but {_gib(have)} are available on {jax.local_devices()[0].device_kind}. "
        f"Use {hint}a smaller width, depth or batch."
    )


def check_call_fits(block, depth, width, batch, networks, chunk_size, itemsize, engine, shortcut):
    """Raise :class:`NetworkMemoryError` before compiling when a call of ``networks`` networks
    in chunks of ``chunk_size`` does not fit: a chunk in device memory (``chunk_size`` times
    :func:`bytes_per_network`), or the per-network results on the host
    (:data:`HOST_BYTES_PER_NETWORK_LAYER`; on a CPU both share the one memory)."""
    per = bytes_per_network(depth, width, batch, itemsize, engine, shortcut)
    chunk = chunk_size * per
    results = networks * (depth + 1) * HOST_BYTES_PER_NETWORK_LAYER
    host = _host_available_bytes()
    if jax.default_backend() == "cpu":  # one memory holds both
        device, fits = host, chunk + results <= host
    else:
        device = _available_bytes()
        fits = chunk <= device and results <= host
    if fits:
        return
    name = getattr(block, "name", block)
    raise NetworkMemoryError(
        f"simulate does not fit in memory: {name} at width {width}, depth {depth}, batch "
        f"{batch}, engine={engine!r} needs about {_gib(per)} per network, so "
        f"{_gib(chunk)} for a chunk of {chunk_size} networks ({_gib(device)} available on "
        f"{jax.local_devices()[0].device_kind}), and {_gib(results)} on the host for the "
        f"per-layer values of {networks:,} networks ({_gib(host)} available). Use a smaller "
        "chunk_size, fewer networks per call (several calls with other keys combine), or a "
        "smaller width, depth or batch."
    )
