"""Does the shortcut depth decide how well-conditioned a deep ResNet is at the zero init?

Question (Li et al. 2016, "Demystifying ResNet"): for linear and tanh residual networks of
width d with L residual units of k weight layers each, all weights zero, how do the
Hessian's condition number and spectral norm depend on L? Predicted: depth-invariant for
k = 2 (eigenvalues ±2σ_j(C), C = E[x (y - x)ᵀ]), growing with L for k = 1, and H = 0 (a
higher-order saddle) for k >= 3. Computed exactly (jax.hessian) up to 4096 parameters and by
Lanczos beyond (meanfield.analysis.hessian), on synthetic whitened data and, when CIFAR-10 is found
locally (--data-dir, $CIFAR10_DIR, ./data or the cache; nothing is downloaded), on the 10
leading principal components of its images regressed onto the one-hot class.

Command:

    python experiments/hessian_vs_depth.py [--out runs] [--depths 1 2 4 8 16 32]

Runtime: about 2 minutes on a 2-core CPU. Writes hessian.csv, results.json (with configuration
and versions) and hessian.{png,pdf} into a new folder under --out and prints its path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meanfield.analysis import hessian  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.io import plots, results  # noqa: E402
from meanfield.training import data  # noqa: E402


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
        default=[1, 2, 4, 8, 16, 32],
        help="numbers L of residual units, each >= 1",
    )
    p.add_argument(
        "--shortcuts",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="weight layers k per residual unit (the shortcut depth), each >= 1",
    )
    p.add_argument("--width", type=int, default=4, help="d of the synthetic data")
    p.add_argument("--samples", type=int, default=1000, help="N pairs (x, y)")
    p.add_argument(
        "--lanczos-steps",
        type=int,
        default=80,
        help=f"Lanczos steps above {hessian.MAX_EXACT_PARAMS} parameters (the exact limit)",
    )
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (optional; not fetched)")
    p.add_argument("--no-cifar", action="store_true", help="synthetic data only")
    p.add_argument(
        "--seed", type=int, default=0, help="of the synthetic data and the Lanczos starts"
    )
    plots.add_formats_argument(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if min(args.depths) < 1 or min(args.shortcuts) < 1:
        p.error(f"--depths and --shortcuts must be >= 1, got {args.depths}, {args.shortcuts}")
    if args.width < 1 or args.samples <= max(args.width, 10):
        p.error(f"--samples must exceed --width and 10, got {args.samples}, {args.width}")
    args.depths = sorted(set(args.depths))
    args.shortcuts = sorted(set(args.shortcuts))
    return args


def _sweep(name, x, y, args, key) -> dict:
    rows = []
    for k in args.shortcuts:
        # tanh only changes anything where an activation sits at a point with a second-order
        # term: k = 2 (k = 1 has no activation, k >= 3 has H = 0 for any σ with σ(0) = 0).
        for act in hessian.ACTIVATIONS if k == 2 else ("linear",):
            for L in args.depths:
                t0 = time.perf_counter()
                spec = hessian.spectrum(
                    x,
                    y,
                    depth=L,
                    shortcut=k,
                    activation=act,
                    steps=args.lanczos_steps,
                    key=jax.random.fold_in(jax.random.fold_in(key, k), L),
                )
                rows.append(
                    {
                        "data": name,
                        "shortcut": k,
                        "activation": act,
                        "depth": L,
                        "parameters": spec.parameters,
                        "method": spec.method,
                        "condition": spec.condition,
                        "max_abs": spec.max_abs,
                        "min_abs": spec.min_abs,
                        "zero_fraction": spec.zero_fraction,
                        "gradient_norm": spec.gradient_norm,
                        "seconds": time.perf_counter() - t0,
                    }
                )
    s = np.linalg.svd(hessian.data_correlation(x, y), compute_uv=False)
    return {"name": name, "rows": rows, "closed_form_condition": float(s[0] / s[-1])}


def main(argv=None) -> Path:
    args = parse_args(argv)
    runtime.use_compile_cache(args)
    start = time.perf_counter()
    with results.run_folder(args.out, "hessian_vs_depth") as out:
        sets = []
        x, y = hessian.whitened_data(args.width, args.samples, seed=args.seed)
        print(f"[1] synthetic whitened data, d = {args.width}, N = {args.samples}", flush=True)
        key = jax.random.key(args.seed)  # the Lanczos starts (above hessian.MAX_EXACT_PARAMS)
        sets.append(_sweep(f"synthetic whitened, d = {args.width}", x, y, args, key))
        folder = None if args.no_cifar else data.find(args.data_dir)
        if folder is not None:
            print(f"[2] CIFAR-10 from {folder}: 10 principal components, N = {args.samples}")
            cifar = data.load(folder, train_size=args.samples, test_size=1, download_missing=False)
            x, y = hessian.principal_component_data(cifar.x_train, cifar.y_train, 10)
            sets.append(_sweep("CIFAR-10, 10 principal components", x, y, args, key))
        else:
            print("[2] CIFAR-10 not found locally; synthetic data only (see --data-dir)")
        results.save_json(
            out / "results.json",
            {
                "experiment": "hessian_vs_depth",
                "config": vars(args),
                "environment": results.environment(),
                "datasets": sets,
            },
        )
        results.save_csv(out / "hessian.csv", [r for s in sets for r in s["rows"]])
        saved = results.load_json(out / "results.json")
        fig = plots.hessian_figure(saved["datasets"], title="Hessian at the zero initialization")
        plots.save_figure(fig, out / "hessian", args.formats)
        for s in sets:
            print(f"{s['name']}: closed-form cond(C) = {s['closed_form_condition']:.4g}")
            for k in args.shortcuts:
                rs = [r for r in s["rows"] if r["shortcut"] == k and r["activation"] == "linear"]
                conds = ", ".join(f"{r['condition']:.3g}" for r in rs)
                print(f"  k = {k}: condition number at L = {args.depths}: {conds}")
        print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
        return out


if __name__ == "__main__":
    main()
