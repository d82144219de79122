"""solve_init: exact where closed forms exist, the largest variance inside the band, and
verified by Monte-Carlo; a wrong solution must fail the same check.

Every solve here passes ``max_depth=MAX_DEPTH`` and the default grid, so that all of them, and
the band-curve checks padded to the same number of points, share one compiled program per
block."""

import itertools
import math
import re

import jax
import numpy as np
import pytest

import meanfield
from meanfield import layers as ml
from meanfield import montecarlo, recursions
from meanfield.analysis import solver
from meanfield.analysis import solver_evaluation as evaluation
from meanfield.analysis.solver import band_curves, log10_band_statistics, solve_init
from meanfield.core.architecture import Block

MAX_DEPTH = 100
GRID = 256  # solve_init's default
RTOL = 1e-6  # solve_init's default


def _log10_statistics(block, depth, width, var_ws) -> np.ndarray:
    """(points, 2): log10 growth and spread from band_curves, padded to GRID points so that it
    runs the solver's compiled program."""
    v = np.asarray(var_ws, np.float64)
    padded = np.pad(v, (0, GRID - v.size), mode="edge")
    c = band_curves(block, depth, width, padded, max_depth=MAX_DEPTH)
    stats = np.stack([c["log10_forward_growth"], c["log10_gradient_spread"]], axis=-1)
    return stats[: v.size]


def test_identity_without_bn_meets_the_exact_forward_law():
    # (1 + α)^L = G  =>  α = G^(1/L) - 1; the gradient profile is flat (spread 1).
    sol = solve_init(
        Block("identity", "none"), depth=50, width=128, max_forward_growth=5.0, max_depth=MAX_DEPTH
    )
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
            block,
            depth=30,
            width=100,
            max_forward_growth=4.0,
            max_gradient_spread=4.0,
            max_depth=MAX_DEPTH,
        )
    except ValueError as err:  # BN keeps some blocks inside any such band up to 10/n
        assert "does not constrain" in str(err)
        return
    bounds = np.log10([4.0, 4.0])
    below, above = _log10_statistics(block, 30, 100.0, sol.var_w * np.array([0.999, 1.001]))
    assert np.all(below <= bounds + 1e-9)
    assert np.any(above > bounds)


def test_the_statistics_below_max_depth_are_those_of_the_network_of_that_depth():
    # The solver masks the layers past depth; the recursion at a concrete depth must agree.
    block = Block("relu", "bn_pre")  # its gradient spread binds
    sol = solve_init(
        block,
        depth=30,
        width=100,
        max_forward_growth=100.0,
        max_gradient_spread=4.0,
        max_depth=MAX_DEPTH,
    )
    assert sol.binding == "gradient_spread"
    with jax.enable_x64(True):
        exact = np.asarray(log10_band_statistics(block, 30, 100.0, sol.var_w))
    np.testing.assert_allclose(10.0**exact, [sol.forward_growth, sol.gradient_spread], rtol=1e-12)
    np.testing.assert_allclose(sol.gradient_spread, 4.0, rtol=RTOL)


def test_monte_carlo_confirms_the_solved_growth_and_rejects_a_wrong_one():
    block = Block("relu", "none")
    sol = solve_init(block, depth=20, width=512, max_forward_growth=4.0, max_depth=MAX_DEPTH)

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
        (dict(max_depth=5), "max_depth must be >= depth=10, got 5"),
        (dict(rtol=1.0), "rtol must be < 1"),
    ],
)
def test_bad_or_vacuous_bands_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        solve_init(
            Block("identity", "bn_post"), depth=10, width=32, **{"max_depth": MAX_DEPTH, **kwargs}
        )


# The grid every solution is checked on: 12 blocks x depth x width x bound (both bounds equal).
DEPTHS, WIDTHS, BOUNDS = (10, 100), (64, 1024), (2.0, 10.0, 100.0)
# α = n·Var[w] where q_L/q_0 = G has a closed form (and binds): (1 + α)^L, α^L, (α/2)^L,
# 1 + Lα (BN: the branch adds α to q each block) and α (plain BN: q_L = α).
CLOSED_FORMS = {
    "identity-none-residual": lambda g, L: g ** (1 / L) - 1,
    "identity-none-plain": lambda g, L: g ** (1 / L),
    "relu-none-plain": lambda g, L: 2 * g ** (1 / L),
    "identity-bn_post-residual": lambda g, L: (g - 1) / L,
    "identity-bn_pre-residual": lambda g, L: (g - 1) / L,
    "identity-bn_post-plain": lambda g, L: g,
    "identity-bn_pre-plain": lambda g, L: g,
}


@pytest.mark.parametrize("block", meanfield.all_blocks(), ids=lambda b: b.name)
def test_every_solution_of_the_grid_meets_its_binding_bound(block):
    solved = 0
    for depth, width, bound in itertools.product(DEPTHS, WIDTHS, BOUNDS):
        setting = f"{block.name}, L={depth}, n={width}, bound={bound}"
        log_bound = math.log10(bound)
        try:
            sol = solve_init(
                block,
                depth=depth,
                width=width,
                max_forward_growth=bound,
                max_gradient_spread=bound,
                max_depth=MAX_DEPTH,
            )
        except ValueError as err:
            # At a grid limit: check what the error claims, on the solver's own grid.
            lo, hi = math.log(1e-6 / (width * depth)), math.log(10.0 / width)
            stats = _log10_statistics(block, depth, width, np.exp(np.linspace(lo, hi, GRID)))
            if "does not constrain" in str(err):
                assert np.all(stats <= log_bound + 1e-12), setting
            else:
                assert "exceeded already" in str(err), f"{setting}: {err}"
                assert np.any(stats[0] > log_bound - 1e-12), setting
            continue
        solved += 1
        which = ("forward_growth", "gradient_spread").index(sol.binding)
        reported = np.array([sol.forward_growth, sol.gradient_spread])
        v = sol.var_w
        at, below, above = _log10_statistics(block, depth, width, [v, v * 0.999, v * 1.001])
        np.testing.assert_allclose(10.0**at, reported, rtol=1e-12, err_msg=setting)
        assert abs(reported[which] / bound - 1) <= RTOL, (setting, sol)
        assert reported[1 - which] <= bound * (1 + RTOL), (setting, sol)
        assert np.all(below <= log_bound), setting  # smaller variances stay inside
        assert above[which] > log_bound, setting  # and a larger one leaves through this bound
        if block.name in CLOSED_FORMS:
            assert sol.binding == "forward_growth", setting
            np.testing.assert_allclose(
                sol.alpha, CLOSED_FORMS[block.name](bound, depth), rtol=1e-8, err_msg=setting
            )
        if block.activation == "identity" and block.norm != "none" and block.residual:
            # Var[dE/dW^1] / Var[dE/dW^L] = (1 + Lα)/(1 + α), below G = 1 + Lα.
            spread = (1 + depth * sol.alpha) / (1 + sol.alpha)
            np.testing.assert_allclose(sol.gradient_spread, spread, rtol=1e-10, err_msg=setting)
    assert block.norm != "none" or solved == 12  # without BN every setting has a solution


def test_a_plain_relu_network_meets_the_forward_bound_it_reports():
    sol = solve_init(Block("relu", "none", False), depth=100, width=256)
    assert sol.binding == "forward_growth"
    np.testing.assert_allclose(sol.forward_growth, 10.0, rtol=RTOL)
    np.testing.assert_allclose(sol.alpha, 2 * 10.0 ** (1 / 100), rtol=1e-8)


@pytest.mark.parametrize("grid", [1, 0, -4, 2.5, True])
def test_a_grid_of_fewer_than_two_points_is_refused(grid):
    message = (
        "grid must be a Python integer >= 2 (the number of Var[w] from 1e-6/(nL) to 10/n, "
        f"both ends included), got {grid!r}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        solve_init(Block("identity", "none"), depth=50, width=128, grid=grid)


def test_a_grid_of_two_points_brackets_the_whole_range_and_still_solves():
    # The smallest grid: its one interval is the whole range, and each step evaluates a single
    # point, so this is the plain safeguarded Newton / bisection iteration.
    sol = solve_init(Block("identity", "none"), depth=50, width=128, max_forward_growth=5.0, grid=2)
    np.testing.assert_allclose(sol.forward_growth, 5.0, rtol=RTOL)
    np.testing.assert_allclose(sol.alpha, 5.0 ** (1 / 50) - 1, rtol=1e-8)


def test_a_tree_is_solved_as_its_preset():
    block = Block("relu", "bn_pre")
    kw = dict(depth=30, width=100, max_forward_growth=100.0, max_gradient_spread=4.0)
    tree = ml.block_tree(block)
    sol = solve_init(tree, **kw, max_depth=MAX_DEPTH)
    assert sol.block is tree and sol.as_dict()["block"] == tree.name
    preset = solve_init(block, **kw, max_depth=MAX_DEPTH)
    assert (sol.var_w, sol.binding) == (preset.var_w, preset.binding)
    np.testing.assert_allclose(sol.gradient_spread, 4.0, rtol=RTOL)
    with pytest.raises(ValueError, match="block must be a meanfield.Block or a meanfield.layers"):
        solve_init("relu-bn_pre-residual", **kw)


# gelu's expectations are integrated by quadrature: the expensive case, solved in chunks.
GELU = Block("gelu", "none")


def _check_solution_by_the_recursion(sol):
    """The binding bound met at the solution and left just above it, by the recursion itself."""
    with jax.enable_x64(True):
        at, above = (
            recursions.profile(GELU, depth=sol.depth, width=sol.width, var_w=v)
            for v in (sol.var_w, 1.001 * sol.var_w)
        )
    growth = [float(p.m2_z[-1] / p.m2_z[0]) for p in (at, above)]
    assert sol.binding == "forward_growth"
    np.testing.assert_allclose(growth[0], sol.max_forward_growth, rtol=RTOL)
    assert growth[1] > sol.max_forward_growth


def test_a_long_solve_reports_progress_and_its_chunks_change_nothing(capsys, monkeypatch):
    # The call of the issue (gelu-ln_pre, L = 100, the default grid) is estimated long, so it
    # reports by default; a ReLU solve (closed forms only) is not and stays one program.
    assert evaluation.plan(Block("gelu", "ln_pre"), 100, GRID).seconds > evaluation.AUTO_SECONDS
    relu = evaluation.plan(Block("relu", "none"), 100, GRID)
    assert relu.seconds < 1 and not relu.chunked
    kw = dict(depth=10, width=64, grid=32, max_depth=10)
    solve_init(Block("relu", "none"), **kw)
    assert capsys.readouterr().err == ""  # short: silent by default
    # Chunks of 2 points with derivatives, 6 without (1e8 bytes at 4 MB per layer and point).
    monkeypatch.setattr(evaluation, "CHUNK_BYTES", 1e8)
    how = evaluation.plan(GELU, 10, 32)
    assert (how.chunk, how.value_chunk) == (2, 6)
    quiet = solve_init(GELU, **kw, progress=False)
    assert capsys.readouterr().err == ""
    _check_solution_by_the_recursion(quiet)  # chunked, and right
    monkeypatch.setattr(solver, "AUTO_SECONDS", 0.0)  # now every call counts as long
    loud = solve_init(GELU, **kw)
    err = capsys.readouterr().err
    assert loud == quiet  # reporting changes nothing
    lines = ("grid 6/32 points", "grid 12/32 points", "derivatives at the bracket", "refining")
    for line in lines:
        assert f"solve_init gelu-none-residual: {line}" in err, err
    assert f"var_w = {loud.var_w:.4g} (forward_growth binds)" in err and err.endswith("\n")
    with pytest.raises(ValueError, match="progress must be True, False or None"):
        solve_init(GELU, **kw, progress="yes")
