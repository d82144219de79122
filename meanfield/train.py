"""Train the paper's ResNet on CIFAR-10: K seeds in one program, checkpoints, metrics, and the
prediction check before the first step.

One training step of one network is written unbatched (:meth:`Trainer.seed_step`) and mapped
over K stacked networks (:func:`meanfield.models.map_seeds`: ``jax.vmap`` on accelerators, an
unrolled loop on CPU), so the paper's nine-seed experiment is one jit-compiled program. Each
seed has its own initialization (``jax.random.key(seed)``) and its own data order
(:func:`meanfield.data.epoch_order`), so seed s trained alone or beside others gives the same
run.

The optimizer. The paper does not name one. The default is SGD with momentum 0.9, learning
rate 0.01, batch 128, no weight decay and a constant rate (the paper shows the first 20
epochs only); ``optimizer="adam"`` is the alternative. Both are flags of
experiments/train_cifar.py.

What a run writes into its folder (:func:`train_and_evaluate`):

* ``config.json``: the :class:`TrainConfig`, a fingerprint of the data and the environment;
* ``metrics.jsonl``: one line per (epoch, seed): train loss and accuracy (means over the
  epoch's steps), validation loss and accuracy (the test batch, BN in inference mode),
  ``diverged_at_step``, wall time and images per second; epoch 0 is the network at init;
* ``initcheck.json``: the prediction check (:mod:`meanfield.initcheck`);
* ``checkpoints/epoch_NNNN.msgpack``: the full training state after every epoch (Flax's
  msgpack serialization, written atomically; the newest ``checkpoint_keep`` are kept).
  ``resume=True`` continues from the newest, bit for bit on the same machine; when it cannot
  be read it falls back to the newest readable one, and with none it starts over from epoch
  0, saying so each time (a warning).

Divergence. A seed whose loss or gradient is not finite at step s is recorded as "diverged at
step s": its parameters stay at their last finite values, its later metrics are null, and
the other seeds go on.

Mixed precision. ``precision="bf16"`` runs the convolutions and BN in bfloat16; parameters,
optimizer state, the residual stream and the loss stay float32.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from meanfield import architecture as arch
from meanfield import data as data_lib
from meanfield import initcheck, results
from meanfield.models import SEED_MAPS, ResNet, ResNetConfig, map_seeds, seed_map_for_backend

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "train_and_evaluate",
    "latest_checkpoint",
]

OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("float32", "bf16")
_DTYPES = {"float32": jnp.float32, "bf16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run of K seeds of one network; frozen and validated."""

    model: ResNetConfig = ResNetConfig()
    seeds: tuple[int, ...] = (0,)  # one network per seed, trained side by side
    epochs: int = 20
    batch_size: int = 128  # images per step and seed
    optimizer: str = "sgd"  # one of OPTIMIZERS
    learning_rate: float = 0.01
    momentum: float = 0.9  # SGD's momentum (0 = plain SGD); Adam ignores it
    weight_decay: float = 0.0  # added to the gradient as weight_decay * w
    precision: str = "float32"  # "bf16": bfloat16 convolutions, float32 parameters
    eval_batch_size: int = 500
    check_batch: int = 128  # images for the prediction check before training (0: skip it)
    seed_map: str = "auto"  # how seeds are batched: "vmap", "unroll" or "auto"
    checkpoint_keep: int = 2  # newest checkpoints kept

    def __post_init__(self):
        if not isinstance(self.model, ResNetConfig):
            raise ValueError(f"model must be a ResNetConfig, got {self.model!r}")
        seeds = tuple(self.seeds) if not isinstance(self.seeds, int) else (self.seeds,)
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
                raise ValueError(f"seeds must be integers >= 0, got {self.seeds!r}")
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds!r}")
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        for name in ("epochs", "batch_size", "eval_batch_size", "checkpoint_keep"):
            object.__setattr__(self, name, arch.static_int(name, getattr(self, name)))
        if isinstance(self.check_batch, bool) or not isinstance(self.check_batch, int):
            raise ValueError(f"check_batch must be an integer >= 0, got {self.check_batch!r}")
        if self.check_batch < 0:
            raise ValueError(f"check_batch must be an integer >= 0, got {self.check_batch!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        arch.check_positive("learning_rate", self.learning_rate)
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0 <= value < (1 if name == "momentum" else float("inf")))
            ):
                allowed = "in [0, 1)" if name == "momentum" else "a finite number >= 0"
                raise ValueError(f"{name} must be {allowed}, got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.seed_map not in SEED_MAPS:
            raise ValueError(f"seed_map must be one of {SEED_MAPS}, got {self.seed_map!r}")

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = self.model.as_dict()
        d["seeds"] = list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["model"] = ResNetConfig.from_dict(d["model"])
        d["seeds"] = tuple(d["seeds"])
        return cls(**d)


@flax.struct.dataclass
class TrainState:
    """The state of K networks; every leaf has the seed axis first."""

    params: Any
    batch_stats: Any  # BN running averages ({} without BN)
    opt_state: Any
    diverged_at: jax.Array  # (K,) int32: first step with a non-finite loss or gradient, or -1


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """SGD with momentum, or Adam; weight decay added to the gradient first when > 0."""
    if config.optimizer == "sgd":
        base = optax.sgd(config.learning_rate, momentum=config.momentum or None)
    else:
        base = optax.adam(config.learning_rate)
    if config.weight_decay:
        return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
    return base


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


# Settings that never enter a compiled program (they drive Python loops, files and the key of
# the first network): Trainers that differ only in these share their programs.
_HOST_SETTINGS = dict(seeds=(0,), epochs=1, eval_batch_size=1, check_batch=0, checkpoint_keep=1)
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_PROGRAMS_KEPT = 8  # configurations whose jitted steps are kept (least recently used dropped)


def _program_key(config: TrainConfig, mean: tuple, std: tuple) -> tuple:
    how = seed_map_for_backend(config.seed_map)
    return dataclasses.replace(config, seed_map=how, **_HOST_SETTINGS), mean, std


class Trainer:
    """The jit-compiled steps of one :class:`TrainConfig` (built once, reused every epoch).

    The jitted functions are shared by every Trainer of the same configuration and data
    normalization up to seeds, epochs, batch sizes of the evaluation and the check, and the
    checkpoints kept (none of which enters a program): a resumed run, or a second run in the
    same process, compiles nothing again for the same number of seeds.
    """

    def __init__(self, config: TrainConfig, mean, std):
        self.config = config
        self.model = ResNet(config.model, dtype=_DTYPES[config.precision])
        self.tx = make_optimizer(config)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.seed_map = seed_map_for_backend(config.seed_map)
        self.has_bn = config.model.block.norm != "none"
        # The same parameters (bit for bit) from a rolled scan over the blocks: a program of one
        # block's draws, not ``depth`` of them, compiles in seconds at L = 100 on CPU too.
        self._init_model = ResNet(config.model, dtype=self.model.dtype, unroll=1)
        key = _program_key(config, self.mean, self.std)
        programs = _PROGRAMS.pop(key, None)
        if programs is None:  # bound to this Trainer; an equal one traces the same code
            programs = (
                jax.jit(self._train_step, donate_argnums=0),
                jax.jit(self._eval_step),
                jax.jit(self.init_one),
            )
        _PROGRAMS[key] = programs
        while len(_PROGRAMS) > _PROGRAMS_KEPT:
            _PROGRAMS.popitem(last=False)
        self.train_step, self.eval_step, self._init = programs

    # -- one network ----------------------------------------------------------------------

    def normalize(self, x_uint8: jax.Array) -> jax.Array:
        return data_lib.normalize(x_uint8, self.mean, self.std)

    def _apply(self, params, batch_stats, x, train: bool):
        variables = (
            {"params": params, "batch_stats": batch_stats} if self.has_bn else {"params": params}
        )
        if train and self.has_bn:
            logits, updates = self.model.apply(variables, x, train=True, mutable=["batch_stats"])
            return logits, updates["batch_stats"]
        return self.model.apply(variables, x, train=train), batch_stats

    def init_one(self, key: jax.Array):
        """(params, batch_stats, opt_state) of one network."""
        x = jnp.zeros((1, 32, 32, 3), jnp.float32)
        variables = self._init_model.init(key, x, train=False)
        params = variables["params"]
        return params, variables.get("batch_stats", {}), self.tx.init(params)

    def seed_step(self, params, batch_stats, opt_state, diverged_at, x_uint8, y, step):
        """One SGD step of one network; a non-finite loss or gradient freezes it."""
        x = self.normalize(x_uint8)

        def loss_fn(p):
            logits, new_stats = self._apply(p, batch_stats, x, train=True)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, new_opt = self.tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        diverged_at = jnp.where((diverged_at < 0) & ~finite, step, diverged_at)
        live = diverged_at < 0

        def pick(new, old):
            return jax.tree_util.tree_map(lambda a, b: jnp.where(live, a, b), new, old)

        correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)
        return (
            pick(new_params, params),
            pick(new_stats, batch_stats),
            pick(new_opt, opt_state),
            diverged_at,
            loss,
            correct,
        )

    def seed_eval(self, params, batch_stats, x_uint8, y, mask):
        """Summed loss and correct count of one network on a (padded) batch."""
        logits, _ = self._apply(params, batch_stats, self.normalize(x_uint8), train=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
        return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(correct * mask)

    # -- K networks -----------------------------------------------------------------------

    def init_state(self) -> TrainState:
        """The K networks at initialization, seed s from ``jax.random.key(s)``: one compiled
        init of one network, called per seed (its compile time does not grow with K)."""
        per_seed = [self._init(jax.random.key(s)) for s in self.config.seeds]
        params, batch_stats, opt_state = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *per_seed)
        diverged = jnp.full((len(self.config.seeds),), -1, jnp.int32)
        return TrainState(params, batch_stats, opt_state, diverged)

    def _train_step(self, state: TrainState, x_all, y_all, order_K, index, step):
        b = self.config.batch_size
        idx = jax.lax.dynamic_slice_in_dim(order_K, index * b, b, axis=1)  # (K, B)
        step_fn = map_seeds(self.seed_step, (0, 0, 0, 0, 0, 0, None), self.seed_map)
        params, stats, opt, diverged, loss, correct = step_fn(
            state.params,
            state.batch_stats,
            state.opt_state,
            state.diverged_at,
            x_all[idx],
            y_all[idx],
            step,
        )
        return TrainState(params, stats, opt, diverged), loss, correct

    def _eval_step(self, state: TrainState, x, y, mask):
        fn = map_seeds(self.seed_eval, (0, 0, None, None, None), self.seed_map)
        return fn(state.params, state.batch_stats, x, y, mask)

    def evaluate(self, state: TrainState, x_uint8: np.ndarray, y: np.ndarray):
        """Mean loss and accuracy (K,) over all of ``x`` (padded to whole eval batches)."""
        n, eb = len(y), self.config.eval_batch_size
        loss_sum = correct = 0.0
        for start in range(0, n, eb):
            xb, yb = x_uint8[start : start + eb], y[start : start + eb]
            pad = eb - len(yb)
            mask = np.arange(eb) < len(yb)
            if pad:
                xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
                yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
            ls, cs = self.eval_step(state, xb, yb, mask)
            loss_sum, correct = loss_sum + ls, correct + cs
        return np.asarray(loss_sum, np.float64) / n, np.asarray(correct, np.float64) / n

    def prediction_check(self, state: TrainState, dataset: data_lib.CIFAR10) -> dict:
        """The prediction check (:mod:`meanfield.initcheck`) of the K networks in ``state`` on
        the first ``check_batch`` training images.

        The toy Monte-Carlo of :func:`meanfield.initcheck.compare` is keyed by
        ``jax.random.key(seeds[0])``: a run's check is fixed by its configuration, and runs
        whose seeds start at 0 (every preset) keep the numbers of the ``jax.random.key(0)``
        that the check used before it took a key. The dense toy networks share no random
        draws with the conv networks of that seed: different samplers consume the key."""
        b = min(self.config.check_batch, len(dataset.y_train))
        if b < 1:
            raise ValueError(f"check_batch must be >= 1 for the check, got {b}")
        variables = {"params": state.params}
        if self.has_bn:
            variables["batch_stats"] = state.batch_stats
        x, y = self.normalize(dataset.x_train[:b]), dataset.y_train[:b]
        measured = initcheck.measure(self.model, variables, x, y, seed_map=self.seed_map)
        key = jax.random.key(self.config.seeds[0])
        check = initcheck.compare(self.config.model, measured, key=key, toy_batch=b)
        check.update(batch=b, seeds=list(self.config.seeds))
        return check


# -- checkpoints --------------------------------------------------------------------------


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
        "history": json.dumps(results.to_jsonable(history)),
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
        epoch, history = int(payload["epoch"]), json.loads(payload["history"])
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


def _resume_point(
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


# -- the run ------------------------------------------------------------------------------


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
    differ = [k for k in then if results.to_jsonable(now.get(k)) != then[k]]
    if differ:
        shown = ", ".join(f"{k}: {then[k]!r} -> {now.get(k)!r}" for k in differ)
        raise ValueError(f"cannot resume: the configuration differs from the saved one ({shown})")
    if saved["data"]["sha1"] != fingerprint["sha1"]:
        raise ValueError(
            f"cannot resume: the data differ from the run's (saved {saved['data']}, "
            f"now {fingerprint})"
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
                "images_per_s": n / seconds if seconds else None,
            }
        )
    return rows


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr)


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
    none (:func:`_resume_point`; the configuration must be the saved one, except ``epochs``,
    which may grow); without it, ``workdir`` must not hold a run.
    """
    workdir = Path(workdir)
    ckpt_dir = workdir / "checkpoints"
    n_train = len(dataset.y_train)
    if n_train < config.batch_size:
        raise ValueError(
            f"batch_size must be <= the training images ({n_train}), got {config.batch_size}"
        )
    trainer = Trainer(config, dataset.mean, dataset.std)
    fingerprint = data_fingerprint(dataset)
    seeds = config.seeds
    steps_per_epoch = n_train // config.batch_size

    found = _resume_point(workdir, config, fingerprint, trainer.init_state()) if resume else None
    if found is not None:
        path, state, done, history = found
        # The metrics of the epochs the checkpoint holds: an epoch written after it (into a
        # checkpoint that could not be read) is trained again.
        results.save_jsonl(workdir / "metrics.jsonl", history)
        log(f"resumed {workdir} from epoch {done} ({path.name})")
    else:
        if latest_checkpoint(ckpt_dir) is not None:
            raise FileExistsError(
                f"{workdir} already holds a run; resume it or choose another folder"
            )
        workdir.mkdir(parents=True, exist_ok=True)
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
        history = _rows(0, seeds, None, None, val_loss, val_acc, diverged, 0, 0.0, 0)
        done = 0
        save_checkpoint(ckpt_dir, 0, state, history, config.checkpoint_keep)
        results.save_jsonl(workdir / "metrics.jsonl", history)
        log(f"epoch 0 (init): val accuracy {_fmt(val_acc)} ({time.perf_counter() - t0:.1f} s)")

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
        losses, corrects = [], []
        for i in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + i
            state, loss, correct = step_fn(state, x_all, y_all, order, i, step)
            losses.append(loss)
            corrects.append(correct)
            if bar is not None:
                bar.update(1)
                if i % 25 == 0 or i == steps_per_epoch - 1:
                    live = np.asarray(state.diverged_at) < 0
                    shown = np.asarray(loss)[live]
                    bar.set_postfix(loss=f"{np.mean(shown):.4g}" if shown.size else "all diverged")
        loss_K = np.mean(np.stack([np.asarray(v) for v in losses]), axis=0)
        acc_K = np.sum(np.stack([np.asarray(v) for v in corrects]), axis=0) / (
            steps_per_epoch * config.batch_size
        )
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        val_loss, val_acc = trainer.evaluate(state, dataset.x_test, dataset.y_test)
        diverged = np.asarray(state.diverged_at)
        for k in np.flatnonzero(diverged >= 0):
            if int(k) not in reported:
                reported.add(int(k))
                log(
                    f"seed {seeds[k]} diverged at step {diverged[k]} (non-finite loss or "
                    f"gradient); it is frozen there, its metrics are null from now on, and "
                    f"the other seeds go on"
                )
        n_images = steps_per_epoch * config.batch_size * len(seeds)
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
        save_checkpoint(ckpt_dir, epoch, state, history, config.checkpoint_keep)
        results.save_jsonl(workdir / "metrics.jsonl", history)
        log(
            f"epoch {epoch}/{config.epochs}: train loss {_fmt(loss_K)}, val accuracy "
            f"{_fmt(val_acc)} ({seconds:.1f} s, {n_images / seconds:.0f} images/s)"
        )
    return history


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.asarray(values, dtype=float)) + "]"
