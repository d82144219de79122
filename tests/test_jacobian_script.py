"""Smoke test of experiments/jacobian_spectrum.py: a small run writes its table and figure,
and the rows say what the constructions guarantee (identity for Fixup and SkipInit at α = 0,
isometry for RISOTTO)."""

import csv

import pytest

from tests.helpers import load_script, run_script


@pytest.mark.slow
def test_jacobian_script_writes_its_results(tmp_path):
    out, _ = run_script(
        "jacobian_spectrum",
        [
            "--out",
            str(tmp_path),
            "--depths",
            "1",
            "8",
            "--width",
            "8",
            "--networks",
            "3",
            "--batch",
            "4",
            "--formats",
            "png",
        ]
    )
    assert (out / "jacobian.png").is_file()
    with open(out / "jacobian.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 10
    by = {(r["label"], int(r["depth"])): r for r in rows}
    for label in ("Fixup", "SkipInit α = 0"):
        assert float(by[(label, 8)]["max_abs_log_max"]) == 0.0
    assert float(by[("RISOTTO", 8)]["max_abs_log_max"]) < 1e-5
    assert float(by[("He", 8)]["sd_log_mean"]) > float(by[("He", 1)]["sd_log_mean"])


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        load_script("jacobian_spectrum").parse_args(["--width", "4096"])
    assert "--width must be <= 1024" in capsys.readouterr().err
