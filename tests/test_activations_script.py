"""Smoke test of experiments/activations.py: tiny settings, every output written, the
records' recursion and Monte-Carlo of one shape, and bad flags refused."""

import numpy as np
import pytest

from meanfield.io import results
from tests.helpers import load_script, run_script


@pytest.mark.slow
def test_activations_script_writes_results_and_figure(tmp_path):
    flags = "--width 16 --depth 3 --networks 4 --batch 4 --activations tanh --norms ln_pre"
    out, _ = run_script("activations", ["--out", tmp_path, *flags.split(), "--formats", "png"])
    assert out.parent == tmp_path
    for name in ("results.json", "activations.csv", "activations.png"):
        assert (out / name).stat().st_size > 0, name
    saved = results.load_json(out / "results.json")
    records = saved["records"]
    assert {(r["block"], r["init"]) for r in records} == {
        (b, i)
        for b in ("tanh-ln_pre-residual", "tanh-ln_pre-plain")
        for i in ("he_like", "depth_scaled")
    }
    for r in records:
        rec, mc = r["recursion"]["corr_z"], r["montecarlo"]["corr_z"]["mean"]
        assert len(rec) == len(mc) == 4
        assert rec[0] == pytest.approx(0.5, abs=1e-6)  # the inputs' correlation
        assert np.all(np.isfinite(mc))


@pytest.mark.parametrize("flag", ["--input-corr 1.0", "--activations swish", "--c 0"])
def test_bad_flags_are_refused(flag, capsys):
    script = load_script("activations")
    with pytest.raises(SystemExit):
        script.parse_args(flag.split())
    assert "error" in capsys.readouterr().err
