"""How do activations beyond the paper's propagate signals, gradients and input correlations?

Question: at initialization, for identity, relu, tanh, gelu, silu, erf and sin blocks, residual
and plain, without a norm, with BN before the activation (bn_pre) and with the pre-LN block
(ln_pre), how do E[(z^l)²], E[(dE/dz^l)²] and the correlation of two distinct inputs evolve
with the layer, at a He-like init (α = 1/E f'(u)², u ~ N(0, 1): 2 for relu) and at the
depth-scaled c/(nL)? Predicted by the exact mean-field recursion (meanfield.recursions; the
Gaussian expectations of meanfield.core.activations, closed forms or quadrature), checked by
Monte-Carlo over sampled networks (each tree's two inits one grid of meanfield.sweep).

Command:

    python experiments/activations.py [--out runs] [--width 256] [--depth 50] [--networks 32]
        [--activations identity relu tanh gelu silu erf sin] [--norms none bn_pre ln_pre]

Runtime: about two minutes on a 2-core CPU at the defaults. Writes results.json (records with
configuration and versions), activations.csv (per setup: the recursion and Monte-Carlo at
l = L, and the largest |z| over layers) and activations.{png,pdf} into a new folder under
--out and prints its path. docs/activations.md shows the figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from meanfield.analysis.activations import activation_profiles  # noqa: E402
from meanfield.core import architecture as arch  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.io import plots, results  # noqa: E402

ACTIVATIONS = ("identity", "relu", "tanh", "gelu", "silu", "erf", "sin")
NORMS = ("none", "bn_pre", "ln_pre")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    results.add_out_argument(p)
    runtime.add_compile_cache_argument(p)
    p.add_argument("--width", type=int, default=256, help="n, the width of every layer")
    p.add_argument("--depth", type=int, default=50, help="L, blocks per network")
    p.add_argument("--networks", type=int, default=32, help="sampled networks per setup (0: none)")
    p.add_argument("--batch", type=int, default=8, help="inputs per network (BN's batch)")
    p.add_argument("--input-corr", type=float, default=0.5, help="correlation of the inputs")
    p.add_argument("--c", type=float, default=1.0, help="c of the depth-scaled init c/(nL)")
    p.add_argument("--seed", type=int, default=0, help="jax.random.key(seed) of the networks")
    p.add_argument(
        "--activations",
        nargs="+",
        default=list(ACTIVATIONS),
        choices=arch.ACTIVATION_NAMES,
        metavar="NAME",
        help=f"activations, any of {' '.join(arch.ACTIVATION_NAMES)}",
    )
    p.add_argument(
        "--norms",
        nargs="+",
        default=list(NORMS),
        choices=arch.NORM_NAMES,
        metavar="NORM",
        help=f"norms, any of {' '.join(arch.NORM_NAMES)}",
    )
    plots.add_formats_argument(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.width < 1 or args.depth < 1:
        p.error(f"--width and --depth must be >= 1, got {args.width}, {args.depth}")
    if args.networks != 0 and (args.networks < 2 or args.batch < 2):
        p.error(f"--networks must be 0 or >= 2 and --batch >= 2, got {args.networks}, {args.batch}")
    if not 0.0 <= args.input_corr < 1.0:
        p.error(f"--input-corr must be in [0, 1), got {args.input_corr}")
    if not args.c > 0:
        p.error(f"--c must be > 0, got {args.c}")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    runtime.use_compile_cache(args)
    start = time.perf_counter()
    with results.run_folder(args.out, "activations") as out:
        n_setups = len(args.activations) * len(args.norms) * 2
        print(
            f"{n_setups} trees x 2 inits, recursion and {args.networks} networks each", flush=True
        )
        records = activation_profiles(
            args.activations,
            args.norms,
            width=args.width,
            depth=args.depth,
            key=jax.random.key(args.seed),
            networks=args.networks,
            batch=args.batch,
            input_corr=args.input_corr,
            c=args.c,
            progress=True,
        )
        results.save_json(
            out / "results.json",
            {
                "experiment": "activations",
                "config": vars(args),
                "environment": results.environment(),
                "records": records,
            },
        )
        rows = []
        for r in records:
            row = {k: r[k] for k in ("block", "init", "alpha")}
            for key in ("log10_m2_z", "log10_m2_dz", "corr_z"):
                layer = 0 if key == "log10_m2_dz" else args.depth
                row[f"recursion_{key}"] = float(np.asarray(r["recursion"][key])[layer])
                mc = r.get("montecarlo", {}).get(key)
                if mc is not None:
                    m, se = np.asarray(mc["mean"], float), np.asarray(mc["stderr"], float)
                    row[f"montecarlo_{key}"] = float(m[layer])
                    if key == "corr_z":
                        z = (m - np.asarray(r["recursion"][key])) / se
                        row["max_abs_z_corr"] = float(np.nanmax(np.abs(z[1:])))
            rows.append(row)
        results.save_csv(out / "activations.csv", rows)
        saved = results.load_json(out / "results.json")
        fig = plots.activation_figure(
            saved["records"],
            title=f"n = {args.width}, L = {args.depth}, inputs of correlation {args.input_corr}",
        )
        plots.save_figure(fig, out / "activations", args.formats)
        print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
        return out


if __name__ == "__main__":
    main()
