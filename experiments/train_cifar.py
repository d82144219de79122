"""Does training agree with the predictions? The CIFAR-10 experiment of Taki (2017), section 4.

Question: a ResNet of 100 blocks, each an 8x8 convolution with 16 channels and ReLU, trained on
CIFAR-10 for 20 epochs: (a) He init without BN, (b) the depth-scaled init
Var[w] = 1/(8·8·16·100) without BN, (c) He init with BN (Fig. 2); and nine independent runs of
(a) (Fig. 3). Before the first step, each run measures the per-block second moments of the
activations and gradients of its networks on a real batch and compares them with the
mean-field recursion of the same block, init and fan-in (initcheck.png).

Commands:

    python experiments/train_cifar.py --smoke              # plumbing: ~1.5 min on a CPU
    python experiments/train_cifar.py --preset fig2        # 3 setups x 3 seeds x 20 epochs
    python experiments/train_cifar.py --preset fig3        # He without BN, 9 seeds
    python experiments/train_cifar.py --preset fig2-cpu    # Fig. 2 reduced: 49 min on 2 cores
    python experiments/train_cifar.py --preset fig3-cpu    # Fig. 3 reduced: 9 He seeds, 10 min
    python experiments/train_cifar.py --preset inits       # the init zoo, 8 setups x 3 seeds
    python experiments/train_cifar.py --resume runs/train_cifar-fig2-...   # continue a run

Runtime: fig2 and fig3 are GPU jobs (on a 2-core CPU one epoch of 50,000 images of one
100-block network takes about 30 min, with the convolutions by the FFT); fig2-cpu and
fig3-cpu are their CPU versions (docs/training.md); --smoke runs 3 blocks on 512 images for 2
epochs. Flags after --preset override it (e.g. --epochs 5 --seeds 2 --train-size 10000).

Expected result (the paper's): He without BN trains badly or not at all (a plateau near 10%
in many runs), the depth-scaled init trains stably, close to BN. The check shows why He
fails: at He init without BN the forward second moment reaches ~1e46 at block 100 (the
recursion's ReLU growth rate), beyond float32, so the first SGD step makes the network
overflow and the trainer reports it diverged. At the depth-scaled init it grows by ~1e3
(exp √(2L/π), not O(1)), with BN linearly; at SGD's rate 0.01 the depth-scaled network then
diverges at step 2 too, and only BN trains (docs/training.md, "Fig. 2 and Fig. 3 on a CPU").

Data: CIFAR-10's python batches, from --data-dir, $CIFAR10_DIR, ./data or the cache folder,
downloaded (checksum-verified) when absent and the network allows (docs/training.md);
--synthetic uses a generated stand-in for plumbing checks only. run.json records the folder
read (data.folder, an absolute path), and --resume reads it again unless --data-dir is given.

Before a run folder is made, every flag is checked, the data are read, and the training state
of the K seeds (parameters, BN statistics, optimizer slots) is sized against the memory of the
device (meanfield.training.footprint): --seeds 100000 of the paper's network is refused at
once. A run that fails before its first checkpoint (out of memory at init, Ctrl-C during the
prediction check) leaves no run folder; one interrupted later keeps it, for --resume.

Writes into a new folder under --out (printed at the end): run.json (the resolved
configuration), one folder per setup (config.json, metrics.jsonl, initcheck.json,
checkpoints/), learning_curves.{png,pdf}, initcheck.{png,pdf}, summary.csv and summary.json
(mean and std over seeds of the validation accuracy after epoch 1 and after the last epoch,
next to each setup's predicted forward and backward growth over the network and the spread of
its input-output Jacobian, meanfield.training.initcheck.init_predictions), and inits.{png,pdf}, the
same side by side.

The inits preset (Fixup, SkipInit, Arpit et al.'s weight norm and RISOTTO next to He,
depth-scaled and BN; docs/companions.md) trains each init on the block it was made for: the
paper's z + relu(W z) for He, depth-scaled, BN and SkipInit, z + W2 relu(W1 z) for Fixup and
weight norm, with He on that block as its baseline, and RISOTTO's type-C block on looks-linear
channels.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import jax
import numpy as np

# Runnable as `python experiments/train_cifar.py` from a checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meanfield import Block  # noqa: E402
from meanfield.core import runtime  # noqa: E402
from meanfield.io import plots, results  # noqa: E402
from meanfield.training import data, footprint, initcheck  # noqa: E402
from meanfield.training.fftconv import CONV_METHODS  # noqa: E402
from meanfield.training.models import PADDINGS, RISOTTO_BLOCK, ResNetConfig  # noqa: E402
from meanfield.training.train import (  # noqa: E402
    OPTIMIZERS,
    PRECISIONS,
    TrainConfig,
    Trainer,
    latest_checkpoint,
    train_and_evaluate,
)

# The branch z -> W_2 relu(W_1 z) of Fixup's and Arpit et al.'s networks.
LINEAR_LAST = Block("relu", "none", True, shortcut=2, final_activation=False)

# name -> (block, init, legend label)
SETUPS = {
    "he-none": (Block("relu", "none"), "he", "He, no BN"),
    "depth_scaled-none": (Block("relu", "none"), "depth_scaled", "depth-scaled 1/(nL), no BN"),
    "he-bn_post": (Block("relu", "bn_post"), "he", "He, BN (Fig. 1b)"),
    "skipinit-none": (Block("relu", "none"), "skipinit", "SkipInit α = 0 (= ReZero), no BN"),
    "he-k2": (LINEAR_LAST, "he", "He, z + W2 relu(W1 z)"),
    "fixup-k2": (LINEAR_LAST, "fixup", "Fixup, z + W2 relu(W1 z)"),
    "weight_norm-k2": (LINEAR_LAST, "weight_norm", "weight norm (Arpit), z + W2 relu(W1 z)"),
    "risotto": (RISOTTO_BLOCK, "risotto", "RISOTTO type C, looks-linear"),
}
PAPER_SETUPS = ["he-none", "depth_scaled-none", "he-bn_post"]
# Seed of the sampled dense networks of the Jacobian prediction (initcheck.init_predictions).
PREDICTION_SEED = 0

PRESETS = {
    "fig2": dict(setups=PAPER_SETUPS, seeds=3, epochs=20, depth=100),
    "fig3": dict(setups=["he-none"], seeds=9, epochs=20, depth=100),
    # The init zoo on the paper's 100 blocks, early epochs: accuracy next to the predictions.
    "inits": dict(setups=list(SETUPS), seeds=3, epochs=3, depth=100),
    # Fig. 2 and Fig. 3 on a 2-core CPU in about an hour: the paper's network, setups and
    # optimizer; 10,000 training images for 5 epochs (390 steps of 128, the steps of one
    # epoch of the paper), validation on the first 2,000 test images, one seed per setup for
    # Fig. 2 and nine He seeds for Fig. 3 (docs/training.md, "Fig. 2 and Fig. 3 on a CPU").
    "fig2-cpu": dict(
        setups=PAPER_SETUPS,
        seeds=1,
        epochs=5,
        depth=100,
        train_size=10000,
        test_size=2000,
        check_batch=32,
    ),
    "fig3-cpu": dict(
        setups=["he-none"],
        seeds=9,
        epochs=5,
        depth=100,
        train_size=10000,
        test_size=2000,
        check_batch=32,
    ),
    "smoke": dict(
        setups=PAPER_SETUPS,
        seeds=2,
        epochs=2,
        depth=3,
        train_size=512,
        test_size=256,
        batch_size=64,
        check_batch=64,
    ),
}

DEFAULTS = dict(
    setups=PAPER_SETUPS,
    seeds=1,
    epochs=20,
    depth=100,
    channels=16,
    kernel_size=8,
    padding="circular",
    c=1.0,
    optimizer="sgd",
    lr=0.01,
    momentum=0.9,
    weight_decay=0.0,
    batch_size=128,
    precision="float32",
    train_size=None,
    test_size=None,
    check_batch=128,
    seed_map="auto",
    conv="auto",
)


# The library names a setting by its field (TrainConfig.learning_rate), the command line by its
# flag (--lr): the field names that differ from the key of DEFAULTS.
_FIELD_KEYS = {"learning_rate": "lr"}


def _flag(key: str) -> str:
    """The command-line flag of the setting ``key`` of DEFAULTS (lr -> --lr)."""
    return "--" + key.replace("_", "-")


def _shown(value) -> str:
    """A setting as it would be typed or read: lists space-separated, every setup as "all",
    None (train_size, test_size: every image) as "all"."""
    if value is None or value == list(SETUPS):
        return "all"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _default_text(key: str) -> str:
    """The default of a preset-controlled flag for its help, e.g. "(default: 1; with --preset
    fig2: 3, fig3: 9, inits: 3, smoke: 2)": DEFAULTS, then each preset that sets another value."""
    text = f"default: {_shown(DEFAULTS[key])}"
    others = [
        f"{name}: {_shown(preset[key])}"
        for name, preset in sorted(PRESETS.items())
        if key in preset and preset[key] != DEFAULTS[key]
    ]
    if others:
        text += "; with --preset " + ", ".join(others)
    return f"({text})"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: ...)" after every help, except where the help states its own: the
    flags a preset controls are None on the command line (the preset fills them in later), so
    their help names the real defaults (:func:`_default_text`)."""

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The command line. The flags that a preset controls default to None, so that
    :func:`resolve` can tell a flag given from one left to the preset."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=_HelpFormatter
    )

    def setting(key: str, help: str, **kwargs) -> None:
        p.add_argument(_flag(key), help=f"{help} {_default_text(key)}", **kwargs)

    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named experiment; the flags below override it (default: none, the defaults below)",
    )
    p.add_argument("--smoke", action="store_true", help="same as --preset smoke")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="continue the run in this folder with its saved settings (default: a new run)",
    )
    results.add_out_argument(p)
    runtime.add_compile_cache_argument(p)
    p.add_argument(
        "--data-dir",
        default=None,
        help="CIFAR-10 folder (cifar-10-batches-py) (default: with --resume the run's own "
        "folder, else $CIFAR10_DIR, ./data, then the cache folder)",
    )
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.add_argument("--synthetic", action="store_true", help="a generated stand-in, not CIFAR-10")
    setting("setups", "setups to train", nargs="+", choices=list(SETUPS))
    setting("seeds", "networks per setup, seeds 0..N-1, in one program", type=int)
    setting("epochs", "epochs (with --resume: train up to this many)", type=int)
    setting("depth", "residual blocks L", type=int)
    setting("channels", "channels C of every block", type=int)
    setting("kernel_size", "k of the k x k convolutions", type=int)
    setting("padding", "convolution padding", choices=PADDINGS)
    setting("c", "c of the depth-scaled init c/(nL), a finite number > 0", type=float)
    setting("optimizer", "the paper names none", choices=OPTIMIZERS)
    setting("lr", "learning rate (constant), a finite number > 0", type=float)
    setting("momentum", "SGD momentum, in [0, 1)", type=float)
    setting("weight_decay", "weight decay, a finite number >= 0", type=float)
    setting("batch_size", "images per step and seed, at most the training images", type=int)
    setting("precision", "bf16: mixed precision", choices=PRECISIONS)
    setting("train_size", "first N training images", type=int)
    setting("test_size", "first N test images", type=int)
    setting("check_batch", "images for the prediction check (0: skip)", type=int)
    setting("seed_map", "how seeds batch", choices=("auto", "vmap", "unroll"))
    setting("conv", "circular convolutions by the FFT, directly, or auto", choices=CONV_METHODS)
    plots.add_formats_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--check-only",
        action="store_true",
        help="only the prediction check at initialization (minutes on a CPU), no training",
    )
    return p


def parse_args(argv=None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The flags, each checked on its own (``parser.error`` on a bad one)."""
    p = parser if parser is not None else build_parser()
    args = p.parse_args(argv)
    if args.smoke:
        if args.preset not in (None, "smoke"):
            p.error(f"--smoke contradicts --preset {args.preset}")
        args.preset = "smoke"
    if args.check_only and args.resume is not None:
        p.error("--check-only starts no training and cannot be combined with --resume")
    if args.check_only and args.check_batch == 0:
        p.error("--check-only needs --check-batch >= 1")
    if args.resume is not None and not (args.resume / "run.json").is_file():
        p.error(f"--resume must name a run folder with a run.json, got {args.resume}")
    for name in ("seeds", "epochs", "depth", "channels", "kernel_size", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    for name in ("train_size", "test_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.check_batch is not None and args.check_batch < 0:
        p.error(f"--check-batch must be >= 0, got {args.check_batch}")
    return args


def resolve(args: argparse.Namespace) -> dict:
    """The run's settings: defaults, then the preset, then the flags given."""
    settings = dict(DEFAULTS)
    settings.update(PRESETS.get(args.preset, {}))
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    settings["preset"] = args.preset
    settings["synthetic"] = args.synthetic
    return settings


def resume_conflicts(args: argparse.Namespace, saved: dict) -> list[str]:
    """The flags given with --resume whose value is not the saved run's, as "--lr 0.5 (saved:
    0.01)". Not compared: flags left out (the saved value holds), --epochs (with --resume:
    train up to this many) and the host's settings (--data-dir, --formats, --no-progress,
    ...), which are not part of the run."""
    given = {key: getattr(args, key) for key in DEFAULTS if key != "epochs"}
    given["preset"] = args.preset
    given["synthetic"] = args.synthetic or None  # a store_true flag is given only when True
    conflicts = []
    for key, value in given.items():
        if value is not None and value != saved.get(key):
            shown = "" if key == "synthetic" else f" {_shown(value)}"
            conflicts.append(f"{_flag(key)}{shown} (saved: {_shown(saved.get(key))})")
    return conflicts


def saved_data_folder(saved: dict) -> str | None:
    """The CIFAR-10 folder of a saved run (run.json): ``data.folder``, an absolute path; for a
    run saved before that was recorded, ``data.source``, the folder as it was found. None for
    synthetic data."""
    info = saved.get("data") or {}
    folder = info.get("folder") or info.get("source")
    return None if folder in (None, "synthetic") else str(folder)


def _saved_settings(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The settings of the run named by --resume, with --epochs applied; ``p.error`` when
    run.json cannot be read or a flag given contradicts it. Without --data-dir, ``args``
    takes the run's data folder (``args.data_from_run``): a resume reads the data its run
    read, instead of searching (and downloading) anew."""
    path = args.resume / "run.json"
    try:
        saved = results.load_json(path)
        settings = saved["settings"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        p.error(f"--resume: cannot read the settings in {path}: {_one_line(err)}")
    if args.data_dir is None and not settings.get("synthetic"):
        args.data_dir = saved_data_folder(saved)
        args.data_from_run = args.data_dir is not None
    conflicts = resume_conflicts(args, settings)
    if conflicts:
        p.error(
            f"--resume {args.resume}: flags that differ from the saved run's settings: "
            f"{', '.join(conflicts)}; leave them out to keep the saved values (of the run's "
            "settings only --epochs, train up to this many, may change)"
        )
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    return settings


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _flag_message(err: ValueError) -> str:
    """The library's message about a setting ("learning_rate must be a finite number > 0, got
    -1.0") in terms of its flag ("--lr must be ...")."""
    text = _one_line(err)
    field, _, rest = text.partition(" ")
    key = _FIELD_KEYS.get(field, field)
    return f"{_flag(key)} {rest}" if key in DEFAULTS and rest else text


def prepare(argv=None) -> tuple[argparse.Namespace, dict, dict[str, TrainConfig], data.CIFAR10]:
    """Everything that can be checked before a run folder is made: the flags, the resolved (or,
    with --resume, the saved) settings as validated TrainConfigs, and the data, found and read.
    Any problem is ``parser.error``: one line naming the flag, the value and what is allowed,
    or the file that cannot be read, and exit code 2."""
    p = build_parser()
    args = parse_args(argv, p)
    args.data_from_run = False
    settings = _saved_settings(p, args) if args.resume is not None else resolve(args)
    try:  # the library's rules (TrainConfig, ResNetConfig), reported by flag
        configs = train_configs(settings)
    except ValueError as err:
        p.error(_flag_message(err))
    for config in configs.values():
        problem = state_too_large(config)
        if problem:
            p.error(problem)
    try:
        dataset = load_data(settings, args)
    except data.DataError as err:
        hint = ""
        if args.data_from_run:
            hint = (
                f" (the folder of the run {args.resume}, from its run.json; pass --data-dir "
                "where the data set is now)"
            )
        p.error(f"cannot read CIFAR-10: {_one_line(err)}{hint}")
    except ValueError as err:  # --train-size or --test-size beyond the images there are
        p.error(_flag_message(err))
    except OSError as err:  # e.g. a --data-dir that cannot be created for the download
        p.error(f"cannot read CIFAR-10: {_one_line(err)}")
    n_train = len(dataset.y_train)
    if settings["batch_size"] > n_train:
        p.error(
            f"--batch-size must be <= the training images ({n_train}), got {settings['batch_size']}"
        )
    return args, settings, configs, dataset


def state_too_large(config: TrainConfig) -> str | None:
    """None when the training state of ``config``'s seeds fits in memory, else the error
    line, in flags (:mod:`meanfield.training.footprint`)."""
    found = footprint.state_footprint(config)
    have, where = footprint.memory_limit()
    if found.total_bytes <= have:
        return None
    m = config.model
    return (
        f"--seeds {found.seeds} with --channels {m.channels} --depth {m.depth} --kernel-size "
        f"{m.kernel_size}: the training state of {found.seeds} networks needs "
        f"{footprint.gib(found.total_bytes)} ({found.parameters:,} parameters and "
        f"{found.optimizer_slots} optimizer value(s) per parameter, "
        f"{footprint.gib(found.bytes_per_network)} a network), more than the "
        f"{footprint.gib(have)} of {where}; use fewer --seeds or a smaller --channels, "
        "--depth or --kernel-size"
    )


def train_configs(settings: dict) -> dict[str, TrainConfig]:
    configs = {}
    for name in settings["setups"]:
        block, init, _ = SETUPS[name]
        model = ResNetConfig(
            block=block,
            depth=settings["depth"],
            channels=settings["channels"],
            kernel_size=settings["kernel_size"],
            init=init,
            c=settings["c"],
            padding=settings["padding"],
        )
        configs[name] = TrainConfig(
            model=model,
            seeds=tuple(range(settings["seeds"])),
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            optimizer=settings["optimizer"],
            learning_rate=settings["lr"],
            momentum=settings["momentum"],
            weight_decay=settings["weight_decay"],
            precision=settings["precision"],
            check_batch=settings["check_batch"],
            seed_map=settings["seed_map"],
            # Runs saved before the FFT path existed have no "conv": theirs was "direct".
            conv=settings.get("conv", "direct"),
        )
    return configs


def load_data(settings: dict, args: argparse.Namespace) -> data.CIFAR10:
    if settings["synthetic"]:
        return data.synthetic(settings["train_size"] or 512, settings["test_size"] or 256)
    return data.load(
        args.data_dir,
        train_size=settings["train_size"],
        test_size=settings["test_size"],
        # The run's own folder is read, or its absence said: not a download into it.
        download_missing=not (args.no_download or getattr(args, "data_from_run", False)),
    )


def summarize(
    name: str, label: str, rows: list[dict], check: dict | None, predictions: dict | None = None
) -> dict:
    """Mean and std over seeds of the validation accuracy after epoch 1 and the last epoch,
    with the setup's predictions at initialization."""
    last = max(r["epoch"] for r in rows)
    out = {"setup": name, "label": label, "seeds": len({r["seed"] for r in rows})}
    for tag, epoch in (("epoch1", 1), ("last", last)):
        acc = [r["val_accuracy"] for r in rows if r["epoch"] == epoch]
        finite = np.array([a for a in acc if a is not None], dtype=float)
        out[f"val_accuracy_{tag}_mean"] = float(finite.mean()) if finite.size else None
        out[f"val_accuracy_{tag}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else None
    out["last_epoch"] = last
    out["diverged"] = len({r["seed"] for r in rows if r["diverged_at_step"] is not None})
    # The check's headline numbers (None without a check, as for RISOTTO: every row has the
    # same columns, so summary.csv takes any setup order).
    s = check["summary"] if check is not None else None
    for key, stat, field in (
        ("log10_m2_z_L_measured", "m2_z", "measured_log10_of_mean"),
        ("log10_m2_z_L_predicted", "m2_z", "predicted_log10"),
        ("log10_m2_dz_1_measured", "m2_dz", "measured_log10_of_mean"),
        ("log10_m2_dz_1_predicted", "m2_dz", "predicted_log10"),
        # Why the measured value is missing where the check says so (Fixup's zero head).
        ("log10_m2_dz_1_note", "m2_dz", "note"),
    ):
        out[key] = s[stat].get(field) if s is not None else None
    for key, value in (predictions or {}).items():
        out[f"predicted_{key}"] = value
    return out


@functools.lru_cache(maxsize=16)
def _init_predictions(model: ResNetConfig) -> dict:
    """:func:`meanfield.training.initcheck.init_predictions` of ``model`` (a function of the frozen
    configuration and PREDICTION_SEED alone: a resume in the same process reuses it)."""
    return initcheck.init_predictions(model, key=jax.random.key(PREDICTION_SEED))


def _show(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _where(configs: dict[str, TrainConfig]) -> str:
    model = next(iter(configs.values())).model
    return f"{model.depth} blocks of {model.kernel_size}x{model.kernel_size}x{model.channels}"


def _check_line(check: dict, width: int) -> str:
    def show(v):  # not a number without a note: the measured value overflowed in float32
        return "overflow" if v is None or not np.isfinite(v) else f"{v:.2f}"

    parts = []
    for stat, what in (("m2_z", "E[(z^L)^2]"), ("m2_dz", "E[(dE/dz^1)^2]/E[(dE/dz^L)^2]")):
        r = check["summary"][stat]
        measured = r.get("note") or show(r["measured_log10_of_mean"])
        parts.append(
            f"log10 {what}: measured {measured}, recursion "
            f"{show(r['predicted_log10'])}, dense width {width} {show(r['toy_log10'])}"
        )
    return "; ".join(parts)


def check_only(configs: dict[str, TrainConfig], dataset, out: Path, formats) -> Path:
    """The prediction check of every setup, without training (initcheck.json per setup)."""
    checks = []
    for i, (name, config) in enumerate(configs.items(), 1):
        if not config.model.has_recursion:
            print(f"[{i}/{len(configs)}] {name}: no recursion to check (exact by construction)")
            continue
        start = time.perf_counter()
        trainer = Trainer(config, dataset.mean, dataset.std)
        results.save_json(
            out / name / "initcheck.json", trainer.prediction_check(trainer.init_state(), dataset)
        )
        check = results.load_json(out / name / "initcheck.json")
        checks.append({"label": SETUPS[name][2], "check": check})
        line = _check_line(check, config.model.channels)
        print(f"[{i}/{len(configs)}] {name}: {line} ({time.perf_counter() - start:.0f} s)")
    fig = plots.initcheck_figure(
        checks, title=f"At initialization: measured vs predicted, {_where(configs)}"
    )
    plots.save_figure(fig, out / "initcheck", formats)
    print(f"results in {out}")
    return out


def holds_checkpoint(out: Path) -> bool:
    """Whether a setup of the run in ``out`` has written a checkpoint (the run can resume)."""
    return any(latest_checkpoint(d / "checkpoints") for d in out.iterdir() if d.is_dir())


def main(argv=None) -> Path:
    start = time.perf_counter()
    args, settings, configs, dataset = prepare(argv)
    runtime.use_compile_cache(args)
    if args.resume is not None:
        print(f"resuming {args.resume}")
        return run(args, settings, configs, dataset, args.resume, start)
    # A run that fails before any checkpoint (out of memory at init, Ctrl-C in the prediction
    # check) leaves no folder; one interrupted later keeps it, to be resumed.
    name = f"train_cifar-{settings['preset'] or 'custom'}"
    with results.run_folder(args.out, name, keep=holds_checkpoint) as out:
        return run(args, settings, configs, dataset, out, start)


def run(args, settings: dict, configs: dict, dataset, out: Path, start: float) -> Path:
    """Train (or only check) every setup into the run folder ``out``, then the summary and
    the figures."""
    folder = None if settings["synthetic"] else str(Path(dataset.source).resolve())
    results.save_json(
        out / "run.json",
        {
            "experiment": "train_cifar",
            "settings": settings,
            "setups": {k: c.as_dict() for k, c in configs.items()},
            "data": {
                "source": dataset.source,
                "folder": folder,
                "train": len(dataset.y_train),
                "test": len(dataset.y_test),
            },
            "environment": results.environment(),
        },
    )
    print(
        f"data: {dataset.source}, {len(dataset.y_train)} train / {len(dataset.y_test)} "
        f"validation images; output: {out}",
        flush=True,
    )
    if args.check_only:
        return check_only(configs, dataset, out, args.formats)
    curves, checks, summary = [], [], []
    for i, (name, config) in enumerate(configs.items(), 1):
        label = SETUPS[name][2]
        print(
            f"[{i}/{len(configs)}] {name}: {label}, depth {config.model.depth}, "
            f"{len(config.seeds)} seeds, {config.epochs} epochs",
            flush=True,
        )
        workdir = out / name
        # A setup folder that got as far as its config.json resumes (from its newest readable
        # checkpoint, or from epoch 0 when it has none); one the run never reached starts.
        resume = args.resume is not None and any(
            (workdir / part).exists() for part in ("config.json", "checkpoints")
        )
        rows = train_and_evaluate(
            config, dataset, workdir, resume=resume, progress=not args.no_progress
        )
        check_path = workdir / "initcheck.json"
        check = results.load_json(check_path) if check_path.is_file() else None
        curves.append({"name": name, "label": label, "rows": rows})
        if check is not None:
            checks.append({"label": label, "check": check})
        predictions = _init_predictions(config.model)
        summary.append(summarize(name, label, rows, check, predictions))

    results.save_csv(out / "summary.csv", summary)
    results.save_json(out / "summary.json", {"settings": settings, "summary": summary})
    rows_back = [
        {**c, "rows": results.load_jsonl(out / c["name"] / "metrics.jsonl")} for c in curves
    ]
    model = next(iter(configs.values())).model
    where = f"{model.depth} blocks of {model.kernel_size}x{model.kernel_size}x{model.channels}"
    fig = plots.learning_curves_figure(rows_back, title=f"CIFAR-10, {where}")
    plots.save_figure(fig, out / "learning_curves", args.formats)
    if checks:
        fig = plots.initcheck_figure(
            checks, title=f"At initialization: measured vs predicted, {where}"
        )
        plots.save_figure(fig, out / "initcheck", args.formats)
    fig = plots.init_comparison_figure(summary, title=f"CIFAR-10, {where}: early training")
    plots.save_figure(fig, out / "inits", args.formats)
    for s in summary:
        acc, first = s["val_accuracy_last_mean"], s["val_accuracy_epoch1_mean"]
        print(
            f"  {s['setup']}: val accuracy after epoch 1 / {s['last_epoch']}: "
            f"{'n/a' if first is None else f'{first:.3f}'} / "
            f"{'n/a' if acc is None else f'{acc:.3f}'} (mean of {s['seeds']} seeds, "
            f"{s['diverged']} diverged); predicted log10 growth forward "
            f"{s['predicted_forward_log10']:.2f}, backward {s['predicted_backward_log10']:.2f}, "
            f"Jacobian sd(ln σ) {_show(s['predicted_jacobian_sd_log'])}"
        )
        if s.get("log10_m2_dz_1_note"):  # the check's backward rows are undefined, and why
            print(f"    check, backward: {s['log10_m2_dz_1_note']}")
    print(f"done in {time.perf_counter() - start:.1f} s; results in {out}")
    return out


if __name__ == "__main__":
    main()
