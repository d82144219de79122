"""Smoke tests: one call into each part of the library, fast (seconds on a CPU).

They run in the normal suite and, selected with ``-m smoke``, against the oldest versions of the
runtime dependencies that pyproject.toml allows (the floors), so that every ``>=`` there is
true: import, one recursion, one small Monte-Carlo per engine, ``solve_init`` (float64 through
``jax.enable_x64``), one train step of a tiny model and a results file with a figure. They check
that the call works and gives finite numbers of the right shape; the other test files check the
numbers.
"""

import jax
import numpy as np
import pytest

import meanfield
from meanfield import Block, montecarlo, recursions, theory
from meanfield.io import results
from meanfield.training import data, train
from meanfield.training.models import ResNetConfig
from meanfield.training.train import TrainConfig, Trainer

pytestmark = pytest.mark.smoke

BLOCK = Block("relu", "bn_post")


def test_import_exposes_the_public_names():
    assert meanfield.__version__
    assert {"Block", "profile", "solve_init", "montecarlo"} <= set(meanfield.__all__)


def test_one_recursion():
    prof = recursions.profile(BLOCK, depth=10, width=64, var_w=1 / 64)
    assert prof.m2_z.shape == (11,)
    assert np.all(np.isfinite(np.asarray(prof.m2_z)))
    # The exact closed forms of this block (BN's forward and the Γ-ratio backward) agree.
    forms = theory.closed_forms(BLOCK, depth=10, width=64, var_w=1 / 64)
    exact = [f for f in forms if f.kind == "exact"]
    assert len(exact) >= 2
    for f in exact:
        want = np.asarray(getattr(prof, f.statistic))
        np.testing.assert_allclose(np.asarray(f.values)[1:], want[1:], rtol=1e-4, err_msg=f.label)


@pytest.mark.parametrize("engine", ["explicit", "weightfree"])
def test_one_small_monte_carlo_per_engine(engine):
    est = montecarlo.simulate(
        BLOCK,
        key=jax.random.key(0),
        depth=3,
        width=16,
        var_w=1 / 16,
        networks=4,
        batch=4,
        engine=engine,
        warn=False,  # 4 networks: too few for the heavy-tail diagnosis to mean anything
    )
    assert est.m2_z.mean.shape == (4,) and est.m2_dz.mean.shape == (4,)
    assert np.all(np.isfinite(est.m2_z.mean)) and np.all(np.isfinite(est.m2_z.stderr))


def test_solve_init_in_float64():
    sol = meanfield.solve_init(
        Block("identity", "none"), depth=20, width=32, max_forward_growth=5.0, grid=32
    )
    # (1 + α)^L = G exactly: a float32 solve would miss this tolerance.
    np.testing.assert_allclose(sol.alpha, 5.0 ** (1 / 20) - 1, rtol=1e-6)
    assert not jax.config.jax_enable_x64  # the float64 context did not leak out


def test_one_train_step_of_a_tiny_model():
    model = ResNetConfig(block=BLOCK, depth=2, channels=4, kernel_size=3)
    config = TrainConfig(model=model, seeds=(0,), epochs=1, batch_size=8, check_batch=0)
    d = data.synthetic(train_size=16, test_size=8)
    trainer = Trainer(config, d.mean, d.std)
    state = trainer.init_state()
    before = [np.asarray(p).copy() for p in jax.tree_util.tree_leaves(state.params)]
    order = np.arange(16)[None]  # (K = 1, N)
    state, loss, correct = trainer.train_step(state, d.x_train, d.y_train, order, 0, 0)
    assert np.isfinite(np.asarray(loss)).all() and np.asarray(loss).shape == (1,)
    after = jax.tree_util.tree_leaves(state.params)
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, after, strict=True))
    assert int(np.asarray(state.diverged_at)[0]) == -1
    bar = train._progress(1, "smoke", enabled=True)  # the progress bar (tqdm)
    bar.update(1)
    bar.close()


def test_results_and_a_figure(tmp_path):
    from matplotlib.figure import Figure

    from meanfield.io import plots

    path = results.save_json(tmp_path / "r.json", {"x": np.arange(3), "env": results.environment()})
    assert results.load_json(path)["x"] == [0, 1, 2]
    fig = Figure(figsize=(2, 2), layout="constrained")
    fig.subplots().plot([0, 1], [1, 2])
    written = plots.save_figure(fig, tmp_path / "f", formats=("png",))
    assert all(p.stat().st_size > 0 for p in written)
