"""The init zoo inside the simulator: each scheme's branch rule as drawn by Monte-Carlo and as
propagated by the recursion, against values derived by hand from the rule; a planted error
(the wrong exponent, a forgotten branch scale, the wrong γ) must fail."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield import inits, montecarlo, recursions
from meanfield import theory as t
from meanfield.core.architecture import Block
from meanfield.core.sampling import standard_normal
from tests.helpers import assert_close

LINEAR_LAST = Block("relu", "none", True, shortcut=2, final_activation=False)


def _z(stat, prediction, layers=slice(1, None)):
    mean = np.asarray(stat.mean, float)[layers]
    se = np.asarray(stat.stderr, float)[layers]
    return float(np.max(np.abs((mean - np.asarray(prediction, float)[layers]) / se)))


# ------------------------------------------------------------------------------------------
# The rules as branch_init states them


def test_branch_rules_per_layer():
    n, L = 64, 16
    acts = ("relu", "relu", "relu")
    fix = inits.branch_init("fixup", width=n, depth=L, activations=acts)
    assert_close([float(v) * n for v in fix.var_w], [2 / 4, 2 / 4, 0.0], rtol=1e-6)  # L^(-1/2)
    assert (fix.law, fix.scale) == ("gaussian", 1.0)
    one = inits.branch_init("fixup", width=n, depth=L, activations=("relu",))
    assert [float(v) for v in one.var_w] == [0.0]  # k = 1: the only layer is the last
    skip = inits.branch_init("skipinit", width=n, depth=L, activations=acts[:1])
    assert (float(skip.var_w[0]) * n, skip.scale) == (2.0, 0.0)
    small = inits.branch_init("skipinit", width=n, depth=L, branch_scale=0.2)
    assert small.scale == 0.2
    with pytest.raises(ValueError, match=r"branch_scale must be < 1/sqrt\(depth\) = 0.25"):
        inits.branch_init("skipinit", width=n, depth=L, branch_scale=0.25)
    with pytest.raises(ValueError, match="branch_scale must be None for rezero"):
        inits.branch_init("rezero", width=n, depth=L, branch_scale=0.1)
    wn = inits.branch_init("weight_norm", width=n, depth=L, activations=("relu", "identity"))
    assert wn.law == "weight_norm"
    assert_close([float(v) * n for v in wn.var_w], [2.0, 1 / L], rtol=1e-6)
    with pytest.raises(ValueError, match="init must be one of"):
        inits.branch_init("lsuv", width=n, depth=L)
    with pytest.raises(ValueError, match="branch_scale must be a finite number >= 0"):
        inits.branch_init("he", width=n, depth=L, branch_scale=-1.0)


@pytest.mark.parametrize("law", ["gaussian", "orthogonal", "weight_norm"])
def test_branch_weight_follows_its_law(law):
    n, v = 128, 0.3 / 128
    rule = inits.BranchInit("test", law, (v,), 1.0)
    w = np.asarray(inits.branch_weight(jax.random.key(4), (n, n), rule, 0), np.float64)
    if law == "gaussian":
        se = v * math.sqrt(2.0 / w.size)
        assert abs(w.var() - v) < 4 * se and abs(w.mean()) < 4 * math.sqrt(v / w.size)
    elif law == "orthogonal":
        assert_close(w.T @ w, v * n * np.eye(n), rtol=0, atol=1e-5)
    else:  # every output unit's column has squared norm var_w · fan_in, exactly
        assert_close(np.sum(w**2, axis=0), np.full(n, v * n), rtol=1e-5)
        assert np.std(np.sum(w**2, axis=1)) > 1e-3  # rows are not normalized
    zero = inits.BranchInit("test", law, (0.0,), 1.0)
    if law != "orthogonal":
        z = inits.branch_weight(jax.random.key(4), (8, 8), zero, 0)
        assert np.all(np.asarray(z) == 0)


# ------------------------------------------------------------------------------------------
# Fixup: the network is the identity at init; only the last branch layer gets a gradient


@pytest.mark.parametrize("engine", ["explicit", "weightfree"])
def test_fixup_is_the_identity_and_its_gradient_is_the_rule(engine):
    n, L, B = 64, 8, 4
    est = montecarlo.simulate(
        LINEAR_LAST,
        key=jax.random.key(21),
        depth=L,
        width=n,
        init="fixup",
        networks=512,
        batch=B,
        engine=engine,
        warn=False,
    )
    assert_close(est.m2_z.mean, np.full(L + 1, est.m2_z.mean[0]), rtol=1e-5)
    assert_close(est.m2_dz.mean, np.full(L + 1, est.m2_dz.mean[-1]), rtol=1e-5)
    # dE/dW_1 = 0 (W_2 = 0 above it); dE/dW_2 = Σ_b δ_b a_b^T with a = relu(z W_1), E a² =
    # α_1/2 = L^(-1) and E δ² = 1: the mean over the two weights is ½ · L^(-1).
    right = np.full(L + 1, 0.5 / L)
    assert _z(est.var_dw, right) < 4.0
    # The exponent with the sign dropped, L^(+1), or the std (not the variance) scaled by
    # L^(-1/(2m-2)) would give ½ L^(-1/2):
    assert _z(est.var_dw, np.full(L + 1, 0.5 / math.sqrt(L))) > 4.0
    prof = recursions.profile(LINEAR_LAST, depth=L, width=n, init="fixup")
    assert_close(prof.m2_z, np.ones(L + 1), rtol=1e-6)
    assert_close(prof.m2_dz, np.ones(L + 1), rtol=1e-6)
    assert_close(prof.var_dw[1:], right[1:], rtol=1e-6)


def test_fixup_three_layer_branch_matches_the_rule():
    # Fixup's bottleneck, m = 3: W_1, W_2 get 2/n · L^(-1/2), W_3 = 0. Only W_3 has a
    # gradient, Σ_b δ_b a_b^T with E a² = (α_1/2)(α_2/2) = 1/L: the mean over three weights
    # is 1/(3L).
    block = Block("relu", "none", True, shortcut=3, final_activation=False)
    n, L = 64, 6
    est = montecarlo.simulate(
        block, key=jax.random.key(2), depth=L, width=n, init="fixup", networks=256, batch=4
    )
    prof = recursions.profile(block, depth=L, width=n, init="fixup")
    right = np.full(L + 1, 1 / (3 * L))
    assert _z(est.var_dw, right) < 4.0
    assert_close(prof.var_dw[1:], right[1:], rtol=1e-6)
    assert _z(est.var_dw, recursions.profile(block, depth=L, width=n, init="he").var_dw) > 4.0


def test_fixup_with_a_relu_after_the_zero_layer_is_a_dead_branch():
    # relu(0 · a) has relu'(0) = 0, so no gradient reaches any weight of the branch: Fixup's
    # zero layer must be the branch's last operation (its blocks put the ReLU after the sum).
    block = Block("relu", "none", True, shortcut=3)
    n, L = 64, 6
    est = montecarlo.simulate(
        block, key=jax.random.key(2), depth=L, width=n, init="fixup", networks=16, batch=4
    )
    assert np.all(np.asarray(est.var_dw.mean)[1:] == 0.0)
    prof = recursions.profile(block, depth=L, width=n, init="fixup")
    assert np.all(np.asarray(prof.var_dw)[1:] == 0.0)
    assert_close(prof.m2_dz, np.ones(L + 1), rtol=1e-6)


# ------------------------------------------------------------------------------------------
# SkipInit and ReZero: the branch scale


@pytest.mark.parametrize("init", ["skipinit", "rezero"])
def test_zero_branch_scale_is_the_identity_with_no_weight_gradient(init):
    block = Block("relu", "bn_pre", True, shortcut=2)
    n, L = 32, 5
    est = montecarlo.simulate(
        block, key=jax.random.key(6), depth=L, width=n, init=init, networks=16, batch=4
    )
    assert_close(est.m2_z.mean, np.full(L + 1, est.m2_z.mean[0]), rtol=1e-5)
    assert_close(est.m2_dz.mean, np.full(L + 1, est.m2_dz.mean[-1]), rtol=1e-5)
    assert np.all(np.asarray(est.var_dw.mean)[1:] == 0.0)
    prof = recursions.profile(block, depth=L, width=n, init=init)
    assert_close(prof.m2_z, np.ones(L + 1), rtol=1e-6)
    assert np.all(np.asarray(prof.var_dw)[1:] == 0.0)


def _limit_in_width(coarse, fine, n_coarse, n_fine):
    """The n -> ∞ limit of a + b/n through two independent estimates at two widths, with its
    standard error: a = (n_f y_f - n_c y_c) / (n_f - n_c)."""
    d = n_fine - n_coarse
    mean = (n_fine * np.asarray(fine.mean, float) - n_coarse * np.asarray(coarse.mean, float)) / d
    se = np.hypot(
        n_fine * np.asarray(fine.stderr, float), n_coarse * np.asarray(coarse.stderr, float)
    )
    return montecarlo.Stat(mean, se / d)


def test_small_skipinit_scale_matches_the_recursion_and_is_not_ignored():
    # ReLU without BN: the backward has a finite-width excess ~1/n, about 0.5% at n = 1024,
    # which is one to two standard errors of 128 networks, so a 4-SE test at one width fails
    # for about half the seeds. The a + b/n limit from n = 256 and 1024 removes it (its
    # standard error is ~1.5x that at n = 1024 alone).
    block = Block("relu", "none", True)
    L, beta, widths = 16, 0.2, (256, 1024)
    keys = jax.random.split(jax.random.key(9), len(widths))
    est = [
        montecarlo.simulate(
            block,
            key=key,
            depth=L,
            width=n,
            init="skipinit",
            branch_scale=beta,
            networks=128,
            batch=4,
            warn=False,
        )
        for key, n in zip(keys, widths, strict=True)
    ]
    prof = recursions.profile(block, depth=L, width=widths[1], init="skipinit", branch_scale=beta)
    limit = {
        name: _limit_in_width(getattr(est[0], name), getattr(est[1], name), *widths)
        for name in ("mean_z", "m2_z", "m2_dz", "var_dw")
    }
    for name, stat in limit.items():
        assert _z(stat, getattr(prof, name)) < 4.0, name
    # The excess is resolved, so the agreement above is not for want of precision: n = 256
    # alone is rejected in the input-side gradient (4-8 SE over seeds).
    assert _z(est[0].m2_dz, prof.m2_dz) > 4.0
    # β enters squared in the weight gradients: forgetting it (He, β = 1) fails, and so does
    # a β that enters linearly (the recursion with sqrt(β) in its place).
    he = recursions.profile(block, depth=L, width=widths[1], var_w=2 / widths[1])
    assert _z(limit["var_dw"], he.var_dw) > 4.0
    linear = recursions.profile(
        block, depth=L, width=widths[1], var_w=2 / widths[1], branch_scale=beta**0.5
    )
    assert _z(limit["var_dw"], linear.var_dw) > 4.0
    assert _z(limit["m2_z"], linear.m2_z) > 4.0
    # By hand, one block from x ~ N(0, I): q_1 = 1 + β² α/2 with α = 2.
    assert float(prof.m2_z[1]) == pytest.approx(1 + beta**2, rel=1e-6)


# ------------------------------------------------------------------------------------------
# Arpit et al.: weight-normalized branches grow by exactly (1 + 1/B) per block


def test_weight_norm_grows_by_one_plus_one_over_b_forward_and_backward():
    n, L, B = 128, 8, 4
    est = montecarlo.simulate(
        LINEAR_LAST,
        key=jax.random.key(13),
        depth=L,
        width=n,
        init="weight_norm",
        networks=512,
        batch=B,
        warn=False,
    )
    layers = np.arange(L + 1)
    forward = t.weight_norm_forward_growth(layers, blocks=L)
    backward = t.weight_norm_backward_growth(layers, L, blocks=L)
    assert _z(est.m2_z, forward) < 4.0
    assert _z(est.m2_dz, backward, slice(0, L)) < 4.0
    # The recursion gives the same, to rounding.
    prof = recursions.profile(LINEAR_LAST, depth=L, width=n, init="weight_norm")
    assert_close(prof.m2_z, forward, rtol=1e-5)
    assert_close(prof.m2_dz, backward, rtol=1e-5)
    # γ = 2/B for the last layer (the total depth mistaken for half the stage) is rejected.
    wrong = (1 + 2 / L) ** layers
    assert _z(est.m2_z, wrong) > 4.0


def test_weight_norm_needs_the_explicit_engine_and_plain_zero_branches_are_refused():
    kw = dict(key=jax.random.key(0), depth=3, width=16, networks=4, batch=2)
    message = "needs Gaussian or orthogonal weights; init='weight_norm'"
    with pytest.raises(ValueError, match=message):
        montecarlo.simulate(LINEAR_LAST, init="weight_norm", engine="weightfree", **kw)
    plain = Block("relu", "none", False, shortcut=2)
    for init in ("fixup", "rezero"):
        with pytest.raises(ValueError, match=f"init='{init}' starts every branch at zero"):
            montecarlo.simulate(plain, init=init, **kw)
        with pytest.raises(ValueError, match="plain network"):
            recursions.profile(plain, depth=3, width=16, init=init)


# ------------------------------------------------------------------------------------------
# RISOTTO: its own network, exact statement instead of a recursion


def _risotto_per_network(depth=30, width=32, batch=4, networks=8, seed=0, engine="explicit"):
    one = functools.partial(
        montecarlo.network_statistics,
        inits.RISOTTO_BLOCK,
        depth,
        width,
        batch,
        init=("risotto", 1.0, 1.0),
        engine=engine,
    )
    keys = jax.random.split(jax.random.key(seed), networks)
    out = jax.jit(jax.vmap(one, in_axes=(None, 0)))(jnp.float32(1.0), keys)
    return keys, {k: np.asarray(v, np.float64) for k, v in out.items()}


@pytest.mark.parametrize("engine", ["explicit", "weightfree"])
def test_risotto_signal_and_its_gradient_are_flat_in_every_network(engine):
    _, out = _risotto_per_network(engine=engine)
    for name in ("log_m2_z", "log_m2_dz"):
        drift = np.abs(out[name] - out[name][:, :1])
        assert drift.max() < 1e-5, (name, drift.max())  # float32 rounding over 30 blocks
    # Not flat because nothing moves: the weights get gradients at every layer.
    assert np.all(np.isfinite(out["log_var_dw"][:, 1:]))
    assert np.all(out["log_var_dw"][:, 1:] > np.log(1e-3))


def _risotto_reference(key, depth, n, batch):
    """log m2 of y^l and of dE/dy^l (l = 0..L) and log var_dw (l = 1..L) of one RISOTTO
    network, written out plainly: E as a function of y^l (lifted to [relu(y); relu(-y)] and
    run through the later blocks) differentiated by jax.grad, and jax.grad in the weights."""
    key_x, key_g, key_w = jax.random.split(key, 3)
    y0 = standard_normal(key_x, (batch, n))
    g = standard_normal(key_g, (batch, n))
    ws = [inits.risotto_type_c(jax.random.fold_in(key_w, l), n) for l in range(1, depth + 1)]

    def signal_out(y, blocks):
        h = jax.nn.relu(jnp.concatenate([y, -y], axis=-1))
        for w1, w2 in blocks:
            h = jax.nn.relu(jax.nn.relu(h @ w1.T) @ w2.T + h)
        return h[:, :n] - h[:, n:]

    ys = [y0]
    for w in ws:
        ys.append(signal_out(ys[-1], [w]))
    m2_z = [np.mean(np.asarray(y) ** 2) for y in ys]
    m2_dz = []
    for l in range(depth + 1):
        dy = jax.grad(lambda y, l=l: jnp.sum(g * signal_out(y, ws[l:])))(ys[l])
        m2_dz.append(np.mean(np.asarray(dy) ** 2))
    dws = jax.grad(lambda blocks: jnp.sum(g * signal_out(y0, blocks)))(ws)
    var_dw = [
        0.5 * sum(float(np.sum(np.asarray(d) ** 2)) for d in pair) / ((2 * n) ** 2 * batch)
        for pair in dws
    ]
    return np.log(m2_z), np.log(m2_dz), np.log(var_dw)


def test_risotto_statistics_equal_direct_autodiff_of_the_same_network():
    depth, n, batch = 6, 16, 4
    keys, out = _risotto_per_network(depth=depth, width=n, batch=batch, networks=3)
    for r, key in enumerate(keys):
        m2_z, m2_dz, var_dw = _risotto_reference(key, depth, n, batch)
        np.testing.assert_allclose(out["log_m2_z"][r], m2_z, atol=1e-5)
        np.testing.assert_allclose(out["log_m2_dz"][r], m2_dz, atol=1e-5)
        np.testing.assert_allclose(out["log_var_dw"][r, 1:], var_dw, atol=1e-4)


def test_risotto_weightfree_weight_gradients_match_the_dense_network():
    """The weight-free RISOTTO (structured W_1, W_2; M^T applied by weightfree_orthogonal)
    against the dense matrices: per-layer mean and spread of var_dw over networks."""
    from tests.test_weightfree import _max_z

    def per_network(engine, seed):
        _, out = _risotto_per_network(
            depth=6, width=16, batch=4, networks=2000, seed=seed, engine=engine
        )
        return {"var_dw": np.exp(out["log_var_dw"][:, 1:]), "m2_z": np.exp(out["log_m2_z"])}

    assert _max_z(per_network("explicit", 1), per_network("weightfree", 2)) < 4.5


def test_risotto_without_the_minus_identity_is_not_flat(monkeypatch):
    real = inits.risotto_type_c
    monkeypatch.setattr(
        inits, "risotto_type_c", lambda key, n, dtype: real(key, n, beta=0.0, dtype=dtype)
    )
    _, out = _risotto_per_network(depth=10)
    assert np.abs(out["log_m2_z"] - out["log_m2_z"][:, :1]).max() > 0.5


def test_risotto_simulate_and_its_errors():
    kw = dict(init="risotto", key=jax.random.key(0), depth=5, width=16, networks=4, batch=4)
    est = montecarlo.simulate(inits.RISOTTO_BLOCK, **kw)
    assert_close(est.m2_z.mean, np.full(6, est.m2_z.mean[0]), rtol=1e-5)
    assert_close(est.m2_dz.mean, np.full(6, est.m2_dz.mean[0]), rtol=1e-5)
    with pytest.raises(ValueError, match="init='risotto' simulates RISOTTO's type-C network"):
        montecarlo.simulate(Block("relu", "none", True), **kw)
    with pytest.raises(ValueError, match="needs width >= 2 \\* batch"):
        montecarlo.simulate(inits.RISOTTO_BLOCK, engine="weightfree", **{**kw, "batch": 9})
