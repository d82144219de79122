"""The Hessian at the zero initialization against its closed forms (Li et al. 2016): shortcut 2
has eigenvalues ±2σ_j(C) at every depth, shortcut 3 has none, shortcut 1 has the gradient -2Cᵀ
and a Hessian whose spread grows with depth; Lanczos agrees with the exact spectrum."""

import math

import jax
import numpy as np
import pytest

from meanfield.analysis import hessian as h


@pytest.fixture(scope="module")
def data():
    return h.whitened_data(4, 1000, seed=1)


@pytest.mark.parametrize("activation", h.ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 3])
def test_shortcut2_spectrum_is_the_closed_form(data, depth, activation):
    x, y = data
    spec = h.hessian_at_zero(x, y, depth=depth, shortcut=2, activation=activation)
    # Independent: singular values of C = E[x (y - x)^T] from its definition.
    c = x.T @ (y - x) / len(x)
    s = np.linalg.svd(c, compute_uv=False)
    expected = np.sort(np.repeat(np.concatenate([-2 * s, 2 * s]), 4 * depth))
    np.testing.assert_allclose(spec.eigenvalues, expected, rtol=1e-9, atol=1e-12)
    assert spec.gradient_norm < 1e-12  # a saddle
    assert spec.condition == pytest.approx(s[0] / s[-1], rel=1e-9)  # the same at every depth


def test_shortcut3_hessian_vanishes(data):
    x, y = data
    for depth in (1, 4):
        spec = h.hessian_at_zero(x, y, depth=depth, shortcut=3)
        assert spec.max_abs == 0.0 and spec.gradient_norm == 0.0 and spec.zero_fraction == 1.0
        assert math.isnan(spec.condition)


def test_shortcut1_gradient_and_first_hessian(data):
    x, y = data
    c = x.T @ (y - x) / len(x)
    for depth in (1, 5):
        spec = h.hessian_at_zero(x, y, depth=depth, shortcut=1)
        # dE/dW_l = -2 Cᵀ for every unit at W = 0.
        assert spec.gradient_norm == pytest.approx(2 * np.linalg.norm(c) * math.sqrt(depth))
    # One unit: E||y - (I + W) x||² has Hessian 2 Σ_xx ⊗ I = 2 I for whitened x.
    one = h.hessian_at_zero(x, y, depth=1, shortcut=1)
    np.testing.assert_allclose(one.eigenvalues, 2.0, rtol=1e-9)


def test_shortcut1_spread_grows_with_depth(data):
    x, y = data
    tops = [h.hessian_at_zero(x, y, depth=L, shortcut=1).max_abs for L in (1, 2, 4, 8)]
    assert all(b > 1.8 * a for a, b in zip(tops, tops[1:], strict=False)), tops  # ~ L
    conds = [h.hessian_at_zero(x, y, depth=L, shortcut=1).condition for L in (1, 8)]
    assert conds[1] > 50 * conds[0]


@pytest.mark.parametrize("shortcut", [1, 2])
def test_lanczos_matches_the_exact_spectrum(data, shortcut):
    x, y = data
    exact = h.hessian_at_zero(x, y, depth=6, shortcut=shortcut)
    approx = h.lanczos_spectrum(x, y, depth=6, shortcut=shortcut, steps=60, key=jax.random.key(0))
    assert approx.max_abs == pytest.approx(exact.max_abs, rel=1e-8)
    assert approx.gradient_norm == pytest.approx(exact.gradient_norm, rel=1e-10)
    if shortcut == 2:  # 4 distinct |λ|: Lanczos on H² is exact in 4 steps
        assert approx.min_abs == pytest.approx(exact.min_abs, rel=1e-6)
        assert approx.condition == pytest.approx(exact.condition, rel=1e-6)


def test_spectrum_switches_to_lanczos_above_the_exact_limit():
    x, y = h.whitened_data(8, 200)
    spec = h.spectrum(x, y, depth=40, shortcut=2, steps=20, key=jax.random.key(0))  # P = 5120
    assert spec.method == "lanczos" and spec.parameters == 5120
    s = np.linalg.svd(h.data_correlation(x, y), compute_uv=False)
    assert spec.condition == pytest.approx(s[0] / s[-1], rel=1e-6)
    # Converged, the result does not depend on the Lanczos starts drawn from the key.
    other = h.spectrum(x, y, depth=40, shortcut=2, steps=20, key=jax.random.key(7))
    assert other.condition == pytest.approx(spec.condition, rel=1e-6)
    assert not np.array_equal(other.eigenvalues, spec.eigenvalues)  # another start, though
    # Lanczos needs a key, typed; the exact method none.
    with pytest.raises(ValueError, match="key is required above MAX_EXACT_PARAMS"):
        h.spectrum(x, y, depth=40, shortcut=2, steps=20)
    with pytest.raises(ValueError, match="typed PRNG key"):
        h.lanczos_spectrum(x, y, depth=1, shortcut=2, key=0)
    assert h.spectrum(x[:, :4], y[:, :4], depth=1, shortcut=2).method == "exact"


def test_principal_component_data_is_whitened_with_centred_one_hot_targets():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (300, 4, 4, 3))
    labels = rng.integers(0, 10, 300)
    x, y = h.principal_component_data(images, labels, 10)
    np.testing.assert_allclose(x.T @ x / len(x), np.eye(10), atol=1e-10)
    np.testing.assert_allclose(y.sum(0), 0.0, atol=1e-10)
    np.testing.assert_array_equal(np.argmax(y, axis=1), labels)  # one-hot, then centred


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=300, shortcut=2), "above MAX_EXACT_PARAMS"),
        (dict(depth=2, shortcut=2, activation="relu"), "activation must be one of"),
        (dict(depth=0, shortcut=2), "depth must be a Python integer >= 1"),
        (dict(depth=2, shortcut=0), "shortcut must be a Python integer >= 1"),
    ],
)
def test_bad_arguments_raise(data, kwargs, message):
    x, y = data
    with pytest.raises(ValueError, match=message):
        h.hessian_at_zero(x, y, **kwargs)
    with pytest.raises(ValueError, match="same shape"):
        h.hessian_at_zero(x, y[:, :2], depth=1, shortcut=1)
