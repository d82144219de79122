"""Any activation, LayerNorm and RMSNorm, and the correlation map.

* The Gaussian expectations (closed forms and Gauss-Hermite quadrature) against scipy's
  adaptive quadrature, independent of both, in float64, at the documented accuracy; a wrong
  2-D kernel is far outside it.
* Monte-Carlo against the recursion within 4 standard errors for every activation with the
  presets none, ln_pre and rms_pre, residual and plain, at a width where finite-width effects
  are below the Monte-Carlo error; with BatchNorm, whose batch statistics shift a nonlinear
  activation by O(1/B), through the extrapolation a + b/B from two batch sizes.
* corr_z of plain ReLU networks against the arc-cosine map, and planted errors that must fail:
  the activation's mean dropped, LayerNorm without its mean subtraction.
"""

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import meanfield
from meanfield import layers as ml
from meanfield import recursions
from meanfield.core import activations as acts
from meanfield.core import architecture as arch

NAMED = [a for a in arch.ACTIVATION_NAMES if a != "identity"]
# The accuracy reached (docs/activations.md): closed forms and entire functions to float64
# rounding; tanh (poles near the real axis at q = 2) and elu (a kink in f') by quadrature.
TOLERANCE = {"tanh": 2e-5, "elu": 2e-2}
PHI = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731


def _scalar(f):
    fj, dfj = jax.jit(f), jax.jit(jax.grad(f))
    return (lambda x: float(fj(x))), (lambda x: float(dfj(x)))


def _quad(g, lo, hi, kink=0.0):
    opts = dict(limit=400, epsabs=1e-15, epsrel=1e-13, points=[kink])
    with warnings.catch_warnings():  # "roundoff prevents 1e-13": it is met to ~1e-15 absolute
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(g, lo, hi, **opts)[0]


def scipy_expectations(f, q, rho):
    """The seven fields of Expectations by scipy's adaptive quadrature (nested for the pair:
    u = √q x, u' = √q (ρ x + √(1 - ρ²) y), the inner integral split at f's kink)."""
    F, dF = _scalar(f)
    s, r = math.sqrt(q), math.sqrt(1 - rho * rho)

    def e1(g):
        return _quad(lambda x: g(s * x) * PHI(x), -14, 14)

    def e2(g, h):
        inner = lambda x: _quad(lambda y: h(s * (rho * x + r * y)) * PHI(y), -14, 14, -rho * x / r)  # noqa: E731
        return _quad(lambda x: g(s * x) * PHI(x) * inner(x), -12, 12)

    m1, m2, a = e1(F), e1(lambda u: F(u) ** 2), e1(lambda u: dF(u) ** 2)
    cross, dcross = e2(F, F), e2(dF, dF)
    return dict(
        log_e2=math.log(m2),
        t=m1 / math.sqrt(m2),
        log_var=math.log(m2 - m1 * m1),
        log_gap_ratio=math.log((m2 - cross) / (q * (1 - rho))),
        log_a=math.log(a),
        log_d=math.log(dcross),
        log_a_minus_d=math.log(a - dcross),
    )


@pytest.mark.parametrize("name", NAMED)
def test_expectations_against_scipy_adaptive_quadrature(name, x64):
    q, rho = 2.0, 0.9  # the harder of the documented points: large q, correlated pair
    f = acts.activation_fn(name, 0.2)
    want = scipy_expectations(f, q, rho)
    got = acts.expectations(name, math.log(q), math.log(1 - rho), slope=0.2)._asdict()
    tol = TOLERANCE.get(name, 1e-10)
    for k, v in want.items():
        assert abs(float(got[k]) - v) < tol, (name, k, float(got[k]), v)
    # A wrong 2-D kernel (the pair at correlation ρ² instead of ρ) is far outside what the
    # right one reaches.
    wrong = acts.expectations(name, math.log(q), math.log(1 - rho**2), slope=0.2)
    reached = abs(float(got["log_gap_ratio"]) - want["log_gap_ratio"])
    assert abs(float(wrong.log_gap_ratio) - want["log_gap_ratio"]) > max(10 * reached, 1e-6)


def test_any_jax_function_is_its_named_twin_and_closed_forms_match_quadrature(x64):
    """A user's function goes through quadrature; for the smooth closed forms (erf, sin) the
    quadrature reaches them to 1e-6 in logs at q <= 2.5, δ >= 1e-6 (docs/activations.md:
    2e-7 measured); a callable gelu is the named gelu."""
    log_q, log_d = jnp.log(jnp.array([0.3, 1.0, 2.5])), jnp.log(jnp.array([0.5, 0.05, 1e-6]))
    for name, fn in [("erf", jax.scipy.special.erf), ("sin", jnp.sin)]:
        closed = acts.expectations(name, log_q, log_d)
        quad = acts.expectations(fn, log_q, log_d)
        for k in closed._fields:
            np.testing.assert_allclose(getattr(quad, k), getattr(closed, k), atol=1e-6, err_msg=k)
    gelu = acts.expectations(lambda x: x * jax.scipy.stats.norm.cdf(x), log_q, log_d)
    named = acts.expectations("gelu", log_q, log_d)
    for k in named._fields:
        np.testing.assert_allclose(getattr(gelu, k), getattr(named, k), atol=1e-12, err_msg=k)


def test_gaps_keep_their_precision_as_the_correlation_goes_to_one(x64):
    """gap/(qδ) tends to E f'(u)² as δ -> 0, with no cancellation (δ down to 1e-30)."""
    for name in ["tanh", "gelu", "erf", "sin", "silu"]:
        ex = acts.expectations(name, jnp.zeros(4), jnp.log(jnp.array([1e-4, 1e-10, 1e-30, 0.0])))
        np.testing.assert_allclose(ex.log_gap_ratio[1:], ex.log_a[1:], atol=1e-8, err_msg=name)
        assert np.all(np.isfinite(ex.log_gap_ratio)), name


def _z(mc, rec, accuracy=0.0):
    """(MC - prediction) / its uncertainty: the MC standard error and, where the prediction
    has a documented relative accuracy (elu's quadrature), that too."""
    return (mc.mean - rec) / np.sqrt(mc.stderr**2 + (accuracy * rec) ** 2)


# The relative accuracy of elu's recursion (quadrature of a kinked f': docs/activations.md).
ACCURACY = {"elu": 1e-2}


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["none", "ln_pre", "rms_pre"])
@pytest.mark.parametrize("activation", NAMED)
def test_montecarlo_agrees_with_the_recursion(activation, norm):
    """Residual and plain: forward, backward and corr_z within 4 standard errors at width
    4096 (weight-free engine), where finite-width effects are below the Monte-Carlo error."""
    n, B, L = 4096, 4, 5
    acc = ACCURACY.get(activation, 0.0)
    var_w = (2.0 if activation in ("relu", "abs") else 1.0) / n
    for residual in (True, False):
        block = meanfield.Block(activation, norm, residual)
        kw = dict(depth=L, width=n, var_w=var_w)
        prof = recursions.profile(block, input_corr=0.3, **kw)
        est = meanfield.simulate(
            block, key=jax.random.key(5), networks=96, batch=B, input_corr=0.3, warn=False, **kw
        )
        for name in ("m2_z", "m2_dz", "var_dw", "mean_z", "corr_z"):
            z = _z(getattr(est, name), np.asarray(getattr(prof, name)), acc)
            assert np.nanmax(np.abs(z[1:])) < 4, (block.name, name, z)
        # The recursion's unit variance is the population one; the batch's is (B - 1)/B of it.
        z = _z(est.unitvar_z, (B - 1) / B * np.asarray(prof.unitvar_z), acc)
        assert np.nanmax(np.abs(z[1:])) < 4, (block.name, "unitvar_z", z)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["bn_pre", "bn_post"])
@pytest.mark.parametrize("activation", NAMED)
def test_with_batchnorm_the_large_batch_limit_agrees(activation, norm):
    """BN's batch statistics make a nonlinear f see a normalized sample, not a Gaussian: an
    O(1/B) shift (4.7% of m2_z at B = 8 for tanh-bn_pre), and BN's backward has O(1/B)
    terms of its own that compound over depth. The extrapolation 2·m(2B) - m(B) removes the
    first order; at B = 32, 64 what is left (O(1/B²): |z| up to 5 at B = 16, 32 in plain
    gelu networks) is below the Monte-Carlo error. Forward and backward, residual and plain,
    within 4 combined standard errors of the recursion."""
    n, L = 512, 3
    for residual in (True, False):
        block = meanfield.Block(activation, norm, residual)
        var_w = (2.0 if activation in ("relu", "abs") else 1.0) / n
        prof = recursions.profile(block, depth=L, width=n, var_w=var_w)
        kw = dict(depth=L, width=n, var_w=var_w, networks=48, engine="weightfree", warn=False)
        small = meanfield.simulate(block, key=jax.random.key(1), batch=32, **kw)
        large = meanfield.simulate(block, key=jax.random.key(2), batch=64, **kw)
        for name in ("m2_z", "mean_z", "m2_dz", "var_dw"):
            a, b = getattr(small, name), getattr(large, name)
            limit = 2 * b.mean - a.mean
            se = np.sqrt(4 * b.stderr**2 + a.stderr**2)
            acc = ACCURACY.get(activation, 0.0) * np.abs(np.asarray(getattr(prof, name)))
            z = (limit - np.asarray(getattr(prof, name))) / np.sqrt(se**2 + acc**2)
            assert np.nanmax(np.abs(z[1:])) < 4, (block.name, name, z)


def test_relu_plain_correlation_follows_the_arc_cosine_map():
    """Plain relu-none at He init keeps q fixed; c_{l+1} = (√(1 - c²) + (π - arccos c) c)/π,
    iterated from input_corr, against the recursion (exactly) and Monte-Carlo (4 SE)."""
    n, L, rho = 1024, 8, 0.2
    block = meanfield.Block("relu", "none", False)
    prof = recursions.profile(block, depth=L, width=n, var_w=2.0 / n, input_corr=rho)
    c = [rho]
    for _ in range(L):
        x = c[-1]
        c.append((math.sqrt(1 - x * x) + (math.pi - math.acos(x)) * x) / math.pi)
    np.testing.assert_allclose(prof.corr_z, c, rtol=2e-6)
    est = meanfield.simulate(
        block, key=jax.random.key(3), depth=L, width=n, var_w=2.0 / n, networks=128, batch=4,
        input_corr=rho, warn=False,
    )  # fmt: skip
    assert np.max(np.abs(_z(est.corr_z, np.array(c)))) < 4
    # A wrong kernel (c_{l+1} = c_l, the linear network's) is rejected.
    assert np.max(np.abs(_z(est.corr_z, np.full(L + 1, rho)))[1:]) > 4


class _NoMean(ml.Activation):
    """Planted error: the mean field of f with its mean dropped."""

    def mean_field(self, s, mf):
        return dataclasses.replace(super().mean_field(s, mf), t=jnp.zeros_like(s.t))


class _NoCentre(ml.LayerNorm):
    """Planted error: a LayerNorm that does not subtract the mean (an RMSNorm)."""

    def finite(self, x, net):
        return ml.RMSNorm().finite(x, net)


def test_planted_errors_fail():
    n, L = 1024, 5
    kw = dict(depth=L, width=n, var_w=1.0 / n)
    mc = dict(key=jax.random.key(4), networks=96, batch=4, warn=False)
    # The mean of gelu carried through the residual sum: dropping it breaks m2_z.
    good = ml.residual(ml.serial(ml.Dense(), ml.Activation("gelu")))
    bad = ml.residual(ml.serial(ml.Dense(), _NoMean("gelu")))
    est = meanfield.simulate(good, **kw, **mc)
    assert np.max(np.abs(_z(est.m2_z, recursions.profile(good, **kw).m2_z))[1:]) < 4
    assert np.max(np.abs(_z(est.m2_z, recursions.profile(bad, **kw).m2_z))[1:]) > 4
    # Inputs with a mean: LN without its mean subtraction is not LN.
    ln = ml.residual(ml.serial(ml.LayerNorm(), ml.Activation("tanh"), ml.Dense()))
    wrong = ml.residual(ml.serial(_NoCentre(), ml.Activation("tanh"), ml.Dense()))
    prof = recursions.profile(ln, input_m2=5.0, input_mean=2.0, **kw)
    for tree, ok in ((ln, True), (wrong, False)):
        est = meanfield.simulate(tree, input_mean=2.0, **kw, **mc)
        worst = np.nanmax(np.abs(_z(est.m2_dz, np.asarray(prof.m2_dz)))[:-1])
        assert (worst < 4) == ok, (tree.name, worst)


def test_bad_activations_and_norms_are_refused_by_name():
    with pytest.raises(ValueError, match="Block.activation must be one of"):
        meanfield.Block("swish")
    with pytest.raises(ValueError, match="Block.norm must be one of"):
        meanfield.Block("relu", "ln_post")
    with pytest.raises(ValueError, match="final_activation must be True for norm='ln_pre'"):
        meanfield.Block("relu", "ln_pre", final_activation=False)
    with pytest.raises(ValueError, match="Activation.activation must be one of"):
        ml.Activation(3)
    with pytest.raises(ValueError, match="input_corr must be a number in"):
        meanfield.simulate(
            meanfield.Block(), key=jax.random.key(0), depth=2, width=8, var_w=0.1, networks=2,
            batch=2, input_corr=1.0,
        )  # fmt: skip


def test_names_read_back():
    tree = ml.residual(ml.serial(ml.RMSNorm(), ml.Activation("leaky_relu", 0.2), ml.Dense()))
    assert ml.from_name(tree.name) == tree
    assert ml.preset_of(ml.block_tree(meanfield.Block("gelu", "ln_pre"))) == meanfield.Block(
        "gelu", "ln_pre"
    )


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "erf", "sin", "silu"])
def test_plain_closed_forms_against_the_recursion(activation):
    """theory.plain_correlation_map is the recursion's first layer; chi1 is its slope at
    c -> 1 (times q_0/q_1 off the fixed point, to O(1 - c))."""
    from meanfield import theory

    alpha, c0 = 1.5, 0.3
    block = meanfield.Block(activation, "none", False)
    prof = recursions.profile(block, depth=1, width=100, var_w=alpha / 100, input_corr=c0)
    want = float(theory.plain_correlation_map(activation, alpha, 1.0, c0))
    np.testing.assert_allclose(float(prof.corr_z[1]), want, rtol=1e-5)
    # Inputs of correlation 1 - δ (as their unit variance δ: 1 - δ is not float32-exact);
    # relu's map has a (1 - c)^{3/2} term, so δ = 1e-6 leaves it at 5e-4.
    delta = 1e-6
    prof = recursions.profile(block, depth=1, width=100, var_w=alpha / 100, input_unitvar=delta)
    slope = float(prof.unitvar_z[1]) / delta  # (δ_1 / δ_0) · q_1 with q_0 = 1
    np.testing.assert_allclose(slope, float(theory.chi1(activation, alpha, 1.0)), rtol=2e-3)
    assert float(theory.he_like_alpha("relu")) == pytest.approx(2.0, rel=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize(("activation", "norm"), [("gelu", "ln_pre"), ("tanh", "rms_pre")])
def test_explicit_weights_agree_with_the_recursion(activation, norm):
    """The explicit-weight engine on the new norms (the matrix above samples weight-free):
    within 4 standard errors at n = 512, where the pre-norm blocks' finite-width effects are
    below the Monte-Carlo error (docs/activations.md)."""
    n, B, L = 512, 4, 4
    block = meanfield.Block(activation, norm, True)
    kw = dict(depth=L, width=n, var_w=1.0 / n)
    prof = recursions.profile(block, input_corr=0.3, **kw)
    est = meanfield.simulate(
        block, key=jax.random.key(8), networks=64, batch=B, input_corr=0.3, engine="explicit",
        warn=False, **kw,
    )  # fmt: skip
    for name in ("m2_z", "m2_dz", "var_dw", "corr_z"):
        z = _z(getattr(est, name), np.asarray(getattr(prof, name)))
        assert np.nanmax(np.abs(z[1:])) < 4, (block.name, name, z)


@pytest.mark.parametrize(("activation", "alpha"), [("tanh", 1.5), ("erf", 2.0), ("sin", 3.0)])
def test_plain_fixed_points_are_where_the_recursion_settles(activation, alpha):
    """q* and c* from iterating the exact maps against the recursion at depth 1000 (from
    inputs of correlation 0.5); χ₁(q*) > 1 here, so distinct inputs decorrelate (c* = 0)."""
    from meanfield import theory

    q, c = theory.plain_fixed_point(activation, alpha)
    block = meanfield.Block(activation, "none", False)
    prof = recursions.profile(block, depth=1000, width=100, var_w=alpha / 100, input_corr=0.5)
    np.testing.assert_allclose(float(prof.m2_z[-1]), float(q), rtol=1e-4)
    np.testing.assert_allclose(float(prof.corr_z[-1]), float(c), atol=1e-4)
    assert float(theory.chi1(activation, alpha, q)) > 1 and abs(float(c)) < 1e-4


@pytest.mark.parametrize(("activation", "q"), [("tanh", 0.1), ("gelu", 1.0), ("silu", 0.5)])
def test_critical_alpha_keeps_the_plain_networks_second_moment(activation, q):
    from meanfield import theory

    alpha = float(theory.critical_alpha(activation, q))
    block = meanfield.Block(activation, "none", False)
    prof = recursions.profile(block, depth=3, width=100, var_w=alpha / 100, input_m2=q)
    np.testing.assert_allclose(np.asarray(prof.m2_z), q, rtol=1e-5)
    # 5% off α and the second moment moves.
    prof = recursions.profile(block, depth=3, width=100, var_w=1.05 * alpha / 100, input_m2=q)
    assert abs(float(prof.m2_z[-1]) / q - 1) > 1e-2
    assert np.isnan(float(theory.critical_alpha("tanh", 1.0)))  # tanh² < 1: none exists
    assert float(theory.critical_alpha("relu", 1.0)) == pytest.approx(2.0, rel=1e-6)
