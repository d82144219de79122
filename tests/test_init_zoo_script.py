"""Smoke test of experiments/init_zoo.py: a small run writes its table and figure, and the rows
carry what the rules fix exactly (Fixup's identity, Arpit et al.'s (1 + 1/L) per block,
RISOTTO's isometry)."""

import csv
import math

import pytest

from meanfield.io import results
from tests.helpers import load_script, run_script


@pytest.mark.slow
def test_init_zoo_script_writes_its_results(tmp_path):
    L = 6
    out, _ = run_script(
        "init_zoo",
        [
            "--out",
            str(tmp_path),
            "--width",
            "32",
            "--depth",
            str(L),
            "--networks",
            "16",
            "--batch",
            "4",
            "--formats",
            "png",
        ]
    )
    assert (out / "init_zoo.png").is_file() and (out / "results.json").is_file()
    with open(out / "init_zoo.csv") as f:
        rows = {(r["label"], r["statistic"]): r for r in csv.DictReader(f)}
    assert len(rows) == 8 * 3
    fixup = rows[("Fixup, z + W2 relu(W1 z)", "m2_z")]
    assert float(fixup["recursion_log10"]) == pytest.approx(0.0, abs=1e-12)
    records = {r["label"]: r for r in results.load_json(out / "results.json")["records"]}
    mc = records["Fixup, z + W2 relu(W1 z)"]["montecarlo"]["m2_z"]["log10_mean"]
    assert mc[L] == pytest.approx(mc[0], abs=1e-6)  # the identity, network by network
    wn = rows[("weight norm, z + W2 relu(W1 z)", "m2_z")]
    assert float(wn["recursion_log10"]) == pytest.approx(L * math.log10(1 + 1 / L), rel=1e-9)
    # Linear in its last weight, the block's forward is exact in expectation at any width.
    assert float(wn["max_abs_z"]) < 4.0
    # RISOTTO: the signal's and its gradient's second moments are flat in every network.
    ris = records["RISOTTO (type C, looks-linear)"]["montecarlo"]
    for stat in ("m2_z", "m2_dz"):
        assert max(ris[stat]["log10_mean"]) - min(ris[stat]["log10_mean"]) < 1e-5


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        load_script("init_zoo").parse_args(["--depth", "400"])
    assert "--depth must be < 400" in capsys.readouterr().err
