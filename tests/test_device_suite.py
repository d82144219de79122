"""benchmarks/device_suite.py runs end to end at toy sizes on a CPU, so the accelerator run
cannot rot: every part gives rows, no part fails, and the JSON and figures are written."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import device_suite
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path_factory.mktemp("suite")
    device_suite.main(["--out", str(out), "--toy"])
    return out, json.loads((out / "suite.json").read_text())


@pytest.mark.slow
def test_every_part_ran(suite):
    out, s = suite
    assert set(s["parts"]) == {"montecarlo", "weightfree", "fftconv", "train", "fig2"}
    for name, part in s["parts"].items():
        assert "error" not in part, f"{name}: {part.get('error')}"
        assert part["rows"], name
        assert part["seconds"] > 0
    assert s["device"]["platform"] == "cpu"
    assert (out / "weightfree.png").stat().st_size > 0


@pytest.mark.slow
def test_rows_hold_measurements(suite):
    _, s = suite
    p = s["parts"]
    for row in p["montecarlo"]["rows"]:
        assert row["engine_s"] > 0 and row["rng_bound_s"] > 0
    for row in p["weightfree"]["rows"]:
        assert row["explicit_s"] > 0 and row["weightfree_s"] > 0
    (conv,) = p["fftconv"]["rows"]
    assert conv["direct_ms"] > 0 and conv["fft_ms"] > 0
    assert conv["max_rel_diff"] < 1e-5  # the two paths agree to float32 rounding
    for row in p["train"]["rows"]:
        assert row["meanfield_k1_images_per_s"] > 0 and row["meanfield_k2_images_per_s"] > 0


@pytest.mark.slow
def test_short_fig2_trained_the_paper_setups(suite):
    out, s = suite
    fig2 = s["parts"]["fig2"]["rows"]
    assert [r["setup"] for r in fig2["summary"]] == ["he-none", "depth_scaled-none", "he-bn_post"]
    run = out / fig2["folder"]
    assert (run / "learning_curves.png").stat().st_size > 0
    for setup in ("he-none", "depth_scaled-none", "he-bn_post"):
        rows = [json.loads(x) for x in (run / setup / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [0, 1]
