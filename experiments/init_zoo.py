"""How does each initialization of the companion papers propagate signals and gradients?

Question: at initialization, how do E[(z^l)²], E[(dE/dz^l)²] and Var[dE/dW^l] evolve with the
layer for He, depth-scaled c/(nL) and He with BN on the paper's block z + relu(W z), for
SkipInit with a small branch scale α, and for He, Fixup (Zhang et al. 2019) and the
weight-normalized init of Arpit et al. (2019) on the block z + W2 relu(W1 z) they were made
for? Predicted by the mean-field recursion of each block and init (meanfield.recursions with
init=...): Fixup keeps every block the identity (only W2 gets a gradient), SkipInit grows
by (1 + α²)·... per block, weight norm by exactly (1 + 1/L) per block forward and backward,
He by about 1.5 to 2 per block. RISOTTO's looks-linear network (Gadhikar & Burkholz 2022,
the construction of meanfield.inits.risotto_type_c) has no recursion but an exact statement:
the signal y it carries and dE/dy keep their second moment at every layer of every network.
Monte-Carlo over sampled networks checks each prediction.

Command:

    python experiments/init_zoo.py [--out runs] [--width 256] [--depth 100] [--networks 64]

Runtime: about a minute on a 2-core CPU. Writes results.json (records with configuration and
versions), init_zoo.csv (per setup and statistic: the recursion at l = L, the MC mean, and
the largest |z| over layers without a heavy tail) and init_zoo.{png,pdf} into a new folder
under --out and prints its path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from meanfield import Block  # noqa: E402
from meanfield.analysis import sweeps  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.inits import RISOTTO_BLOCK  # noqa: E402
from meanfield.io import plots, results  # noqa: E402

PAPER = Block("relu", "none")
LINEAR_LAST = Block("relu", "none", True, shortcut=2, final_activation=False)

# label, block, init, branch scale (None: the scheme's own)
SETUPS = (
    ("He, z + relu(Wz)", PAPER, "he", None),
    ("depth-scaled, z + relu(Wz)", PAPER, "depth_scaled", None),
    ("He, BN post", Block("relu", "bn_post"), "he", None),
    ("SkipInit α = 0.05", PAPER, "skipinit", 0.05),
    ("He, z + W2 relu(W1 z)", LINEAR_LAST, "he", None),
    ("Fixup, z + W2 relu(W1 z)", LINEAR_LAST, "fixup", None),
    ("weight norm, z + W2 relu(W1 z)", LINEAR_LAST, "weight_norm", None),
    ("RISOTTO (type C, looks-linear)", RISOTTO_BLOCK, "risotto", None),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    results.add_out_argument(p)
    runtime.add_compile_cache_argument(p)
    p.add_argument("--width", type=int, default=256, help="n, the width of every layer")
    p.add_argument(
        "--depth",
        type=int,
        default=100,
        help="L, residual blocks, 1 to 399 (SkipInit's α = 0.05 must stay below 1/sqrt(L))",
    )
    p.add_argument("--networks", type=int, default=64, help="sampled networks per setup")
    p.add_argument("--batch", type=int, default=8, help="inputs per network (BN's batch)")
    p.add_argument("--seed", type=int, default=0, help="jax.random.key(seed) of the networks")
    plots.add_formats_argument(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.width < 1 or args.depth < 1:
        p.error(f"--width and --depth must be >= 1, got {args.width}, {args.depth}")
    if args.networks < 2 or args.batch < 2:
        p.error(f"--networks and --batch must be >= 2, got {args.networks}, {args.batch}")
    if args.depth >= 400:  # SkipInit's α must stay below 1/sqrt(L)
        p.error(f"--depth must be < 400 (SkipInit α = 0.05 < 1/sqrt(L)), got {args.depth}")
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    runtime.use_compile_cache(args)
    start = time.perf_counter()
    with results.run_folder(args.out, "init_zoo") as out:
        records = sweeps.init_zoo_profiles(
            SETUPS,
            key=jax.random.key(args.seed),
            width=args.width,
            depth=args.depth,
            networks=args.networks,
            batch=args.batch,
            progress=True,
        )
        results.save_json(
            out / "results.json",
            {
                "experiment": "init_zoo",
                "config": vars(args),
                "environment": results.environment(),
                "records": records,
            },
        )
        rows = []
        for r in records:
            for stat in ("m2_z", "m2_dz", "var_dw"):
                layer = args.depth if stat == "m2_z" else (0 if stat == "m2_dz" else 1)
                rows.append(
                    {
                        "label": r["label"],
                        "block": r["block"],
                        "init": r["init"],
                        "statistic": stat,
                        "layer": layer,
                        "recursion_log10": r["recursion"][stat][layer],
                        "montecarlo_log10": r["montecarlo"][stat]["log10_mean"][layer],
                        "max_abs_z": r["max_abs_z"][stat],
                        "heavy_tail_layers": len(r["heavy_tail"].get(stat, [])),
                    }
                )
        results.save_csv(out / "init_zoo.csv", rows)
        saved = results.load_json(out / "results.json")
        fig = plots.init_zoo_figure(
            saved["records"],
            title=f"Inits at n = {args.width}, L = {args.depth}: recursion (lines), MC (markers)",
        )
        plots.save_figure(fig, out / "init_zoo", args.formats)
        for row in rows:

            def show(v):
                return "   n/a" if v is None else f"{v:6.2f}"

            print(
                f"  {row['label']:32s} {row['statistic']:6s} l = {row['layer']:3d}: log10 "
                f"recursion {show(row['recursion_log10'])}, MC {show(row['montecarlo_log10'])}, "
                f"max |z| {show(row['max_abs_z'])} ({row['heavy_tail_layers']} heavy-tailed layers)"
            )
        print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
        return out


if __name__ == "__main__":
    main()
