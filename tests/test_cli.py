"""The experiments' command lines: a bad flag stops a script with argparse's one-line error
(exit code 2) before it computes anything or makes a run folder."""

import pytest

from meanfield import plots
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
