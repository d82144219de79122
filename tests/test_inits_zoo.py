"""The companion papers' initialization rules: the realized weights and branch scales equal
the rule (variances within sampling error, exact values where the rule is deterministic)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield import inits


@pytest.mark.parametrize("m, depth", [(2, 16), (3, 81)])
def test_fixup_variance_is_he_times_depth_to_minus_one_over_m_minus_one(m, depth):
    fan_in, fan_out = 256, 512
    w = np.asarray(
        inits.fixup(jax.random.key(0), (fan_in, fan_out), depth=depth, layers_per_branch=m),
        np.float64,
    )
    rule = 2.0 / fan_in * depth ** (-1.0 / (m - 1))  # 2/n/16 for m = 2, 2/n/9 for m = 3
    se = rule * math.sqrt(2.0 / w.size)  # sd of a Gaussian sample variance
    assert abs(w.var() - rule) < 4 * se
    # The sign-dropped variant L^(+1/(2m-2)) that some summaries print is far away.
    assert abs(w.var() - 2.0 / fan_in * depth ** (1.0 / (m - 1))) > 100 * se
    last = inits.fixup(jax.random.key(0), (8, 8), depth=depth, layers_per_branch=m, last=True)
    np.testing.assert_array_equal(np.asarray(last), 0.0)


def test_branch_scales():
    assert inits.branch_scale("rezero") == 0.0
    assert inits.branch_scale("skipinit") == 0.0
    assert inits.branch_scale("skipinit", depth=100, value=0.05) == 0.05
    with pytest.raises(ValueError, match=r"value must be < 1/sqrt\(depth\) = 0.1"):
        inits.branch_scale("skipinit", depth=100, value=0.1)
    with pytest.raises(ValueError, match="scheme must be one of"):
        inits.branch_scale("fixup")


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0)])
def test_risotto_block_maps_y_to_an_orthogonal_m_y(alpha, beta):
    n = 12
    with jax.enable_x64(True):
        w1, w2 = inits.risotto_type_c(
            jax.random.key(1), n, alpha=alpha, beta=beta, dtype=jnp.float64
        )
        full = np.asarray(inits.risotto_type_c(jax.random.key(1), n, dtype=jnp.float64)[1])
    relu = lambda u: np.maximum(u, 0.0)  # noqa: E731
    w1, w2 = np.asarray(w1), np.asarray(w2)
    ys = np.random.default_rng(0).standard_normal((3 * n, n))
    outs = []
    for y in ys:
        h = np.concatenate([relu(y), relu(-y)])
        out = relu(alpha * w2 @ relu(w1 @ h) + beta * h)
        outs.append(out[:n] - out[n:])
        # The output is again looks-linear: [relu(My); relu(-My)].
        np.testing.assert_allclose(out[:n] * out[n:], 0.0, atol=1e-12)
    # y -> My is linear (36 inputs determine M) and M is the orthogonal drawn from the key.
    m = np.linalg.lstsq(ys, np.array(outs), rcond=None)[0].T
    np.testing.assert_allclose(np.array(outs), ys @ m.T, atol=1e-10)
    mm = -full[:n, n:]  # the off-diagonal block is -M (alpha = 1)
    np.testing.assert_allclose(mm.T @ mm, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(m, mm, atol=1e-10)


def test_weight_norm_columns_have_norm_g_and_g_follows_the_rule():
    fan_in, fan_out, blocks = 300, 100, 8
    for position, gamma in (("first", 2.0), ("last", 1.0 / blocks), ("stem", 1.0)):
        assert inits.weight_norm_gamma(position, blocks) == gamma
        g, v = inits.weight_norm(jax.random.key(2), (fan_in, fan_out), gamma=gamma)
        w = np.asarray(g) * np.asarray(v) / np.linalg.norm(np.asarray(v), axis=0)
        expected = math.sqrt(gamma * fan_in / fan_out)
        np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(w, axis=0), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="position must be one of"):
        inits.weight_norm_gamma("middle")


def test_weight_norm_residual_block_grows_by_one_plus_one_over_b():
    # Arpit et al.: with γ = 2 then 1/B, a branch adds ||F(h)||² ≈ ||h||²/B uncorrelated with
    # h, so one block multiplies ||h||² by 1 + 1/B in expectation (n = 256, B = 4).
    n, blocks, draws = 256, 4, 400
    rng = np.random.default_rng(3)
    ratios = []
    for i in range(draws):
        k1, k2 = jax.random.split(jax.random.key(100 + i))
        g1, v1 = inits.weight_norm(k1, (n, n), gamma=inits.weight_norm_gamma("first"))
        g2, v2 = inits.weight_norm(k2, (n, n), gamma=inits.weight_norm_gamma("last", blocks))
        w1 = np.asarray(g1) * np.asarray(v1) / np.linalg.norm(np.asarray(v1), axis=0)
        w2 = np.asarray(g2) * np.asarray(v2) / np.linalg.norm(np.asarray(v2), axis=0)
        h = rng.standard_normal(n)
        out = h + np.maximum(h @ w1, 0.0) @ w2
        ratios.append(out @ out / (h @ h))
    ratios = np.array(ratios)
    se = ratios.std(ddof=1) / math.sqrt(draws)
    assert abs(ratios.mean() - (1 + 1 / blocks)) < 4 * se
    assert abs(ratios.mean() - (1 + 2 / blocks)) > 10 * se  # γ = 2/B would be caught


def test_fixup_rejects_a_one_layer_branch():
    with pytest.raises(ValueError, match="layers_per_branch must be >= 2"):
        inits.fixup(jax.random.key(0), (4, 4), depth=10, layers_per_branch=1)
