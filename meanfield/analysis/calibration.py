"""A calibrated theory-against-simulation report: every statistic at every layer, with a reason
wherever the three methods disagree.

For each configuration (block, init, width, depth, batch), :func:`calibrate` puts side by side,
per statistic and layer:

* the closed forms of :mod:`meanfield.theory` (the paper's formula and the corrected one, each
  with its kind: exact, lower bound or approximation),
* the infinite-width recursion (:mod:`meanfield.recursions`),
* Monte-Carlo: mean ± SE over networks, the median network and the sd of ln over networks,

with the z-score (MC − recursion)/SE and the relative error MC/recursion − 1, and a ``flag``
that names why they disagree. The reasons are measured, not guessed:

``paper's approximation``
    the paper's closed form differs from the recursion by more than ``form_tol`` (5%); the
    recursion is the n -> ∞ truth, so the formula, not the simulation, is off.
``paper's bound is loose``
    a lower bound that holds but lies more than ``form_tol`` below the recursion.
``closed form != recursion``
    a form labelled exact disagrees with the recursion: a bug, which the tests plant to check
    that the report would catch it.
``finite width``
    |z| > ``z_max`` and the gap to the recursion shrinks when the same configuration is sampled
    at ``scale`` times the width (at least to 0.6 of itself, by more than 2 combined standard
    errors): the n -> ∞ limit is approached, not yet reached.
``finite batch``
    the same, for networks with a BatchNorm, when the batch is scaled instead (BN uses the batch
    statistics, so B is a second finite size the recursion takes to infinity; LayerNorm and
    RMSNorm act per input and have none). When neither alone closes the gap but scaling both
    does, the flag names both.
``heavy tail``
    the sd over networks of ln(statistic) exceeds 1 at that point: the mean is carried by a few
    networks and its standard error (hence z) is not reliable
    (:data:`meanfield.montecarlo.HEAVY_TAIL_SD_LN`).
``unexplained``
    |z| > ``z_max`` and neither a wider network nor a larger batch closes the gap.

A flag may name several reasons, joined by "; ". Empty means all three agree.

The network is a preset :class:`~meanfield.core.architecture.Block` or a :mod:`meanfield.layers`
tree (whose closed forms are those of the preset it equals, none otherwise); whether it has a
BatchNorm is read from its layers (:mod:`meanfield.analysis.structure`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from meanfield import montecarlo, recursions
from meanfield.analysis import structure
from meanfield.analysis.calibration_reasons import (
    form_reasons,
    relative_gaps,
    sampling_reasons,
    scaled_gaps,
    shrinks,
    spread_reasons,
)
from meanfield.analysis.sweeps import closed_forms64, log10_or_nan
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.layers import Layer

__all__ = ["REASONS", "STATISTICS", "calibrate", "markdown", "summary"]

STATISTICS = ("m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw")
REASONS = (
    "paper's approximation",
    "paper's bound is loose",
    "closed form != recursion",
    "finite width",
    "finite batch",
    "heavy tail",
    "unexplained",
)


def _forms(block: Block | Layer, depth: int, width: int, var_w: float) -> dict[str, dict]:
    """statistic -> {"paper": form, "corrected": form}, log10 values in float64."""
    out: dict[str, dict] = {}
    for f in closed_forms64(block, depth=depth, width=width, var_w=var_w):
        out.setdefault(f.statistic, {}).setdefault(
            f.source, {"label": f.label, "kind": f.kind, "log10": log10_or_nan(f.values)}
        )
    return out


def _simulate(block, key, depth, width, var_w, networks, batch, simulate_kwargs):
    return montecarlo.simulate(
        block,
        key=key,
        depth=depth,
        width=width,
        var_w=var_w,
        networks=networks,
        batch=batch,
        warn=False,
        **simulate_kwargs,
    )


def _check_arguments(
    block, depth, width, scale, z_max, form_tol, var_w
) -> tuple[int, int, int, float]:
    """The checked (depth, width, scale, var_w) of :func:`calibrate`; ValueError when out of
    range."""
    structure.tree_of(block)
    depth = arch.static_int("depth", depth)
    width = arch.static_int("width", width)
    scale = arch.static_int("scale", scale)
    if scale < 2:
        raise ValueError(
            f"scale must be >= 2 (the diagnostic run is scale times larger), got {scale}"
        )
    arch.check_positive("z_max", z_max)
    arch.check_positive("form_tol", form_tol)
    arch.check_var_w(var_w)
    return depth, width, scale, float(var_w)


def _statistics(block: Block | Layer, forms: dict[str, dict]) -> list[str]:
    """The statistics a report covers, in :data:`STATISTICS` order."""
    # Always the three of the design; var_z and unitvar_z where a closed form speaks of them or
    # (unitvar_z) where BN divides by it.
    return [
        s
        for s in STATISTICS
        if s in ("m2_z", "m2_dz", "var_dw")
        or s in forms
        or (s == "unitvar_z" and structure.has_batchnorm(block))
    ]


def _diagnostic_runs(block, key, depth, width, var_w, networks, batch, scale, simulate_kwargs):
    """The Monte-Carlo runs at ``scale``·width and (networks with a BatchNorm) at
    ``scale``·batch and at both: (wide, big, both), None where not run."""

    def run(fold: int, n: int, v: float, b: int) -> montecarlo.Estimate:
        k = jax.random.fold_in(key, fold)
        return _simulate(block, k, depth, n, v, networks, b, simulate_kwargs)

    # Same α = n·var_w at the larger width; the recursion depends on α only.
    wide = run(1, scale * width, var_w / scale, batch)
    if not structure.has_batchnorm(block):
        return wide, None, None
    return (
        wide,
        run(2, width, var_w, scale * batch),
        run(3, scale * width, var_w / scale, scale * batch),
    )


def _form_columns(paper, corrected, layer: int) -> dict:
    """The closed-form columns of one row: label, kind and log10 value of each form."""
    return {
        "paper_form": paper["label"] if paper else "",
        "paper_kind": paper["kind"] if paper else "",
        "log10_paper": float(paper["log10"][layer]) if paper else math.nan,
        "corrected_form": corrected["label"] if corrected else "",
        "corrected_kind": corrected["kind"] if corrected else "",
        "log10_corrected": float(corrected["log10"][layer]) if corrected else math.nan,
    }


def _statistic_rows(
    stat: str,
    est: montecarlo.Estimate,
    runs: tuple,
    log10_rec: np.ndarray,
    gap_se: tuple[np.ndarray, np.ndarray],
    forms: dict,
    columns: dict,
    *,
    z_max: float,
    form_tol: float,
) -> list[dict]:
    """The rows of one statistic, one per layer where both Monte-Carlo and the recursion are
    finite. ``runs``: the diagnostic (wide, big, both) runs, None where not run; ``gap_se``:
    :func:`relative_gaps` of ``est``; ``columns``: the configuration's columns that start each
    row."""
    gap, se = gap_se
    lm = np.asarray(getattr(est, f"log10_{stat}").mean, np.float64)
    ls = np.asarray(getattr(est, f"log10_{stat}").stderr, np.float64)
    spread = est.spread[stat]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = gap / se
    wide, big, both = runs
    gap_w, se_w = scaled_gaps(wide, stat, log10_rec, gap)
    gap_b, se_b = scaled_gaps(big, stat, log10_rec, gap)
    gap_wb, se_wb = scaled_gaps(both, stat, log10_rec, gap)
    by_width = shrinks(gap, se, gap_w, se_w)
    by_batch = shrinks(gap, se, gap_b, se_b)
    by_both = shrinks(gap, se, gap_wb, se_wb) & ~by_width & ~by_batch
    paper = forms.get(stat, {}).get("paper")
    corrected = forms.get(stat, {}).get("corrected")
    rows = []
    for layer in range(columns["depth"] + 1):
        if not (np.isfinite(lm[layer]) and np.isfinite(log10_rec[layer])):
            continue
        rec = log10_rec[layer]
        reasons, paper_rel = form_reasons(paper, corrected, layer, rec, form_tol)
        reasons += sampling_reasons(
            z[layer], z_max, by_width[layer], by_batch[layer], by_both[layer]
        )
        reasons += spread_reasons(spread, layer)
        rows.append(
            columns
            | {"statistic": stat, "layer": layer}
            | _form_columns(paper, corrected, layer)
            | {
                "log10_recursion": float(rec),
                "log10_mc_mean": float(lm[layer]),
                "log10_mc_stderr": float(ls[layer]),
                "log10_mc_median": float(spread.log10_median[layer]),
                "sd_ln": float(spread.sd_ln[layer]),
                "zero_fraction": float(spread.zero_fraction[layer]),
                "z": float(z[layer]),
                "rel_error": float(gap[layer]),
                "paper_rel_error": float(paper_rel),
                "rel_error_wide": float(gap_w[layer]),
                "rel_error_big_batch": float(gap_b[layer]),
                "rel_error_wide_big_batch": float(gap_wb[layer]),
                "flag": "; ".join(reasons),
            }
        )
    return rows


def calibrate(
    block: Block | Layer,
    *,
    key: jax.Array,
    depth: int,
    width: int,
    var_w: float,
    networks: int,
    batch: int,
    init: str = "",
    scale: int = 4,
    z_max: float = 4.0,
    form_tol: float = 0.05,
    diagnose: bool = True,
    **simulate_kwargs,
) -> list[dict]:
    """One row per (statistic, layer) of one configuration; see the module docstring.

    Monte-Carlo runs once at (width, batch) and, when some point is more than ``z_max``
    standard errors off the recursion and ``diagnose`` is True, again at ``scale``·width and
    (networks with a BatchNorm) at ``scale``·batch and at both, with keys folded from
    ``key``, to name the reason.
    ``init`` is only a label for the rows. Columns, all floats or strings: block, init, width,
    depth, batch, networks, var_w, alpha, statistic, layer, ``paper_form``/``paper_kind``/
    ``log10_paper`` and ``corrected_form``/``corrected_kind``/``log10_corrected`` (empty/NaN
    where the block has none), ``log10_recursion``, ``log10_mc_mean``, ``log10_mc_stderr``,
    ``log10_mc_median``, ``sd_ln``, ``z``, ``rel_error`` (MC/recursion - 1), ``paper_rel_error``
    (paper/recursion - 1), ``rel_error_wide``, ``rel_error_big_batch`` and
    ``rel_error_wide_big_batch`` (the diagnostic runs; NaN when not run) and ``flag``.
    """
    depth, width, scale, var_w = _check_arguments(
        block, depth, width, scale, z_max, form_tol, var_w
    )
    prof = recursions.profile(block, depth=depth, width=width, var_w=var_w)
    forms = _forms(block, depth, width, var_w)
    est = _simulate(block, key, depth, width, var_w, networks, batch, simulate_kwargs)
    stats = _statistics(block, forms)
    log10_rec = {s: np.asarray(getattr(prof, f"log10_{s}"), np.float64) for s in stats}
    gaps = {s: relative_gaps(est, s, log10_rec[s]) for s in stats}
    off = any(np.nanmax(np.abs(g / se), initial=0.0) > z_max for g, se in gaps.values())

    runs = (None, None, None)
    if diagnose and off:
        runs = _diagnostic_runs(
            block, key, depth, width, var_w, networks, batch, scale, simulate_kwargs
        )
    columns = {
        "block": block.name,
        "init": init,
        "width": width,
        "depth": depth,
        "batch": batch,
        "networks": networks,
        "var_w": var_w,
        "alpha": var_w * width,
    }
    rows = []
    for stat in stats:
        rows += _statistic_rows(
            stat,
            est,
            runs,
            log10_rec[stat],
            gaps[stat],
            forms,
            columns,
            z_max=z_max,
            form_tol=form_tol,
        )
    return rows


def summary(rows: Sequence[dict], z_max: float = 4.0) -> list[dict]:
    """One row per (block, init, statistic): points, how many within z_max, and per reason how
    many points carry it."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["block"], r["init"], r["statistic"]), []).append(r)
    out = []
    for (block, init, stat), rs in groups.items():
        z = np.array([r["z"] for r in rs], dtype=float)
        row = {
            "block": block,
            "init": init,
            "statistic": stat,
            "points": len(rs),
            "within_z_max": int(np.sum(np.abs(z) <= z_max)),
            "max_abs_z": float(np.nanmax(np.abs(z))),
            "max_abs_rel_error": float(np.nanmax(np.abs([r["rel_error"] for r in rs]))),
        }
        for reason in REASONS:
            row[reason] = sum(reason in r["flag"].split("; ") for r in rs)
        out.append(row)
    return out


def _sci(log10_value: float) -> str:
    if not np.isfinite(log10_value):
        return "–"
    if -3 <= log10_value < 5:
        return f"{10**log10_value:.4g}"
    exponent = math.floor(log10_value)
    return f"{10 ** (log10_value - exponent):.3f}e{exponent}"


def markdown(rows: Sequence[dict], layers: Sequence[int] | None = None) -> str:
    """The rows as markdown: one table per (block, init, statistic), at ``layers`` (default:
    0, 1, L/4, L/2, 3L/4 and L; var_dw has no layer 0)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["block"], r["init"], r["statistic"]), []).append(r)
    lines = []
    for (block, init, stat), rs in groups.items():
        depth = rs[0]["depth"]
        if layers is None:
            want = {0, 1, depth // 4, depth // 2, 3 * depth // 4, depth}
        else:
            want = set(layers)
        first = rs[0]
        label = init or f"var_w = {first['var_w']:.3g}"
        lines.append(
            f"### {block}, {label}: `{stat}` "
            f"(n = {first['width']}, L = {depth}, B = {first['batch']}, "
            f"R = {first['networks']})\n"
        )
        paper = first["paper_form"] and f"paper: {first['paper_form']} ({first['paper_kind']})"
        corrected = first["corrected_form"] and (
            f"corrected: {first['corrected_form']} ({first['corrected_kind']})"
        )
        if paper or corrected:
            lines.append("Closed forms: " + "; ".join(x for x in (paper, corrected) if x) + ".\n")
        lines.append(
            "| l | paper | corrected | recursion | MC mean ± SE | MC median | sd ln | z | "
            "rel. error | flag |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            if r["layer"] not in want:
                continue
            se = 10 ** (r["log10_mc_stderr"] - r["log10_mc_mean"])
            lines.append(
                f"| {r['layer']} | {_sci(r['log10_paper'])} | {_sci(r['log10_corrected'])} | "
                f"{_sci(r['log10_recursion'])} | {_sci(r['log10_mc_mean'])} ± {se:.1%} | "
                f"{_sci(r['log10_mc_median'])} | {r['sd_ln']:.2f} | {r['z']:+.1f} | "
                f"{r['rel_error']:+.3g} | {r['flag']} |"
            )
        lines.append("")
    return "\n".join(lines)
