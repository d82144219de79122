"""The weight-free engine: exact conditional sampling of U = A W and W^T D.

Checked three ways: the joint moments of (U, D W^T) equal those of an explicit Gaussian W even
when A A^T is singular; whole networks match the explicit engine in mean and in spread across
networks for all 12 blocks; and dropping the projection P (a planted error) is caught.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield
from meanfield import inits, montecarlo
from meanfield.core.architecture import Block

HIGHEST = jax.lax.Precision.HIGHEST


def _singular_inputs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 6))
    a[0] = 0.0  # an input that a ReLU zeroed entirely
    a[2] = a[1]  # two identical inputs: rank(A A^T) = 2 of 4
    d = rng.normal(size=(4, 6))
    return jnp.asarray(a, jnp.float32), jnp.asarray(d, jnp.float32)


def test_joint_moments_with_singular_inputs_match_explicit_weights():
    a, d = _singular_inputs()
    std = jnp.float32(0.7)
    draws = 40_000

    def sample(key):
        u, vjp = jax.vjp(lambda x: montecarlo.weightfree_linear(x, key, std, HIGHEST), a)
        return u, vjp(d)[0]

    u, g = jax.jit(jax.vmap(sample))(jax.random.split(jax.random.key(0), draws))
    u, g = np.asarray(u, np.float64), np.asarray(g, np.float64)
    s2 = float(std) ** 2
    # Explicit W (n x n, i.i.d. N(0, s2)), U = A W, G = D W^T:
    #   E[U_bj G_ci] = s2 A_bi D_cj,   E[G_bi G_ck] = s2 δ_ik (D D^T)_bc,
    #   E[U_bj U_ck] = s2 δ_jk (A A^T)_bc.
    checks = [
        (np.einsum("rbj,rci->rbjci", u, g), s2 * np.einsum("bi,cj->bjci", a, d)),
        (
            np.einsum("rbi,rck->rbick", g, g),
            s2 * np.einsum("ik,bc->bick", np.eye(6), np.asarray(d) @ np.asarray(d).T),
        ),
        (
            np.einsum("rbj,rck->rbjck", u, u),
            s2 * np.einsum("jk,bc->bjck", np.eye(6), np.asarray(a) @ np.asarray(a).T),
        ),
    ]
    for samples, expected in checks:
        mean = samples.mean(0)
        se = samples.std(0, ddof=1) / np.sqrt(draws)
        exact = se == 0  # e.g. products with the all-zero input: exactly 0 in every draw
        assert np.all(np.abs(mean[exact] - expected[exact]) < 1e-6)
        z = np.abs(mean[~exact] - expected[~exact]) / se[~exact]
        # Hundreds of entries: max |z| of that many standard normals exceeds 5 with p < 1e-3.
        assert z.max() < 5.0, z.max()
    # The zero input gives a zero output; identical inputs give identical outputs.
    assert np.all(u[:, 0] == 0) and np.allclose(u[:, 1], u[:, 2], atol=1e-5)


def test_orthogonal_layer_is_exact_in_every_draw_and_in_law():
    """Haar R: U = gain·A R and G = gain·D R^T keep U U^T = gain² A A^T, G G^T = gain² D D^T
    and G A^T = D U^T in every draw; their joint moments up to fourth order equal those of
    explicitly drawn Haar matrices (a two-sample comparison)."""
    a, d = _singular_inputs()
    n = a.shape[1] * 2  # room for the backward's fresh frame: n >= 2B
    a = jnp.concatenate([a, a[:, ::-1]], axis=1)
    d = jnp.concatenate([d, -d], axis=1)
    gain = jnp.float32(1.3)
    draws = 40_000

    def weightfree(key):
        u, vjp = jax.vjp(lambda x: montecarlo.weightfree_orthogonal(x, key, gain, HIGHEST), a)
        return u, vjp(d)[0]

    def explicit(key):
        r = gain * inits.orthogonal(key, (n, n))
        u, vjp = jax.vjp(lambda x: jnp.matmul(x, r, precision=HIGHEST), a)
        return u, vjp(d)[0]

    keys = jax.random.split(jax.random.key(0), draws)
    u, g = (np.asarray(x, np.float64) for x in jax.jit(jax.vmap(weightfree))(keys))
    u2, g2 = (np.asarray(x, np.float64) for x in jax.jit(jax.vmap(explicit))(keys))
    a64, d64, s2 = np.asarray(a, np.float64), np.asarray(d, np.float64), float(gain) ** 2
    assert np.abs(np.einsum("rbi,rci->rbc", u, u) - s2 * a64 @ a64.T).max() < 1e-3
    assert np.abs(np.einsum("rbi,rci->rbc", g, g) - s2 * d64 @ d64.T).max() < 1e-3
    assert np.abs(np.einsum("rbi,ci->rbc", g, a64) - np.einsum("bi,rci->rbc", d64, u)).max() < 1e-3
    pairs = [
        (np.einsum("rbj,rci->rbjci", u, g), np.einsum("rbj,rci->rbjci", u2, g2)),
        (np.einsum("rbi,rck->rbick", g, g), np.einsum("rbi,rck->rbick", g2, g2)),
        (np.einsum("rbj,rci->rbjci", u**2, g**2), np.einsum("rbj,rci->rbjci", u2**2, g2**2)),
    ]
    for x, y in pairs:
        se = np.sqrt((x.var(0) + y.var(0)) / draws)
        ok = se > 1e-6  # entries exactly 0 in both (the zero input) carry no test
        assert np.all(np.abs(x.mean(0)[~ok] - y.mean(0)[~ok]) < 1e-5)
        z = np.abs(x.mean(0) - y.mean(0))[ok] / se[ok]
        # Thousands of entries: the max |z| of that many standard normals exceeds 5.5 with
        # p < 1e-3 (the entries are correlated, which makes the max smaller).
        assert z.max() < 5.5, z.max()


def _per_network(block, engine, seed, *, depth=6, width=32, batch=8, networks=2000, init=None):
    one = functools.partial(
        montecarlo.network_statistics, block, depth, width, batch, engine=engine, init=init
    )
    out = jax.jit(jax.vmap(one, in_axes=(None, 0)))(
        jnp.float32(1.5 / width), jax.random.split(jax.random.key(seed), networks)
    )
    return {
        k: np.exp(np.asarray(out[f"log_{k}"], np.float64))[:, 1:]
        for k in ("m2_z", "m2_dz", "var_dw")
    }


def _max_z(a, b):
    """Largest |z| of the difference of per-layer means and of per-layer variances. A value
    that is the same in every network of both (to float32 rounding, e.g. m2_z of a BN block
    with orthogonal weights, exactly 1) has no sampling error: there the two means must agree
    to 1e-4, else the result is infinite."""
    worst = 0.0
    for k in a:
        x, y = a[k], b[k]
        r = x.shape[0]
        scale = np.abs(x.mean(0)) + np.abs(y.mean(0))
        fixed = (x.std(0) < 1e-5 * scale) & (y.std(0) < 1e-5 * scale)
        if np.any(np.abs(x.mean(0) - y.mean(0))[fixed] > 1e-4 * scale[fixed]):
            return math.inf
        x, y = x[:, ~fixed], y[:, ~fixed]
        if x.shape[1] == 0:
            continue
        zm = (x.mean(0) - y.mean(0)) / np.sqrt((x.var(0, ddof=1) + y.var(0, ddof=1)) / r)

        def var_and_se(v):
            c = v - v.mean(0)
            s2 = v.var(0, ddof=1)
            return s2, np.sqrt(np.maximum((c**4).mean(0) - s2**2, 0.0) / v.shape[0])

        (vx, sx), (vy, sy) = var_and_se(x), var_and_se(y)
        zs = (vx - vy) / np.sqrt(sx**2 + sy**2)
        worst = max(worst, float(np.max(np.abs(zm))), float(np.max(np.abs(zs))))
    return worst


@pytest.mark.parametrize("block", meanfield.all_blocks(), ids=lambda b: b.name)
def test_weightfree_matches_explicit_in_mean_and_spread(block):
    explicit = _per_network(block, "explicit", 1)
    weightfree = _per_network(block, "weightfree", 2)
    # 36 comparisons (3 statistics x 6 layers x mean and variance): 4.5 standard errors.
    assert _max_z(explicit, weightfree) < 4.5


ORTHOGONAL = ("orthogonal", 1.0, 1.0)


@pytest.mark.parametrize(
    "name", ["relu-none-residual", "identity-bn_post-plain", "relu-bn_pre-residual"]
)
def test_weightfree_orthogonal_matches_explicit_in_mean_and_spread(name):
    block = Block.from_name(name)
    explicit = _per_network(block, "explicit", 1, init=ORTHOGONAL)
    weightfree = _per_network(block, "weightfree", 2, init=ORTHOGONAL)
    assert _max_z(explicit, weightfree) < 4.5


def _without_projection(d, u, x, a, pinv, precision):
    """The planted error: D U^T (A A^T)^+ A + X, the fresh part not projected off A's rows."""
    return x + jnp.matmul(jnp.matmul(jnp.matmul(d, u.T), pinv), a)


@pytest.mark.parametrize("name", ["identity-none-plain", "relu-bn_pre-residual"])
def test_dropping_the_projection_is_caught(name, monkeypatch):
    block = Block.from_name(name)
    explicit = _per_network(block, "explicit", 1)
    monkeypatch.setattr(montecarlo.weightfree, "_conditional_cotangent", _without_projection)
    planted = _per_network(block, "weightfree", 2)
    assert _max_z(explicit, planted) > 10


def test_engine_choice_and_errors():
    block = Block("relu", "none", True)
    kw = dict(key=jax.random.key(0), depth=3, width=16, networks=4)
    # auto = weight-free when 4B <= n: identical to asking for it by name.
    auto = montecarlo.simulate(block, var_w=0.1, batch=4, **kw)
    named = montecarlo.simulate(block, var_w=0.1, batch=4, engine="weightfree", **kw)
    np.testing.assert_array_equal(auto.m2_dz.mean, named.m2_dz.mean)
    explicit = montecarlo.simulate(block, var_w=0.1, batch=4, engine="explicit", **kw)
    assert not np.array_equal(auto.m2_dz.mean, explicit.m2_dz.mean)
    big_batch = montecarlo.simulate(block, var_w=0.1, batch=8, **kw)
    same = montecarlo.simulate(block, var_w=0.1, batch=8, engine="explicit", **kw)
    np.testing.assert_array_equal(big_batch.m2_dz.mean, same.m2_dz.mean)
    with pytest.raises(ValueError, match="engine must be one of"):
        montecarlo.simulate(block, var_w=0.1, batch=4, engine="fast", **kw)
    with pytest.raises(ValueError, match="needs width >= 2 \\* batch"):
        montecarlo.simulate(block, init="orthogonal", batch=9, engine="weightfree", **kw)


def _flip_eigenvector_signs(eigh):
    """eigh with every other eigenvector negated: as valid a decomposition as eigh's own."""

    def flipped(k, *args, **kwargs):
        lam, vec = eigh(k, *args, **kwargs)
        signs = jnp.where(jnp.arange(k.shape[-1]) % 2 == 0, -1.0, 1.0).astype(vec.dtype)
        return lam, vec * signs[None, :]

    return flipped


@pytest.mark.parametrize("layer", ["linear", "orthogonal"])
def test_layer_numbers_depend_on_the_gram_matrix_not_on_its_eigenvectors(layer, monkeypatch):
    """eigh fixes eigenvectors only up to sign (and rotation within repeated eigenvalues), and
    batched and unbatched calls choose differently, i.e. networks in chunks of different sizes
    did. For the same key the layer must give the same U and D W^T for any valid choice."""
    a, d = _singular_inputs()
    a = jnp.concatenate([a, a[:, ::-1]], axis=1)  # n = 12 >= 2B
    d = jnp.concatenate([d, -d], axis=1)
    fn = {"linear": montecarlo.weightfree_linear, "orthogonal": montecarlo.weightfree_orthogonal}
    key = jax.random.key(5)

    def both():
        u, vjp = jax.vjp(lambda x: fn[layer](x, key, jnp.float32(0.7), HIGHEST), a)
        return np.asarray(u), np.asarray(vjp(d)[0])

    u, g = both()
    monkeypatch.setattr(jnp.linalg, "eigh", _flip_eigenvector_signs(jnp.linalg.eigh))
    u2, g2 = both()
    scale = np.abs(u).max(), np.abs(g).max()
    assert np.abs(u2 - u).max() < 1e-5 * scale[0] and np.abs(g2 - g).max() < 1e-5 * scale[1]


def test_rank_removed_beyond_the_structure_is_counted():
    a, _ = _singular_inputs()  # a zero input (structural) and a duplicated one (not)
    gram = a @ a.T
    _, rank = montecarlo.weightfree.weightfree_linear_with_gram(
        a, gram, jax.random.key(0), jnp.float32(1), HIGHEST
    )
    assert float(rank) == 2
    assert float(montecarlo.weightfree.structural_rank(a, centred=False)) == 3
    # BN output: rows centred, rank B - 1 by structure, and B - 1 kept.
    x = jax.random.normal(jax.random.key(1), (8, 32))
    bn = (x - x.mean(0, keepdims=True)) / x.std(0, keepdims=True)
    _, rank = montecarlo.weightfree.weightfree_linear_with_gram(
        bn, bn @ bn.T, jax.random.key(0), 1.0, HIGHEST
    )
    assert float(rank) == float(montecarlo.weightfree.structural_rank(bn, centred=True)) == 7
    # More inputs than units (weight-free forced): rank n by structure.
    assert float(montecarlo.weightfree.structural_rank(x.T[:16, :8], centred=False)) == 8


def test_batch_larger_than_width_is_structure_not_a_lost_rank():
    # engine="weightfree" with B > n: A A^T has rank n < B, which is not reported (warnings
    # are errors in the tests).
    est = montecarlo.simulate(
        Block("relu", "none", True),
        key=jax.random.key(0),
        depth=3,
        width=8,
        var_w=0.1,
        networks=4,
        batch=16,
        engine="weightfree",
    )
    assert est.rank_deficit.shape == (4,) and not est.rank_deficit.any()
    assert np.all(np.isfinite(est.log10_var_dw.mean[1:]))
