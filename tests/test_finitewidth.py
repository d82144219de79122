"""Width and batch sweeps: Monte-Carlo converges to the recursion as n grows, and to the exact
finite-batch closed form (not the B -> ∞ recursion) at small BN batches."""

import math

import jax
import numpy as np
import pytest

from meanfield.analysis import finitewidth as fw
from meanfield.core.architecture import Block
from meanfield.theory import batchnorm as theory_batchnorm

RELU = Block("relu", "none", True)
IDENTITY_BN = Block("identity", "bn_post", True)


@pytest.fixture(scope="module")
def relu_width_rows():
    # Input-side gradient of the ReLU ResNet without BN at α = 1, L = 10: the recursion gives
    # (1 + α/2)^10 = 57.67; at finite n Euler's identity adds an O(1/n) excess.
    return fw.width_sweep(
        RELU,
        ("m2_dz", 0),
        key=jax.random.key(0),
        widths=[64, 128, 256, 512],
        depth=10,
        alpha=1.0,
        networks=256,
        batch=4,
    )


def test_width_sweep_extrapolates_to_the_recursion(relu_width_rows):
    fit = fw.extrapolate_width(relu_width_rows)
    assert fit["recursion"] == pytest.approx(1.5**10, rel=1e-5)  # independent: eq. (20)
    assert abs(fit["z_limit_vs_recursion"]) < 4, fit
    assert fit["chi2_per_dof"] < 4, fit  # a + b/n describes the data
    # A wrong limit, (1 + α/2)^(L-1) (one layer missing), is far outside the fit's error.
    assert abs(fit["limit"] - 1.5**9) / fit["limit_stderr"] > 10


def test_finite_width_excess_is_real_and_above_eulers_floor(relu_width_rows):
    first = relu_width_rows[0]
    mean, se = 10 ** first["log10_mc_mean"], 10 ** first["log10_mc_stderr"]
    assert (mean - 1.5**10) / se > 10  # at n = 64 the recursion is far off
    for r in relu_width_rows:
        # Euler: m2_dz^0 >= (q_L/q_0)/n per input, with q_L from the recursion (2^10 here).
        assert r["log10_euler_floor"] == pytest.approx(
            10 * math.log10(2) - math.log10(r["width"]), abs=1e-4
        )
        assert r["log10_mc_mean"] > r["log10_euler_floor"]
        assert r["log10_mc_q05"] < r["log10_mc_median"] < r["log10_mc_q95"]
    excess = [10 ** r["log10_mc_mean"] - 1.5**10 for r in relu_width_rows]
    assert all(a > b for a, b in zip(excess, excess[1:], strict=False))  # shrinks with n


@pytest.fixture(scope="module")
def bn_batch_rows():
    return fw.batch_sweep(
        IDENTITY_BN,
        ("grad_ratio", None),
        key=jax.random.key(1),
        batches=[4, 6, 8, 16],
        width=1024,
        depth=10,
        alpha=1.0,
        networks=256,
    )


def _z(row, key):
    mean, se = 10 ** row["log10_mc_mean"], 10 ** row["log10_mc_stderr"]
    return (mean - 10 ** row[key]) / se


def test_batch_sweep_follows_the_finite_batch_closed_form(bn_batch_rows):
    for r in bn_batch_rows:
        assert abs(_z(r, "log10_finite_batch")) < 4, r
        assert _z(r, "log10_recursion") > 10, r  # the B -> ∞ value is not what B inputs give
    ratios = [r["log10_mc_mean"] for r in bn_batch_rows]
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))


def test_a_wrong_finite_batch_exponent_is_rejected(bn_batch_rows):
    # κ = (B-1)/(B-2) instead of (B-2)/(B-3): the kind of off-by-one the tests must catch.
    worst = 0.0
    for r in bn_batch_rows:
        b, L = r["batch"], r["depth"]
        pi = theory_batchnorm.gamma_product(
            np.array([1.0, L]), float(L), (b - 1.0) / b, (b - 1.0) / (b - 2.0)
        )
        wrong = {"log10_wrong": float(np.log10(pi[0] / pi[1]))}
        worst = max(worst, abs(_z(r | wrong, "log10_wrong")))
    assert worst > 6


@pytest.mark.parametrize(
    "quantity, message",
    [
        (("m2_q", 0), "quantity must be"),
        ("m2_z", "quantity must be"),
        (("var_dw", 0), "undefined"),
        (("m2_z", 99), "layer must be <= depth"),
    ],
)
def test_bad_quantity_raises(quantity, message):
    with pytest.raises(ValueError, match=message):
        fw.width_sweep(
            RELU,
            quantity,
            key=jax.random.key(0),
            widths=[8],
            depth=3,
            alpha=1.0,
            networks=2,
            batch=2,
        )


def test_bad_sweeps_raise():
    with pytest.raises(ValueError, match="needs a block with BN"):
        fw.batch_sweep(
            RELU,
            ("m2_z", 1),
            key=jax.random.key(0),
            batches=[4],
            width=8,
            depth=2,
            alpha=1.0,
            networks=2,
        )
    with pytest.raises(ValueError, match="batches must be >= 2"):
        fw.batch_sweep(
            IDENTITY_BN,
            ("m2_z", 1),
            key=jax.random.key(0),
            batches=[1],
            width=8,
            depth=2,
            alpha=1.0,
            networks=2,
        )
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        fw.width_sweep(
            RELU,
            ("m2_z", 1),
            key=jax.random.key(0),
            widths=[8],
            depth=2,
            alpha=0.0,
            networks=2,
            batch=2,
        )
    with pytest.raises(ValueError, match="needs >= 3 rows"):
        fw.extrapolate_width([])
