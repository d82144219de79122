"""Do activations and gradients of a deep ResNet explode, vanish or stay put?

Question: for identity and ReLU blocks, residual or plain, with and without batch norm, at He
init (var_w = 2/n) and at the paper's depth-scaled init var_w = c/(nL): how do the forward
second moment E[(z^l)^2] and the weight-gradient variance Var[dE/dW^l] change with the layer l
and with the depth L? Compared: the closed forms of Taki (2017) (and corrected ones), the exact
infinite-width mean-field recursions, and Monte-Carlo over sampled finite-width networks.

Command (defaults: width 256, profiles at depth 100, depth sweep up to 1000, Monte-Carlo with
32 networks of 8 inputs for the five residual blocks of the figure):

    python experiments/variance_vs_depth.py [--out runs] [--width 256] [--depth 100]

Runtime: about 30 s on a 2-core CPU (--networks 0 skips Monte-Carlo: 20 s). Monte-Carlo uses
the weight-free engine when 4B <= n, so --width 4096 takes about 45 s.

Expected result: exact closed forms lie on the recursion (identity without BN: (1+α)^l; BN:
1 + lα and the Γ-ratio gradient law), and Monte-Carlo lies on both within its error bars where
the infinite-width limit applies. The paper's approximations visibly miss where it is wrong:
eq. (27) for the identity gradient, L/l for ReLU with BN (the true exponent is π/(π-1) ≈ 1.47),
and for ReLU without BN the depth-scaled init still gives E[(z^L)^2] ≈ 788 at L = 100 instead
of O(1). Monte-Carlo shows what the limit leaves out: at He init the ReLU network's input
gradient is ~1e13 times the mean-field value (a rank-one mode that Euler's identity forces at
finite width), and B = 8 steepens the BN gradient profiles.

Writes profile.{png,pdf}, depth.{png,pdf}, results.json (everything, with configuration and
versions), discrepancy.csv (closed forms vs recursion), montecarlo_discrepancy.csv (Monte-Carlo
vs recursion in standard errors, the median network, 5-95% band and sd of ln over networks,
and vs the paper's and the corrected closed form as a ratio)
and depth_sweep.csv into a new folder under --out, and prints its path. For a verdict per
statistic and layer with the reason for every disagreement, run experiments/report.py.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

# Runnable as `python experiments/variance_vs_depth.py` from a checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

import meanfield  # noqa: E402
from meanfield.analysis import sweeps  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.io import plots, results  # noqa: E402

RESIDUAL_COLUMNS = (
    "identity-none-residual",
    "relu-none-residual",
    "identity-bn_post-residual",
    "relu-bn_post-residual",
    "relu-bn_pre-residual",
)


def residual_columns(activations) -> tuple[str, ...]:
    """The residual blocks of the figures (and of Monte-Carlo): the paper's five, or with
    other activations each of them with none, bn_post and bn_pre."""
    if tuple(activations) == meanfield.architecture.ACTIVATIONS:
        return RESIDUAL_COLUMNS
    return tuple(f"{a}-{nm}-residual" for a in activations for nm in ("none", "bn_post", "bn_pre"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    results.add_out_argument(p)
    runtime.add_compile_cache_argument(p)
    p.add_argument("--width", type=int, default=256, help="fan-in n of every branch weight")
    p.add_argument("--depth", type=int, default=100, help="depth L of the per-layer profiles")
    p.add_argument("--max-depth", type=int, default=1000, help="largest L of the depth sweep")
    p.add_argument("--num-depths", type=int, default=40, help="log-spaced depths in the sweep")
    p.add_argument("--c", type=float, default=1.0, help="coefficient of var_w = c/(nL)")
    p.add_argument(
        "--inits",
        nargs="+",
        default=["he", "depth_scaled"],
        choices=sorted(sweeps.INITS),
        help="initializations to compare",
    )
    p.add_argument(
        "--networks",
        type=int,
        default=32,
        help="Monte-Carlo: sampled networks per block and init (0 skips Monte-Carlo)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=8,
        help="Monte-Carlo: inputs per network (BN uses their batch statistics)",
    )
    p.add_argument("--seed", type=int, default=0, help="Monte-Carlo: seed of jax.random.key")
    p.add_argument(
        "--activation",
        nargs="+",
        default=list(meanfield.architecture.ACTIVATIONS),
        choices=meanfield.architecture.ACTIVATION_NAMES,
        metavar="NAME",
        help="activations of the blocks (default: the paper's identity and relu); any of "
        + " ".join(meanfield.architecture.ACTIVATION_NAMES)
        + " (closed forms exist for the paper's)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="Monte-Carlo: networks per compiled call (default: from free memory)",
    )
    plots.add_formats_argument(p)
    p.add_argument("--x64", action="store_true", help="compute in float64 instead of float32")
    args = p.parse_args(argv)
    for name in ("width", "depth", "max_depth", "num_depths"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.c) and args.c > 0):
        p.error(f"--c must be a finite number > 0, got {args.c}")
    if args.networks != 0 and args.networks < 2:
        p.error(f"--networks must be 0 (no Monte-Carlo) or >= 2, got {args.networks}")
    if args.batch < 2:
        p.error(f"--batch must be >= 2 (BN uses batch statistics), got {args.batch}")
    if args.chunk_size is not None and args.chunk_size < 1:
        p.error(f"--chunk-size must be >= 1, got {args.chunk_size}")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    runtime.use_compile_cache(args)
    jax.config.update("jax_enable_x64", args.x64)
    start = time.perf_counter()
    with results.run_folder(args.out, "variance_vs_depth") as out:
        blocks = meanfield.all_blocks(tuple(args.activation))
        depths = np.unique(np.geomspace(1, args.max_depth, args.num_depths).round().astype(int))

        print(
            f"[1/4] per-layer profiles at depth {args.depth} for {len(blocks)} blocks, and\n"
            f"[2/4] the depth sweep over {len(depths)} depths up to {args.max_depth}: one program "
            "per block",
            flush=True,
        )
        profiles, sweep = sweeps.profiles_and_depth_sweep(
            blocks, args.inits, width=args.width, depth=args.depth, depths=depths, c=args.c
        )
        columns = residual_columns(args.activation)
        mc = []
        if args.networks:
            mc_blocks = [meanfield.Block.from_name(b) for b in columns]
            print(
                f"[3/4] Monte-Carlo: {args.networks} networks x {args.batch} inputs, width "
                f"{args.width}, depth {args.depth}, {len(mc_blocks) * len(args.inits)} "
                "configurations",
                flush=True,
            )
            mc = sweeps.montecarlo_profiles(
                mc_blocks,
                args.inits,
                key=jax.random.key(args.seed),
                width=args.width,
                depth=args.depth,
                networks=args.networks,
                batch=args.batch,
                c=args.c,
                progress=True,
                chunk_size=args.chunk_size,
            )
        else:
            print("[3/4] Monte-Carlo skipped (--networks 0)", flush=True)

        print("[4/4] writing results and figures", flush=True)
        results.save_json(
            out / "results.json",
            {
                "experiment": "variance_vs_depth",
                "config": vars(args),
                "environment": results.environment(),
                "profiles": profiles,
                "depth_sweep": sweep,
                "montecarlo": mc,
            },
        )
        table = sweeps.discrepancy_rows(profiles)
        if table:  # closed forms exist for the paper's activations only
            results.save_csv(out / "discrepancy.csv", table)
        results.save_csv(out / "depth_sweep.csv", sweeps.depth_sweep_rows(sweep))
        mc_table = sweeps.montecarlo_discrepancy_rows(profiles, mc)
        if mc_table:
            results.save_csv(out / "montecarlo_discrepancy.csv", mc_table)
        # Read back what was saved, so the figures show exactly the stored numbers.
        saved = results.load_json(out / "results.json")
        fig = plots.profile_figure(
            saved["profiles"],
            columns,
            montecarlo=saved["montecarlo"],
            title=f"Per-layer statistics at depth L = {args.depth}, width n = {args.width}",
        )
        plots.save_figure(fig, out / "profile", args.formats)
        contrasts = [{"block": b, "contrast": b.replace("residual", "plain")} for b in columns]
        fig = plots.depth_figure(
            saved["depth_sweep"],
            contrasts,
            title=f"Growth against depth, width n = {args.width} (thin: plain network)",
        )
        plots.save_figure(fig, out / "depth", args.formats)

        exact = [r for r in table if r["kind"] == "exact"]
        gap = max(r["max_rel_gap"] for r in exact) if exact else float("nan")
        print(
            f"exact closed forms vs recursion: largest relative gap {gap:.2e} ({len(exact)} curves)"
        )
        off = sorted(
            (r for r in table if r["kind"] == "approximation" and r["max_rel_gap"] > 0.05),
            key=lambda r: -r["max_rel_gap"],
        )
        print(f"paper approximations off by more than 5%: {len(off)} curves, the largest:")
        for r in off[:4]:
            print(
                f"  {r['max_rel_gap']:.0%}: {r['block']} ({r['init']}) {r['statistic']} "
                f"{r['closed_form']}"
            )
        if mc_table:
            z = np.abs(np.array([r["z_mc_vs_recursion"] for r in mc_table], dtype=float))
            z = z[np.isfinite(z)]
            print(
                f"Monte-Carlo vs recursion: median |z| {np.median(z):.2f}; {np.mean(z > 4):.0%} of "
                f"{z.size} layer statistics beyond 4 standard errors (finite width and batch; "
                "montecarlo_discrepancy.csv)"
            )
            heavy = [r for r in mc if r["heavy_tail"]]
            for r in heavy:
                where = ", ".join(f"{k} at {len(v)} layers" for k, v in r["heavy_tail"].items())
                print(
                    f"  heavy tail (sd of ln over networks > 1; the mean is a few networks'): "
                    f"{r['block']} ({r['init']}): {where}"
                )
        print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
        return out


if __name__ == "__main__":
    main()
