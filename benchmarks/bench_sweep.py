"""A sweep as one program against a Python loop of calls, on the same networks.

64 weight variances of one block (by default): :func:`meanfield.sweep` (the recursion as one
jitted call over the grid, Monte-Carlo as one chunked program over every (var_w, network)
item) against a loop of 64 :func:`meanfield.recursions.profile` and 64
:func:`meanfield.montecarlo.simulate` calls with the same key, i.e. the same networks. Each
side is timed cold (its first run, compilation included; the persistent compilation cache is
off) and warm (best of repeated runs), and the two results are compared: the largest
relative difference of every statistic must be float32 rounding.

Usage:

    python benchmarks/bench_sweep.py [--values 64] [--block relu-bn_pre-residual]
        [--depth 20] [--width 128] [--networks 64] [--batch 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import meanfield  # noqa: E402
from meanfield import montecarlo, recursions  # noqa: E402

STATS = ("m2_z", "unitvar_z", "m2_dz", "var_dw")


def timed(fn, repeats: int):
    """(seconds of the first call, best of ``repeats`` further calls, the first result)."""
    start = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - start)
    return cold, min(warm), out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--values", type=int, default=64, help="var_w values in the grid")
    p.add_argument("--block", default="relu-bn_pre-residual", help="preset block name")
    p.add_argument("--depth", type=int, default=20, help="blocks per network")
    p.add_argument("--width", type=int, default=128, help="units per layer")
    p.add_argument("--networks", type=int, default=64, help="networks per var_w")
    p.add_argument("--batch", type=int, default=8, help="inputs per network")
    p.add_argument("--repeats", type=int, default=2, help="warm runs per side (best is kept)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)
    block = meanfield.Block.from_name(args.block)
    n, L = args.width, args.depth
    var_w = np.geomspace(0.25, 4.0, args.values) / n
    key = jax.random.key(0)
    mc = dict(depth=L, width=n, networks=args.networks, batch=args.batch, engine="explicit")

    def one_program():
        s = meanfield.sweep(block, key=key, var_w=var_w, **mc)
        return s.recursion, s.montecarlo

    def loop():
        profs = [recursions.profile(block, depth=L, width=n, var_w=float(v)) for v in var_w]
        ests = [
            montecarlo.simulate(block, key=key, var_w=float(v), warn=False, **mc) for v in var_w
        ]
        return profs, ests

    sweep_cold, sweep_warm, (prof, est) = timed(one_program, args.repeats)
    loop_cold, loop_warm, (profs, ests) = timed(loop, args.repeats)
    gaps = {}
    for name in STATS:
        ref = np.stack([getattr(e, name).mean for e in ests])
        got = getattr(est, name).mean
        ok = np.isfinite(ref) & (ref != 0)
        gaps[f"montecarlo {name}"] = float(np.max(np.abs(got[ok] / ref[ok] - 1)))
        ref = np.stack([getattr(pr, name) for pr in profs])
        got = np.asarray(getattr(prof, name))
        ok = np.isfinite(ref) & (ref != 0)
        gaps[f"recursion {name}"] = float(np.max(np.abs(got[ok] / ref[ok] - 1)))
    print(
        f"{args.values} var_w values of {block.name}, depth {L}, width {n}, "
        f"{args.networks} networks x {args.batch} inputs each, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s)"
    )
    print(f"{'':24s}{'cold s':>10s}{'warm s':>10s}")
    print(f"{'one sweep program':24s}{sweep_cold:10.2f}{sweep_warm:10.2f}")
    print(f"{'loop of calls':24s}{loop_cold:10.2f}{loop_warm:10.2f}")
    print(f"{'loop / sweep':24s}{loop_cold / sweep_cold:10.2f}{loop_warm / sweep_warm:10.2f}")
    print("largest relative difference, sweep against loop (same networks):")
    for k, v in gaps.items():
        print(f"  {k:24s}{v:.1e}")
    return {
        "sweep": (sweep_cold, sweep_warm),
        "loop": (loop_cold, loop_warm),
        "gaps": gaps,
    }


if __name__ == "__main__":
    main()
