"""Closed forms against the mean-field recursions: equal where the paper (or its correction)
is exact, below where it is a bound, and visibly off where the paper approximates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield
from meanfield import recursions
from meanfield import theory as t
from meanfield.core.architecture import Block
from tests.helpers import assert_close, closed_forms_over


def test_every_catalog_entry_is_checked_against_the_recursion():
    """The catalogue is a table: every entry applies to some block that the recursion checks
    (test_closed_forms_agree_with_recursion below, and tests/test_shortcut.py for branches of
    k > 1 weights), and its kind is one of the three that those tests know how to check."""
    from tests.test_shortcut import FORM_BLOCKS

    checked = list(meanfield.all_blocks()) + FORM_BLOCKS
    for entry in t.CATALOG:
        assert entry.kind in ("exact", "lower_bound", "approximation"), entry.label
        assert entry.source in ("paper", "corrected"), entry.label
        assert any(entry.applies(b) for b in checked), entry.label
    # And closed_forms gives exactly the applicable entries, in table order.
    for block in checked:
        got = [(f.statistic, f.kind) for f in t.closed_forms(block, depth=3, width=8, var_w=0.1)]
        want = [(e.statistic, e.kind) for e in t.CATALOG if e.applies(block)]
        assert got == want, block.name


SETTINGS = [(256, 1 / 256, 30), (64, 2 / 64, 50), (1000, 1 / (1000 * 40), 40), (8, 0.7, 7)]
MAX_DEPTH = max(L for _, _, L in SETTINGS)


@pytest.mark.parametrize("block", meanfield.all_blocks(), ids=lambda b: b.name)
def test_closed_forms_agree_with_recursion(block, x64):
    # One recursion and one closed-form program per block: the settings broadcast, padded to
    # one max_depth (entries past a setting's depth are NaN in both).
    width, var_w, depth = (np.array(col) for col in zip(*SETTINGS, strict=True))
    profs = recursions.profile(block, depth=depth, width=width, var_w=var_w, max_depth=MAX_DEPTH)
    forms = closed_forms_over(block, depth=depth, width=width, var_w=var_w, max_depth=MAX_DEPTH)
    assert any(kind == "exact" for _, _, kind, _ in forms), "every block has an exact form"
    for statistic, label, kind, values in forms:
        for i, (n, v, L) in enumerate(SETTINGS):
            rec = np.asarray(getattr(profs, statistic))[i]
            val = values[i]
            ok = np.isfinite(val)
            assert ok.sum() >= L and np.all(np.isnan(val[L + 1 :])), label
            msg = f"{block.name} {(n, v, L)}: {label}"
            if kind == "exact":
                assert_close(val[ok], rec[ok], rtol=1e-10, err_msg=msg)
            elif kind == "lower_bound":
                assert np.all(val[ok] <= rec[ok] * (1 + 1e-12)), msg
            else:
                # The paper's approximations: each stands beside the exact form of the same
                # statistic, and is visibly off it (else it should be labelled exact).
                assert kind == "approximation", kind
                assert any(k == "exact" and s == statistic for s, _, k, _ in forms), msg
                assert np.abs(val[ok] / rec[ok] - 1).max() > 1e-3, msg


def test_paper_identity_gradient_eq27_is_wrong_and_correction_is_right(x64):
    n, v, L = 100, 0.01, 20  # α = 1
    prof = recursions.profile(Block("identity", "none", True), depth=L, width=n, var_w=v)
    layers = np.arange(1, L + 1)
    assert_close(prof.var_dw[1:], t.identity_gradient_variance(layers, L, n, v), rtol=1e-12)
    paper = float(t.identity_gradient_variance_paper(L, n, v))
    assert float(prof.var_dw[1]) / paper == pytest.approx((2.0 / 1.5) ** (L - 1), rel=1e-10)


def test_relu_bounds_are_ordered_and_the_corrected_one_is_tight_at_the_first_layer(x64):
    n, v, L = 50, 2 / 50, 30
    prof = recursions.profile(Block("relu", "none", True), depth=L, width=n, var_w=v)
    layers = np.arange(L + 1)
    paper = np.asarray(t.relu_variance_lower_bound_paper(layers, n, v))
    ours = np.asarray(t.relu_variance_lower_bound(layers, n, v))
    assert np.all(paper[1:] < ours[1:]) and np.all(ours[2:] < np.asarray(prof.var_z)[2:])
    # One block from x ~ N(0, I): Var z^1 = 1 + α Var relu(u)/Var u = 1 + α(π-1)/(2π) exactly.
    assert float(prof.var_z[1]) == pytest.approx(float(ours[1]), rel=1e-12)
    # The gradient bound ½(1+α/2)^(L-1) <= Var[dE/dW^l]: equality at l = 1, 2 (q_0 = 1 and
    # q_1 = 1 + α/2, the mean is still 0 at l = 0), strict above, where the mean adds to q.
    bound = float(t.relu_gradient_variance_lower_bound(L, n, v))
    assert_close(prof.var_dw[1:3], [bound, bound], rtol=1e-12)
    assert np.all(np.asarray(prof.var_dw[3:]) > bound * (1 + 1e-3))
    assert float(t.relu_gradient_variance_lower_bound_paper(L, n, v)) < bound


@pytest.mark.parametrize("alpha, expected", [(1.0, 2.1719), (2.0, 2.9041)])
def test_relu_growth_rate_is_the_recursions_asymptotic_ratio(alpha, expected, x64):
    lam = float(t.relu_growth_rate(1.0, alpha))
    assert lam == pytest.approx(expected, abs=1e-4)  # values quoted in the docstring
    prof = recursions.profile(Block("relu", "none", True), depth=300, width=1.0, var_w=alpha)
    ratio = 10.0 ** (float(prof.log10_m2_z[-1]) - float(prof.log10_m2_z[-2]))
    assert ratio == pytest.approx(lam, rel=1e-9)
    assert lam > 1 + alpha / 2  # faster than the identity-like bound, far above 1 + α/4


def test_depth_scaled_init_bounds_identity_but_not_relu(x64):
    n, c = 128, 1.0
    for L in (10, 100, 1000):
        v = float(t.depth_scaled_var_w(n, L, c))
        ident = recursions.profile(Block("identity", "none", True), depth=L, width=n, var_w=v)
        growth = float(t.depth_scaled_growth(L, c))
        assert float(ident.m2_z[-1]) == pytest.approx(growth, rel=1e-10)
        assert growth < float(t.depth_scaled_growth_limit(c)) == pytest.approx(math.e)
    assert float(t.depth_scaled_growth(10**7, c)) == pytest.approx(math.e, rel=1e-6)
    # ReLU: log q_L / sqrt(2cL/π) -> 1 from below, so q_L is unbounded in L.
    ratios = []
    for L in (100, 1000, 10000):
        v = float(t.depth_scaled_var_w(n, L, c))
        relu = recursions.profile(Block("relu", "none", True), depth=L, width=n, var_w=v)
        ratios.append(
            float(relu.log10_m2_z[-1])
            * math.log(10)
            / float(t.relu_depth_scaled_log_second_moment(L, c))
        )
    assert 0.8 < ratios[0] < ratios[1] < ratios[2] < 1.0 and ratios[2] > 0.98


def test_paper_L_over_l_holds_for_identity_bn_only_when_l_alpha_is_large(x64):
    L = 200
    for alpha in (50.0, 0.5):
        prof = recursions.profile(
            Block("identity", "bn_post", True), depth=L, width=1.0, var_w=alpha
        )
        layers = np.arange(1, L + 1)
        rel = np.abs(
            np.asarray(prof.m2_dz[1:]) / np.asarray(t.bn_gradient_growth_paper(layers, L)) - 1
        )
        assert np.all(rel <= 1.0 / (layers * alpha))  # |error| = (L-l)/(L(1+lα)) < 1/(lα)
    assert rel[0] > 0.5  # α = 0.5: off by a factor 3 at l = 1


@pytest.mark.parametrize("norm", ["bn_post", "bn_pre"])
def test_relu_bn_gradient_exponent_is_pi_over_pi_minus_one_not_one(norm, x64):
    L = 20000
    prof = recursions.profile(Block("relu", norm, True), depth=L, width=1.0, var_w=2.0)
    logp = np.asarray(prof.log10_m2_dz)
    l1, l2 = 2000, 4000
    exponent = (logp[l1] - logp[l2]) / math.log10(l2 / l1)
    assert exponent == pytest.approx(math.pi / (math.pi - 1), rel=2e-3)
    asym = float(t.bn_relu_gradient_growth_asymptotic(l1, L)) / float(
        t.bn_relu_gradient_growth_asymptotic(l2, L)
    )
    assert 10 ** (logp[l1] - logp[l2]) == pytest.approx(asym, rel=2e-3)


def test_finite_batch_identity_bn_is_the_product_and_tends_to_population(x64):
    n, v, L = 1024, 1 / 1024, 10
    alpha = n * v
    for B in (8, 32, 256):
        s = [1 + k * alpha * B / (B - 1) for k in range(L)]
        pi = [1.0]
        for k in range(L - 1, -1, -1):
            pi.append(pi[-1] * (1 + alpha * B * (B - 2) / ((B - 1) * (B - 3) * s[k])))
        direct = np.asarray(pi[::-1])  # π_0..π_L
        closed = t.identity_bn_finite_batch_gradient_variance(np.arange(L + 1), L, n, v, B)
        assert_close(closed, direct, rtol=1e-12)
    population = float(t.bn_backward_second_moment(1, L, n, v, "identity"))
    far = float(t.identity_bn_finite_batch_gradient_variance(1, L, n, v, 1e7))
    assert far == pytest.approx(population, rel=1e-5) and population == pytest.approx(5.5)
    with pytest.raises(ValueError, match="batch must be a number > 3"):
        t.identity_bn_finite_batch_gradient_variance(1, L, n, v, 3)


def test_gamma_ratio_is_accurate_in_float32_at_large_depth():
    layers = np.array([1, 10, 100, 1000, 9999])
    f32 = np.asarray(t.bn_backward_second_moment(layers, 10000, 256, 0.1 / 256, "relu"))
    assert f32.dtype == np.float32
    with jax.enable_x64(True):
        f64 = np.asarray(t.bn_backward_second_moment(layers, 10000, 256, 0.1 / 256, "relu"))
    assert_close(f32, f64, rtol=2e-5)


def test_functions_broadcast_and_jit():
    layers = jnp.arange(5)[:, None]
    var_w = jnp.array([[0.5, 1.0, 2.0]])
    eager = t.forward_second_moment(layers, 1.0, var_w)
    assert eager.shape == (5, 3)
    assert_close(jax.jit(t.forward_second_moment)(layers, 1.0, var_w), eager, rtol=1e-6)
    assert_close(eager[:, 2], 3.0 ** np.arange(5), rtol=1e-6)
    jitted = jax.jit(lambda L: t.bn_backward_second_moment(1, L, 10.0, 0.1, "relu"))
    assert_close(
        jitted(jnp.array(50)), t.bn_backward_second_moment(1, 50, 10.0, 0.1, "relu"), rtol=1e-6
    )
    assert_close(
        jax.jit(t.relu_growth_rate)(1.0, jnp.array([1.0, 2.0])), [2.17191, 2.90411], rtol=1e-5
    )


def test_init_variances_are_their_definitions():
    assert float(t.he_var_w(512)) * 512 == pytest.approx(2.0)
    assert float(t.glorot_var_w(100, 300)) == pytest.approx(2.0 / 400)
    assert float(t.glorot_var_w(64)) * 64 == pytest.approx(1.0)
    # The paper's experiment: 1/(8·8·16·100).
    assert float(t.depth_scaled_var_w(8 * 8 * 16, 100)) == pytest.approx(1 / 102400)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: t.forward_second_moment(3, 0, 0.1), "width must be"),
        (lambda: t.forward_second_moment(3, 10, -0.1), "var_w must be"),
        (lambda: t.forward_second_moment(-1, 10, 0.1), "layer must be"),
        (lambda: t.backward_second_moment(5, 3, 10, 0.1, "relu"), "layer must be <= depth"),
        (lambda: t.backward_second_moment(1, 3, 10, 0.1, "gelu"), "activation must be one of"),
        (lambda: t.bn_mean(1, 10, 0.1, "relu", "none"), "norm must be one of"),
        (lambda: t.depth_scaled_var_w(10, 0), "depth must be"),
        (lambda: t.depth_scaled_var_w(10, 5, c=float("nan")), "c must be"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_module_docstring_gives_an_overview():
    doc = t.__doc__
    for name in ("forward_second_moment", "bn_backward_second_moment", "closed_forms", "eq. 7"):
        assert name in doc


def test_finite_batch_plain_identity_bn_is_the_product(x64):
    n, v, L, B = 64, 1.5 / 64, 6, 16
    alpha = n * v
    s = [1.0] + [alpha * B / (B - 1)] * L
    pi = [1.0]
    for k in range(L - 1, -1, -1):
        pi.append(pi[-1] * alpha * B * (B - 2) / ((B - 1) * (B - 3) * s[k]))
    closed = t.identity_bn_finite_batch_gradient_variance(
        np.arange(L + 1), L, n, v, B, residual=False
    )
    assert_close(closed, np.asarray(pi[::-1]), rtol=1e-12)


INPUT_MOMENT_CALLS = [
    ("m2_x", lambda x: t.forward_second_moment(3, 10, 0.1, m2_x=x)),
    ("m2_x", lambda x: t.plain_forward_second_moment(3, 10, 0.1, m2_x=x)),
    ("m2_x", lambda x: t.plain_relu_forward_second_moment(3, 10, 0.1, m2_x=x)),
    ("m2_x", lambda x: t.relu_second_moment_lower_bound(3, 10, 0.1, m2_x=x)),
    ("m2_x", lambda x: t.branch_forward_second_moment(3, 10, 0.1, 2, "relu", m2_x=x)),
    ("var_x", lambda x: t.relu_variance_lower_bound_paper(3, 10, 0.1, var_x=x)),
    ("var_x", lambda x: t.relu_variance_lower_bound(3, 10, 0.1, var_x=x)),
    ("var_x", lambda x: t.bn_variance_paper(3, 10, 0.1, "relu", var_x=x)),
]


@pytest.mark.parametrize("name, call", INPUT_MOMENT_CALLS)
@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), "1", True])
def test_input_moments_must_be_finite_and_nonnegative(name, call, bad):
    # A second moment or variance of the input is >= 0; a negative one gave a negative answer.
    with pytest.raises(ValueError) as err:
        call(bad)
    msg = str(err.value)
    assert msg.startswith(f"{name} must be a finite number >= 0"), msg
    assert "got" in msg and (repr(bad) in msg or str(bad) in msg)


@pytest.mark.parametrize("name, call", INPUT_MOMENT_CALLS)
def test_valid_input_moments_scale_the_closed_form(name, call):
    one, three = float(call(1.0)), float(call(3.0))
    additive = call is INPUT_MOMENT_CALLS[-1][1]  # bn_variance_paper: a l α + Var x
    assert three == pytest.approx(one + 2.0 if additive else 3.0 * one)
    assert float(call(0.0)) >= 0.0
    assert np.all(np.isfinite(np.asarray(call(np.array([0.0, 2.0])))))


@pytest.mark.parametrize("bad", ["relu-none-residual", None, ("relu", "none", True)])
def test_closed_forms_and_spread_require_a_block(bad):
    for call in (
        lambda: t.closed_forms(bad, depth=5, width=16, var_w=0.1),
        lambda: t.finite_width_m2_sd(bad, 3, 16, 0.1),
        lambda: t.finite_width_log_m2_spread(bad, 3, 16, 0.1),
    ):
        with pytest.raises(ValueError, match="block must be a meanfield.Block, got"):
            call()


def test_closed_forms_refuse_a_concrete_depth_past_max_depth():
    with pytest.raises(ValueError, match="depth must be <= max_depth=5, got 7"):
        t.closed_forms(Block("identity", "none", True), depth=7, width=16, var_w=0.1, max_depth=5)


def test_closed_forms_with_a_traced_depth_past_max_depth_are_all_nan():
    block = Block("identity", "none", True)

    def run(L):
        return [f.values for f in t.closed_forms(block, depth=L, width=16, var_w=0.1, max_depth=5)]

    batched = jax.vmap(run)(jnp.array([3, 7]))
    single = [f.values for f in t.closed_forms(block, depth=3, width=16, var_w=0.1)]
    for got, want in zip(batched, single, strict=True):
        assert np.all(np.isnan(np.asarray(got[1])))
        assert_close(got[0, :4], want, rtol=1e-6)
