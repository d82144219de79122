"""A grid of configurations as one program (meanfield.sweep, montecarlo.simulate_grid): each
configuration is the simulate / profile call it stands for, Monte-Carlo agrees with the
recursion on the grid, and another grid of the same shape compiles nothing."""

import jax
import numpy as np
import pytest

import meanfield
from meanfield import montecarlo, recursions
from meanfield.core.architecture import Block
from tests.helpers import assert_close

STATS = ("mean_z", "m2_z", "unitvar_z", "m2_dz", "var_dw")


@pytest.mark.parametrize("engine", ["explicit", "weightfree"])
def test_each_configuration_is_the_simulate_of_its_values_key_and_depth(engine):
    """Same networks, same numbers (to float32 rounding): a shallower configuration runs in
    the deepest one's program, its blocks past its depth the identity."""
    block = Block("relu", "bn_pre", True)
    var_w = np.array([0.5, 1.0, 2.0]) / 32
    depth = np.array([5, 3, 5])
    keys = jax.random.split(jax.random.key(7), 3)
    kw = dict(width=32, networks=6, batch=4, engine=engine)
    grid = montecarlo.simulate_grid(block, key=keys, depth=depth, var_w=var_w, chunk_size=4, **kw)
    assert grid.m2_z.mean.shape == (3, 6)
    for i in range(3):
        L = int(depth[i])
        one = montecarlo.simulate(
            block, key=keys[i], depth=L, var_w=float(var_w[i]), warn=False, **kw
        )
        for name in STATS:
            got = getattr(grid, name)
            assert_close(got.mean[i, : L + 1], getattr(one, name).mean, rtol=2e-5, err_msg=name)
            assert_close(got.stderr[i, 1 : L + 1], getattr(one, name).stderr[1:], rtol=1e-3)
            assert np.all(np.isnan(got.mean[i, L + 1 :])), name


def test_a_scheme_on_a_grid_of_c_and_depth_reads_each_depth():
    """depth_scaled's var_w = c/(nL) comes from each configuration's own depth and c."""
    block = Block("relu", "none", True)
    kw = dict(width=16, networks=4, batch=4, key=jax.random.key(1), init="depth_scaled")
    grid = montecarlo.simulate_grid(block, depth=np.array([2, 4]), c=np.array([3.0, 0.5]), **kw)
    for i, (L, c) in enumerate([(2, 3.0), (4, 0.5)]):
        one = montecarlo.simulate(block, depth=L, c=c, warn=False, **kw)
        assert_close(grid.var_dw.mean[i, : L + 1], one.var_dw.mean, rtol=2e-5)


def test_sweep_recursion_is_profile_per_configuration():
    block = Block("relu", "bn_post", True)
    var_w = np.array([0.3, 1.0, 4.0]) / 64
    s = meanfield.sweep(block, depth=[8, 4, 8], width=64, var_w=var_w)
    assert s.montecarlo is None
    assert s.recursion.m2_z.shape == (3, 9)
    for i, L in enumerate([8, 4, 8]):
        one = recursions.profile(block, depth=L, width=64, var_w=float(var_w[i]))
        for name in recursions.STATISTICS:
            assert_close(getattr(s.recursion, name)[i, : L + 1], getattr(one, name), rtol=1e-6)
    assert np.all(np.isnan(s.recursion.m2_z[1, 5:]))
    assert_close(s.config["depth"], [8, 4, 8], rtol=0)


def test_sweep_montecarlo_agrees_with_the_recursion_and_rejects_a_wrong_variance():
    """Linear residual networks: E m2_z and E m2_dz are (1 + α)^l exactly at any width, so the
    grid's Monte-Carlo must match the recursion within 4 standard errors at every var_w, and
    a recursion with a 25% larger var_w must be rejected."""
    block = Block("identity", "none", True)
    var_w = np.geomspace(0.2, 1.0, 4) / 32
    kw = dict(depth=6, width=32, key=jax.random.key(2), networks=256, batch=4)
    s = meanfield.sweep(block, var_w=var_w, **kw)
    wrong = meanfield.sweep(block, var_w=1.25 * var_w, depth=6, width=32).recursion
    for name in ("m2_z", "m2_dz"):
        mc = getattr(s.montecarlo, name)
        z = (mc.mean[:, 1:] - getattr(s.recursion, name)[:, 1:]) / mc.stderr[:, 1:]
        assert np.all(np.abs(z) < 4), (name, z)
        # The far end of each profile: m2_z grows up the network, m2_dz down it.
        end = -1 if name == "m2_z" else 0
        z_wrong = (mc.mean[:, end] - getattr(wrong, name)[:, end]) / mc.stderr[:, end]
        assert np.all(np.abs(z_wrong) > 4), (name, z_wrong)


def test_another_grid_of_the_same_shape_compiles_nothing(count_compiles):
    """One program per (tree, sizes, engine, max depth, number of items per call): other
    values, depths below max_depth and seeds run it again."""
    block = Block("relu", "none", True)
    kw = dict(width=16, networks=4, batch=4, max_depth=5, chunk_size=8)
    keys = jax.random.split(jax.random.key(5), 2)
    montecarlo.simulate_grid(block, key=jax.random.key(0), var_w=[0.1, 0.2], depth=5, **kw)
    before = len(count_compiles)
    est = montecarlo.simulate_grid(block, key=keys, var_w=[0.3, 0.05], depth=[2, 4], **kw)
    assert len(count_compiles) == before
    assert np.all(np.isfinite(est.m2_z.mean[1, :5]))
    # The recursion's grid likewise, and the counter counts.
    meanfield.sweep(block, var_w=[0.1, 0.2], depth=[3, 5], width=16, max_depth=5)
    before = len(count_compiles)
    meanfield.sweep(block, var_w=[0.4, 0.3], depth=[5, 1], width=16, max_depth=5)
    assert len(count_compiles) == before
    meanfield.sweep(block, var_w=[0.4, 0.3], depth=[5, 1], width=16, max_depth=6)
    assert len(count_compiles) > before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(var_w=[0.1, 0.2], depth=[3, 4, 5]), "broadcast to one shape"),
        (dict(var_w=[[0.1]], depth=3), "1-D array"),
        (dict(var_w=[0.1, -0.2], depth=3), "var_w"),
        (dict(var_w=0.1, depth=[3, 0]), "depth"),
        (dict(var_w=0.1, depth=[3, 6], max_depth=5), "max_depth=5"),
        (dict(var_w=0.1, init="he", depth=3), "exactly one of var_w and init"),
        (dict(init="risotto", depth=3), "risotto"),
        (dict(var_w=[0.1, 0.2], depth=3, key=jax.random.split(jax.random.key(0), 3)), r"\(2,\)"),
        (dict(var_w=0.1, depth=3, key=0), "typed PRNG key"),
        (dict(var_w=0.1, depth=3, networks=1), "networks must be >= 2"),
    ],
)
def test_bad_grids_are_refused_by_name(kwargs, match):
    kw = dict(width=8, networks=2, batch=2, key=jax.random.key(0)) | kwargs
    with pytest.raises(ValueError, match=match):
        montecarlo.simulate_grid(Block("relu", "none", True), **kw)


def test_sweep_needs_a_key_for_montecarlo():
    with pytest.raises(ValueError, match="needs a key"):
        meanfield.sweep(Block("relu", "none", True), var_w=0.1, depth=3, width=8, networks=4)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("var_w", dict(var_w=[])),
        ("var_w", dict(var_w=np.array([]))),
        ("depth", dict(var_w=0.1, depth=np.array([], int))),
        ("width", dict(var_w=0.1, width=np.array([]))),
        ("c", dict(init="he", c=[])),
        ("gain", dict(init="he", gain=np.zeros(0))),
        ("input_std", dict(var_w=0.1, input_std=[])),
        ("input_mean", dict(var_w=0.1, input_mean=[])),
        ("input_corr", dict(var_w=0.1, input_corr=[])),
        ("branch_scale", dict(var_w=0.1, branch_scale=[])),
        ("key", dict(var_w=0.1, networks=2, key=jax.random.split(jax.random.key(0), 0))),
    ],
)
def test_an_empty_sweep_grid_is_refused_by_name(name, kwargs):
    kw = dict(depth=3, width=8) | kwargs
    with pytest.raises(ValueError, match=rf"^{name} must be .*(non-empty|empty)"):
        meanfield.sweep(Block("relu", "none", True), **kw)


@pytest.mark.parametrize("name", ["var_w", "input_std", "branch_scale"])
def test_an_empty_monte_carlo_grid_is_refused_by_name(name):
    kw = dict(var_w=0.1) | {name: np.array([])}
    with pytest.raises(ValueError, match=rf"^{name} must be a number or a non-empty"):
        meanfield.montecarlo.simulate_grid(
            Block("relu", "none", True), key=jax.random.key(0), depth=3, width=8,
            networks=2, batch=2, **kw
        )
