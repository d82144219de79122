"""Smoke test of experiments/report.py: a small run writes its tables, markdown and figure, and
the flags it saved are those of the library."""

import csv

import pytest

from meanfield.io import results
from tests.helpers import load_script, run_script


@pytest.mark.slow
def test_report_script_writes_its_results(tmp_path):
    out, printed = run_script(
        "report",
        [
            "--out",
            str(tmp_path),
            "--width",
            "32",
            "--depth",
            "6",
            "--networks",
            "16",
            "--batch",
            "4",
            "--blocks",
            "identity-none-residual",
            "relu-bn_pre-residual",
            "--formats",
            "png",
        ]
    )
    for name in ("calibration.csv", "summary.csv", "report.md", "calibration.png"):
        assert (out / name).is_file(), name
    with open(out / "calibration.csv") as f:
        rows = list(csv.DictReader(f))
    configs = {(r["block"], r["init"]) for r in rows}
    assert len(configs) == 4  # 2 blocks x (he, depth_scaled)
    # identity without BN at He: eq. (27) is named at every layer with a weight.
    eq27 = [
        r
        for r in rows
        if r["block"] == "identity-none-residual"
        and r["init"] == "he"
        and r["statistic"] == "var_dw"
    ]
    assert len(eq27) == 6 and all("paper's approximation" in r["flag"] for r in eq27)
    text = (out / "report.md").read_text()
    assert text.startswith("# Calibration report: n = 32, L = 6, B = 4, R = 16")
    assert "## Summary" in text and "### relu-bn_pre-residual, depth_scaled: `unitvar_z`" in text
    saved = results.load_json(out / "results.json")
    assert len(saved["rows"]) == len(rows)
    assert str(out) in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scale", "1"], "--scale must be >= 2"),
        (["--batch", "1"], "--batch must be >= 2"),
        (["--blocks", "relu"], "--blocks: block name must look like"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_script("report").parse_args(argv)
    assert message in capsys.readouterr().err
