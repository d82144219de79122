"""The calibrated report: agreement where theory is exact, and each disagreement named for its
measured reason; planted errors in a closed form or in the recursion are caught."""

import jax
import numpy as np
import pytest

from meanfield import layers as ml
from meanfield import recursions
from meanfield import theory as t
from meanfield.analysis import calibration
from meanfield.core.architecture import Block

IDENTITY = Block("identity", "none", True)


def _rows(block, **kw):
    args = dict(key=jax.random.key(0), depth=10, width=64, var_w=1 / 64, networks=64, batch=4)
    return calibration.calibrate(block, **(args | kw))


def _flags(rows, stat, layer=None):
    return [
        set(filter(None, r["flag"].split("; ")))
        for r in rows
        if r["statistic"] == stat and (layer is None or r["layer"] == layer)
    ]


@pytest.fixture(scope="module")
def identity_rows():
    return _rows(IDENTITY)


def test_exact_configuration_agrees_and_the_paper_eq27_is_named(identity_rows):
    stats = {r["statistic"] for r in identity_rows}
    assert stats == {"m2_z", "m2_dz", "var_dw"}
    for r in identity_rows:
        assert abs(r["z"]) < 4, r
        assert "closed form != recursion" not in r["flag"]
        # The recursion of the identity network is (1+α)^l: independent of the implementation.
        if r["statistic"] == "m2_z":
            assert 10 ** r["log10_recursion"] == pytest.approx(2.0 ** r["layer"], rel=1e-5)
    # eq. (27) has base 1 + α/2 instead of 1 + α: named at every layer with a weight.
    assert all(f == {"paper's approximation"} for f in _flags(identity_rows, "var_dw"))
    assert all(not f for f in _flags(identity_rows, "m2_z"))
    # No diagnostic runs where nothing disagrees.
    assert all(np.isnan(r["rel_error_wide"]) for r in identity_rows)


def test_a_planted_error_in_a_closed_form_is_caught(monkeypatch):
    real = t.forward_second_moment  # the catalogue's entry reads it from its own module
    monkeypatch.setattr(
        t.catalog, "forward_second_moment", lambda l, n, v: real(l, n, v) * (1.0 + 0.01 * l)
    )
    rows = _rows(IDENTITY)
    flags = _flags(rows, "m2_z")
    assert all("closed form != recursion" in f for f in flags[1:])  # l >= 1
    assert "closed form != recursion" not in flags[0]


def test_a_planted_error_in_the_recursion_is_unexplained(monkeypatch):
    # A recursion 20% too large is neither finite width nor finite batch: the report says so,
    # and the exact closed forms now disagree with it.
    real = recursions.profile

    def wrong(*args, **kwargs):
        p = real(*args, **kwargs)
        return type(p)(**(p.as_dict() | {"log10_m2_z": p.log10_m2_z + np.log10(1.2)}))

    monkeypatch.setattr(recursions, "profile", wrong)
    rows = _rows(IDENTITY)
    for f in _flags(rows, "m2_z"):
        assert {"unexplained", "closed form != recursion"} <= f, f


def test_finite_width_is_named_for_relu_input_gradient():
    # ReLU without BN, n = 32, α = 1, L = 10: the input-side gradient is ~2.8x the recursion,
    # and 4x the width brings it most of the way back (docs/finite-width.md).
    rows = _rows(Block("relu", "none", True), width=32, var_w=1 / 32, networks=128)
    (row,) = [r for r in rows if r["statistic"] == "m2_dz" and r["layer"] == 0]
    assert row["z"] > 4 and "finite width" in row["flag"]
    assert abs(row["rel_error_wide"]) < 0.6 * abs(row["rel_error"])
    assert np.isnan(row["rel_error_big_batch"])  # no BN: no batch run


def test_finite_batch_is_named_for_bns_biased_batch_variance():
    # σ² of the input over B = 4 inputs is the biased batch variance: (B-1)/B = 0.75 of 1 in
    # expectation, whatever the width. 4x the batch makes it 15/16.
    rows = _rows(Block("identity", "bn_post", True), batch=4)
    (row,) = [r for r in rows if r["statistic"] == "unitvar_z" and r["layer"] == 0]
    assert row["rel_error"] == pytest.approx(-0.25, abs=0.03)
    assert row["rel_error_big_batch"] == pytest.approx(-1 / 16, abs=0.02)
    assert "finite batch" in row["flag"] and "finite width" not in row["flag"]


def test_heavy_tail_is_named():
    rows = _rows(Block("relu", "none", True), width=16, var_w=2 / 16, depth=20, networks=32)
    heavy = [r for r in rows if "heavy tail" in r["flag"]]
    assert heavy and all(r["sd_ln"] > 1 for r in heavy)
    assert all("heavy tail" not in r["flag"] for r in rows if r["sd_ln"] <= 1)


def test_markdown_and_summary(identity_rows):
    text = calibration.markdown(identity_rows)
    assert text.count("### identity-none-residual") == 3
    assert "| 10 | 1024 |" in text  # m2_z at l = L: paper's exact (1+α)^L
    assert "paper's approximation" in text
    summary = {r["statistic"]: r for r in calibration.summary(identity_rows)}
    assert summary["var_dw"]["paper's approximation"] == summary["var_dw"]["points"] == 10
    assert summary["m2_z"]["within_z_max"] == 11
    custom = calibration.markdown(identity_rows, layers=[5])
    assert custom.count("\n| 5 |") == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scale=1), "scale must be >= 2"),
        (dict(z_max=0.0), "z_max must be a finite number > 0"),
        (dict(var_w=-1.0), "var_w must be a finite number > 0"),
        (dict(block="relu"), "block must be a meanfield.Block or a meanfield.layers tree"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    block = kwargs.pop("block", IDENTITY)
    with pytest.raises(ValueError, match=message):
        _rows(block, **kwargs)


def test_per_input_norms_get_no_batch_diagnostics_and_trees_are_calibrated():
    # z_max this small puts every point "off", so the diagnostic runs happen. LayerNorm acts per
    # input: only the wider run is made, no statistic of B is added, nothing is "finite batch".
    kw = dict(width=16, var_w=1 / 16, depth=4, networks=16, z_max=1e-6)
    block = Block("relu", "ln_pre", True)
    rows = _rows(block, **kw)
    assert {r["statistic"] for r in rows} == {"m2_z", "m2_dz", "var_dw"}  # no unitvar_z
    for r in rows:
        assert np.isfinite(r["rel_error_wide"]), r
        assert np.isnan(r["rel_error_big_batch"]) and np.isnan(r["rel_error_wide_big_batch"])
        assert "finite batch" not in r["flag"]
    # The same network as a tree: the same rows, under the tree's name.
    tree = ml.block_tree(block)
    tree_rows = _rows(tree, **kw)
    assert {r["block"] for r in tree_rows} == {tree.name}
    for a, b in zip(rows, tree_rows, strict=True):
        assert (a["statistic"], a["layer"], a["flag"]) == (b["statistic"], b["layer"], b["flag"])
        for col in ("log10_recursion", "log10_mc_mean", "rel_error_wide"):
            np.testing.assert_allclose(a[col], b[col], rtol=1e-6, err_msg=col)
    # A tree with BatchNorm gets the unit variance BN divides by (its batch diagnostics: the
    # finite-batch test above, through the same reading of the tree).
    bn_rows = _rows(ml.block_tree(Block("identity", "bn_post", True)), **kw, diagnose=False)
    assert "unitvar_z" in {r["statistic"] for r in bn_rows}
