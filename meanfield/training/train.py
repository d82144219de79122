"""Train the paper's ResNet on CIFAR-10: K seeds in one program, checkpoints, metrics, and the
prediction check before the first step.

One training step of one network is written unbatched (:meth:`Trainer.seed_step`) and mapped
over K stacked networks (:func:`meanfield.training.models.map_seeds`: ``jax.vmap`` on accelerators,
an unrolled loop on CPU), so the paper's nine-seed experiment is one jit-compiled program. Each
seed has its own initialization (``jax.random.key(seed)``) and its own data order
(:func:`meanfield.training.data.epoch_order`), so seed s trained alone or beside others gives the
same run.

The optimizer. The paper does not name one. The default is SGD with momentum 0.9, learning
rate 0.01, batch 128, no weight decay and a constant rate (the paper shows the first 20
epochs only); ``optimizer="adam"`` is the alternative. Both are flags of
experiments/train_cifar.py.

What a run writes into its folder (:func:`train_and_evaluate`):

* ``config.json``: the :class:`TrainConfig`, a fingerprint of the data and the environment;
* ``metrics.jsonl``: one line per (epoch, seed): train loss and accuracy (means over the
  epoch's steps), validation loss and accuracy (the test batch, BN in inference mode),
  ``diverged_at_step``, wall time and images per second; epoch 0 is the network at init;
* ``initcheck.json``: the prediction check (:mod:`meanfield.training.initcheck`);
* ``checkpoints/epoch_NNNN.msgpack``: the full training state after every epoch (Flax's
  msgpack serialization, written atomically; the newest ``checkpoint_keep`` are kept).
  ``resume=True`` continues from the newest, bit for bit on the same machine; when it cannot
  be read it falls back to the newest readable one, and with none it starts over from epoch
  0, saying so each time (a warning).

Divergence. A seed whose loss or gradient is not finite at step s is recorded as "diverged at
step s": its parameters stay at their last finite values, its later metrics are null, and
the other seeds go on. Once every seed has diverged, the remaining steps (which would change
nothing) are skipped; their epochs are written with null metrics.

Mixed precision. ``precision="bf16"`` runs the convolutions and BN in bfloat16; parameters,
optimizer state, the residual stream and the loss stay float32.

Where the parts live: :mod:`meanfield.training.trainer` (:class:`TrainConfig`, :class:`TrainState`,
:class:`Trainer`: the configuration, the state and the compiled steps) and
:mod:`meanfield.training.checkpoints` (the checkpoints and resuming); this module runs them
(:func:`train_and_evaluate`) and re-exports their names.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from meanfield.io import results
from meanfield.training import data as data_lib
from meanfield.training import footprint

# The names of meanfield.training.trainer and meanfield.training.checkpoints that users import from
# here; the redundant aliases mark those this module does not use itself as re-exported.
from meanfield.training.checkpoints import UNREADABLE_SUFFIX as UNREADABLE_SUFFIX
from meanfield.training.checkpoints import (
    data_fingerprint,
    latest_checkpoint,
    resume_point,
    save_checkpoint,
)
from meanfield.training.checkpoints import restore_checkpoint as restore_checkpoint
from meanfield.training.checkpoints import restore_newest_readable as restore_newest_readable
from meanfield.training.trainer import OPTIMIZERS as OPTIMIZERS
from meanfield.training.trainer import PRECISIONS as PRECISIONS
from meanfield.training.trainer import TrainConfig, Trainer, TrainState
from meanfield.training.trainer import make_optimizer as make_optimizer

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "train_and_evaluate",
    "latest_checkpoint",
]


def train_and_evaluate(
    config: TrainConfig,
    dataset: data_lib.CIFAR10,
    workdir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train ``config``'s K seeds on ``dataset`` and write the run into ``workdir``.

    Returns the metric rows (also in ``workdir/metrics.jsonl``). With ``resume=True`` the run
    continues from the newest readable checkpoint in ``workdir``, or starts over when it has
    none (:func:`meanfield.training.checkpoints.resume_point`; the configuration must be the saved
    one, except ``epochs``, which may grow); without it, ``workdir`` must not hold a run.

    A state of K networks that cannot fit in memory is refused before anything is written
    (:class:`meanfield.training.footprint.StateMemoryError`); a run that fails before its first
    checkpoint (out of memory at init, Ctrl-C during the prediction check) removes what it
    wrote into ``workdir``, so that no half-made run is left behind.
    """
    workdir = Path(workdir)
    n_train = len(dataset.y_train)
    if n_train < config.batch_size:
        raise ValueError(
            f"batch_size must be <= the training images ({n_train}), got {config.batch_size}"
        )
    footprint.check_state_fits(config)
    trainer = Trainer(config, dataset.mean, dataset.std)
    fingerprint = data_fingerprint(dataset)
    # Called here, not in a helper: its warnings name the caller of this function.
    found = resume_point(workdir, config, fingerprint, trainer.init_state()) if resume else None
    if found is not None:
        path, state, done, history = found
        # The metrics of the epochs the checkpoint holds: an epoch written after it (into a
        # checkpoint that could not be read) is trained again.
        results.save_jsonl(workdir / "metrics.jsonl", history)
        log(f"resumed {workdir} from epoch {done} ({path.name})")
    else:
        state, history = _start_run(trainer, dataset, workdir, fingerprint, log)
        done = 0
    return _train_epochs(trainer, dataset, workdir, state, history, done, progress, log)


def _start_run(
    trainer: Trainer,
    dataset: data_lib.CIFAR10,
    workdir: Path,
    fingerprint: dict,
    log: Callable[[str], None],
) -> tuple[TrainState, list[dict]]:
    """A new run in ``workdir``, which must not hold one: config.json, the prediction check,
    and the networks at init evaluated (epoch 0) and checkpointed; (state, metric rows)."""
    ckpt_dir = workdir / "checkpoints"
    if latest_checkpoint(ckpt_dir) is not None:
        raise FileExistsError(f"{workdir} already holds a run; resume it or choose another folder")
    made = [p for p in (workdir, *workdir.parents) if not p.exists()]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _first_epoch(trainer, dataset, workdir, fingerprint, log)
    except BaseException:
        if latest_checkpoint(ckpt_dir) is None:  # nothing to resume from: no debris either
            _remove_start(workdir, made)
        raise


def _remove_start(workdir: Path, made: list[Path]) -> None:
    """Remove what a run that failed before its first checkpoint wrote into ``workdir``: its
    files, the checkpoints folder when empty, and the folders it made (``made``, innermost
    first) when empty. Files of an earlier attempt (checkpoints set aside as unreadable) stay."""
    for name in ("config.json", "initcheck.json", "metrics.jsonl"):
        (workdir / name).unlink(missing_ok=True)
    for folder in (workdir / "checkpoints", *made):
        try:
            folder.rmdir()
        except OSError:  # not there, or not empty
            continue


def _first_epoch(
    trainer: Trainer,
    dataset: data_lib.CIFAR10,
    workdir: Path,
    fingerprint: dict,
    log: Callable[[str], None],
) -> tuple[TrainState, list[dict]]:
    """config.json, the prediction check, and the networks at init evaluated (epoch 0) and
    checkpointed into ``workdir``; (state, metric rows)."""
    config, ckpt_dir = trainer.config, workdir / "checkpoints"
    results.save_json(
        workdir / "config.json",
        {"train": config.as_dict(), "data": fingerprint, "environment": results.environment()},
    )
    state = trainer.init_state()
    if config.check_batch and config.model.has_recursion:
        results.save_json(workdir / "initcheck.json", trainer.prediction_check(state, dataset))
    t0 = time.perf_counter()
    val_loss, val_acc = trainer.evaluate(state, dataset.x_test, dataset.y_test)
    diverged = np.asarray(state.diverged_at)
    history = _rows(0, config.seeds, None, None, val_loss, val_acc, diverged, 0, 0.0, 0)
    save_checkpoint(ckpt_dir, 0, state, history, config.checkpoint_keep)
    results.save_jsonl(workdir / "metrics.jsonl", history)
    log(f"epoch 0 (init): val accuracy {_fmt(val_acc)} ({time.perf_counter() - t0:.1f} s)")
    return state, history


def _train_epochs(
    trainer: Trainer,
    dataset: data_lib.CIFAR10,
    workdir: Path,
    state: TrainState,
    history: list[dict],
    done: int,
    progress: bool,
    log: Callable[[str], None],
) -> list[dict]:
    """Train epochs ``done + 1`` .. ``epochs``; each is evaluated, checkpointed and added to
    ``history`` (returned) and to metrics.jsonl."""
    config, seeds = trainer.config, trainer.config.seeds
    n_train = len(dataset.y_train)
    steps_per_epoch = n_train // config.batch_size
    x_all, y_all = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    if done < config.epochs:  # compile before the clock starts, so images/s is the step's
        t0 = time.perf_counter()
        order = jnp.zeros((len(seeds), n_train), jnp.int32)
        step_fn = trainer.train_step.lower(state, x_all, y_all, order, 0, 0).compile()
        log(f"compiled the training step in {time.perf_counter() - t0:.1f} s")
    reported = {int(k) for k in np.flatnonzero(np.asarray(state.diverged_at) >= 0)}
    for epoch in range(done + 1, config.epochs + 1):
        order = np.stack([data_lib.epoch_order(s, epoch, n_train) for s in seeds])
        order = jnp.asarray(order, jnp.int32)
        bar = _progress(steps_per_epoch, f"epoch {epoch}/{config.epochs}", progress)
        t0 = time.perf_counter()
        state, losses, corrects = _epoch_steps(
            step_fn, state, (x_all, y_all, order), epoch, steps_per_epoch, bar
        )
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        diverged = np.asarray(state.diverged_at)
        _report_divergence(diverged, seeds, reported, log)
        if losses:
            loss_K = np.mean(np.stack([np.asarray(v) for v in losses]), axis=0)
            acc_K = np.sum(np.stack([np.asarray(v) for v in corrects]), axis=0) / (
                len(corrects) * config.batch_size
            )
        else:
            loss_K = acc_K = None
        if np.all(diverged >= 0):  # nothing left to evaluate: every metric is null
            val_loss = val_acc = np.full(len(seeds), np.nan)
        else:
            val_loss, val_acc = trainer.evaluate(state, dataset.x_test, dataset.y_test)
        n_images = len(losses) * config.batch_size * len(seeds)
        history += _rows(
            epoch,
            seeds,
            loss_K,
            acc_K,
            val_loss,
            val_acc,
            diverged,
            epoch * steps_per_epoch,
            seconds,
            n_images,
        )
        save_checkpoint(workdir / "checkpoints", epoch, state, history, config.checkpoint_keep)
        results.save_jsonl(workdir / "metrics.jsonl", history)
        if not losses:
            log(f"epoch {epoch}/{config.epochs}: skipped, every seed has diverged")
            continue
        log(
            f"epoch {epoch}/{config.epochs}: train loss {_fmt(loss_K)}, val accuracy "
            f"{_fmt(val_acc)} ({seconds:.1f} s, {n_images / seconds:.0f} images/s)"
        )
    return history


def _epoch_steps(
    step_fn, state: TrainState, batch_data: tuple, epoch: int, steps_per_epoch: int, bar
) -> tuple[TrainState, list, list]:
    """The ``steps_per_epoch`` training steps of ``epoch``: (state, losses, corrects), the
    per-step (K,) losses and correct counts as the device returns them. ``batch_data`` is
    (x_all, y_all, order) for the compiled ``step_fn``; the progress ``bar`` (or None) shows
    the mean loss of the live seeds every 25 steps."""
    x_all, y_all, order = batch_data
    losses, corrects = [], []
    for i in range(steps_per_epoch):
        step = (epoch - 1) * steps_per_epoch + i
        # Once every seed has diverged the steps change nothing (each seed stays frozen at its
        # last finite state): they are skipped. Checked after each of the run's first 25 steps
        # (where He init without BN diverges) and every 25 steps after that.
        if (step < 25 or i % 25 == 0) and np.all(np.asarray(state.diverged_at) >= 0):
            break
        state, loss, correct = step_fn(state, x_all, y_all, order, i, step)
        losses.append(loss)
        corrects.append(correct)
        if bar is not None:
            bar.update(1)
            if i % 25 == 0 or i == steps_per_epoch - 1:
                live = np.asarray(state.diverged_at) < 0
                shown = np.asarray(loss)[live]
                bar.set_postfix(loss=f"{np.mean(shown):.4g}" if shown.size else "all diverged")
    return state, losses, corrects


def _report_divergence(
    diverged: np.ndarray, seeds: tuple[int, ...], reported: set[int], log: Callable[[str], None]
) -> None:
    """Log each seed that has diverged (``diverged`` >= 0) and is not yet in ``reported``;
    adds it there."""
    for k in np.flatnonzero(diverged >= 0):
        if int(k) not in reported:
            reported.add(int(k))
            log(
                f"seed {seeds[k]} diverged at step {diverged[k]} (non-finite loss or "
                f"gradient); it is frozen there, its metrics are null from now on, and "
                f"the other seeds go on"
            )


def _rows(epoch, seeds, train_loss, train_acc, val_loss, val_acc, diverged, step, seconds, n):
    rows = []
    for k, seed in enumerate(seeds):
        dead = diverged[k] >= 0
        rows.append(
            {
                "epoch": epoch,
                "seed": seed,
                "step": step,
                "train_loss": None if dead or train_loss is None else float(train_loss[k]),
                "train_accuracy": None if dead or train_acc is None else float(train_acc[k]),
                "val_loss": None if dead else float(val_loss[k]),
                "val_accuracy": None if dead else float(val_acc[k]),
                "diverged_at_step": int(diverged[k]) if dead else None,
                "epoch_time_s": seconds,
                "images_per_s": n / seconds if seconds and n else None,
            }
        )
    return rows


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr)


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.asarray(values, dtype=float)) + "]"
