"""Progress of a long :func:`~meanfield.montecarlo.simulate` call, on stderr.

Per chunk a line says how many networks are done; inside a long chunk (estimated over
:data:`AUTO_SECONDS`) the scan over layers reports every max(1, L/50) layers (every layer
below L = 100: a wide shallow network is slow per layer), forward and then backward (the checkpointed
backward pass recomputes each layer, in reverse), through ``jax.debug.callback``, which does
not change what is computed. With ``progress=None`` (the default of ``simulate``) this is on
when :func:`estimated_seconds` says the call takes longer than :data:`AUTO_SECONDS`, so a
depth-10^7 run is not silent for minutes.
"""

from __future__ import annotations

import sys
import time

__all__ = ["AUTO_SECONDS", "LAYER_PROGRESS", "LayerProgress", "estimated_seconds", "layer_every"]

# Above this estimated run time, simulate(progress=None) reports progress.
AUTO_SECONDS = 20.0
# Seconds per unit of work of one network-layer on a 2-core CPU, from
# benchmarks/bench_montecarlo.py: explicit weights cost their draws (n² normals, twice) and
# the products (n²B); the weight-free layer its Gram algebra (nB² and B³).
_EXPLICIT_PER_WEIGHT = 3.2e-9
_EXPLICIT_PER_PRODUCT = 3.7e-11
_WEIGHTFREE_PER_NB2 = 4e-10
_WEIGHTFREE_PER_B3 = 1e-8


def estimated_seconds(
    engine: str, networks: int, depth: int, width: int, batch: int, dense: int
) -> float:
    """A rough run time on a 2-core CPU (accelerators are faster): networks x layers x Dense
    layers x the cost of one Dense, forward and backward."""
    n, b = float(width), float(batch)
    if engine == "weightfree":
        per = _WEIGHTFREE_PER_NB2 * n * b * b + _WEIGHTFREE_PER_B3 * b**3
    else:
        per = _EXPLICIT_PER_WEIGHT * n * n + _EXPLICIT_PER_PRODUCT * n * n * b
    return float(networks) * depth * dense * per


def layer_every(depth: int) -> int:
    """Report every this many layers inside a chunk of a deep network (0 for L < 100, where
    the runner reports every layer of a long chunk)."""
    return max(1, depth // 50) if depth >= 100 else 0


class LayerProgress:
    """The line a running simulation updates: set up per call (:meth:`begin`) and per chunk
    (:meth:`chunk`); :meth:`report` is the callback the compiled scan calls with its layer
    (one object for the process, so that compiled chunks, which keep the callback, stay
    valid across calls)."""

    def __init__(self):
        self.name, self.depth, self.networks, self.chunks = "", 0, 0, 0
        self.current, self.last, self.backward, self.start = 0, 0, False, time.perf_counter()

    def begin(self, name: str, depth: int, networks: int, chunks: int) -> None:
        self.name, self.depth, self.networks, self.chunks = name, depth, networks, chunks
        self.start = time.perf_counter()

    def chunk(self, index: int) -> None:
        self.current, self.last, self.backward = index, 0, False

    def report(self, layer) -> None:
        layer = int(layer)
        if layer == self.last:  # one call per device shard: report each layer once
            return
        self.backward = self.backward or layer < self.last
        self.last = layer
        what = "backward" if self.backward else "forward"
        print(
            f"\r  montecarlo {self.name}: chunk {self.current + 1}/{self.chunks}, {what} "
            f"layer {layer}/{self.depth}, {time.perf_counter() - self.start:.1f} s   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def chunk_done(self, done: int, last: bool) -> None:
        print(
            f"\r  montecarlo {self.name}: {done}/{self.networks} networks, "
            f"{time.perf_counter() - self.start:.1f} s" + " " * 24,
            end="\n" if last else "",
            file=sys.stderr,
            flush=True,
        )


LAYER_PROGRESS = LayerProgress()
