"""How do weight gradients grow toward the input of a batch-normalized ResNet?

Question: the paper (eq. 41-42, 52-54) says Var[dE/dW^l] ∝ L/l for BN ResNets, for identity and
ReLU alike. This plots Var[dE/dW^l] against l for BN ResNets of depth L in {10, 50, 100, 500}
(He init by default) with the exact mean-field recursion, the paper's a·L/l, the corrected
closed form (Γ-ratio: (1 + Lα)/(1 + lα) for identity, ~(L/l)^{π/(π-1)} for ReLU) and
Monte-Carlo over sampled networks for the depths up to --mc-max-depth.

Command:

    python experiments/gradient_vs_layer.py [--out runs] [--depths 10 50 100 500]

Runtime: about 40 s on a 2-core CPU (--networks 0 skips Monte-Carlo: 5 s).

Expected result: for identity blocks at He init L/l is close (lα >> 1 except at small l); for
ReLU the recursion and the corrected form fall off more steeply than the paper's slope -1 on
the log-log plot, towards -π/(π-1) = -1.47 at large l (a line through L = 100 at He init has
slope -1.29; docs/theory.md §4). Monte-Carlo does not follow the recursion for ReLU-BN at
this width: at L = 100, n = 128 the gradient at l = 1 is about 10x the recursion's, with a
wide spread over networks. That is the unit-common mode of the ReLU mean that per-unit BN
cannot remove at finite width (docs/theory.md §8, named per layer by experiments/report.py),
on top of BN's O(1/B) finite-batch excess; identity blocks stay close.
Writes gradient_vs_layer.{png,pdf}, results.json and gradient_discrepancy.csv into a new folder
under --out and prints its path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

import meanfield  # noqa: E402
from meanfield.analysis import sweeps  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.io import plots, results  # noqa: E402

BLOCKS = ("identity-bn_post-residual", "relu-bn_post-residual", "relu-bn_pre-residual")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    results.add_out_argument(p)
    runtime.add_compile_cache_argument(p)
    p.add_argument(
        "--depths", type=int, nargs="+", default=[10, 50, 100, 500], help="depths L to compare"
    )
    p.add_argument(
        "--init",
        default="he",
        choices=sorted(sweeps.INITS),
        help="initialization of the branch weights",
    )
    p.add_argument("--c", type=float, default=1.0, help="c of the depth-scaled init c/(nL)")
    p.add_argument("--width", type=int, default=128, help="fan-in n (Monte-Carlo width)")
    p.add_argument(
        "--networks",
        type=int,
        default=16,
        help="Monte-Carlo networks per block and depth (0 skips Monte-Carlo)",
    )
    p.add_argument("--batch", type=int, default=32, help="Monte-Carlo inputs per network")
    p.add_argument(
        "--mc-max-depth", type=int, default=100, help="run Monte-Carlo only for depths up to this"
    )
    p.add_argument("--seed", type=int, default=0, help="Monte-Carlo seed")
    plots.add_formats_argument(p)
    args = p.parse_args(argv)
    if min(args.depths) < 1:
        p.error(f"--depths must all be >= 1, got {args.depths}")
    if args.width < 1:
        p.error(f"--width must be >= 1, got {args.width}")
    if args.networks != 0 and args.networks < 2:
        p.error(f"--networks must be 0 (no Monte-Carlo) or >= 2, got {args.networks}")
    if args.batch < 2:
        p.error(f"--batch must be >= 2 (BN uses batch statistics), got {args.batch}")
    if not args.c > 0:
        p.error(f"--c must be > 0, got {args.c}")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    runtime.use_compile_cache(args)
    start = time.perf_counter()
    with results.run_folder(args.out, "gradient_vs_layer") as out:
        blocks = [meanfield.Block.from_name(b) for b in BLOCKS]
        depths = sorted(set(args.depths))
        profiles, mc = [], []
        for i, L in enumerate(depths):
            print(f"[{i + 1}/{len(depths)}] depth {L}", flush=True)
            profiles += sweeps.layer_profiles(
                blocks, [args.init], width=args.width, depth=L, c=args.c
            )
            if args.networks and L <= args.mc_max_depth:
                mc += sweeps.montecarlo_profiles(
                    blocks,
                    [args.init],
                    key=jax.random.fold_in(jax.random.key(args.seed), L),
                    width=args.width,
                    depth=L,
                    networks=args.networks,
                    batch=args.batch,
                    c=args.c,
                    progress=True,
                )
        results.save_json(
            out / "results.json",
            {
                "experiment": "gradient_vs_layer",
                "config": vars(args),
                "environment": results.environment(),
                "profiles": profiles,
                "montecarlo": mc,
            },
        )
        table = sweeps.montecarlo_discrepancy_rows(profiles, mc)
        rows = [r for r in table if r["statistic"] == "var_dw"]
        if rows:
            results.save_csv(out / "gradient_discrepancy.csv", rows)
        saved = results.load_json(out / "results.json")
        fig = plots.gradient_figure(
            saved["profiles"],
            BLOCKS,
            montecarlo=saved["montecarlo"],
            title=f"Weight-gradient variance of BN ResNets, {args.init} init"
            + (f", Monte-Carlo n = {args.width}, B = {args.batch}" if mc else ""),
        )
        plots.save_figure(fig, out / "gradient_vs_layer", args.formats)
        for rec in profiles:
            v = np.asarray(rec["recursion"]["var_dw"], dtype=float)
            paper = next(
                f
                for f in rec["closed_forms"]
                if f["statistic"] == "var_dw" and f["source"] == "paper"
            )
            pv = np.asarray(paper["values"], dtype=float)
            print(
                f"  {rec['block']:26s} L = {rec['depth']:4d}: Var[dE/dW^1]/Var[dE/dW^L] = "
                f"{v[1] / v[-1]:9.2f} (paper L/l: {pv[1] / pv[-1]:7.1f})"
            )
        print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
        return out


if __name__ == "__main__":
    main()
