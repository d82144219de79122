"""Which initializations keep a deep ResNet's input-output Jacobian an isometry?

Question (dynamical isometry; Gadhikar & Burkholz 2022): for residual networks of width n at
initialization, how spread are the singular values σ_i of the input-output Jacobian, and how
does the spread grow with depth, for He, depth-scaled c/(nL), Fixup, SkipInit (α = 0 and a
small α), Arpit et al.'s weight norm and RISOTTO, with and without BN? Predicted: Fixup and
SkipInit at α = 0 give J = I (their branches start at zero); RISOTTO gives every σ_i = 1
at any width and depth, with a branch that is not zero; He spreads the spectrum
exponentially in depth, BN and the depth-scaled init less (meanfield.analysis.jacobian).

Command:

    python experiments/jacobian_spectrum.py [--out runs] [--width 32] [--networks 16]

Runtime: about a minute on a 2-core CPU. Writes jacobian.csv (per configuration and depth:
mean ± SE over networks of the sd of ln σ, median condition number, largest |ln σ|),
results.json (with configuration and versions) and jacobian.{png,pdf} into a new folder
under --out and prints its path.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from meanfield.analysis import jacobian  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.io import plots, results  # noqa: E402

# label, init, norm, extra keyword arguments (alpha: SkipInit's branch scale)
CONFIGS = (
    ("He", "he", "none", {}),
    ("He, BN post", "he", "bn_post", {}),
    ("He, BN pre", "he", "bn_pre", {}),
    ("depth-scaled", "depth_scaled", "none", {}),
    ("depth-scaled, BN post", "depth_scaled", "bn_post", {}),
    ("Fixup", "fixup", "none", {}),
    ("SkipInit α = 0", "skipinit", "none", {"alpha": 0.0}),
    ("SkipInit α = 0.1", "skipinit", "none", {"alpha": 0.1}),
    ("weight norm (Arpit)", "weight_norm", "none", {}),
    ("RISOTTO", "risotto", "none", {}),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    results.add_out_argument(p)
    runtime.add_compile_cache_argument(p)
    p.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8, 16, 32, 64],
        help="numbers L of residual blocks, each >= 1",
    )
    p.add_argument(
        "--width",
        type=int,
        default=32,
        help=f"n of every layer, 1 to {jacobian.MAX_EXACT_WIDTH} (an exact SVD of the n x n J)",
    )
    p.add_argument("--networks", type=int, default=16, help="sampled networks per point")
    p.add_argument("--batch", type=int, default=16, help="inputs per network (BN's batch)")
    p.add_argument("--seed", type=int, default=0, help="jax.random.key(seed) of the networks")
    plots.add_formats_argument(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if min(args.depths) < 1 or args.width < 1:
        p.error(f"--depths and --width must be >= 1, got {args.depths}, {args.width}")
    if args.width > jacobian.MAX_EXACT_WIDTH:
        p.error(f"--width must be <= {jacobian.MAX_EXACT_WIDTH} (exact SVD), got {args.width}")
    if args.networks < 2 or args.batch < 2:
        p.error(f"--networks and --batch must be >= 2, got {args.networks}, {args.batch}")
    args.depths = sorted(set(args.depths))
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    runtime.use_compile_cache(args)
    start = time.perf_counter()
    with results.run_folder(args.out, "jacobian_spectrum") as out:
        key = jax.random.key(args.seed)
        rows = []
        for i, (label, init, norm, extra) in enumerate(CONFIGS):
            print(f"[{i + 1}/{len(CONFIGS)}] {label}", flush=True)
            for L in args.depths:
                sv = jacobian.singular_values(
                    init,
                    key=jax.random.fold_in(jax.random.fold_in(key, i), L),
                    depth=L,
                    width=args.width,
                    networks=args.networks,
                    norm=norm,
                    batch=args.batch if norm != "none" else 1,
                    **extra,
                )
                st = jacobian.spectrum_stats(sv)
                rows.append(
                    {
                        "label": label,
                        "init": init,
                        "norm": norm,
                        "alpha": extra.get("alpha", math.nan),
                        "depth": L,
                        "width": args.width,
                        "networks": args.networks,
                        "sd_log_mean": float(st.sd_log.mean()),
                        "sd_log_stderr": float(st.sd_log.std(ddof=1) / math.sqrt(args.networks)),
                        "condition_median": float(np.median(st.condition)),
                        "max_abs_log_max": float(st.max_abs_log.max()),
                    }
                )
        results.save_json(
            out / "results.json",
            {
                "experiment": "jacobian_spectrum",
                "config": vars(args),
                "environment": results.environment(),
                "rows": rows,
            },
        )
        results.save_csv(out / "jacobian.csv", rows)
        saved = results.load_json(out / "results.json")
        fig = plots.jacobian_figure(
            saved["rows"], title=f"Input-output Jacobian spectrum, width n = {args.width}"
        )
        plots.save_figure(fig, out / "jacobian", args.formats)
        deepest = max(args.depths)
        for r in rows:
            if r["depth"] == deepest:
                print(
                    f"  L = {deepest:4d} {r['label']:22s} sd ln σ = {r['sd_log_mean']:.3g}, "
                    f"median σmax/σmin = {r['condition_median']:.3g}, "
                    f"max |ln σ| = {r['max_abs_log_max']:.2g}"
                )
        print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
        return out


if __name__ == "__main__":
    main()
