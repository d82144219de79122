"""Smoke test of experiments/solve_init.py: a small run writes its solutions, results and
figure, and the solved rows meet the bounds."""

import csv

import numpy as np
import pytest

from meanfield.io import results
from tests.helpers import run_script


@pytest.mark.slow
def test_solve_init_script_writes_its_results(tmp_path):
    out, _ = run_script(
        "solve_init",
        [
            "--out",
            str(tmp_path),
            "--depth",
            "10",
            "--kernel-size",
            "2",
            "--channels",
            "8",
            "--networks",
            "4",
            "--batch",
            "4",
            "--formats",
            "png",
            "--max-forward-growth",
            "3",
        ]
    )
    assert (out / "solve_init.png").is_file()
    with open(out / "solutions.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["init"] for r in rows} == {"he", "depth_scaled_c1", "solved"}
    for r in rows:
        if r["init"] == "solved":
            assert float(r["forward_growth"]) <= 3 * (1 + 1e-6)
            assert float(r["gradient_spread"]) <= 10 * (1 + 1e-6)
    saved = results.load_json(out / "results.json")
    assert saved["fan_in"] == 32
    mc = saved["records"][0]["montecarlo"]
    assert [m["width"] for m in mc] == [32, 8] and all(
        np.isfinite(m["log10_forward_growth"]) for m in mc
    )
