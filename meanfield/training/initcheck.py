"""The prediction check: per-block statistics of the real conv network at initialization,
measured on a real batch, against the mean-field recursion of the same block, init and fan-in.

For each of K freshly initialized networks (the seeds of a training run) and one batch of
training images, :func:`measure` runs the training forward pass (BN with batch statistics) and
the backward pass of the training loss (mean cross-entropy), and records for every layer
l = 0..L (0 = the stem output z^0), as natural logs computed without overflow (at He init
without BN, z^100 ~ 1e23 is a float32 number but its square is not):

=================  ================================================================
``log_m2_z``       mean of (z^l)² over images, positions and channels
``mean_z``         mean of z^l
``log_unitvar_z``  variance over the batch of each (position, channel), averaged
``log_m2_dz``      mean of (dE/dz^l)² (through the taps of :class:`~.models.ResNet`)
``log_var_dw``     mean over block l's k kernels (k = ``shortcut``) of the mean of (dE/dW)²
                   over each kernel's entries, as the recursion defines it (NaN at l = 0)
=================  ================================================================

:func:`predict` runs :func:`meanfield.recursions.profile` with the fan-in of the convolution
n = k·k·C, the init's Var[w], and the statistics of z^0 measured on the same batch (averaged
over the K networks) as its starting point. :func:`compare` puts both side by side, as
log10 values: the forward second moment as it is (the recursion starts from the measured
q_0), the backward ones relative to the last layer (the recursion's loss is Σ g·z^L, the
trainer's is cross-entropy; only the profile's shape is comparable).

What the recursion can and cannot promise here (docs/training.md):

* It is the limit of infinitely many channels. With C = 16 the spread between networks is
  large, and a mean over K networks is carried by its largest members for ReLU without BN.
* With circular padding every position sees a full k x k window, and for linear blocks the
  spatially averaged second moments follow the recursion exactly in expectation (at any
  width); with zero padding the border positions see fewer inputs and the effective n·Var[w]
  is smaller (by ~12% on average for 8x8 on 32x32).
* Fixup starts the head at zero, so at its initialization no gradient reaches any block:
  the measured ``log_m2_dz`` and ``log_var_dw`` are -inf (exactly zero gradients) and their
  values relative to layer L are NaN, a comparison that is undefined rather than failed.
  :func:`compare` says so: those statistics and their summary rows carry ``note`` =
  :data:`NO_GRADIENT` (``note`` is None where the comparison is defined). After the first
  step (which trains the head) the gradients flow, and with W_2 = 0 the recursion's flat
  var_dw profile is exact in expectation (tests/test_initcheck.py).
* BN here normalizes over the batch and all positions of a channel, the recursion per unit;
  the weight gradient of a convolution sums products over positions, so it also depends on
  spatial correlations that the recursion does not carry. These rows are approximate.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from meanfield import layers, montecarlo, recursions, theory
from meanfield.training.initpredictions import (  # the first re-exported
    init_predictions,
    recursion_weights,
)
from meanfield.training.models import ZOO_INITS, ResNet, ResNetConfig
from meanfield.training.modelstats import log_mean_square
from meanfield.training.seedmap import map_seeds, seed_map_for_backend

__all__ = ["NO_GRADIENT", "STATISTICS", "measure", "predict", "compare", "init_predictions"]

STATISTICS = ("mean_z", "log_m2_z", "log_unitvar_z", "log_m2_dz", "log_var_dw")
# The ``note`` of a backward statistic whose measured values are exactly zero in every network
# and layer (Fixup's zero head at init): its values relative to layer L are undefined (NaN).
NO_GRADIENT = (
    "no gradient reaches the blocks: the head is zero at initialization "
    "(the measured gradients are exactly zero, so the profile relative to layer L is undefined)"
)
_LN10 = math.log(10.0)


def _measure_one(model: ResNet, variables: dict, x: jax.Array, y: jax.Array) -> dict:
    depth = model.config.depth
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss_fn(p, taps):
        (logits, stats), _ = model.apply(
            {"params": p, **rest}, x, train=True, taps=taps, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, stats

    (g_params, g_taps), stats = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
        params, jnp.zeros((depth + 1,), jnp.float32)
    )
    log_var_dw = _log_var_dw(g_params["blocks"], layers.dense_count(model.config.tree))
    return {
        **stats,
        "log_m2_dz": g_taps,
        "log_var_dw": jnp.concatenate([jnp.full((1,), jnp.nan, log_var_dw.dtype), log_var_dw]),
    }


def _log_var_dw(block_grads: dict, shortcut: int) -> jax.Array:
    """log of var_dw per block (L,): the mean over the branch's ``shortcut`` kernels
    ``Conv_0`` ... ``Conv_{k-1}`` of the mean of (dE/dW)² over each kernel's entries, the
    quantity of :func:`meanfield.recursions.profile` and :func:`meanfield.montecarlo.simulate`
    for k > 1 (a mean of per-kernel means, so each weight layer counts once)."""
    names = [f"Conv_{i}" for i in range(shortcut)]
    missing = [n for n in names if n not in block_grads]
    if missing:
        raise ValueError(f"the block parameters lack the kernels {missing} of shortcut={shortcut}")
    # Per kernel (k, L): log mean of squares, scaled so 1e20-sized gradients do not overflow.
    log_ms = jnp.stack([jax.vmap(log_mean_square)(block_grads[n]["kernel"]) for n in names])
    # -inf where every kernel's gradient is zero (a zero head, as Fixup's at init).
    return jax.nn.logsumexp(log_ms, axis=0) - math.log(shortcut)


@functools.partial(jax.jit, static_argnames=("model", "seed_map"))
def _measure(model: ResNet, variables_K: dict, x: jax.Array, y: jax.Array, seed_map: str):
    fn = functools.partial(_measure_one, model)
    return map_seeds(fn, (0, None, None), seed_map)(variables_K, x, y)


def measure(
    model: ResNet, variables_K: Any, x: jax.Array, y: jax.Array, *, seed_map: str = "auto"
) -> dict[str, np.ndarray]:
    """Per-layer statistics of K networks (stacked ``variables_K``) on one batch.

    ``x`` is the normalized batch (B, 32, 32, 3), ``y`` its labels; returns arrays of shape
    (K, L + 1) named as in :data:`STATISTICS` (natural logs but ``mean_z``), in float64. A
    network whose values overflow float32 gives inf or NaN from there on. ``seed_map`` as in
    :func:`meanfield.training.models.map_seeds`.
    """
    how = seed_map_for_backend(seed_map)
    out = _measure(model, variables_K, jnp.asarray(x), jnp.asarray(y), how)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def predict(config: ResNetConfig, start: dict[str, float]) -> recursions.Profile:
    """The mean-field profile of ``config``'s blocks from the statistics of z^0 (``start``
    holds ``m2_z``, ``mean_z`` and ``unitvar_z`` at l = 0, as plain values)."""
    m2 = float(start["m2_z"])
    mean = float(start["mean_z"])
    unitvar = min(float(start["unitvar_z"]), m2 - mean**2)  # guard against rounding
    with jax.enable_x64(True):
        prof = recursions.profile(
            config.block,
            depth=config.depth,
            width=float(config.fan_in),
            **recursion_weights(config),
            input_m2=m2,
            input_mean=mean,
            input_unitvar=unitvar,
        )
        return jax.tree_util.tree_map(np.asarray, prof)


def toy_montecarlo(
    config: ResNetConfig,
    start: dict[str, float],
    *,
    key: jax.Array,
    batch: int,
    networks: int = 256,
) -> montecarlo.Estimate:
    """Monte-Carlo of the dense toy network with the conv network's block, n·Var[w] and
    depth, at width C (the channels), from inputs with the measured second moment of z^0;
    ``key`` is the typed key of :func:`meanfield.montecarlo.simulate` (``jax.random.key``).

    Finite-width effects follow the number of units per position, C, not the fan-in k·k·C:
    this is the prediction that includes them (docs/training.md).
    """
    if config.init in ZOO_INITS:  # the rule at width C gives the same α per layer
        weights = dict(init=config.init, c=config.c, branch_scale=config.branch_scale)
    else:
        alpha = config.fan_in * config.var_w
        weights = dict(var_w=alpha / config.channels, branch_scale=config.branch_scale)
    return montecarlo.simulate(
        config.block,
        key=key,
        depth=config.depth,
        width=config.channels,
        **weights,
        networks=networks,
        batch=batch,
        input_std=float(np.sqrt(start["m2_z"])),
        warn=False,  # at width C the backward statistics are heavy-tailed; est.spread says so
    )


def _log10(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


def _across(log10_K: np.ndarray) -> dict[str, list]:
    """Summaries over the K networks (axis 0) of log10 values: the log10 of the mean (what
    the recursion predicts; NaN where any network is not finite), and the mean, its standard
    error and the median of the log10 (the typical network)."""
    k = log10_K.shape[0]
    with warnings.catch_warnings(), np.errstate(invalid="ignore", over="ignore"):
        # All-NaN columns (var_dw at l = 0, overflowed layers) give NaN, silently.
        warnings.simplefilter("ignore", RuntimeWarning)
        top = np.max(log10_K, axis=0)
        of_mean = top + np.log10(np.mean(10.0 ** (log10_K - top), axis=0))
        se = np.nanstd(log10_K, axis=0, ddof=1) / np.sqrt(k) if k > 1 else np.nan * top
        return {
            "log10_of_mean": of_mean.tolist(),
            "mean_log10": np.nanmean(log10_K, axis=0).tolist(),
            "stderr_log10": se.tolist(),
            "median_log10": np.nanmedian(log10_K, axis=0).tolist(),
            "per_seed_log10": log10_K.tolist(),
        }


def _no_gradient(log_K: np.ndarray) -> bool:
    """Whether a measured backward statistic (K, L + 1), natural logs, is exactly zero (-inf)
    in every network at every layer where it is defined (var_dw is NaN at l = 0)."""
    log_K = np.asarray(log_K, dtype=np.float64)
    defined = ~np.isnan(log_K)
    return bool(defined.any() and np.all(np.isneginf(log_K[defined])))


def compare(
    config: ResNetConfig,
    measured: dict[str, np.ndarray],
    *,
    key: jax.Array,
    toy_networks: int = 256,
    toy_batch: int | None = None,
) -> dict[str, Any]:
    """Measured (K networks) against predicted, as a JSON-able record.

    ``statistics[name]`` holds the measured summaries (:func:`_across`), ``predicted_log10``
    (the recursion) and ``toy_log10`` (:func:`toy_montecarlo` with ``toy_networks`` networks of
    ``toy_batch`` inputs, keyed by ``key``; 0 networks skips it) per layer, for ``m2_z`` and
    ``unitvar_z`` (absolute) and ``m2_dz``, ``var_dw`` (relative to layer L). ``summary`` gives, per
    statistic, measured and predicted log10 at the layer farthest from the normalization
    (L for the forward, 1 for the backward).

    Each statistic and its summary row carry ``note``: None where the comparison is defined,
    :data:`NO_GRADIENT` for ``m2_dz`` and ``var_dw`` when the measured gradients are exactly
    zero in every network and layer (Fixup's zero head at init). The measured values of such a
    row are then NaN (``{"__float__": "nan"}`` in JSON, :mod:`meanfield.io.results`), not a
    number to compare; the predictions stay as they are (the recursion's loss Σ g·z^L reaches
    the blocks whatever the head).

    ``key`` is the typed key (``jax.random.key``) of the toy Monte-Carlo, required even when
    ``toy_networks`` is 0 (one signature, no hidden default key).
    """
    start = {
        "m2_z": float(np.mean(np.exp(measured["log_m2_z"][:, 0]))),
        "mean_z": float(np.mean(measured["mean_z"][:, 0])),
        "unitvar_z": float(np.mean(np.exp(measured["log_unitvar_z"][:, 0]))),
    }
    prof = predict(config, start)
    toy, toy_log = None, None
    if toy_networks:
        toy = toy_montecarlo(config, start, key=key, batch=toy_batch or 128, networks=toy_networks)
        toy_log = _toy_log10(toy)
    stats = _statistics(measured, prof, toy_log)
    return {
        "model": config.as_dict(),
        "networks": int(measured["mean_z"].shape[0]),
        "fan_in": config.fan_in,
        "var_w": config.var_w,
        "alpha": config.fan_in * config.var_w,
        "start": start,
        "toy": None
        if toy is None
        else {"width": config.channels, "networks": toy.networks, "batch": toy.batch},
        "statistics": stats,
        "closed_forms": _closed_form_rows(config),
        "summary": _summary(stats, config.depth, toy is not None),
    }


def _toy_log10(toy: montecarlo.Estimate) -> dict[str, np.ndarray]:
    """The toy Monte-Carlo's mean log10 profiles as :func:`compare` shows them: ``m2_z`` and
    ``unitvar_z`` as they are, ``m2_dz`` and ``var_dw`` relative to layer L."""
    toy_log = {
        "m2_z": np.asarray(toy.log10_m2_z.mean, np.float64),
        "unitvar_z": np.asarray(toy.log10_unitvar_z.mean, np.float64),
    }
    for name in ("m2_dz", "var_dw"):
        v = np.asarray(getattr(toy, f"log10_{name}").mean, np.float64)
        with np.errstate(invalid="ignore"):  # -inf - -inf: no gradient (a zero branch)
            toy_log[name] = v - v[-1]
    return toy_log


def _statistics(
    measured: dict[str, np.ndarray],
    prof: recursions.Profile,
    toy_log: dict[str, np.ndarray] | None,
) -> dict[str, Any]:
    """``statistics`` of :func:`compare`: per statistic, the measured summaries over the K
    networks, the recursion's prediction, the ``note`` and, when ``toy_log`` is given, the toy
    Monte-Carlo's profile."""
    stats: dict[str, Any] = {}
    log10 = {k: np.asarray(v) / _LN10 for k, v in measured.items() if k.startswith("log_")}
    with np.errstate(invalid="ignore"):  # inf - inf where a network overflowed: NaN
        rel = {
            "m2_z": (log10["log_m2_z"], prof.log10_m2_z),
            "unitvar_z": (log10["log_unitvar_z"], prof.log10_unitvar_z),
            "m2_dz": (
                log10["log_m2_dz"] - log10["log_m2_dz"][:, -1:],
                prof.log10_m2_dz - prof.log10_m2_dz[-1],
            ),
            "var_dw": (
                log10["log_var_dw"] - log10["log_var_dw"][:, -1:],
                prof.log10_var_dw - prof.log10_var_dw[-1],
            ),
        }
    notes = {
        "m2_z": None,
        "unitvar_z": None,
        "m2_dz": NO_GRADIENT if _no_gradient(measured["log_m2_dz"]) else None,
        "var_dw": NO_GRADIENT if _no_gradient(measured["log_var_dw"]) else None,
    }
    for name, (values, predicted) in rel.items():
        stats[name] = {
            **_across(values),
            "predicted_log10": np.asarray(predicted).tolist(),
            "note": notes[name],
        }
        if toy_log is not None:
            stats[name]["toy_log10"] = toy_log[name].tolist()
    return stats


def _closed_form_rows(config: ResNetConfig) -> list[dict[str, Any]]:
    """``closed_forms`` of :func:`compare`: the paper's closed forms for the backward profile
    ``m2_dz`` of ``config``'s block (for the plain inits without a learned branch scale)."""
    # The paper's closed forms for the backward profile (normalized at L like the rows above).
    forms = []
    plain_init = config.init not in ZOO_INITS and config.branch_scale is None
    for form in (
        theory.closed_forms(
            config.block, depth=config.depth, width=float(config.fan_in), var_w=config.var_w
        )
        if plain_init
        else ()
    ):
        if form.statistic == "m2_dz":
            forms.append(
                {
                    "statistic": form.statistic,
                    "label": form.label,
                    "source": form.source,
                    "kind": form.kind,
                    "log10_values": _log10(form.values).tolist(),
                }
            )
    return forms


def _summary(stats: dict[str, Any], depth: int, with_toy: bool) -> dict[str, Any]:
    """``summary`` of :func:`compare`: each statistic at the layer farthest from the
    normalization (L for the forward, 1 for the backward)."""
    summary = {}
    for name, layer in (("m2_z", depth), ("unitvar_z", depth), ("m2_dz", 1), ("var_dw", 1)):
        s = stats[name]
        summary[name] = {
            "layer": layer,
            "measured_log10_of_mean": s["log10_of_mean"][layer],
            "measured_mean_log10": s["mean_log10"][layer],
            "stderr_log10": s["stderr_log10"][layer],
            "predicted_log10": s["predicted_log10"][layer],
            "toy_log10": s["toy_log10"][layer] if with_toy else None,
            "note": s["note"],
        }
    return summary
