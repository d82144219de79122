"""Smoke test of experiments/gradient_vs_layer.py with tiny settings."""

import csv

import numpy as np
import pytest

from meanfield.io import results
from tests.helpers import load_script, run_script


def _load_script():
    return load_script("gradient_vs_layer")


@pytest.mark.slow
def test_main_writes_figure_results_and_table(tmp_path):
    flags = "--depths 4 12 --width 16 --networks 4 --batch 8 --mc-max-depth 4 --formats png"
    out, _ = run_script("gradient_vs_layer", ["--out", tmp_path, *flags.split()])
    for name in ("gradient_vs_layer.png", "results.json", "gradient_discrepancy.csv"):
        assert (out / name).stat().st_size > 0
    saved = results.load_json(out / "results.json")  # NaN at l = 0 stored as {"__float__": "nan"}
    assert sorted({r["depth"] for r in saved["profiles"]}) == [4, 12]
    assert {r["depth"] for r in saved["montecarlo"]} == {4}  # only up to --mc-max-depth
    # identity BN at He init: the recursion's ratio is (1 + Lα)/(1 + α) with α = 2.
    rec = next(
        r
        for r in saved["profiles"]
        if r["block"] == "identity-bn_post-residual" and r["depth"] == 12
    )
    v = np.asarray(rec["recursion"]["var_dw"], dtype=float)
    assert v[1] / v[12] == pytest.approx((1 + 12 * 2) / (1 + 2), rel=1e-5)
    with open(out / "gradient_discrepancy.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["statistic"] for r in rows} == {"var_dw"}


def test_bad_depths_exit(capsys):
    with pytest.raises(SystemExit):
        _load_script().main(["--depths", "0"])
    assert "--depths must all be >= 1" in capsys.readouterr().err
