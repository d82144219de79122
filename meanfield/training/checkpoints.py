"""The checkpoints of a training run and resuming from them.

A run's ``checkpoints/`` folder holds ``epoch_NNNN.msgpack`` files: the full
:class:`~meanfield.training.trainer.TrainState` after each epoch, its epoch and the metric rows so
far (Flax's msgpack serialization, written atomically; the newest ``keep`` are kept). On resume
(:func:`resume_point`) the saved configuration and data fingerprint (:func:`data_fingerprint`)
must match; the newest readable checkpoint is used, newer unreadable ones are renamed to
``<name>.unreadable``, and with none readable the run starts over (a warning each time).
:mod:`meanfield.training.train` re-exports the public names.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from meanfield.io import results
from meanfield.training import data as data_lib
from meanfield.training.trainer import TrainConfig, TrainState

__all__ = [
    "UNREADABLE_SUFFIX",
    "data_fingerprint",
    "latest_checkpoint",
    "restore_checkpoint",
    "restore_newest_readable",
    "resume_point",
    "save_checkpoint",
]

_CHECKPOINT_GLOB = "epoch_[0-9][0-9][0-9][0-9].msgpack"
# What an unreadable checkpoint is renamed to on resume: kept for a look, no longer a
# checkpoint (neither resumed from nor counted among the ``checkpoint_keep`` newest).
UNREADABLE_SUFFIX = ".unreadable"


def _checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.msgpack"


def _checkpoints(folder: str | Path) -> list[Path]:
    """The ``epoch_NNNN.msgpack`` files in ``folder``, oldest first."""
    return sorted(Path(folder).glob(_CHECKPOINT_GLOB))


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest ``epoch_NNNN.msgpack`` in ``folder``, or None."""
    found = _checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(folder: Path, epoch: int, state: TrainState, history: list, keep: int):
    payload = {
        "state": flax.serialization.to_state_dict(jax.device_get(state)),
        "epoch": epoch,
        "history": json.dumps(results.to_jsonable(history), allow_nan=False),
    }
    path = results.atomic_write_bytes(
        _checkpoint_path(folder, epoch), flax.serialization.msgpack_serialize(payload)
    )
    for old in _checkpoints(folder)[:-keep]:
        old.unlink()
    return path


def restore_checkpoint(path: Path, template: TrainState) -> tuple[TrainState, int, list]:
    """(state, epoch, history) of the checkpoint ``path``, in the structure of ``template``.
    Raises ValueError naming the file when it cannot be read (missing, truncated, damaged) or
    does not hold a state of that structure."""
    try:
        payload = flax.serialization.msgpack_restore(Path(path).read_bytes())
        state = flax.serialization.from_state_dict(template, payload["state"])
        epoch = int(payload["epoch"])
        history = results.from_jsonable(json.loads(payload["history"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cannot restore the checkpoint {path}: {err}") from err
    state = jax.tree_util.tree_map(jnp.asarray, state)
    return state, epoch, history


def restore_newest_readable(
    folder: str | Path, template: TrainState
) -> tuple[tuple[Path, TrainState, int, list] | None, list[tuple[Path, str]]]:
    """The newest checkpoint in ``folder`` that :func:`restore_checkpoint` reads, as (path,
    state, epoch, history), or None when none can be read; and (path, reason) of each newer
    one that could not, newest first."""
    unreadable = []
    for path in reversed(_checkpoints(folder)):
        try:
            return (path, *restore_checkpoint(path, template)), unreadable
        except ValueError as err:
            unreadable.append((path, str(err)))
    return None, unreadable


def _set_aside(paths: list[Path]) -> list[str]:
    """Rename each unreadable checkpoint to ``<name>.unreadable``; the new names."""
    names = []
    for path in paths:
        target = path.with_name(path.name + UNREADABLE_SUFFIX)
        path.replace(target)
        names.append(target.name)
    return names


def resume_point(
    workdir: Path, config: TrainConfig, fingerprint: dict, template: TrainState
) -> tuple[Path, TrainState, int, list] | None:
    """Where ``train_and_evaluate(..., resume=True)`` goes on: (path, state, epoch, history)
    of the newest readable checkpoint of the run in ``workdir``, or None to start over.

    The saved configuration must be ``config`` (up to ``epochs``). Checkpoints newer than the
    one used that cannot be read (a write cut short by a crash or a full disk) are renamed
    to ``<name>.unreadable`` and named in a warning. A run with no readable checkpoint at all
    (killed during its first write, which leaves only the atomic write's partial ``.tmp``
    file, or with every checkpoint damaged) starts over from epoch 0, with a warning. A
    ``workdir`` that holds no run (neither config.json nor checkpoints/) is an error.

    The warnings name the caller of the function that calls this one (``stacklevel=3``):
    :func:`meanfield.training.train.train_and_evaluate` calls it directly.
    """
    ckpt_dir, config_path = workdir / "checkpoints", workdir / "config.json"
    if not config_path.is_file():
        if not ckpt_dir.is_dir():
            raise FileNotFoundError(
                f"cannot resume: no checkpoint in {ckpt_dir} and no {config_path}: "
                f"{workdir} holds no run"
            )
        if _checkpoints(ckpt_dir):
            raise FileNotFoundError(
                f"cannot resume: {config_path} is missing, so the checkpoints in {ckpt_dir} "
                "cannot be checked against the configuration"
            )
    else:
        _check_resumable(results.load_json(config_path), config, fingerprint)
    found, unreadable = restore_newest_readable(ckpt_dir, template)
    reasons = "; ".join(reason for _, reason in unreadable)
    kept = _set_aside([path for path, _ in unreadable])
    if found is None:
        partial = sorted(p.name for p in ckpt_dir.glob(".epoch_*.tmp")) if ckpt_dir.is_dir() else []
        what = []
        if kept:
            what.append(f"unreadable, renamed to {', '.join(kept)}: {reasons}")
        if partial:
            what.append(f"partial writes of a killed run: {', '.join(partial)}")
        warnings.warn(
            f"no readable checkpoint in {ckpt_dir} ({'; '.join(what) or 'none written'}): "
            f"starting {workdir} over from epoch 0",
            stacklevel=3,
        )
        return None
    path, _, done, _ = found
    if unreadable:
        warnings.warn(
            f"cannot read the newest checkpoint(s) of {workdir} (renamed to "
            f"{', '.join(kept)}): {reasons}; resuming from {path.name} (epoch {done}), the "
            "newest readable one",
            stacklevel=3,
        )
    return found


def data_fingerprint(dataset: data_lib.CIFAR10) -> dict[str, Any]:
    """What identifies the data of a run: sizes, normalization and a SHA-1 of every array."""
    h = hashlib.sha1()
    for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    return {
        "source": dataset.source,
        "train_size": len(dataset.y_train),
        "test_size": len(dataset.y_test),
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "sha1": h.hexdigest(),
    }


def _check_resumable(saved: dict, config: TrainConfig, fingerprint: dict) -> None:
    now = config.as_dict()
    then = dict(saved["train"])
    then.pop("epochs", None)  # the one setting a resumed run may change (to train longer)
    differ = [k for k in then if results.to_jsonable(now.get(k)) != results.to_jsonable(then[k])]
    if differ:
        shown = ", ".join(f"{k}: {then[k]!r} -> {now.get(k)!r}" for k in differ)
        raise ValueError(f"cannot resume: the configuration differs from the saved one ({shown})")
    if saved["data"]["sha1"] != fingerprint["sha1"]:
        raise ValueError(
            f"cannot resume: the data differ from the run's (saved {saved['data']}, "
            f"now {fingerprint})"
        )
