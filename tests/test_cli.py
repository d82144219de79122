"""The experiments' command lines: a bad flag stops a script with argparse's one-line error
(exit code 2) before it computes anything or makes a run folder."""

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
