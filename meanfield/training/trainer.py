"""The K networks of one training run and their jit-compiled steps: :class:`TrainConfig` (the
run's settings, frozen and validated), :class:`TrainState` (the stacked state of K networks),
the optimizer (:func:`make_optimizer`) and :class:`Trainer` (init, train step, evaluation and
the prediction check, one network's code mapped over the seeds by
:func:`meanfield.training.seedmap.map_seeds`).

:func:`meanfield.training.train.train_and_evaluate` runs them epoch by epoch;
:mod:`meanfield.training.train` re-exports every name here.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from meanfield import layers
from meanfield.core import architecture as arch
from meanfield.training import data as data_lib
from meanfield.training import initcheck
from meanfield.training.fftconv import CONV_METHODS
from meanfield.training.models import ResNet, ResNetConfig
from meanfield.training.seedmap import SEED_MAPS, map_seeds, seed_map_for_backend

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "init_model",
    "init_network",
    "make_optimizer",
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
    conv: str = "auto"  # circular convolutions by the FFT or directly (fftconv.CONV_METHODS)
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
        if self.conv not in CONV_METHODS:
            raise ValueError(f"conv must be one of {CONV_METHODS}, got {self.conv!r}")

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


def init_network(model: ResNet, tx: optax.GradientTransformation, key: jax.Array):
    """(params, batch_stats, opt_state) of one network of ``model`` with the optimizer ``tx``."""
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    variables = model.init(key, x, train=False)
    params = variables["params"]
    return params, variables.get("batch_stats", {}), tx.init(params)


def init_model(config: TrainConfig) -> ResNet:
    """The network that initializes the parameters: the trained one's, from a rolled scan over
    the blocks (the same parameters bit for bit; a program of one block's draws, not
    ``depth`` of them, compiles in seconds at L = 100 on CPU too)."""
    return ResNet(config.model, dtype=_DTYPES[config.precision], unroll=1, conv=config.conv)


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
        self.model = ResNet(config.model, dtype=_DTYPES[config.precision], conv=config.conv)
        self.tx = make_optimizer(config)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.seed_map = seed_map_for_backend(config.seed_map)
        self.has_bn = layers.has_batchnorm(config.model.tree)
        self._init_model = init_model(config)
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
        return init_network(self._init_model, self.tx, key)

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
        """The prediction check (:mod:`meanfield.training.initcheck`) of the K networks in ``state``
        on the first ``check_batch`` training images.

        The toy Monte-Carlo of :func:`meanfield.training.initcheck.compare` is keyed by
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
