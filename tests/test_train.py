"""The trainer: it learns, K seeds in one program equal K separate runs, resume equals an
uninterrupted run bit for bit, and a diverging seed is reported while the others go on."""

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield import Block
from meanfield.io import results
from meanfield.training import data
from meanfield.training.models import ResNetConfig
from meanfield.training.train import (
    TrainConfig,
    Trainer,
    latest_checkpoint,
    restore_checkpoint,
    train_and_evaluate,
)
from tests.helpers import write_cifar_folder

TINY = ResNetConfig(block=Block("relu", "bn_post"), depth=2, channels=4, kernel_size=3)
BASE = TrainConfig(model=TINY, seeds=(0, 1), epochs=2, batch_size=16, check_batch=0)


def _quiet(_):
    pass


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder, *_ = write_cifar_folder(tmp_path_factory.mktemp("cifar"), per_batch=32, test=48)
    return data.load(folder, download_missing=False)


def _run(config, dataset, workdir, **kwargs):
    return train_and_evaluate(config, dataset, workdir, progress=False, log=_quiet, **kwargs)


def _template(config, dataset):
    return Trainer(config, dataset.mean, dataset.std).init_state()


def _state(config, dataset, workdir):
    template = _template(config, dataset)
    return restore_checkpoint(latest_checkpoint(workdir / "checkpoints"), template)[0]


def _assert_same_state(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _metrics(rows):
    drop = ("epoch_time_s", "images_per_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_init_state_is_the_models_own_init_and_equal_trainers_share_their_programs(dataset, caplog):
    config = dataclasses.replace(BASE, seeds=(0, 3), optimizer="adam")
    trainer = Trainer(config, dataset.mean, dataset.std)
    state = trainer.init_state()
    # Seed s is model.init(jax.random.key(s)) bit for bit: the trainer's rolled scan over the
    # blocks draws what the model's own (unrolled on CPU) init draws.
    init = jax.jit(trainer.model.init, static_argnames="train")
    for k, seed in enumerate(config.seeds):
        v = init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)), train=False)
        mine = jax.tree_util.tree_map(lambda a, k=k: a[k], (state.params, state.batch_stats))
        for a, b in zip(
            jax.tree_util.tree_leaves((v["params"], v["batch_stats"])),
            jax.tree_util.tree_leaves(mine),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Settings outside the programs (epochs, the check, the seeds' values) share them, and a
    # second init of the same shapes compiles nothing; a setting inside (the rate) does not.
    other = Trainer(
        dataclasses.replace(config, seeds=(5, 6), epochs=9, check_batch=4),
        dataset.mean,
        dataset.std,
    )
    assert other.train_step is trainer.train_step and other.eval_step is trainer.eval_step
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        other.init_state()
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()], caplog.text
    lr = Trainer(dataclasses.replace(config, learning_rate=0.5), dataset.mean, dataset.std)
    assert lr.train_step is not trainer.train_step


def test_loss_decreases_on_a_learnable_problem(dataset, tmp_path):
    config = dataclasses.replace(BASE, seeds=(0,), epochs=4, learning_rate=0.05)
    rows = _run(config, dataset, tmp_path / "run")
    loss = [r["train_loss"] for r in rows if r["epoch"] >= 1]
    assert loss[-1] < 0.6 * loss[0], loss
    accuracy = [r["train_accuracy"] for r in rows if r["epoch"] >= 1]
    assert accuracy[-1] > 0.5  # chance is 0.1; the fixture's classes are separable patterns


@pytest.mark.parametrize("seed_map", ["unroll", "vmap"])
def test_k_seeds_in_one_program_equal_k_separate_runs(dataset, tmp_path, seed_map):
    config = dataclasses.replace(BASE, seed_map=seed_map)
    together = _run(config, dataset, tmp_path / "both")
    state = _state(config, dataset, tmp_path / "both")
    for k, seed in enumerate(config.seeds):
        alone_cfg = dataclasses.replace(config, seeds=(seed,))
        alone = _run(alone_cfg, dataset, tmp_path / f"seed{seed}")
        alone_state = _state(alone_cfg, dataset, tmp_path / f"seed{seed}")
        mine = [r for r in together if r["seed"] == seed]
        for a, b in zip(mine, alone, strict=True):
            for key in ("train_loss", "val_loss", "val_accuracy"):
                if a[key] is not None:
                    # Same arithmetic in a differently fused program: float32 rounding only.
                    np.testing.assert_allclose(a[key], b[key], rtol=1e-4)
        for x, y in zip(
            jax.tree_util.tree_leaves(state.params),
            jax.tree_util.tree_leaves(alone_state.params),
            strict=True,
        ):
            np.testing.assert_allclose(np.asarray(x)[k], np.asarray(y)[0], rtol=1e-3, atol=1e-5)
    # The seeds really differ (own init, own data order): a shared key would make them equal.
    p = jax.tree_util.tree_leaves(state.params)[0]
    assert not np.allclose(np.asarray(p)[0], np.asarray(p)[1])


def test_resume_equals_an_uninterrupted_run_bit_for_bit(dataset, tmp_path):
    config = dataclasses.replace(BASE, epochs=3, optimizer="adam", learning_rate=1e-3)
    whole = _run(config, dataset, tmp_path / "whole")
    _run(dataclasses.replace(config, epochs=1), dataset, tmp_path / "parts")
    parts = _run(config, dataset, tmp_path / "parts", resume=True)
    assert _metrics(parts) == _metrics(whole)
    a = _state(config, dataset, tmp_path / "whole")
    b = _state(config, dataset, tmp_path / "parts")
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Two checkpoints are kept (the newest), each a full state.
    names = sorted(p.name for p in (tmp_path / "whole" / "checkpoints").iterdir())
    assert names == ["epoch_0002.msgpack", "epoch_0003.msgpack"]
    assert len(list((tmp_path / "whole").glob("metrics.jsonl"))) == 1


def test_resume_refuses_a_different_configuration_or_a_fresh_start(dataset, tmp_path):
    _run(dataclasses.replace(BASE, epochs=1), dataset, tmp_path / "run")
    with pytest.raises(ValueError, match=r"learning_rate: 0.01 -> 0.02"):
        _run(dataclasses.replace(BASE, learning_rate=0.02), dataset, tmp_path / "run", resume=True)
    with pytest.raises(FileExistsError, match="already holds a run"):
        _run(BASE, dataset, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(BASE, dataset, tmp_path / "empty", resume=True)


def test_resume_falls_back_to_the_newest_readable_checkpoint(dataset, tmp_path):
    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    whole = _run(BASE, dataset, run)  # epochs 1 and 2 kept
    older = restore_checkpoint(ckpt / "epoch_0001.msgpack", _template(BASE, dataset))
    assert older[1] == 1 and max(r["epoch"] for r in older[2]) == 1
    newest = ckpt / "epoch_0002.msgpack"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a write cut short
    # Resumed with nothing left to train, the run stands where the older checkpoint left it,
    # metrics.jsonl included (the unreadable epoch 2 is dropped from it), and says so.
    messages = []
    with pytest.warns(UserWarning, match=r"epoch_0002.msgpack.*resuming from epoch_0001.msgpack"):
        rows = train_and_evaluate(
            dataclasses.replace(BASE, epochs=1),
            dataset,
            run,
            resume=True,
            progress=False,
            log=messages.append,
        )
    assert rows == older[2]
    assert results.load_jsonl(run / "metrics.jsonl") == older[2]
    assert any("from epoch 1 (epoch_0001.msgpack)" in m for m in messages), messages
    _assert_same_state(_state(BASE, dataset, run), older[0])
    # The damaged file is kept aside, no longer a checkpoint: the next resume reads epoch 1
    # without a warning and trains epoch 2 again, to exactly what the uninterrupted run had.
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "epoch_0001.msgpack",
        "epoch_0002.msgpack.unreadable",
    ]
    again = _run(BASE, dataset, run, resume=True)
    assert _metrics(again) == _metrics(whole) and max(r["epoch"] for r in again) == 2
    assert restore_checkpoint(newest, _template(BASE, dataset))[1] == 2


@pytest.mark.parametrize("damage", ["partial_first_write", "every_checkpoint_truncated"])
def test_resume_without_a_readable_checkpoint_starts_over(dataset, tmp_path, damage):
    config = dataclasses.replace(BASE, epochs=1)
    run, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    whole = _run(config, dataset, run)
    saved = sorted(ckpt.iterdir())
    assert [p.name for p in saved] == ["epoch_0000.msgpack", "epoch_0001.msgpack"]
    if damage == "partial_first_write":  # killed while writing epoch 0: its temporary file
        (ckpt / ".epoch_0000.msgpack.k1ll3d.tmp").write_bytes(saved[0].read_bytes()[:100])
        for path in saved:
            path.unlink()
        told = r"partial writes of a killed run: \.epoch_0000\.msgpack\.k1ll3d\.tmp"
    else:
        for path in saved:
            path.write_bytes(path.read_bytes()[:100])
        told = r"renamed to epoch_0001.msgpack.unreadable, epoch_0000.msgpack.unreadable"
    with pytest.warns(UserWarning, match=rf"no readable checkpoint .*{told}.* over from epoch 0"):
        rows = _run(config, dataset, run, resume=True)
    assert [(r["epoch"], r["seed"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert _metrics(rows) == _metrics(whole)  # the same run again, from its first step
    names = sorted(p.name for p in ckpt.glob("epoch_*"))
    if damage == "every_checkpoint_truncated":  # kept aside, counted for nothing
        assert names == [
            "epoch_0000.msgpack",
            "epoch_0000.msgpack.unreadable",
            "epoch_0001.msgpack",
            "epoch_0001.msgpack.unreadable",
        ]
    else:
        assert names == ["epoch_0000.msgpack", "epoch_0001.msgpack"]
    assert restore_checkpoint(latest_checkpoint(ckpt), _template(config, dataset))[1] == 1


def test_a_diverging_seed_is_reported_and_the_others_go_on(dataset, tmp_path, monkeypatch):
    # Seed 1 starts with a head so large that its logits overflow: the loss is not finite
    # at the first step. Seed 0 must train exactly as if alone.
    original = Trainer.init_state

    def poisoned(self):
        state = original(self)
        head = state.params["head"]["kernel"]
        state.params["head"]["kernel"] = head.at[1].multiply(1e38)
        return state

    monkeypatch.setattr(Trainer, "init_state", poisoned)
    messages = []
    config = dataclasses.replace(BASE, seed_map="unroll")
    rows = train_and_evaluate(
        config, dataset, tmp_path / "run", progress=False, log=messages.append
    )
    monkeypatch.setattr(Trainer, "init_state", original)
    bad = [r for r in rows if r["seed"] == 1 and r["epoch"] >= 1]
    assert all(r["diverged_at_step"] == 0 and r["val_accuracy"] is None for r in bad)
    assert any("seed 1 diverged at step 0" in m for m in messages)
    good = [r for r in rows if r["seed"] == 0]
    assert all(r["diverged_at_step"] is None for r in good)
    alone = _run(dataclasses.replace(config, seeds=(0,)), dataset, tmp_path / "alone")
    for a, b in zip(good, alone, strict=True):
        if a["train_loss"] is not None:
            np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-4)
    # The diverged seed's parameters stay where they were (finite), not NaN.
    state = _state(config, dataset, tmp_path / "run")
    head = np.asarray(state.params["head"]["kernel"])[1]
    assert np.all(np.isfinite(head)) and np.abs(head).max() > 1e30


def test_once_every_seed_has_diverged_the_steps_are_skipped(dataset, tmp_path, monkeypatch):
    # Both seeds' logits overflow at the first step. The later steps would change nothing:
    # they are not run (no step of epoch 2 reaches the compiled step), and every later epoch
    # is written with null metrics and the step of divergence.
    original = Trainer.init_state

    def poisoned(self):
        state = original(self)
        state.params["head"]["kernel"] = state.params["head"]["kernel"] * 1e38
        return state

    monkeypatch.setattr(Trainer, "init_state", poisoned)
    messages, calls = [], []
    config = dataclasses.replace(BASE, epochs=3)
    import meanfield.training.train as train_module

    steps = train_module._epoch_steps

    def counting(step_fn, *args):
        def counted(*a):
            calls.append(1)
            return step_fn(*a)

        return steps(counted, *args)

    monkeypatch.setattr(train_module, "_epoch_steps", counting)
    rows = train_and_evaluate(
        config, dataset, tmp_path / "run", progress=False, log=messages.append
    )
    assert len(calls) == 1  # the first step diverges both seeds; nothing runs after it
    assert [r["epoch"] for r in rows] == [0, 0, 1, 1, 2, 2, 3, 3]
    for r in rows[2:]:
        assert r["diverged_at_step"] == 0 and r["val_accuracy"] is None
        assert r["train_loss"] is None
    assert sum("skipped, every seed has diverged" in m for m in messages) == 2
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "epoch_0003.msgpack"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seeds", (0, 0), "seeds must be distinct"),
        ("seeds", (-1,), "seeds must be integers >= 0"),
        ("optimizer", "lbfgs", "optimizer must be one of .* got 'lbfgs'"),
        ("learning_rate", 0.0, "learning_rate must be a finite number > 0, got 0.0"),
        ("momentum", 1.0, r"momentum must be in \[0, 1\), got 1.0"),
        ("precision", "fp16", "precision must be one of .* got 'fp16'"),
        ("epochs", 0, "epochs must be a Python integer >= 1, got 0"),
        ("check_batch", -1, "check_batch must be an integer >= 0, got -1"),
    ],
)
def test_config_rejects_bad_values_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(BASE, **{field: value})


def test_batch_larger_than_the_data_is_an_error(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"batch_size must be <= the training images \(160\)"):
        _run(dataclasses.replace(BASE, batch_size=161), dataset, tmp_path / "run")


def test_config_round_trips_through_a_dict():
    assert TrainConfig.from_dict(BASE.as_dict()) == BASE


def test_mixed_precision_trains(dataset, tmp_path):
    config = dataclasses.replace(BASE, seeds=(0,), precision="bf16", epochs=1)
    rows = _run(config, dataset, tmp_path / "run")
    assert np.isfinite(rows[-1]["train_loss"]) and rows[-1]["diverged_at_step"] is None


def test_he_without_bn_overflows_where_the_recursion_says_and_is_reported(dataset, tmp_path):
    # He init without BN: the recursion puts E[(z^L)^2] beyond float32's range (~1e38.5) by
    # L = 90. z^L itself (~1e20) is still a float32 number, so the loss at init is huge but
    # finite; the first SGD step then makes it overflow. The trainer must report every seed
    # diverged within the first two steps, while the depth-scaled init of the same network
    # trains. 1x1 convolutions keep this cheap: the growth per block depends only on n·Var[w].
    from meanfield import recursions

    model = ResNetConfig(block=Block("relu", "none"), depth=90, channels=8, kernel_size=1)
    prof = recursions.profile(model.block, depth=90, width=model.fan_in, var_w=model.var_w)
    assert float(prof.log10_m2_z[-1]) > np.log10(np.finfo(np.float32).max)
    config = dataclasses.replace(BASE, model=model, epochs=1, seeds=(0,), batch_size=32)
    rows = _run(config, dataset, tmp_path / "he")
    assert all(r["val_loss"] is None or r["val_loss"] > 1e10 for r in rows if r["epoch"] == 0)
    assert all(r["diverged_at_step"] in (0, 1) for r in rows if r["epoch"] == 1), rows
    scaled = dataclasses.replace(config, model=dataclasses.replace(model, init="depth_scaled"))
    rows = _run(scaled, dataset, tmp_path / "scaled")
    assert all(r["diverged_at_step"] is None and np.isfinite(r["val_loss"]) for r in rows)
