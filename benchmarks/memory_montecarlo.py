"""Peak memory of one Monte-Carlo chunk, from XLA's compiled memory analysis.

Memory does not depend on the number of networks R (chunks run one after another) and holds
no L·n² weights (each layer's weights are drawn inside the checkpointed scan). What a chunk of
C networks holds is ~C·(2 L·B·n + 4 n²) floats for the explicit engine (each layer's input
and its temporaries, one layer's weights) and ~C·3 L·B·n for the weight-free engine, which also
keeps each layer's output. This prints XLA's numbers for the configuration of the docs
(R = 4096, n = 256, L = 100, B = 16) at several chunk sizes, and the chunk size the engine
picks by default.

    python benchmarks/memory_montecarlo.py [--networks 4096 --width 256 --depth 100 --batch 16]
        [--engine explicit|weightfree]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from meanfield import Block, montecarlo  # noqa: E402


def chunk_memory(block, depth, width, batch, chunk, engine):
    fn, _ = montecarlo.runner.chunk_fn(
        block, depth, width, batch, "highest", chunk, jax.device_count(), None, engine
    )
    keys = jax.random.split(jax.random.key(0), chunk)
    values = montecarlo.runner.chunk_values(2.0 / width)
    compiled = fn.lower(values, jax.random.key_data(keys)).compile()
    return compiled.memory_analysis()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--networks",
        type=int,
        default=4096,
        help="R, sampled networks of the run (only the default chunk size depends on it)",
    )
    p.add_argument("--width", type=int, default=256, help="n, the width of every layer")
    p.add_argument("--depth", type=int, default=100, help="L, residual blocks")
    p.add_argument("--batch", type=int, default=16, help="B, inputs per network")
    p.add_argument(
        "--block",
        default="relu-bn_post-residual",
        help="the block, by name (meanfield.Block.from_name)",
    )
    p.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=[16, 64, 256],
        help="chunk sizes C (networks per compiled call) to measure",
    )
    p.add_argument(
        "--engine",
        default="explicit",
        choices=["explicit", "weightfree"],
        help="the Monte-Carlo engine: sampled weights, or the weight-free one",
    )
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    block = Block.from_name(args.block)
    n, L, B = args.width, args.depth, args.batch
    print(
        f"device: {jax.devices()[0].device_kind}; block {block.name}; n={n}, L={L}, B={B}; "
        f"{args.engine} engine"
    )
    print(
        f"{'chunk':>6} | {'temp MiB':>9} {'args+out MiB':>12} | {'model MiB':>9} | "
        f"{'all weights of the chunk (never held) MiB':>42}"
    )
    for chunk in args.chunks:
        m = chunk_memory(block, L, n, B, chunk, args.engine)
        io = m.argument_size_in_bytes + m.output_size_in_bytes
        model = montecarlo.memory.bytes_per_network(L, n, B, 4, args.engine) * chunk
        print(
            f"{chunk:>6} | {m.temp_size_in_bytes / 2**20:9.1f} {io / 2**20:12.2f} | "
            f"{model / 2**20:9.1f} | {chunk * L * n * n * 4 / 2**20:42.1f}"
        )
    auto = montecarlo.auto_chunk_size(L, n, B, args.networks, engine=args.engine)
    print(
        f"default chunk for R = {args.networks} here: {auto} networks "
        f"({-(-args.networks // auto)} chunks); peak memory does not grow with R"
    )


if __name__ == "__main__":
    main()
