"""Smoke test of the main job: tiny settings, every output written, numbers consistent."""

import csv

import numpy as np
import pytest

from meanfield.io import results
from tests.helpers import load_script, run_script


def _load_script():
    return load_script("variance_vs_depth")


@pytest.mark.slow
def test_main_writes_results_and_figures(tmp_path):
    flags = "--width 32 --depth 12 --max-depth 30 --num-depths 5 --networks 8 --batch 4"
    out, _ = run_script(
        "variance_vs_depth", ["--out", tmp_path, *flags.split(), "--formats", "png", "pdf"]
    )
    assert out.parent == tmp_path
    for name in (
        "results.json",
        "discrepancy.csv",
        "depth_sweep.csv",
        "profile.png",
        "profile.pdf",
        "depth.png",
        "depth.pdf",
    ):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))

    saved = results.load_json(out / "results.json")
    assert saved["config"]["width"] == 32 and saved["config"]["depth"] == 12
    assert saved["environment"]["packages"]["jax"]
    assert len(saved["profiles"]) == 12 * 2  # blocks x inits
    record = next(
        r for r in saved["profiles"] if r["block"] == "identity-none-residual" and r["init"] == "he"
    )
    q = np.asarray(record["recursion"]["m2_z"], dtype=float)
    assert q == pytest.approx(3.0 ** np.arange(13), rel=1e-5)  # He: α = 2, (1 + α)^l

    with open(out / "discrepancy.csv") as f:
        rows = list(csv.DictReader(f))
    exact = [r for r in rows if r["kind"] == "exact"]
    assert exact and max(float(r["max_rel_gap"]) for r in exact) < 1e-4
    # The paper's L/l for ReLU with BN at He init is visibly off (17% already at L = 12).
    paper = [
        r
        for r in rows
        if r["block"] == "relu-bn_post-residual"
        and r["init"] == "he"
        and r["statistic"] == "m2_dz"
        and r["source"] == "paper"
    ]
    assert paper and float(paper[0]["max_rel_gap"]) > 0.1

    # Monte-Carlo: identity without BN is exact at any width, so every layer's E z² is within
    # 4 standard errors of the recursion; a 25% larger α (planted) is rejected at He init.
    assert len(saved["montecarlo"]) == 5 * 2
    with open(out / "montecarlo_discrepancy.csv") as f:
        mc_rows = list(csv.DictReader(f))
    ident = [
        r
        for r in mc_rows
        if r["block"] == "identity-none-residual" and r["statistic"] == "m2_z" and int(r["layer"])
    ]
    assert len(ident) == 2 * 12
    assert max(abs(float(r["z_mc_vs_recursion"])) for r in ident) < 4
    he = [r for r in ident if r["init"] == "he"]
    z_wrong = [
        (10 ** float(r["log10_mc_mean"]) - (1 + 1.25 * 2.0) ** int(r["layer"]))
        / 10 ** float(r["log10_mc_stderr"])
        for r in he
    ]
    assert max(map(abs, z_wrong)) > 4
    assert {r["networks"] for r in mc_rows} == {"8"}

    with open(out / "depth_sweep.csv") as f:
        sweep = list(csv.DictReader(f))
    depths = sorted({int(r["depth"]) for r in sweep})
    assert len(depths) == 5 and depths[0] == 1 and depths[-1] == 30  # log-spaced 1..max-depth
    assert len(sweep) == 5 * 24


def test_help_documents_every_flag(capsys):
    script = _load_script()
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--out",
        "--width",
        "--depth",
        "--max-depth",
        "--num-depths",
        "--c",
        "--inits",
        "--networks",
        "--batch",
        "--seed",
        "--chunk-size",
        "--formats",
        "--x64",
    ):
        assert flag in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--depth", "0"], "--depth must be >= 1"),
        (["--width", "0"], "--width must be >= 1"),
        (["--c", "-1"], "--c must be a finite number > 0"),
        (["--c", "inf"], "--c must be a finite number > 0"),
        (["--networks", "1"], "--networks must be 0 (no Monte-Carlo) or >= 2"),
        (["--batch", "1"], "--batch must be >= 2"),
        (["--chunk-size", "0"], "--chunk-size must be >= 1"),
    ],
)
def test_bad_flags_exit_with_a_message(argv, message, capsys):
    script = _load_script()
    with pytest.raises(SystemExit):
        script.main(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_main_job_takes_other_activations(tmp_path):
    """--activation tanh: the same job on the tanh blocks (no closed forms: the paper's exist
    for identity and relu only), Monte-Carlo of their three residual blocks."""
    flags = "--width 16 --depth 4 --max-depth 8 --num-depths 3 --networks 4 --batch 4"
    out, _ = run_script(
        "variance_vs_depth",
        ["--out", tmp_path, *flags.split(), "--activation", "tanh", "--formats", "png"],
    )
    saved = results.load_json(out / "results.json")
    assert {r["block"].split("-")[0] for r in saved["profiles"]} == {"tanh"}
    assert len(saved["profiles"]) == 6 * 2 and all(not r["closed_forms"] for r in saved["profiles"])
    assert {r["block"] for r in saved["montecarlo"]} == {
        f"tanh-{n}-residual" for n in ("none", "bn_post", "bn_pre")
    }
    q = np.asarray(saved["profiles"][0]["recursion"]["m2_z"], dtype=float)
    assert np.all(np.isfinite(q)) and q[-1] > q[0]  # a residual tanh block grows
