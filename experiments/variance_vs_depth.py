"""Do activations and gradients of a deep ResNet explode, vanish or stay put?

Question: for identity and ReLU blocks, residual or plain, with and without batch norm, at He
init (var_w = 2/n) and at the paper's depth-scaled init var_w = c/(nL): how do the forward
second moment E[(z^l)^2] and the weight-gradient variance Var[dE/dW^l] change with the layer l
and with the depth L? Compared: the closed forms of Taki (2017) (and corrected ones) against
the exact infinite-width mean-field recursions.

Command (defaults: width 256, profiles at depth 100, depth sweep up to 1000):

    python experiments/variance_vs_depth.py [--out runs] [--width 256] [--depth 100]

Runtime: about 20-40 s on a 2-core laptop CPU, most of it compilation.

Expected result: exact closed forms lie on the recursion (identity without BN: (1+α)^l; BN:
1 + lα and the Γ-ratio gradient law). The paper's approximations visibly miss where it is
wrong: eq. (27) for the identity gradient, L/l for ReLU with BN (the true exponent is
π/(π-1) ≈ 1.47), and for ReLU without BN the depth-scaled init still gives E[(z^L)^2] ≈ 788 at
L = 100 instead of O(1). Writes profile.{png,pdf}, depth.{png,pdf}, results.json (everything,
with configuration and versions), discrepancy.csv and depth_sweep.csv into a new folder under
--out and prints its path.

The Monte-Carlo engine joins here later: its estimates go next to ``recursion`` in each record.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# Runnable as `python experiments/variance_vs_depth.py` from a checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import meanfield  # noqa: E402
from meanfield import plots, results, sweeps  # noqa: E402

RESIDUAL_COLUMNS = (
    "identity-none-residual",
    "relu-none-residual",
    "identity-bn_post-residual",
    "relu-bn_post-residual",
    "relu-bn_pre-residual",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", default="runs", help="folder under which a new run folder is made")
    p.add_argument("--width", type=float, default=256, help="fan-in n of every branch weight")
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
    p.add_argument("--formats", nargs="+", default=["png", "pdf"], help="figure formats")
    p.add_argument("--x64", action="store_true", help="compute in float64 instead of float32")
    args = p.parse_args(argv)
    for name in ("depth", "max_depth", "num_depths"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.width < 1:
        p.error(f"--width must be >= 1, got {args.width}")
    if not args.c > 0:
        p.error(f"--c must be > 0, got {args.c}")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", args.x64)
    start = time.perf_counter()
    out = results.new_run_dir(args.out, "variance_vs_depth")
    blocks = meanfield.all_blocks()
    depths = np.unique(np.geomspace(1, args.max_depth, args.num_depths).round().astype(int))

    print(f"[1/3] per-layer profiles at depth {args.depth} for {len(blocks)} blocks", flush=True)
    profiles = sweeps.layer_profiles(
        blocks, args.inits, width=args.width, depth=args.depth, c=args.c
    )
    print(f"[2/3] depth sweep over {len(depths)} depths up to {args.max_depth}", flush=True)
    sweep = sweeps.depth_sweep(blocks, args.inits, width=args.width, depths=depths, c=args.c)

    print("[3/3] writing results and figures", flush=True)
    config = {k: v for k, v in vars(args).items()}
    results.save_json(
        out / "results.json",
        {
            "experiment": "variance_vs_depth",
            "config": config,
            "environment": results.environment(),
            "profiles": profiles,
            "depth_sweep": sweep,
        },
    )
    table = sweeps.discrepancy_rows(profiles)
    results.save_csv(out / "discrepancy.csv", table)
    results.save_csv(
        out / "depth_sweep.csv",
        [
            {
                "block": r["block"],
                "init": r["init"],
                "depth": int(L),
                "var_w": float(v),
                "log10_growth": float(g),
                "log10_grad_ratio": float(q),
            }
            for r in sweep
            for L, v, g, q in zip(
                r["depths"],
                np.broadcast_to(r["var_w"], r["depths"].shape),
                r["log10_growth"],
                r["log10_ratio"],
                strict=True,
            )
        ],
    )
    # Read back what was saved, so the figures show exactly the stored numbers.
    saved = results.load_json(out / "results.json")
    fig = plots.profile_figure(
        saved["profiles"],
        RESIDUAL_COLUMNS,
        title=f"Per-layer statistics at depth L = {args.depth}, width n = {args.width:g}",
    )
    plots.save_figure(fig, out / "profile", args.formats)
    columns = [{"block": b, "contrast": b.replace("residual", "plain")} for b in RESIDUAL_COLUMNS]
    fig = plots.depth_figure(
        saved["depth_sweep"],
        columns,
        title=f"Growth against depth, width n = {args.width:g} (thin: plain network)",
    )
    plots.save_figure(fig, out / "depth", args.formats)

    worst = [r for r in table if r["kind"] == "exact"]
    gap = max(r["max_rel_gap"] for r in worst) if worst else float("nan")
    print(f"exact closed forms vs recursion: largest relative gap {gap:.2e} ({len(worst)} curves)")
    for r in table:
        if r["kind"] == "approximation" and r["max_rel_gap"] > 0.05:
            print(
                f"  paper approximation off by up to {r['max_rel_gap']:.0%}: "
                f"{r['block']} ({r['init']}) {r['statistic']} {r['closed_form']}"
            )
    print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
    return out


if __name__ == "__main__":
    main()
