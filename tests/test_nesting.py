"""Nested and composed trees: a residual whose branch reaches its output from its input without
a Dense (an inner residual's skip, norms, an activation of a signal correlated with the skip) has
the cross terms 2E[z h] forward and 2E[δ·Jᵀδ] backward (docs/theory.md §10). The recursion is
checked against derivations by hand for the linear trees and against Monte-Carlo at large width
for every nesting (a residual in a residual at the start, middle and end of a branch, residuals
in series, three deep) with BatchNorm, LayerNorm and the activation families; the independent
merge that dropped the cross terms is planted and must be rejected."""

import dataclasses
import functools
import math

import jax
import numpy as np
import pytest

import meanfield
from meanfield import layers as ml
from meanfield import recursions
from meanfield.layers import mean_field as mfb
from tests.helpers import assert_close

ID, RELU, TANH, GELU = (ml.Activation(f) for f in ("identity", "relu", "tanh", "gelu"))
D, BN, LN = ml.Dense(), ml.BatchNorm(), ml.LayerNorm()
res, ser = ml.residual, ml.serial

# Linear nestings, α = n·var_w, inputs x ~ N(0, I). Every block multiplies q, p and the unit
# variance by one factor g (the inputs stay uncorrelated: k = 0, so u = q):
#   end:     z + (z + Wz) = 2z + Wz                          g = 4 + α   (5^l at α = 1)
#   three:   z + (z + (z + Wz)) = 3z + Wz                    g = 9 + α
#   series:  z + (I + W2)(I + W1) z = 2z + W1z + W2z + W2W1z  g = 4 + 2α + α²
#   start:   z + W2 (z + W1 z)                               g = 1 + α(1 + α)  (no cross term)
# The cross terms E[2z·Wz] = E[W1z·W2z] = E[W2z·W2W1z] = 0 (fresh weights), E[z·z] = q do not.
# Backward the same g: dE/dz = 2δ + Wᵀδ etc. The weight gradient of a Dense is p·q of its
# input times the second moment of the cotangent at its output: series, W1 sees (1 + α) p_l and
# q_{l-1}, W2 sees p_l and (1 + α) q_{l-1}; start, W1 sees α p_l and q_{l-1}, W2 p_l and
# (1 + α) q_{l-1}; var_dw (their mean) is then c·g^{L-1} with c below.
LINEAR = {
    "end": (res(res(ser(D, ID))), lambda a: 4 + a, lambda a: 1.0),
    "three_deep": (res(res(res(ser(D, ID)))), lambda a: 9 + a, lambda a: 1.0),
    "series": (
        res(ser(res(ser(D, ID)), res(ser(D, ID)))),
        lambda a: 4 + 2 * a + a * a,
        lambda a: 1 + a,
    ),
    "start": (res(ser(res(ser(D, ID)), D, ID)), lambda a: 1 + a * (1 + a), lambda a: 0.5 + a),
}


@pytest.mark.parametrize("case", list(LINEAR))
def test_linear_nestings_grow_by_the_factor_derived_by_hand(case, x64):
    tree, growth, dw = LINEAR[case]
    alpha, depth = 1.3, 6
    prof = recursions.profile(tree, depth=depth, width=100, var_w=alpha / 100)
    g, layer = growth(alpha), np.arange(depth + 1)
    assert_close(prof.m2_z, g**layer, rtol=1e-12)
    assert_close(prof.unitvar_z, g**layer, rtol=1e-12)
    assert_close(prof.mean_z, np.zeros(depth + 1), rtol=0, atol=1e-12)
    assert_close(prof.m2_dz, g ** (depth - layer), rtol=1e-12)
    assert_close(prof.var_dw[1:], np.full(depth, dw(alpha) * g ** (depth - 1)), rtol=1e-12)


def test_the_issue_tree_is_five_to_the_l_at_unit_alpha():
    prof = recursions.profile(LINEAR["end"][0], depth=4, width=64, var_w=1 / 64)
    assert_close(prof.m2_z, [1, 5, 25, 125, 625], rtol=2e-6)
    assert_close(prof.m2_dz, [625, 125, 25, 5, 1], rtol=2e-6)


def _middle_by_hand(alpha, depth):
    """z + LN(BN(z) + W BN(z)). BN(z) = (z - μ_j)/√u has v = u = 1 and no common part; the inner
    sum has v = 1 + α and mean 0, so LN divides it by √(1 + α). The only cross term is
    E[z·BN(z)] = √u (within a unit; across inputs BN leaves nothing):
        q' = q + 1 + 2√(u/(1 + α)),  u' = u + 1 + 2√(u/(1 + α)).
    Backward dE/dz = δ + BNᵀ(I + Wᵀ)LNᵀδ, each factor 1/√u, 1/√(1 + α): p_{l-1} = p_l
    (1 + 1/u + 2/√(u(1 + α))); the Dense sees BN(z) (q = gap = 1, k = 0) and p_l/(1 + α)."""
    q, u, qs, us, steps = 1.0, 1.0, [1.0], [1.0], []
    for _ in range(depth):
        steps.append(1 + 1 / u + 2 / math.sqrt(u * (1 + alpha)))
        cross = 2 * math.sqrt(u / (1 + alpha))
        q, u = q + 1 + cross, u + 1 + cross
        qs.append(q)
        us.append(u)
    ps = [math.prod(steps[l:]) for l in range(depth + 1)]
    return np.array(qs), np.array(us), np.array(ps), np.array(ps[1:]) / (1 + alpha)


def _bn_end_by_hand(alpha, depth):
    """z + (z + W BN(z)) = 2z + W BN(z): q' = 4q + α, u' = 4u + α (W BN(z) has no part common
    to the inputs); dE/dz = 2δ + BNᵀWᵀδ, p_{l-1} = p_l (4 + α/u_{l-1}); the Dense sees BN(z)
    and p_l."""
    q, u, qs, us, steps = 1.0, 1.0, [1.0], [1.0], []
    for _ in range(depth):
        steps.append(4 + alpha / u)
        q, u = 4 * q + alpha, 4 * u + alpha
        qs.append(q)
        us.append(u)
    ps = [math.prod(steps[l:]) for l in range(depth + 1)]
    return np.array(qs), np.array(us), np.array(ps), np.array(ps[1:])


def _stein_relu_by_hand(alpha, depth):
    """Wz + relu(Wz) (a plain block): with y = Wz, q_y = α q and, by Stein's lemma,
    E[y relu(y)] = q_y E relu'(y) = q_y/2, so q' = (1 + 1/2 + 1) α q = (5α/2) q, the mean is
    E relu(y) = √(q_y/2π); backward dE/dy = (1 + relu'(y))δ, E(1 + relu')² = 5/2, so
    p_{l-1} = (5α/2) p_l and the weight sees 5/2 p_l and q_{l-1}."""
    g = 2.5 * alpha
    layer = np.arange(depth + 1)
    qs = g**layer
    means = np.concatenate([[0.0], np.sqrt(alpha * qs[:-1] / (2 * math.pi))])
    return qs, means, g ** (depth - layer), 2.5 * g ** (depth - 1) * np.ones(depth)


def test_bn_and_ln_nestings_and_stein_by_hand(x64):
    alpha, depth = 0.7, 5
    kw = dict(depth=depth, width=100, var_w=alpha / 100)
    middle = recursions.profile(res(ser(BN, res(ser(D, ID)), LN)), **kw)
    for got, want in zip(
        (middle.m2_z, middle.unitvar_z, middle.m2_dz, middle.var_dw[1:]),
        _middle_by_hand(alpha, depth),
        strict=True,
    ):
        assert_close(got, want, rtol=1e-12)
    end = recursions.profile(res(res(ser(BN, D, ID))), **kw)
    for got, want in zip(
        (end.m2_z, end.unitvar_z, end.m2_dz, end.var_dw[1:]),
        _bn_end_by_hand(alpha, depth),
        strict=True,
    ):
        assert_close(got, want, rtol=1e-12)
    stein = recursions.profile(ser(D, res(RELU)), **kw)
    for got, want in zip(
        (stein.m2_z, stein.mean_z, stein.m2_dz, stein.var_dw[1:]),
        _stein_relu_by_hand(alpha, depth),
        strict=True,
    ):
        assert_close(got, want, rtol=1e-12)


@pytest.mark.parametrize(
    "tree",
    [res(ser(BN, res(ser(D, ID)), LN)), res(ser(D, res(ser(BN, RELU)))), res(res(ser(D, RELU)))],
    ids=["middle_bn_ln", "stein_bn_relu", "end_relu"],
)
def test_nested_trees_keep_float32_accuracy_at_depth_ten_thousand(tree):
    """The cross terms are formed from O(1) terms like the rest of the state: float32 against
    float64 at depth 10,000 and He init, every log within the bound that the presets meet
    (ε_32·32·(|ln x| + √L), tests/test_recursions.py)."""
    depth, eps = 10_000, float(np.finfo(np.float32).eps)
    logs = {}
    for x64 in (False, True):
        with jax.enable_x64(x64):
            prof = recursions.profile(tree, depth=depth, width=100, var_w=2 / 100)
            logs[x64] = {k: np.asarray(v, np.float64) for k, v in prof.as_dict().items()}
    for name in ("m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw"):
        got, want = (math.log(10) * logs[x][f"log10_{name}"] for x in (False, True))
        tol = 32 * eps * (np.abs(want) + math.sqrt(depth))
        assert np.all(np.isfinite(want[1:])), name
        assert np.nanmax(np.abs(got - want) / tol) < 1.0, name


def independent_profile(tree, **kwargs):
    """The planted error: the recursion with every branch summed as if it were independent of
    its skip (what it computed before the cross terms), compiled apart from the exact one."""
    original = mfb.MeanField.open

    def open_independent(self, s):
        return dataclasses.replace(s, cross=(*s.cross, None))

    jax.clear_caches()  # neither reuse the exact program nor leave the planted one behind
    mfb.MeanField.open = open_independent
    try:
        return jax.block_until_ready(recursions.profile(tree, **kwargs))
    finally:
        mfb.MeanField.open = original
        jax.clear_caches()


def test_the_planted_independent_merge_is_the_old_recursion():
    kw = dict(depth=3, width=64, var_w=1 / 64)
    assert_close(independent_profile(LINEAR["end"][0], **kw).m2_z, [1, 3, 9, 27], rtol=2e-6)
    # Where no branch has a path without a Dense, the planted and the exact recursion agree.
    exact = recursions.profile(LINEAR["start"][0], **kw)
    planted = independent_profile(LINEAR["start"][0], **kw)
    for name in recursions.STATISTICS:
        assert_close(getattr(planted, name), getattr(exact, name), rtol=2e-6, err_msg=name)


def _z(est, prof, name, batch):
    """max over layers of |Monte-Carlo - recursion| / standard error; the recursion's unit
    variance is compared with Monte-Carlo's biased batch variance as (B - 1)/B of it."""
    want = np.asarray(getattr(prof, name), float)
    if name == "unitvar_z":
        want = want * (batch - 1) / batch
    got = getattr(est, name)
    return float(
        np.nanmax(np.abs(np.asarray(got.mean, float) - want) / np.asarray(got.stderr, float))
    )


ALL = ("mean_z", "m2_z", "unitvar_z", "corr_z", "m2_dz", "var_dw")
# BatchNorm's batch sum is exactly zero at finite B, which moves corr_z by O(1/B) (comparable to
# its standard error at any B); its other O(1/B) terms (σ̂ for σ in E[z·BN(z)]) are 0.1% at
# B = 1024, below the standard errors.
BN_STATS = ("mean_z", "m2_z", "unitvar_z", "m2_dz", "var_dw")
SMALL_BATCH, LARGE_BATCH = (16, 64), (1024, 8)  # (batch, networks)
# name -> (tree, depth, α, (batch, networks), statistics), width 256. A residual nested at the
# start of a branch has no cross term (a Dense follows it); in the middle and at the end it has
# one, through the inner skip, norms, and (Stein) an activation of a signal correlated with a
# skip. tanh keeps α = 1/2: past q ~ 10 the quadrature of E tanh'² loses percents.
MONTE_CARLO = {
    "start_relu": (res(ser(res(ser(D, RELU)), D, RELU)), 3, 1.0, SMALL_BATCH, ALL),
    "start_stein_bn_tanh": (res(ser(res(ser(BN, TANH)), D)), 3, 0.5, LARGE_BATCH, BN_STATS),
    "end_identity": (res(res(ser(D, ID))), 3, 1.0, SMALL_BATCH, ALL),
    "end_relu": (res(res(ser(D, RELU))), 3, 1.0, SMALL_BATCH, ALL),
    "end_tanh": (res(res(ser(D, TANH))), 2, 0.5, SMALL_BATCH, ALL),
    "end_gelu": (res(res(ser(D, GELU))), 3, 1.0, SMALL_BATCH, ALL),
    "three_deep_gelu": (res(res(res(ser(D, GELU)))), 2, 1.0, SMALL_BATCH, ALL),
    "series_tanh": (res(ser(res(ser(D, TANH)), res(ser(D, TANH)))), 2, 0.5, SMALL_BATCH, ALL),
    "middle_ln_tanh": (res(ser(LN, res(ser(D, TANH)), LN)), 3, 0.5, SMALL_BATCH, ALL),
    "stein_relu": (ser(D, res(RELU)), 3, 1.0, SMALL_BATCH, ALL),
    "stein_gelu_ln": (ser(D, res(res(ser(LN, GELU)))), 3, 1.0, SMALL_BATCH, ALL),
    "end_bn_relu": (res(res(ser(BN, D, RELU))), 3, 1.0, LARGE_BATCH, BN_STATS),
    "middle_bn_tanh_ln": (res(ser(BN, res(ser(D, TANH)), LN)), 3, 0.5, LARGE_BATCH, BN_STATS),
    "stein_bn_tanh": (res(ser(D, res(ser(BN, TANH)))), 2, 0.5, LARGE_BATCH, BN_STATS),
}
WIDTH = 256


@functools.cache
def _estimate(case):
    """Monte-Carlo of one case (shared by the agreement and the planted-error tests) and the
    keyword arguments of its profile."""
    tree, depth, alpha, (batch, networks), _ = MONTE_CARLO[case]
    kw = dict(depth=depth, width=WIDTH, var_w=alpha / WIDTH)
    est = meanfield.simulate(
        tree, key=jax.random.key(7), networks=networks, batch=batch, warn=False, **kw
    )
    return est, kw


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MONTE_CARLO))
def test_nesting_agrees_with_monte_carlo(case):
    tree, _, _, (batch, _), stats = MONTE_CARLO[case]
    est, kw = _estimate(case)
    prof = recursions.profile(tree, **kw)
    zs = {s: _z(est, prof, s, batch) for s in stats}
    assert max(zs.values()) < 4.0, zs


PLANTED = ("end_identity", "end_relu", "middle_ln_tanh", "stein_gelu_ln", "end_bn_relu")


@pytest.mark.parametrize("case", PLANTED)
def test_monte_carlo_rejects_the_independent_merge(case):
    tree, _, _, (batch, _), stats = MONTE_CARLO[case]
    est, kw = _estimate(case)
    wrong = independent_profile(tree, **kw)
    assert max(_z(est, wrong, s, batch) for s in stats) > 10.0


# Trees whose mean field would need a non-Gaussian joint law: an activation of a signal that is
# correlated with a skip through another activation (E[z g(y + f(y))]), or of a residual
# stream made non-Gaussian by a nonlinear block. Refused by the activation's flags, by name.
REFUSED = {
    "activation_after_a_nonlinear_inner_residual": (
        ser(D, res(RELU), TANH),
        "Activation('tanh') has no exact mean field here: its input must be a Gaussian signal",
    ),
    "norm_of_a_nonlinear_inner_residual": (
        res(ser(D, res(GELU), LN, GELU)),
        "Activation('gelu') has no exact mean field here: its input must be a Gaussian signal",
    ),
    "activation_of_a_nonlinear_stream": (
        res(ser(res(ser(LN, TANH)), D, TANH)),
        "Activation('tanh') has no exact mean field here: its input must be a Gaussian signal",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_nesting_without_a_gaussian_joint_law_is_refused_by_name(case):
    tree, message = REFUSED[case]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        recursions.profile(tree, depth=2, width=16, var_w=1 / 16)
    est = meanfield.simulate(
        tree,
        key=jax.random.key(0),
        depth=2,
        width=16,
        var_w=1 / 16,
        networks=2,
        batch=4,
        warn=False,
    )
    assert np.all(np.isfinite(est.m2_z.mean))
