"""solve_init: exact where closed forms exist, the largest variance inside the band, and
verified by Monte-Carlo; a wrong solution must fail the same check."""

import math

import jax
import numpy as np
import pytest

import meanfield
from meanfield import montecarlo
from meanfield.architecture import Block
from meanfield.solver import log10_band_statistics, solve_init


def test_identity_without_bn_meets_the_exact_forward_law():
    # (1 + α)^L = G  =>  α = G^(1/L) - 1; the gradient profile is flat (spread 1).
    sol = solve_init(Block("identity", "none"), depth=50, width=128, max_forward_growth=5.0)
    assert sol.binding == "forward_growth"
    np.testing.assert_allclose(sol.alpha, 5.0 ** (1 / 50) - 1, rtol=1e-6)
    np.testing.assert_allclose(sol.c, sol.var_w * 128 * 50, rtol=1e-12)


def test_identity_bn_meets_the_exact_forward_and_gradient_laws():
    block = Block("identity", "bn_post")
    # Forward: q_L = 1 + Lα = G.
    sol = solve_init(block, depth=100, width=64, max_forward_growth=10.0)
    np.testing.assert_allclose(sol.alpha, 9.0 / 100, rtol=1e-6)
    # Gradient: Var[dE/dW^1] / Var[dE/dW^L] = (1 + Lα)/(1 + α) = S binds first for S = 2.
    sol = solve_init(block, depth=100, width=64, max_forward_growth=1e6, max_gradient_spread=2.0)
    assert sol.binding == "gradient_spread"
    np.testing.assert_allclose(sol.alpha, 1 / 98, rtol=1e-6)


@pytest.mark.parametrize("block", meanfield.all_blocks()[:6], ids=lambda b: b.name)
def test_solution_is_the_largest_variance_inside_the_band(block):
    try:
        sol = solve_init(
            block, depth=30, width=100, max_forward_growth=4.0, max_gradient_spread=4.0
        )
    except ValueError as err:  # BN keeps some blocks inside any such band up to 10/n
        assert "does not constrain" in str(err)
        return
    bounds = np.log10([4.0, 4.0])
    with jax.enable_x64(True):
        below = np.asarray(log10_band_statistics(block, 30, 100.0, sol.var_w * 0.999))
        above = np.asarray(log10_band_statistics(block, 30, 100.0, sol.var_w * 1.001))
    assert np.all(below <= bounds + 1e-9)
    assert np.any(above > bounds)


def test_monte_carlo_confirms_the_solved_growth_and_rejects_a_wrong_one():
    block = Block("relu", "none")
    sol = solve_init(block, depth=20, width=512, max_forward_growth=4.0)

    def z_score(var_w):
        est = montecarlo.simulate(
            block, key=jax.random.key(0), depth=20, width=512, var_w=var_w, networks=256, batch=8
        )
        ratio = np.asarray(est.m2_z.mean)[-1] / np.asarray(est.m2_z.mean)[0]
        rel_se = math.hypot(
            *(np.asarray(est.m2_z.stderr)[i] / np.asarray(est.m2_z.mean)[i] for i in (0, -1))
        )
        return (ratio - 4.0) / (4.0 * rel_se)

    assert abs(z_score(sol.var_w)) < 4
    assert abs(z_score(1.5 * sol.var_w)) > 4  # a solver off by half would be caught


def test_initializer_draws_the_solved_variance():
    sol = solve_init(Block("relu", "none"), depth=100, width=1024)
    w = np.asarray(sol.initializer()(jax.random.key(0), (8, 8, 16, 16)), dtype=np.float64)
    assert abs(w.var() / sol.var_w - 1) < 4 * math.sqrt(2 / w.size)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_forward_growth=1.0), "max_forward_growth must be > 1"),
        (dict(max_gradient_spread=-2.0), "max_gradient_spread must be a finite number > 0"),
        (dict(max_forward_growth=1e9, max_gradient_spread=1e9), "does not constrain"),
    ],
)
def test_bad_or_vacuous_bands_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        solve_init(Block("identity", "bn_post"), depth=10, width=32, **kwargs)
