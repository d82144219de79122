"""Smoke test of experiments/finite_width.py: a small run writes its tables, fits and figures,
and what it saved is what the library computes."""

import csv
import math

import pytest

from meanfield.io import results
from tests.helpers import load_script, run_script


@pytest.mark.slow
def test_finite_width_script_writes_its_results(tmp_path):
    out, printed = run_script(
        "finite_width",
        [
            "--out",
            str(tmp_path),
            "--widths",
            "64",
            "128",
            "256",
            "--batches",
            "4",
            "8",
            "--bn-width",
            "64",
            "--networks",
            "16",
            "--formats",
            "png",
        ]
    )
    for name in ("finite_width.png", "finite_batch.png", "extrapolation.csv", "results.json"):
        assert (out / name).is_file(), name
    saved = results.load_json(out / "results.json")
    assert saved["config"]["widths"] == [64, 128, 256]
    with open(out / "width_sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 3
    relu = [r for r in rows if r["quantity"] == "m2_dz[0]"]
    # The recursion's input-side gradient at L = 10, α = 1 is (1 + α/2)^10 (eq. 20).
    for r in relu:
        assert float(r["log10_recursion"]) == pytest.approx(10 * math.log10(1.5), abs=1e-5)
    with open(out / "batch_sweep.csv") as f:
        batch_rows = list(csv.DictReader(f))
    identity = [r for r in batch_rows if r["block"] == "identity-bn_post-residual"]
    assert [int(r["batch"]) for r in identity] == [4, 8]
    assert all(math.isfinite(float(r["log10_finite_batch"])) for r in identity)
    assert "relu_input_gradient: n -> ∞ limit" in printed and str(out) in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batches", "1"], "--batches must all be >= 2"),
        (["--networks", "1"], "--networks must be >= 2"),
        (["--alpha", "0"], "--alpha must be > 0"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_script("finite_width").parse_args(argv)
    assert message in capsys.readouterr().err
