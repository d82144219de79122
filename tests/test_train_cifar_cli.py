"""The command line of experiments/train_cifar.py: its whole configuration and the data are
checked before a run folder is made (a bad value is argparse's one-line error naming the flag,
the value and what is allowed, exit code 2), --resume refuses flags that contradict the saved
run, and --help shows the defaults that the presets fill in."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meanfield.io import results
from tests.helpers import load_script, write_cifar_folder

TINY = [
    "--depth",
    "2",
    "--channels",
    "4",
    "--kernel-size",
    "3",
    "--train-size",
    "64",
    "--test-size",
    "32",
    "--batch-size",
    "32",
    "--check-batch",
    "16",
    "--no-progress",
    "--formats",
    "png",
]


@pytest.fixture(scope="module")
def script():
    return load_script("train_cifar")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A CIFAR-10 folder of 5 x 16 = 80 training and 32 test images."""
    return write_cifar_folder(tmp_path_factory.mktemp("cifar"), per_batch=16, test=32)[0]


def _refused(script, argv, capsys) -> str:
    """The error line of ``script.main(argv)``, which must exit with code 2 (argparse's error)
    and print no traceback."""
    with pytest.raises(SystemExit) as exit_:
        script.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage:") and ": error: " in lines[-1], err
    return lines[-1]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
        (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
        (["--c", "0"], "--c must be a finite number > 0, got 0.0"),
        (["--c", "-2"], "--c must be a finite number > 0, got -2.0"),
        (["--c", "nan"], "--c must be a finite number > 0, got nan"),
        (["--momentum", "1.5"], "--momentum must be in [0, 1), got 1.5"),
        (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
        (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0, got -1.0"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0, got nan"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        # The batch is checked against the images trained on (TINY: the first 64 of 80).
        (
            ["--batch-size", "100000"],
            "--batch-size must be <= the training images (64), got 100000",
        ),
        (
            ["--train-size", "60000"],
            "--train-size must be <= 50000 (the images available), got 60000",
        ),
        (["--train-size", "100"], "--train-size must be <= 80 (the images available), got 100"),
        (["--test-size", "33"], "--test-size must be <= 32 (the images available), got 33"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_flag_and_no_run_folder(
    script, folder, tmp_path, capsys, flags, message
):
    out = tmp_path / "runs"
    argv = ["--data-dir", str(folder), "--no-download", "--out", str(out), *TINY, *flags]
    line = _refused(script, argv, capsys)
    assert line.endswith(f"error: {message}"), line
    assert not out.exists()


def test_a_preset_value_is_checked_as_well(script, folder, tmp_path, capsys):
    # The smoke preset's 512 training and 256 test images are more than the folder's 80 and
    # 32, its batch of 64 more than 32 training images.
    out = tmp_path / "runs"
    argv = ["--smoke", "--data-dir", str(folder), "--no-download", "--out", str(out)]
    line = _refused(script, argv, capsys)
    assert line.endswith("error: --train-size must be <= 80 (the images available), got 512")
    argv += ["--train-size", "32"]
    line = _refused(script, argv, capsys)
    assert line.endswith("error: --test-size must be <= 32 (the images available), got 256")
    line = _refused(script, [*argv, "--test-size", "32"], capsys)
    assert line.endswith("error: --batch-size must be <= the training images (32), got 64")
    assert not out.exists()


def test_missing_or_damaged_data_is_one_line_naming_the_path(script, tmp_path, capsys):
    out = tmp_path / "runs"
    missing = tmp_path / "nowhere"
    argv = [*TINY, "--no-download", "--out", str(out)]
    line = _refused(script, ["--data-dir", str(missing), *argv], capsys)
    assert "error: cannot read CIFAR-10: CIFAR-10 not found" in line and str(missing) in line
    damaged = write_cifar_folder(tmp_path / "damaged", per_batch=16, test=32)[0]
    batch = damaged / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:1000])
    line = _refused(script, ["--data-dir", str(damaged), *argv], capsys)
    assert f"error: cannot read CIFAR-10: cannot read {batch} (1000 bytes)" in line, line
    assert not out.exists() and not missing.exists()


def test_a_bad_out_or_format_is_refused_before_the_data_is_read(script, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    missing = tmp_path / "nowhere"  # would be a data error, were the data read first
    argv = ["--data-dir", str(missing), "--no-download", *TINY]
    for out, message in ((a_file, "is not a folder"), (a_file / "sub", "which is not a folder")):
        line = _refused(script, [*argv, "--out", str(out)], capsys)
        assert "argument --out: " in line and message in line, line
    line = _refused(script, [*argv, "--out", str(tmp_path), "--formats", "png", "xyz"], capsys)
    assert "invalid choice: 'xyz'" in line
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root may write anywhere: nothing to check then
        line = _refused(script, [*argv, "--out", str(locked / "runs")], capsys)
        assert "cannot write into" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "locked"]


def _saved_run(script, folder, where):
    """A run folder whose run.json holds the settings of ``--smoke`` with TINY, as main saves
    them (no training: --resume checks the flags against run.json first)."""
    argv = ["--smoke", "--data-dir", str(folder), *TINY]
    settings = script.resolve(script.parse_args(argv))
    results.save_json(where / "run.json", {"experiment": "train_cifar", "settings": settings})
    return where


def test_resume_refuses_flags_that_differ_from_the_saved_run(script, folder, tmp_path, capsys):
    run = _saved_run(script, folder, tmp_path / "run")
    before = (run / "run.json").read_text()
    argv = ["--resume", str(run), "--data-dir", str(folder), "--no-download"]
    line = _refused(script, [*argv, "--seeds", "5", "--depth", "7", "--lr", "0.5"], capsys)
    assert "--seeds 5 (saved: 2)" in line
    assert "--depth 7 (saved: 2)" in line
    assert "--lr 0.5 (saved: 0.01)" in line
    assert "--epochs" in line  # says what may change
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]
    assert (run / "run.json").read_text() == before
    # Lists, None (all images), the preset and --synthetic are compared too; equal ones are not
    # named.
    line = _refused(
        script,
        [*argv, "--setups", "he-none", "--test-size", "32", "--preset", "fig2", "--synthetic"],
        capsys,
    )
    assert "--setups he-none (saved: he-none depth_scaled-none he-bn_post)" in line
    assert "--preset fig2 (saved: smoke)" in line
    assert "--synthetic (saved: False)" in line
    assert "--test-size" not in line
    line = _refused(script, [*argv, "--train-size", "80", "--momentum", "0.9"], capsys)
    assert "settings: --train-size 80 (saved: 64); leave them out" in line
    assert "--momentum" not in line


def test_resume_accepts_equal_flags_epochs_and_host_settings(script, folder, tmp_path):
    run = _saved_run(script, folder, tmp_path / "run")
    saved = results.load_json(run / "run.json")["settings"]
    args, settings, configs, dataset = script.prepare(
        [
            "--resume",
            str(run),
            *("--seeds", "2", "--depth", "2", "--lr", "0.01", "--smoke", "--train-size", "64"),
            *("--epochs", "7", "--no-progress", "--formats", "svg", "--no-download"),
            *("--data-dir", str(folder)),
        ]
    )
    assert settings == {**saved, "epochs": 7}
    assert [c.epochs for c in configs.values()] == [7, 7, 7]
    assert [c.model.depth for c in configs.values()] == [2, 2, 2]
    assert len(dataset.y_train) == 64 and len(dataset.y_test) == 32
    assert args.formats == ["svg"]


def _help_entries(text: str) -> dict[str, str]:
    """Each option's entry in ``--help``, by its flag: the option line and the lines of help
    below it, joined by single spaces."""
    entries, flag = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line.strip()
        elif flag is not None and line.startswith("    ") and line.strip():
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return entries


def test_help_shows_the_defaults_that_the_presets_fill_in(script, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag
    with pytest.raises(SystemExit) as exit_:
        script.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    lines = _help_entries(text)
    expected = {
        "--seeds": "(default: 1; with --preset fig2: 3, fig3: 9, fig3-cpu: 9, inits: 3, smoke: 2)",
        "--epochs": "(default: 20; with --preset fig2-cpu: 5, fig3-cpu: 5, inits: 3, smoke: 2)",
        "--depth": "(default: 100; with --preset smoke: 3)",
        "--lr": "(default: 0.01)",
        "--momentum": "(default: 0.9)",
        "--c": "(default: 1.0)",
        "--train-size": "(default: all; with --preset fig2-cpu: 10000, fig3-cpu: 10000, "
        "smoke: 512)",
        "--batch-size": "(default: 128; with --preset smoke: 64)",
        "--setups": "(default: he-none depth_scaled-none he-bn_post; with --preset fig3: "
        "he-none, fig3-cpu: he-none, inits: all)",
        "--conv": "(default: auto)",
        "--formats": "(default: png pdf)",
        "--out": "(default: runs)",
    }
    for flag, default in expected.items():
        assert lines[flag].endswith(default), lines[flag]
    # Every flag a preset controls states its default once.
    for key in script.DEFAULTS:
        flag = "--" + key.replace("_", "-")
        assert lines[flag].count("(default: ") == 1, lines[flag]


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "train_cifar.py"


def _env(tmp_path: Path) -> dict:
    """A user's environment with no CIFAR-10 anywhere by default: no $CIFAR10_DIR, an empty
    cache folder; this checkout's package whatever is installed."""
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    return env


def _python(code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """``code`` in a fresh process (the trainer's command with a failure injected)."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _main_with(patch: str, argv: list[str]) -> str:
    """Code that applies ``patch`` and then runs experiments/train_cifar.py with ``argv``."""
    return (
        f"import runpy, sys\n{patch}\nsys.argv = ['train_cifar.py', *{argv!r}]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )


def test_seeds_beyond_memory_are_refused_up_front(folder, tmp_path):
    # 100000 networks of the paper's 1,641,642 parameters with SGD's momentum: 1.2 TiB.
    if os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") > 100000 * 13_133_140:
        pytest.skip("this machine holds the state of 100000 networks")
    out = tmp_path / "runs"
    argv = [*("--seeds", "100000", "--data-dir", str(folder), "--no-download", "--out", str(out))]
    argv += ["--train-size", "64", "--test-size", "32", "--batch-size", "32", "--no-progress"]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,  # it used to allocate network after network until memory ran out
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert "error: --seeds 100000 with --channels 16 --depth 100 --kernel-size 8" in line, line
    assert "1,641,642 parameters" in line and "use fewer --seeds" in line, line
    assert not out.exists()


def test_a_run_out_of_memory_before_its_first_checkpoint_leaves_nothing(folder, tmp_path):
    out = tmp_path / "runs"
    patch = (
        "from meanfield.training.trainer import Trainer\n"
        "def init_state(self):\n"
        "    raise MemoryError('RESOURCE_EXHAUSTED: out of memory allocating the networks')\n"
        "Trainer.init_state = init_state\n"
    )
    argv = ["--data-dir", str(folder), "--no-download", "--out", str(out), *TINY]
    run = _python(_main_with(patch, argv), tmp_path, _env(tmp_path))
    assert run.returncode != 0 and "RESOURCE_EXHAUSTED" in run.stderr, run.stderr
    assert not out.exists(), sorted(map(str, out.rglob("*")))  # no run.json, no config.json


@pytest.mark.slow
def test_an_interrupted_run_stays_and_resumes_from_the_data_folder_it_read(folder, tmp_path):
    # Started with a relative --data-dir, interrupted (Ctrl-C) in epoch 1 after the checkpoint
    # of epoch 0: the run folder stays. Resumed from elsewhere, with no --data-dir and no
    # CIFAR-10 in $CIFAR10_DIR, ./data or the cache (and no download), it reads the run's own
    # folder and finishes.
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    env = _env(tmp_path)
    argv = ["--data-dir", os.path.relpath(folder, first), "--out", str(tmp_path / "runs")]
    argv += [*TINY, "--setups", "he-none", "--seeds", "1", "--epochs", "1", "--check-batch", "0"]
    patch = (
        "from meanfield.training import train\n"
        "def interrupted(*args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        "train._epoch_steps = interrupted\n"
    )
    run = _python(_main_with(patch, argv), first, env)
    assert run.returncode != 0 and "KeyboardInterrupt" in run.stderr, run.stderr
    (saved,) = (tmp_path / "runs").iterdir()
    assert (saved / "he-none" / "checkpoints" / "epoch_0000.msgpack").is_file()
    assert results.load_json(saved / "run.json")["data"]["folder"] == str(folder.resolve())
    command = [sys.executable, str(SCRIPT), "--resume", str(saved), "--no-download"]
    # An explicit --data-dir wins over the run's folder.
    other = subprocess.run(
        [*command, "--data-dir", str(tmp_path / "moved")],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 2 and str(tmp_path / "moved") in other.stderr, other.stderr
    resumed = subprocess.run(
        [*command, "--no-progress", "--formats", "png"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"data: {folder.resolve()}" in resumed.stdout
    rows = results.load_jsonl(saved / "he-none" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert not list(tmp_path.rglob("cifar-10-python*")) and not (elsewhere / "data").exists()
