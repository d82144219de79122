"""Dynamical isometry: RISOTTO's Jacobian is orthogonal to rounding at finite width, Fixup and
SkipInit (α = 0) give the identity, He init spreads the spectrum more with depth; a broken
RISOTTO block is caught; Lanczos agrees with the exact SVD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield
from meanfield import inits
from meanfield.analysis import jacobian as J
from meanfield.core.sampling import standard_normal


def _sv(init, **kw):
    args = dict(key=jax.random.key(0), depth=12, width=16, networks=6) | kw
    return J.singular_values(init, **args)


def test_risotto_is_an_exact_isometry_at_finite_width():
    sv = _sv("risotto", depth=30)
    assert sv.shape == (6, 16)
    # float32 products of 30 orthogonal maps: |σ - 1| is rounding, ~1e-6.
    assert np.max(np.abs(sv - 1.0)) < 1e-5
    assert np.max(J.spectrum_stats(sv).max_abs_log) < 1e-5


def test_a_broken_risotto_block_is_not_an_isometry(monkeypatch):
    # Drop the -βI of W_2's diagonal blocks: the skip path then adds h on top of My.
    real = inits.risotto_type_c

    def wrong(key, n, *, alpha=1.0, beta=1.0, dtype=jnp.float32):
        return real(key, n, alpha=alpha, beta=0.0, dtype=dtype)

    monkeypatch.setattr(inits, "risotto_type_c", wrong)
    sv = _sv("risotto", depth=10)
    assert np.max(J.spectrum_stats(sv).max_abs_log) > 0.5


@pytest.mark.parametrize("init", ["fixup", "skipinit"])
def test_zero_branches_give_the_identity(init):
    sv = _sv(init)
    np.testing.assert_array_equal(sv, np.ones_like(sv))


def test_he_spreads_with_depth_and_depth_scaled_and_small_skipinit_less():
    sd = {L: J.spectrum_stats(_sv("he", depth=L)).sd_log.mean() for L in (2, 16)}
    assert sd[16] > 3 * sd[2] > 0
    deep = J.spectrum_stats(_sv("he", depth=16)).sd_log.mean()
    scaled = J.spectrum_stats(_sv("depth_scaled", depth=16)).sd_log.mean()
    small = J.spectrum_stats(_sv("skipinit", depth=16, alpha=0.05)).sd_log.mean()
    assert scaled < deep / 3 and 0 < small < deep / 3


def test_bn_jacobian_holds_the_batch_statistics_fixed():
    # Linear check: with BN statistics fixed, one bn_pre block is x -> x + relu(BN(x)) W, whose
    # Jacobian at x is I + diag(relu'(BN(x)) / σ) W (row-vector convention: J = I + D W).
    key = jax.random.key(3)
    kx, kw = jax.random.split(key)
    n, batch = 8, 5
    x = jax.random.normal(kx, (batch, n))
    f = J.network("he", key=kw, depth=1, width=n, norm="bn_pre")
    jac = jax.jacfwd(lambda x0: f(x.at[0].set(x0))[0])(x[0])
    w = jnp.sqrt(2.0 / n) * standard_normal(jax.random.fold_in(kw, 1), (n, n))
    mean, std = x.mean(0), x.std(0)
    gate = ((x[0] - mean) / std > 0).astype(jnp.float32)
    expected = jnp.eye(n) + (w * (gate / std)[:, None]).T
    np.testing.assert_allclose(np.asarray(jac), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_lanczos_extremes_match_the_exact_svd():
    sv = J.singular_values("depth_scaled", key=jax.random.key(0), depth=8, width=32, networks=1)
    # The Lanczos helper draws the same first network: split(key, 1)[0].
    top, bottom = J.extreme_singular_values(
        "depth_scaled", key=jax.random.split(jax.random.key(0), 1)[0], depth=8, width=32, steps=32
    )
    assert top == pytest.approx(float(sv[0, 0]), rel=1e-4)
    assert bottom == pytest.approx(float(sv[0, -1]), rel=1e-3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(init="xavier"), "init must be one of"),
        (dict(init="fixup", norm="bn_post"), "give a block for init 'fixup' with BN"),
        (dict(init="risotto", norm="bn_post"), "risotto' is its own normalization-free block"),
        (dict(init="he", norm="bn_post", batch=1), "batch must be >= 2 with BN"),
        (dict(init="he", width=2048), "above MAX_EXACT_WIDTH"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    init = kwargs.pop("init")
    with pytest.raises(ValueError, match=message):
        _sv(init, **kwargs)


def test_keys_must_be_typed():
    with pytest.raises(ValueError, match="typed PRNG key"):
        J.singular_values("he", key=0, depth=2, width=4, networks=2)
    with pytest.raises(ValueError, match="typed PRNG key"):
        J.extreme_singular_values("he", key=jax.random.PRNGKey(0), depth=2, width=4)


def test_weight_norm_and_any_block_follow_the_shared_branch_rules():
    # Arpit et al.'s block at γ = 2, 1/L: E||J u||² = (1 + 1/L)^L ||u||² (forward growth of a
    # linear-in-z perturbation, mean field), so the mean of σ² is (1 + 1/L)^L = 2.566 at L = 8,
    # not its limit e = 2.718 (nor the He value): within a few standard errors over networks.
    sv = _sv("weight_norm", depth=8, width=64, networks=16)
    per_network = np.mean(np.asarray(sv, np.float64) ** 2, axis=1)  # ||J||_F² / n
    mean, se = per_network.mean(), per_network.std(ddof=1) / np.sqrt(len(per_network))
    assert abs(mean - (1 + 1 / 8) ** 8) < 4 * se, (mean, se)
    assert abs(mean - np.e) > 4 * se, (mean, se)  # the limit is told apart
    # Fixup on its own block is exactly the identity; on a block with a final ReLU as well.
    for block in (None, meanfield.Block("relu", "none", True, shortcut=3)):
        sv = _sv("fixup", depth=4, width=16, networks=2, block=block)
        np.testing.assert_array_equal(np.asarray(sv), 1.0)
