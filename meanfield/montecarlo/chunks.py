"""Running a compiled chunk program over all networks, on one host or many: the chunk's
keys placed on the mesh by each process, the outputs gathered, a progress line per chunk."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from meanfield.montecarlo.progress import LAYER_PROGRESS

__all__ = ["gather", "place_rows", "run_chunks"]


def place_rows(rows: np.ndarray, sharded: NamedSharding) -> jax.Array:
    """A chunk's per-network rows (raw keys, or values) as one array over the mesh: each
    process supplies the rows of its own devices (every process holds all of them), so the
    same call runs on one host or many."""
    return jax.make_array_from_callback(rows.shape, sharded, lambda index: rows[index])


def gather(out: dict) -> dict:
    """Per-network outputs as NumPy arrays on this process: with several processes
    (``jax.distributed``) the shards of the other hosts are gathered first."""
    if jax.process_count() > 1:
        out = multihost_utils.process_allgather(out, tiled=True)
    return {k: np.asarray(v) for k, v in out.items()}


def run_chunks(fn, sharded, keys, values, chunk_size: int, progress: bool, per_network=None):
    """Per-network statistics of all networks (one key each), ``chunk_size`` at a time, with
    a progress line per chunk on stderr if ``progress`` (and, where the chunk was compiled
    with it, per layer inside a chunk: :data:`~meanfield.montecarlo.progress.LAYER_PROGRESS`,
    set up by the caller). ``values`` go to every chunk as they are; ``per_network`` (a dict
    of NumPy arrays with a leading network axis, for a program compiled with ``grid``) is cut
    into chunks with the keys and placed like them."""
    networks = keys.shape[0]
    raw = np.asarray(jax.random.key_data(keys))
    parts = []
    n_chunks = -(-networks // chunk_size)
    for i in range(n_chunks):
        rows = np.arange(i * chunk_size, min((i + 1) * chunk_size, networks))
        real = rows.size
        # Pad the last chunk with repeated keys; their results are dropped (cyclically: with
        # networks < chunk_size - real, e.g. 2 networks on 8 devices, keys[:chunk_size - real]
        # alone is too short).
        rows = np.concatenate([rows, np.arange(chunk_size - real) % networks])
        LAYER_PROGRESS.chunk(i)
        if per_network is not None:
            values = {k: place_rows(v[rows], sharded) for k, v in per_network.items()}
        out = gather(fn(values, place_rows(raw[rows], sharded)))
        parts.append({k: v[:real] for k, v in out.items()})
        if progress:
            LAYER_PROGRESS.chunk_done(min((i + 1) * chunk_size, networks), i + 1 == n_chunks)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
