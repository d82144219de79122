"""Running a compiled chunk program over all networks, on one host or many: the chunk's
keys placed on the mesh by each process, the outputs gathered, a progress line per chunk."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from meanfield.montecarlo.progress import LAYER_PROGRESS

__all__ = ["gather", "place_keys", "run_chunks"]


def place_keys(raw_keys: np.ndarray, sharded: NamedSharding) -> jax.Array:
    """The chunk's raw keys as one array over the mesh: each process supplies the rows of its
    own devices (every process holds all keys), so the same call runs on one host or many."""
    return jax.make_array_from_callback(raw_keys.shape, sharded, lambda index: raw_keys[index])


def gather(out: dict) -> dict:
    """Per-network outputs as NumPy arrays on this process: with several processes
    (``jax.distributed``) the shards of the other hosts are gathered first."""
    if jax.process_count() > 1:
        out = multihost_utils.process_allgather(out, tiled=True)
    return {k: np.asarray(v) for k, v in out.items()}


def run_chunks(fn, sharded, keys, values, chunk_size: int, progress: bool):
    """Per-network statistics of all networks (one key each), ``chunk_size`` at a time, with
    a progress line per chunk on stderr if ``progress`` (and, where the chunk was compiled
    with it, per layer inside a chunk: :data:`~meanfield.montecarlo.progress.LAYER_PROGRESS`,
    set up by the caller)."""
    networks = keys.shape[0]
    raw = np.asarray(jax.random.key_data(keys))
    parts = []
    n_chunks = -(-networks // chunk_size)
    for i in range(n_chunks):
        chunk = raw[i * chunk_size : (i + 1) * chunk_size]
        real = chunk.shape[0]
        if real < chunk_size:  # pad the last chunk with repeated keys; their results are dropped
            # (cyclically: with networks < chunk_size - real, e.g. 2 networks on 8 devices,
            # keys[:chunk_size - real] alone is too short)
            chunk = np.concatenate([chunk, raw[np.arange(chunk_size - real) % networks]])
        LAYER_PROGRESS.chunk(i)
        out = gather(fn(values, place_keys(chunk, sharded)))
        parts.append({k: v[:real] for k, v in out.items()})
        if progress:
            LAYER_PROGRESS.chunk_done(min((i + 1) * chunk_size, networks), i + 1 == n_chunks)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
