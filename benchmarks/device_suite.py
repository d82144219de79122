"""One prepared accelerator run: the throughput rows and a short Fig. 2, into one folder.

In one process, on the default device, each part timed and saved as soon as it ends (a part
that fails is recorded with its error and the others go on):

1. ``montecarlo``: the rows of ``bench_montecarlo.py`` (explicit-weight engine, its RNG bound,
   the PyTorch peer);
2. ``weightfree``: the weight-free engine against the explicit one and the peer over widths
   and batch sizes, with its figure ``weightfree.png``;
3. ``fftconv``: the FFT path of circular convolutions against the direct one
   (``bench_fftconv.py``), the data of the ``method="auto"`` rule on this backend;
4. ``train``: the trainer's images per second for K = 1 and K = 9 seeds against the PyTorch
   peer (``bench_train.py``), the paper's network without and with BN;
5. ``fig2``: a short Fig. 2 (``experiments/train_cifar.py``: He without BN, depth-scaled, He
   with BN, the paper's network) on the first ``--train-size`` training images, which need
   only ``data_batch_1``, with its learning curves and summary in ``fig2/``.

Everything goes into ``--out``: ``suite.json`` (the configuration, the device, every part's
rows, seconds and error, the environment; rewritten atomically after each part), the figures,
and the training run's folder. ``--toy`` shrinks every part to seconds on a CPU (the test
runs it so), on a generated stand-in for CIFAR-10 unless ``--data-dir`` is given.

    python benchmarks/device_suite.py --out runs/device --data-dir shared/data   # a GPU, < 8 min
    python benchmarks/device_suite.py --out /tmp/suite --toy                     # CPU, seconds
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "experiments"))

import bench_fftconv  # noqa: E402
import bench_montecarlo  # noqa: E402
import bench_train  # noqa: E402
import jax  # noqa: E402

from meanfield import Block  # noqa: E402
from meanfield.io import results  # noqa: E402

# Sizes per part: the accelerator run, and --toy.
FULL = {
    "montecarlo": dict(rows=bench_montecarlo.ROWS, scale=1.0),
    "weightfree": dict(widths=[256, 1024, 4096], batches=[1, 16, 64], depth=100, networks=16),
    "fftconv": ["--kernels", "3", "8", "--sides", "32", "--channels", "16", "64", "--batch", "128"],
    "train": ["--steps", "10", "--repeats", "3", "--seeds", "9"],
    "fig2": ["--seeds", "3", "--epochs", "5", "--train-size", "10000", "--check-batch", "64"],
}
TOY = {
    "montecarlo": dict(rows=((4, 2, 16, 3),), scale=1.0),
    "weightfree": dict(widths=[16], batches=[2], depth=3, networks=2),
    "fftconv": ["--kernels", "3", "--sides", "8", "--channels", "4", "--batch", "2"],
    "train": ["--depth", "2", "--channels", "4", "--kernel-size", "3", "--batch", "4"]
    + ["--steps", "1", "--repeats", "1", "--seeds", "2"],
    "fig2": ["--seeds", "1", "--epochs", "1", "--depth", "2", "--channels", "4"]
    + ["--kernel-size", "3", "--train-size", "64", "--test-size", "32", "--batch-size", "32"]
    + ["--check-batch", "8"],
}
PARTS = tuple(FULL)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for suite.json and figures")
    p.add_argument("--toy", action="store_true", help="every part at toy sizes (a CPU test)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder for the short Fig. 2")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers")
    return p.parse_args(argv)


def _montecarlo(sizes, args, out: Path):
    block = Block.from_name("relu-none-residual")
    chunk = None if args.no_torch else 64
    return bench_montecarlo.bench_rows(block, sizes["scale"], "highest", chunk, sizes["rows"])


def _weightfree(sizes, args, out: Path):
    return bench_montecarlo.bench_engines(
        Block.from_name("relu-none-residual"),
        sizes["widths"],
        sizes["batches"],
        sizes["depth"],
        sizes["networks"],
        str(out / "weightfree.png"),
        None if args.no_torch else 8.0,
    )


def _fftconv(sizes, args, out: Path):
    return bench_fftconv.main(sizes)


def _train(sizes, args, out: Path):
    return bench_train.main(sizes + (["--no-torch"] if args.no_torch else []))


def _fig2(sizes, args, out: Path):
    import train_cifar

    argv = sizes + ["--out", str(out), "--no-progress", "--no-download"]
    argv += ["--data-dir", args.data_dir] if args.data_dir else ["--synthetic"]
    run = train_cifar.main(argv)
    summary = results.load_json(run / "summary.json")["summary"]
    return {"folder": str(run.relative_to(out)), "summary": summary}


RUNNERS = {
    "montecarlo": _montecarlo,
    "weightfree": _weightfree,
    "fftconv": _fftconv,
    "train": _train,
    "fig2": _fig2,
}


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = TOY if args.toy else FULL
    device = jax.devices()[0]
    suite = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": {"kind": device.device_kind, "platform": device.platform, "name": str(device)},
        "sizes": {k: sizes[k] for k in args.parts},
        "parts": {},
        "environment": results.environment(),
    }
    start = time.perf_counter()
    for name in args.parts:
        print(f"\n== {name} ({time.perf_counter() - start:.0f} s into the suite)", flush=True)
        t0 = time.perf_counter()
        part = {}
        try:
            part["rows"] = RUNNERS[name](sizes[name], args, args.out)
        except Exception as err:  # noqa: BLE001 - recorded, and the other parts go on
            part["error"] = "".join(traceback.format_exception_only(err)).strip()
            traceback.print_exc()
        part["seconds"] = time.perf_counter() - t0
        suite["parts"][name] = part
        suite["seconds"] = time.perf_counter() - start
        results.save_json(args.out / "suite.json", suite)
    failed = [k for k, v in suite["parts"].items() if "error" in v]
    print(f"\nsuite: {suite['seconds']:.0f} s, {args.out / 'suite.json'}", flush=True)
    if failed:
        print(f"parts that failed: {', '.join(failed)}", flush=True)
    return suite


if __name__ == "__main__":
    suite = main()
    sys.exit(1 if any("error" in v for v in suite["parts"].values()) else 0)
