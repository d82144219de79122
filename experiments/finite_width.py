"""Where do sampled networks leave the infinite-width recursion, and do they come back?

Question: the mean-field recursions are the n -> ∞, B -> ∞ limit at fixed depth. At which
widths and BN batch sizes does a sampled network still follow them, what does it do instead,
and does it converge to them as n and B grow? Three width sweeps at fixed depth and one batch
sweep per BN block, each a figure and a table:

* relu-none-residual, input-side gradient E[(dE/dz^0)²] at L = 10, α = n·var_w = 1: an O(1/n)
  excess, partly Euler's rank-one mode (z^l·dE/dz^l = z^L·g), that a fit a + b/n removes;
* relu-none-residual, gradient ratio Var[dE/dW^1]/Var[dE/dW^L] at L = 50: at depth
  comparable to ln n the finite-width mode dominates and the ratio leaves the recursion by
  orders of magnitude;
* identity-none-residual, E[(z^L)²] at L = 10: the control, exact at every width in mean,
  while its spread over networks (shaded) shrinks like sqrt(L/n);
* BN blocks, gradient ratio at L = 10 against the batch B at n = 1024: the exact n = ∞,
  finite-B closed form for identity blocks, and the B -> ∞ recursion that it approaches.

Command:

    python experiments/finite_width.py [--out runs] [--networks 512]

Runtime: about 2 minutes on a 2-core CPU. Writes results.json (everything, with
configuration and versions), width_sweep.csv, batch_sweep.csv, extrapolation.csv and
finite_width.{png,pdf}, finite_batch.{png,pdf} into a new folder under --out, and prints its
path and the extrapolated limits.
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
from meanfield.analysis import finitewidth  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.io import plots, results  # noqa: E402

WIDTH_SWEEPS = (
    # name, block, quantity, depth, smallest width used by the fit
    ("relu_input_gradient", "relu-none-residual", ("m2_dz", 0), 10, 64),
    ("relu_gradient_ratio", "relu-none-residual", ("grad_ratio", None), 50, None),
    ("identity_forward", "identity-none-residual", ("m2_z", -1), 10, 64),
)
BATCH_BLOCKS = ("identity-bn_post-residual", "relu-bn_post-residual", "relu-bn_pre-residual")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    results.add_out_argument(p)
    runtime.add_compile_cache_argument(p)
    p.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[16, 32, 64, 128, 256, 512, 1024, 2048],
        help="widths n of the width sweeps",
    )
    p.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[4, 5, 6, 8, 12, 16, 32],
        help="BN batch sizes B of the batch sweep",
    )
    p.add_argument("--batch", type=int, default=4, help="inputs per network in the width sweeps")
    p.add_argument("--bn-width", type=int, default=1024, help="width n of the batch sweep")
    p.add_argument("--alpha", type=float, default=1.0, help="α = n·var_w of every sweep")
    p.add_argument("--networks", type=int, default=512, help="sampled networks per point")
    p.add_argument("--seed", type=int, default=0, help="seed of jax.random.key")
    plots.add_formats_argument(p)
    args = p.parse_args(argv)
    if min(args.widths) < 1:
        p.error(f"--widths must all be >= 1, got {args.widths}")
    if min(args.batches) < 2:
        p.error(f"--batches must all be >= 2 (BN uses batch statistics), got {args.batches}")
    if args.bn_width < 1 or args.batch < 1:
        p.error(f"--bn-width and --batch must be >= 1, got {args.bn_width}, {args.batch}")
    if not args.alpha > 0:
        p.error(f"--alpha must be > 0, got {args.alpha}")
    if args.networks < 2:
        p.error(f"--networks must be >= 2, got {args.networks}")
    args.widths = sorted(set(args.widths))
    args.batches = sorted(set(args.batches))
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    runtime.use_compile_cache(args)
    start = time.perf_counter()
    with results.run_folder(args.out, "finite_width") as out:
        key = jax.random.key(args.seed)
        width_sweeps, batch_sweeps = [], []
        for i, (name, block, (stat, layer), depth, min_width) in enumerate(WIDTH_SWEEPS):
            layer = depth if layer == -1 else layer
            print(f"[width {i + 1}/{len(WIDTH_SWEEPS)}] {block} {stat}, L = {depth}", flush=True)
            rows = finitewidth.width_sweep(
                Block.from_name(block),
                (stat, layer),
                key=jax.random.fold_in(key, i),
                widths=args.widths,
                depth=depth,
                alpha=args.alpha,
                networks=args.networks,
                batch=args.batch,
            )
            fit = None
            if min_width is not None:
                try:
                    fit = finitewidth.extrapolate_width(rows, min_width=min_width)
                except ValueError as err:  # too few usable widths for this choice of --widths
                    print(f"  no extrapolation: {err}", flush=True)
            width_sweeps.append({"name": name, "rows": rows, "fit": fit})
        for i, block in enumerate(BATCH_BLOCKS):
            print(f"[batch {i + 1}/{len(BATCH_BLOCKS)}] {block} gradient ratio, L = 10", flush=True)
            blk = Block.from_name(block)
            rows = finitewidth.batch_sweep(
                blk,
                ("grad_ratio", None),
                key=jax.random.fold_in(key, 100 + i),
                batches=args.batches,
                width=args.bn_width,
                depth=10,
                alpha=args.alpha,
                networks=args.networks,
            )
            dense = np.arange(max(4, args.batches[0]), args.batches[-1] + 1)
            curve = [
                finitewidth.finite_batch_gradient_ratio(blk, 10, args.bn_width, args.alpha, int(b))
                for b in dense
            ]
            finite = {"batch": dense, "log10_value": curve} if np.isfinite(curve).any() else None
            batch_sweeps.append({"name": block, "rows": rows, "finite_batch": finite})

        results.save_json(
            out / "results.json",
            {
                "experiment": "finite_width",
                "config": vars(args),
                "environment": results.environment(),
                "width_sweeps": width_sweeps,
                "batch_sweeps": batch_sweeps,
            },
        )
        results.save_csv(out / "width_sweep.csv", [r for s in width_sweeps for r in s["rows"]])
        results.save_csv(out / "batch_sweep.csv", [r for s in batch_sweeps for r in s["rows"]])
        fits = [
            {"sweep": s["name"]} | {k: v for k, v in s["fit"].items() if k != "widths"}
            for s in width_sweeps
            if s["fit"]
        ]
        if fits:
            results.save_csv(out / "extrapolation.csv", fits)
        saved = results.load_json(out / "results.json")
        plots.save_figure(
            plots.width_sweep_figure(
                saved["width_sweeps"], title=f"Width sweeps, α = {args.alpha:g}"
            ),
            out / "finite_width",
            args.formats,
        )
        plots.save_figure(
            plots.batch_sweep_figure(
                saved["batch_sweeps"], title=f"BN batch sweeps, α = {args.alpha:g}"
            ),
            out / "finite_batch",
            args.formats,
        )
        for f in fits:
            print(
                f"{f['sweep']}: n -> ∞ limit {f['limit']:.4g} ± {f['limit_stderr']:.2g} "
                f"against the recursion's {f['recursion']:.4g} "
                f"(z = {f['z_limit_vs_recursion']:+.2f})"
            )
        for s in batch_sweeps:
            r = s["rows"][0]
            finite = r.get("log10_finite_batch", float("nan"))
            print(
                f"{s['name']} at B = {r['batch']}: gradient ratio {10 ** r['log10_mc_mean']:.4g} "
                f"(finite-B form {10**finite:.4g}, recursion {10 ** r['log10_recursion']:.4g})"
            )
        print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
        return out


if __name__ == "__main__":
    main()
