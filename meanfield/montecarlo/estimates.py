"""What :func:`meanfield.montecarlo.simulate` returns, and how per-network values become it.

The result types (:class:`Stat`, :class:`Spread`, :class:`Estimate`), the warnings that flag an
unreliable mean (:class:`HeavyTailWarning`, :class:`RankDeficitWarning`) and their messages, and
the reduction over networks: the mean and standard error of statistics carried as logs (without
overflow), and the spread over networks (median, 5-95% band, mean and sd of ln).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import numpy as np

from meanfield.core.architecture import Block

_LN10 = math.log(10.0)
# Per-network statistics kept in log form (positive), and the raw mean.
_LOG_STATS = ("m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw")
# Above this standard deviation over networks of ln(statistic) the mean is called heavy-tailed.
HEAVY_TAIL_SD_LN = 1.0


class HeavyTailWarning(UserWarning):
    """A Monte-Carlo mean is carried by a few networks, or some networks' statistic is exactly
    zero while others' is not; its standard error is not reliable."""


class RankDeficitWarning(UserWarning):
    """The weight-free engine treated as zero Gram eigenvalues that the structure of the
    layer's inputs does not make zero (nearly parallel inputs in float32): in those directions
    the backward pass samples W^T D afresh instead of from its law given U."""


class Stat(NamedTuple):
    """Mean over networks and its standard error, each an array over layers l = 0..L."""

    mean: jax.Array
    stderr: jax.Array


class Spread(NamedTuple):
    """How one statistic is spread over the R networks, each an array over layers l = 0..L.

    ``median``, ``q05`` and ``q95`` are the median and the 5% and 95% quantiles over all
    networks (``log10_`` versions stay finite where raw values overflow; a network whose
    statistic is exactly 0 counts as 0, log10 = -inf, so a layer where more than 5% of the
    networks are exactly zero has ``q05`` = 0). ``mean_ln`` and ``sd_ln`` are the mean and
    standard deviation (ddof = 1) of the natural log of the statistic over the networks where
    it is positive, so exp(mean_ln) is the geometric mean of those, the typical live network
    (where every network is 0: mean_ln = -inf and sd_ln = 0; with one positive network sd_ln
    is NaN, and the layer is flagged). ``zero_fraction`` is the fraction of networks whose
    statistic is exactly 0 (a dead ReLU layer, a gradient that an init makes exactly zero);
    ``degenerate`` marks layers where 0 < ``zero_fraction`` < 1: an atom at zero besides a
    continuous part, whose log has infinite spread. ``heavy_tail`` is ``sd_ln >
    HEAVY_TAIL_SD_LN`` or ``degenerate``, so a NaN from zeros is never read as "not heavy".
    For ``mean_z``, which can be negative, the log fields are NaN and ``degenerate`` and
    ``heavy_tail`` are False (``zero_fraction`` still counts exact zeros). Where a statistic
    is undefined in every network (``var_dw`` at l = 0) every field but the flags is NaN.
    """

    median: np.ndarray
    q05: np.ndarray
    q95: np.ndarray
    log10_median: np.ndarray
    log10_q05: np.ndarray
    log10_q95: np.ndarray
    mean_ln: np.ndarray
    sd_ln: np.ndarray
    heavy_tail: np.ndarray
    zero_fraction: np.ndarray = None
    degenerate: np.ndarray = None


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "mean_z",
        "corr_z",
        *_LOG_STATS,
        *(f"log10_{name}" for name in _LOG_STATS),
        "overflow",
        "spread",
        "rank_deficit",
        "rank_deficit_max",
    ],
    meta_fields=["networks", "batch", "seconds"],
)
@dataclasses.dataclass(frozen=True)
class Estimate:
    """Monte-Carlo estimate: per-layer :class:`Stat` for every statistic of the recursions.

    A pytree (the arrays are its leaves; ``networks``, ``batch`` and ``seconds`` are static),
    with the field names of :class:`meanfield.recursions.Profile` plus the Monte-Carlo ones,
    so ``jax.tree.map`` and code written for a profile's fields apply to both.

    ``log10_m2_z`` etc. hold log10 of the mean and of the standard error; ``overflow`` is True
    at layers where a raw mean is not representable in the float type.
    """

    mean_z: Stat
    m2_z: Stat
    var_z: Stat
    unitvar_z: Stat
    m2_dz: Stat
    var_dw: Stat
    corr_z: Stat
    log10_m2_z: Stat
    log10_var_z: Stat
    log10_unitvar_z: Stat
    log10_m2_dz: Stat
    log10_var_dw: Stat
    overflow: np.ndarray
    networks: int
    batch: int
    seconds: float  # wall time of the simulation, compilation included
    # Statistic name (mean_z, m2_z, var_z, unitvar_z, m2_dz, var_dw) -> its spread over networks.
    spread: dict[str, Spread] = dataclasses.field(default_factory=dict)
    # Per layer (0..L): the fraction of networks where a weight-free layer's pseudo-inverse
    # dropped Gram eigenvalues beyond the structural rank of its inputs (B - 1 after BN, fewer
    # with all-zero inputs or units), and the largest number dropped in one network (summed
    # over the branch's k weights). Always 0 for the explicit engine; see RankDeficitWarning.
    rank_deficit: np.ndarray | None = None
    rank_deficit_max: np.ndarray | None = None

    def heavy_tails(self) -> dict[str, np.ndarray]:
        """Statistic -> the layers flagged ``heavy_tail`` in its :class:`Spread`: the sd over
        the positive networks of ln exceeds HEAVY_TAIL_SD_LN, or the statistic is exactly
        zero in some networks but not in all (``degenerate``)."""
        return {
            k: np.flatnonzero(v.heavy_tail) for k, v in self.spread.items() if v.heavy_tail.any()
        }

    def as_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Stat):
                v = {"mean": v.mean, "stderr": v.stderr}
            elif f.name == "spread":
                v = {k: s._asdict() for k, s in v.items()}
            out[f.name] = v
        return out


# ------------------------------------------------------------------------------------------
# Reduction over networks


def _aggregate(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log mean, log stderr) over axis 0 of per-network values given as logs; NaN-safe."""
    ref = np.max(values, axis=0)
    ref = np.where(np.isfinite(ref), ref, 0.0)
    y = np.exp(values - ref)
    r = values.shape[0]
    mean = np.mean(y, axis=0)
    se = np.std(y, axis=0, ddof=1) / math.sqrt(r) if r > 1 else np.full_like(mean, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(mean) + ref, np.log(se) + ref


# Stands for ln 0 = -inf inside the quantile interpolation (which gives NaN for -inf - -inf);
# results below _LOG_ZERO_FLOOR are mapped back to -inf. Real logs are above -1e4.
_LOG_ZERO = -1e300
_LOG_ZERO_FLOOR = -1e200


def _log_quantiles(values: np.ndarray, qs) -> list[np.ndarray]:
    """Quantiles over axis 0 of natural logs that may be -inf (statistic exactly 0): -inf
    where the interpolation touches a zero network, never NaN from -inf - -inf."""
    safe = np.where(values == -np.inf, _LOG_ZERO, values)
    out = np.quantile(safe, qs, axis=0)
    return [np.where(q < _LOG_ZERO_FLOOR, -np.inf, q) for q in out]


def spread_over_networks(values: np.ndarray, logs: bool) -> Spread:
    """Spread over axis 0 (networks) of per-network values, given as natural logs if ``logs``
    (-inf for a statistic exactly 0). See :class:`Spread` for the fields."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if logs:
            undefined = np.all(np.isnan(values), axis=0)
            zero = values == -np.inf
            zero_fraction = np.where(undefined, np.nan, zero.mean(axis=0))
            q05, median, q95 = _log_quantiles(values, [0.05, 0.5, 0.95])
            positive = np.where(zero, np.nan, values)
            count = np.sum(~np.isnan(positive), axis=0)
            mean_ln = np.nansum(positive, axis=0) / np.where(count > 0, count, 1)
            mean_ln = np.where(count > 0, mean_ln, -np.inf)
            dev = np.where(np.isnan(positive), 0.0, positive - mean_ln)
            sd_ln = np.sqrt(np.sum(dev**2, axis=0) / np.where(count > 1, count - 1, 1))
            sd_ln = np.where(count > 1, sd_ln, np.where(count == 0, 0.0, np.nan))
            mean_ln = np.where(undefined, np.nan, mean_ln)
            sd_ln = np.where(undefined, np.nan, sd_ln)
            degenerate = (zero_fraction > 0) & (zero_fraction < 1)
            heavy = (np.nan_to_num(sd_ln) > HEAVY_TAIL_SD_LN) | degenerate
            log10 = [q / _LN10 for q in (median, q05, q95)]
            raw = [np.exp(q) for q in (median, q05, q95)]
        else:
            q05, median, q95 = np.quantile(values, [0.05, 0.5, 0.95], axis=0)
            zero_fraction = np.mean(values == 0, axis=0)
            mean_ln = sd_ln = np.full(values.shape[1:], np.nan)
            log10 = [mean_ln] * 3
            raw = [median, q05, q95]
            degenerate = heavy = np.zeros(values.shape[1:], bool)
    return Spread(*raw, *log10, mean_ln, sd_ln, heavy, zero_fraction, degenerate)


def heavy_tail_message(block: Block, spread: dict[str, Spread]) -> str | None:
    """The :class:`HeavyTailWarning` text for the layers flagged in ``spread`` (heavy tail,
    or exactly zero in some networks only), or None where none is."""
    parts, degenerate = [], []
    for name, s in spread.items():
        tails = s.heavy_tail & ~s.degenerate
        where = np.flatnonzero(tails)
        if where.size:
            parts.append(
                f"{name} at {where.size} layer(s) from l = {where[0]} "
                f"(sd of ln up to {np.nanmax(s.sd_ln[where]):.3g})"
            )
        where = np.flatnonzero(s.degenerate)
        if where.size:
            degenerate.append(
                f"{name} at {where.size} layer(s) from l = {where[0]} (exactly 0 in up to "
                f"{100 * np.max(s.zero_fraction[where]):.3g}% of the networks)"
            )
    if not parts and not degenerate:
        return None
    out = []
    if parts:
        out.append(
            f"heavy tail over networks for {block.name}: " + "; ".join(parts) + f". Above "
            f"sd(ln) = {HEAVY_TAIL_SD_LN:g} the mean is carried by a few networks and its "
            "standard error is not reliable; read Estimate.spread (median, 5-95% band) for the "
            "typical network."
        )
    if degenerate:
        out.append(
            f"statistic exactly zero in some networks but not in others for {block.name}: "
            + "; ".join(degenerate)
            + ". The spread there is an atom at 0 plus the live networks: Spread.zero_fraction "
            "gives the atom, mean_ln and sd_ln describe the networks where it is positive."
        )
    return " ".join(out)


def rank_deficit_message(block: Block, fraction: np.ndarray, largest: np.ndarray) -> str | None:
    """The :class:`RankDeficitWarning` text for the layers where a fraction of the networks
    lost rank beyond the structure (up to ``largest`` eigenvalues), or None where none did."""
    where = np.flatnonzero(fraction > 0)
    if not where.size:
        return None
    return (
        f"weight-free engine, {block.name}: at {where.size} layer(s) from l = {where[0]}, in "
        f"up to {100 * np.max(fraction):.3g}% of the networks, the Gram matrix of a layer's "
        f"inputs had up to {int(np.max(largest))} eigenvalue(s) below the cut-off "
        "λ_max · B · eps that the structure of the inputs does not make zero (nearly parallel "
        "inputs at this precision); the backward pass samples those directions afresh instead "
        "of conditioning on the layer's output. Estimate.rank_deficit gives the fraction per "
        "layer; use float64 (jax_enable_x64) or engine='explicit' there."
    )


def reduce_networks(
    per: dict[str, np.ndarray],
    *,
    depth: int,
    networks: int,
    batch: int,
    seconds: float,
    dtype,
) -> Estimate:
    """The :class:`Estimate` from per-network values (``mean_z``, ``log_<name>`` for the
    statistics kept as logs, ``rank_deficit``; each networks x (depth + 1), as
    :func:`meanfield.montecarlo.network_statistics` returns them): mean and standard error over
    networks, in ``dtype``, and the spread of every statistic."""
    fields: dict = {}
    overflow = np.zeros(depth + 1, bool)
    mz = per["mean_z"].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf where z itself overflowed
        mz_se = mz.std(0, ddof=1) / math.sqrt(networks)
    fields["mean_z"] = Stat(mz.mean(0).astype(dtype), mz_se.astype(dtype))
    spread = {"mean_z": spread_over_networks(mz, logs=False)}
    # corr_z per network: (mean over pairs a != b of z_a·z_b / n) / m2_z = 1 - B/(B - 1) · (the
    # biased batch variance) / m2_z; undefined with one input.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_ratio = per["log_unitvar_z"].astype(np.float64) - per["log_m2_z"].astype(np.float64)
        corr = 1.0 - batch / (batch - 1) * np.exp(log_ratio) if batch > 1 else np.nan * log_ratio
        corr_se = corr.std(0, ddof=1) / math.sqrt(networks)
    fields["corr_z"] = Stat(corr.mean(0).astype(dtype), corr_se.astype(dtype))
    spread["corr_z"] = spread_over_networks(corr, logs=False)
    for name in _LOG_STATS:
        spread[name] = spread_over_networks(per[f"log_{name}"].astype(np.float64), logs=True)
        log_mean, log_se = _aggregate(per[f"log_{name}"].astype(np.float64))
        fields[f"log10_{name}"] = Stat(
            (log_mean / _LN10).astype(dtype), (log_se / _LN10).astype(dtype)
        )
        with np.errstate(over="ignore"):
            mean = np.exp(log_mean).astype(dtype)
            se = np.exp(log_se).astype(dtype)
        overflow |= np.isinf(mean) & np.isfinite(log_mean)
        if name == "m2_z":  # NaN where a non-homogeneous f met a scale past the float range
            overflow |= np.isnan(log_mean)
        fields[name] = Stat(mean, se)
    deficit = per["rank_deficit"]
    rank_deficit = np.mean(deficit > 0, axis=0)
    rank_deficit_max = np.max(deficit, axis=0).astype(int)
    return Estimate(
        **fields,
        overflow=overflow,
        networks=networks,
        batch=batch,
        seconds=seconds,
        spread=spread,
        rank_deficit=rank_deficit,
        rank_deficit_max=rank_deficit_max,
    )
