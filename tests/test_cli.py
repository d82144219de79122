"""The experiments' command lines: a bad flag stops a script with argparse's one-line error
(exit code 2) before it computes anything or makes a run folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meanfield.io import plots
from tests.helpers import load_script

SCRIPTS = [
    "finite_width",
    "gradient_vs_layer",
    "hessian_vs_depth",
    "init_zoo",
    "jacobian_spectrum",
    "report",
    "solve_init",
    "variance_vs_depth",
]


@pytest.mark.parametrize("name", SCRIPTS)
def test_an_unknown_figure_format_is_refused_before_any_work(name, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script(name).main(["--out", str(tmp_path), "--formats", "png", "xyz"])
    assert exit_.value.code == 2
    assert "invalid choice: 'xyz'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_save_figure_checks_every_format_before_writing(tmp_path):
    from matplotlib.figure import Figure

    assert {"png", "pdf", "svg"} <= set(plots.figure_formats())
    with pytest.raises(ValueError, match="formats must be a sequence of .*got"):
        plots.save_figure(Figure(), tmp_path / "f", ("png", "xyz"))
    with pytest.raises(ValueError, match="formats must be"):
        plots.save_figure(Figure(), tmp_path / "f", "png")  # a string, not a sequence
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", SCRIPTS)
def test_an_out_that_is_a_file_or_read_only_is_refused(name, tmp_path, capsys):
    script = load_script(name)
    a_file = tmp_path / "file"
    a_file.write_text("")
    for out, message in ((a_file, "is not a folder"), (a_file / "sub", "which is not a folder")):
        with pytest.raises(SystemExit) as exit_:
            script.main(["--out", str(out)])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    import os

    if os.access(locked, os.W_OK):  # root may write anywhere: nothing to check then
        return
    with pytest.raises(SystemExit):
        script.main(["--out", str(locked / "runs")])
    assert "cannot write into" in capsys.readouterr().err


def test_main_job_refuses_an_infinite_c(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_script("variance_vs_depth").main(["--out", str(tmp_path), "--c", "inf"])
    assert exit_.value.code == 2 and "--c must be a finite number > 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def _load_benchmark(name):
    """Import benchmarks/<name>.py as a module (the benchmarks are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "load, name",
    [
        (load_script, "hessian_vs_depth"),
        (load_script, "jacobian_spectrum"),
        (load_script, "init_zoo"),
        (_load_benchmark, "memory_montecarlo"),
    ],
)
def test_every_flag_has_a_help_text(load, name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside a help text
    parser = load(name).build_parser()
    flags = [a for a in parser._actions if a.dest != "help"]
    assert len(flags) >= 6
    missing = [a.option_strings[0] for a in flags if not (a.help and a.help.strip())]
    assert not missing, f"{name}: flags without a help text: {missing}"
    # And the help of each is shown by --help (argparse's defaults appended where it does).
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for action in flags:
        assert " ".join(action.help.split()) in shown, action.option_strings


ROOT = Path(__file__).resolve().parents[1]
# Every script in experiments/, each run as a user runs it: a fresh process.
EVERY_SCRIPT = sorted(p.stem for p in (ROOT / "experiments").glob("*.py"))
# What train_cifar needs besides: data that is nowhere, so that nothing is read or downloaded.
EXTRA = {"train_cifar": ["--data-dir", "{tmp}/no-data", "--no-download"]}


def _command(name: str, tmp_path: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    extra = [a.replace("{tmp}", str(tmp_path)) for a in EXTRA.get(name, [])]
    script = ROOT / "experiments" / f"{name}.py"
    return subprocess.run(
        [sys.executable, str(script), *extra, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _refused_at_once(out: subprocess.CompletedProcess) -> str:
    """The error line of a command refused by argparse before any work: exit code 2, no
    traceback, nothing printed on stdout (no step of the computation began)."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and not out.stdout.strip(), out.stdout + out.stderr
    return out.stderr.strip().splitlines()[-1]


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder in which no folder can be made: a read-only one, or for root (who may write
    into any folder) one of the kernel's file systems."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    for folder in (locked, Path("/sys"), Path("/proc")):
        probe = folder / "meanfield-probe"
        try:
            probe.mkdir()
        except OSError:
            return folder
        probe.rmdir()
    pytest.skip("no folder on this machine refuses a new folder")


@pytest.mark.slow
@pytest.mark.parametrize("name", EVERY_SCRIPT)
def test_an_unwritable_out_is_refused_before_any_work(name, tmp_path):
    folder = _unwritable_folder(tmp_path)
    line = _refused_at_once(_command(name, tmp_path, "--out", str(folder / "runs")))
    assert f"argument --out: cannot write into '{folder}'" in line, line
    assert not (folder / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", EVERY_SCRIPT)
def test_a_figure_format_whose_program_is_missing_is_refused_before_any_work(name, tmp_path):
    # matplotlib writes pgf by running its TeX engine (rcParams["pgf.texsystem"], xelatex by
    # default); with none on the PATH a run used to compute everything and then fail.
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "bin")}
    out = tmp_path / "runs"
    cmd = _command(name, tmp_path, "--out", str(out), "--formats", "png", "pgf", env=env)
    line = _refused_at_once(cmd)
    assert "argument --formats: figure format 'pgf' needs xelatex" in line, line
    assert "pgf.texsystem" in line
    assert not out.exists()


@pytest.mark.parametrize("failure", ["MemoryError", "KeyboardInterrupt"])
def test_a_run_that_fails_leaves_no_run_folder(failure, tmp_path):
    # The main job, in a fresh process, fails in its first computation (out of memory, or
    # Ctrl-C): neither its run folder nor the --out folder it made is left behind.
    out = tmp_path / "new" / "runs"
    code = (
        "import runpy, sys\n"
        "from meanfield.analysis import sweeps\n"
        "def fail(*args, **kwargs):\n"
        f"    raise {failure}('injected')\n"
        "sweeps.profiles_and_depth_sweep = fail\n"
        f"sys.argv = ['variance_vs_depth.py', '--out', {str(out)!r}]\n"
        f"runpy.run_path({str(ROOT / 'experiments' / 'variance_vs_depth.py')!r}, "
        "run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, whatever is installed
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode != 0 and failure in run.stderr, run.stderr
    assert not (tmp_path / "new").exists(), sorted(map(str, tmp_path.rglob("*")))


def test_every_script_makes_its_run_folder_so_that_a_failure_removes_it():
    for name in EVERY_SCRIPT:
        text = (ROOT / "experiments" / f"{name}.py").read_text()
        assert "results.run_folder(args.out" in text, name
        assert "new_run_dir" not in text, name
