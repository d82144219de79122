"""Width and batch sweeps: Monte-Carlo converges to the recursion as n grows, and to the exact
finite-batch closed form (not the B -> ∞ recursion) at small BN batches."""

import math

import jax
import numpy as np
import pytest

from meanfield import layers as ml
from meanfield import recursions
from meanfield.analysis import finitewidth as fw
from meanfield.analysis import structure
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


@pytest.mark.slow
def test_width_sweep_extrapolates_to_the_recursion(relu_width_rows):
    fit = fw.extrapolate_width(relu_width_rows)
    assert fit["recursion"] == pytest.approx(1.5**10, rel=1e-5)  # independent: eq. (20)
    assert abs(fit["z_limit_vs_recursion"]) < 4, fit
    assert fit["chi2_per_dof"] < 4, fit  # a + b/n describes the data
    # A wrong limit, (1 + α/2)^(L-1) (one layer missing), is far outside the fit's error.
    assert abs(fit["limit"] - 1.5**9) / fit["limit_stderr"] > 10


@pytest.mark.slow
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


@pytest.mark.slow
def test_batch_sweep_follows_the_finite_batch_closed_form(bn_batch_rows):
    for r in bn_batch_rows:
        assert abs(_z(r, "log10_finite_batch")) < 4, r
        assert _z(r, "log10_recursion") > 10, r  # the B -> ∞ value is not what B inputs give
    ratios = [r["log10_mc_mean"] for r in bn_batch_rows]
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))


@pytest.mark.slow
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


def _recursion_ratio(network, depth, width, alpha):
    """log10 Var[dE/dW^1]/Var[dE/dW^L] straight from the recursion."""
    prof = recursions.profile(network, depth=depth, width=width, var_w=alpha / width)
    return float(prof.log10_var_dw[1] - prof.log10_var_dw[-1])


def _identity_bn_ratio(depth, alpha, batch):
    """The finite-batch closed form of docs/finite-width.md §3, written out with lgamma:
    π_1/π_L = Γ(L+A+κ)Γ(1+A) / (Γ(L+A)Γ(1+A+κ)), A = (B-1)/(αB), κ = (B-2)/(B-3)."""
    a, k = (batch - 1) / (alpha * batch), (batch - 2) / (batch - 3)
    lg = math.lgamma
    return (lg(depth + a + k) + lg(1 + a) - lg(depth + a) - lg(1 + a + k)) / math.log(10)


@pytest.mark.parametrize("norm", ["ln_pre", "rms_pre"])
@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_per_input_norms_have_the_recursions_ratio_at_every_batch(activation, norm):
    # LayerNorm and RMSNorm act per input: nothing depends on B, so the n -> ∞ value at any
    # batch is the recursion's (0.740 for identity, not BatchNorm's finite-B 0.896 at B = 8).
    block = Block(activation, norm)
    expected = _recursion_ratio(block, 10, 256, 1.0)
    for batch in (2, 4, 8, 64):
        got = fw.finite_batch_gradient_ratio(block, depth=10, width=256, alpha=1.0, batch=batch)
        assert got == pytest.approx(expected, abs=1e-9), batch
    bn = fw.finite_batch_gradient_ratio(IDENTITY_BN, depth=10, width=256, alpha=1.0, batch=8)
    assert bn == pytest.approx(_identity_bn_ratio(10, 1.0, 8), abs=1e-9)
    assert abs(bn - expected) > 0.1 or activation != "identity"


def test_finite_batch_ratio_reads_the_tree():
    kw = dict(depth=10, width=256, alpha=1.0, batch=8)
    # BatchNorm: the identity blocks' closed form, whether named as a preset or as its tree.
    for network in (
        IDENTITY_BN,
        ml.block_tree(IDENTITY_BN),
        ml.block_tree(Block("identity", "bn_pre")),
    ):
        assert fw.finite_batch_gradient_ratio(network, **kw) == pytest.approx(
            _identity_bn_ratio(10, 1.0, 8), abs=1e-9
        )
    # No closed form: ReLU with BN, or two weights per branch (the k = 1 form does not apply).
    for network in (
        ml.block_tree(Block("relu", "bn_post")),
        Block("identity", "bn_post", shortcut=2),
    ):
        assert math.isnan(fw.finite_batch_gradient_ratio(network, **kw))
    # No BatchNorm in a composed tree: the recursion's value.
    plain = ml.residual(ml.serial(ml.Dense(), ml.Activation("relu")))
    per_input = ml.residual(ml.serial(ml.LayerNorm(), ml.Activation("relu"), ml.Dense()))
    for network in (plain, per_input):
        got = fw.finite_batch_gradient_ratio(network, **kw)
        assert got == pytest.approx(_recursion_ratio(network, 10, 256, 1.0), abs=1e-9)
    with pytest.raises(ValueError, match="block must be a meanfield.Block or a meanfield.layers"):
        fw.finite_batch_gradient_ratio("relu-bn_post-residual", **kw)


def test_batch_sweep_takes_a_tree_with_bn_and_refuses_per_input_norms():
    kw = dict(key=jax.random.key(2), width=16, depth=3, alpha=1.0, networks=4)
    for block in (Block("identity", "ln_pre"), Block("relu", "rms_pre")):
        with pytest.raises(ValueError, match="needs a block with BN"):
            fw.batch_sweep(block, ("m2_z", 1), batches=[4], **kw)
    tree = ml.block_tree(IDENTITY_BN)
    (row,) = fw.batch_sweep(tree, ("grad_ratio", None), batches=[8], **kw)
    assert row["block"] == tree.name
    assert row["log10_finite_batch"] == pytest.approx(_identity_bn_ratio(3, 1.0, 8), abs=1e-9)


@pytest.mark.slow
def test_eulers_floor_is_given_for_homogeneous_networks_only():
    kw = dict(key=jax.random.key(3), widths=[16], depth=3, alpha=1.0, networks=4, batch=2)
    # The identity residual network as a composed tree: q_L = (1 + α)^L, so the floor is
    # L·log10 2 - log10 n at α = 1.
    (row,) = fw.width_sweep(ml.residual(ml.Dense()), ("m2_dz", 0), **kw)
    assert row["log10_euler_floor"] == pytest.approx(3 * math.log10(2) - math.log10(16), abs=1e-5)
    # gelu is not positively homogeneous: Euler's identity does not hold, no floor.
    (row,) = fw.width_sweep(Block("gelu", "none"), ("m2_dz", 0), **kw)
    assert "log10_euler_floor" not in row
    # Nor with a norm (homogeneous of degree 0), as a preset or a tree.
    for network in (
        Block("relu", "ln_pre"),
        ml.residual(ml.serial(ml.RMSNorm(), ml.Activation("relu"), ml.Dense())),
    ):
        assert not structure.is_homogeneous(network)
    assert structure.is_homogeneous(ml.residual(ml.serial(ml.Dense(), ml.Activation("abs"))))
