"""Which weight variance keeps a deep ResNet's signal inside a band? Solved, not guessed.

Question: for the paper's conv network (fan-in n = 8·8·16 = 1024, L = 100 blocks), what is
the largest Var[w] for which the forward growth q_L/q_0 and the gradient spread
max_l Var[dE/dW^l] / min_l Var[dE/dW^l] both stay below their bounds (default 10 each)? How
does it compare with He (2/n) and the paper's depth-scaled 1/(nL)? The answer comes from the
mean-field recursion (meanfield.solve_init); Monte-Carlo at the solution checks it, at width n
and at width C = 16, the conv network's channel count, which sets its finite-width effects
(docs/training.md).

Command:

    python experiments/solve_init.py [--max-forward-growth 10] [--max-gradient-spread 10]

Runtime: about 50 s and 4.3 GB of memory on a 2-core CPU. Expected result: ReLU without BN
needs c ≈ 0.2 (a fifth of the paper's c = 1, at which q_L/q_0 ≈ 788); with BN on the branch
input c ≈ 0.55; with BN and ReLU before the weight c ≈ 16 (there the gradient spread binds).
Monte-Carlo at width n lands on the solution (up to BN's O(1/B) backward correction); at width
16 the gradient spread moves by up to a factor 2.

Writes results.json, solutions.csv and solve_init.{png,pdf} into a new folder under --out and
prints its path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from meanfield import Block  # noqa: E402
from meanfield.analysis import solver  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.io import plots, results  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    results.add_out_argument(p)
    runtime.add_compile_cache_argument(p)
    p.add_argument("--depth", type=int, default=100, help="residual blocks L")
    p.add_argument("--kernel-size", type=int, default=8, help="k: the fan-in is n = k·k·C")
    p.add_argument("--channels", type=int, default=16, help="C: the fan-in is n = k·k·C")
    p.add_argument("--max-forward-growth", type=float, default=10.0, help="bound on q_L/q_0")
    p.add_argument(
        "--max-gradient-spread", type=float, default=10.0, help="bound on max/min Var[dE/dW^l]"
    )
    p.add_argument(
        "--blocks",
        nargs="+",
        default=["relu-none-residual", "relu-bn_post-residual", "relu-bn_pre-residual"],
        help="block names (activation-norm-residual|plain)",
    )
    p.add_argument("--networks", type=int, default=64, help="Monte-Carlo networks (0: none)")
    p.add_argument("--batch", type=int, default=64, help="Monte-Carlo inputs per network")
    p.add_argument("--seed", type=int, default=0, help="Monte-Carlo seed")
    plots.add_formats_argument(p)
    args = p.parse_args(argv)
    for name in ("depth", "kernel_size", "channels", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("max_forward_growth", "max_gradient_spread"):
        if not getattr(args, name) > 1:
            p.error(f"--{name.replace('_', '-')} must be > 1, got {getattr(args, name)}")
    if args.networks != 0 and args.networks < 2:
        p.error(f"--networks must be 0 or >= 2, got {args.networks}")
    try:
        args.blocks = [Block.from_name(b) for b in args.blocks]
    except ValueError as err:
        p.error(f"--blocks: {err}")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    runtime.use_compile_cache(args)
    start = time.perf_counter()
    with results.run_folder(args.out, "solve_init") as out:
        n, L = args.kernel_size**2 * args.channels, args.depth
        reference = {"he": 2.0 / n, "depth_scaled_c1": 1.0 / (n * L)}
        print(
            f"fan-in n = {n}, depth L = {L}; bounds: q_L/q_0 <= {args.max_forward_growth}, "
            f"gradient spread <= {args.max_gradient_spread}"
        )
        print(
            f"{'block':>24} {'init':>16} {'c = nL Var[w]':>14} {'q_L/q_0':>10} {'spread':>10}"
            f" {'Monte-Carlo (width)':>28}"
        )
        records, rows = [], []
        key = jax.random.key(args.seed)
        for block in args.blocks:
            sol = solver.solve_init(
                block,
                depth=L,
                width=n,
                max_forward_growth=args.max_forward_growth,
                max_gradient_spread=args.max_gradient_spread,
            )
            var_ws = np.geomspace(1e-3 / (n * L), 10.0 / n, 120)
            curves = solver.band_curves(block, L, n, var_ws)
            rec = {
                "block": block.name,
                "solution": sol.as_dict(),
                "bounds": {
                    "max_forward_growth": args.max_forward_growth,
                    "max_gradient_spread": args.max_gradient_spread,
                },
                "curves": {**curves, "c": curves["var_w"] * n * L},
                "reference": {},
                "montecarlo": [],
            }
            for name, var_w in reference.items():
                at = solver.band_curves(block, L, n, [var_w])
                g, s = at["log10_forward_growth"][0], at["log10_gradient_spread"][0]
                rec["reference"][name] = {
                    "var_w": var_w,
                    "c": var_w * n * L,
                    "forward_growth": 10.0**g,
                    "gradient_spread": 10.0**s,
                }
            entries = [(name, r) for name, r in rec["reference"].items()]
            entries.append(("solved", {"var_w": sol.var_w, "c": sol.c, **sol.as_dict()}))
            mc_text = ""
            if args.networks:
                for width in (n, args.channels):
                    mc = solver.montecarlo_band_statistics(
                        block,
                        depth=L,
                        width=width,
                        var_w=sol.alpha / width,  # the same n·Var[w] at this width
                        networks=args.networks,
                        batch=args.batch,
                        key=key,
                    )
                    rec["montecarlo"].append({**mc, "c": sol.c})
                    mc_text += (
                        f" {10 ** mc['log10_forward_growth']:.2f}/"
                        f"{10 ** mc['log10_gradient_spread']:.2f} ({width})"
                    )
            for name, r in entries:
                print(
                    f"{block.name:>24} {name:>16} {r['c']:14.4g} {r['forward_growth']:10.3g} "
                    f"{r['gradient_spread']:10.3g}" + (mc_text if name == "solved" else "")
                )
                rows.append(
                    {
                        "block": block.name,
                        "init": name,
                        "var_w": r["var_w"],
                        "c": r["c"],
                        "forward_growth": r["forward_growth"],
                        "gradient_spread": r["gradient_spread"],
                        "binding": sol.binding if name == "solved" else "",
                    }
                )
            records.append(rec)
        results.save_json(
            out / "results.json",
            {
                "experiment": "solve_init",
                "config": {
                    k: (v if k != "blocks" else [b.name for b in v]) for k, v in vars(args).items()
                },
                "environment": results.environment(),
                "fan_in": n,
                "records": records,
            },
        )
        results.save_csv(out / "solutions.csv", rows)
        saved = results.load_json(out / "results.json")["records"]
        fig = plots.solve_init_figure(
            saved, title=f"Growth and gradient spread against c, n = {n}, L = {L} (recursion)"
        )
        plots.save_figure(fig, out / "solve_init", args.formats)
        print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
        return out


if __name__ == "__main__":
    main()
