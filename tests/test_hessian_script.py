"""Smoke test of experiments/hessian_vs_depth.py on synthetic data: it writes its table and
figure, and the k = 2 rows carry the closed-form condition number at every depth."""

import csv

import pytest

from meanfield.io import results
from tests.helpers import load_script, run_script


@pytest.mark.slow
def test_hessian_script_writes_its_results(tmp_path):
    out, _ = run_script(
        "hessian_vs_depth",
        [
            "--out",
            str(tmp_path),
            "--depths",
            "1",
            "3",
            "--samples",
            "200",
            "--no-cifar",
            "--formats",
            "png",
        ]
    )
    assert (out / "hessian.png").is_file()
    with open(out / "hessian.csv") as f:
        rows = list(csv.DictReader(f))
    # k = 1 and 3 linear only, k = 2 linear and tanh; two depths each.
    assert len(rows) == 2 * 4
    cf = results.load_json(out / "results.json")["datasets"][0]["closed_form_condition"]
    for r in rows:
        if r["shortcut"] == "2":
            assert float(r["condition"]) == pytest.approx(cf, rel=1e-8)
        if r["shortcut"] == "3":
            assert float(r["max_abs"]) == 0.0


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        load_script("hessian_vs_depth").parse_args(["--depths", "0"])
    assert "--depths and --shortcuts must be >= 1" in capsys.readouterr().err
