"""The measured reasons of :mod:`meanfield.analysis.calibration`: the gap of Monte-Carlo to the
recursion, whether a larger run closes it, and what the closed forms and the spread over networks
say at one layer.

The flags these return are the strings of :data:`meanfield.analysis.calibration.REASONS` (and, for a
statistic exactly zero in some networks, "exactly zero in …% of networks").
"""

from __future__ import annotations

import math

import numpy as np

from meanfield import montecarlo

__all__ = [
    "form_reasons",
    "relative_gaps",
    "sampling_reasons",
    "scaled_gaps",
    "shrinks",
    "spread_reasons",
]


def relative_gaps(est: montecarlo.Estimate, stat: str, log10_rec: np.ndarray):
    """Relative gap MC/recursion - 1 and its standard error, per layer."""
    s = getattr(est, f"log10_{stat}")
    lm = np.asarray(s.mean, np.float64)
    ls = np.asarray(s.stderr, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return 10.0 ** (lm - log10_rec) - 1.0, 10.0 ** (ls - log10_rec)


def shrinks(gap, se, gap_scaled, se_scaled) -> np.ndarray:
    """Per layer, whether the scaled run closes the gap: it shrinks to at most 0.6 of itself,
    by more than 2 combined standard errors (False where either gap is NaN)."""
    with np.errstate(invalid="ignore"):
        closer = np.abs(gap) - np.abs(gap_scaled) > 2.0 * np.hypot(se, se_scaled)
        return closer & (np.abs(gap_scaled) <= 0.6 * np.abs(gap))


def scaled_gaps(est, stat: str, log10_rec: np.ndarray, like: np.ndarray):
    """:func:`relative_gaps` of a diagnostic run, or NaN (shaped ``like``) where it was not run."""
    if est is None:
        nan = np.full_like(like, np.nan)
        return nan, nan
    return relative_gaps(est, stat, log10_rec)


def form_reasons(paper, corrected, layer: int, rec: float, form_tol: float):
    """The reasons the closed forms give at one layer (``rec``: the recursion's log10 there)
    and the paper's relative error to the recursion (NaN where it has no form)."""
    reasons = []
    paper_rel = math.nan
    for form in (paper, corrected):
        if form is None or not np.isfinite(form["log10"][layer]):
            continue
        rel = 10.0 ** (form["log10"][layer] - rec) - 1.0
        if form is paper:
            paper_rel = rel
        if form["kind"] == "exact" and abs(rel) > 1e-3:
            reasons.append("closed form != recursion")
        elif form is paper and form["kind"] == "approximation" and abs(rel) > form_tol:
            reasons.append("paper's approximation")
        elif form is paper and form["kind"] == "lower_bound" and rel < -form_tol:
            reasons.append("paper's bound is loose")
    return reasons, paper_rel


def sampling_reasons(z: float, z_max: float, by_width, by_batch, by_both) -> list[str]:
    """The reasons for one Monte-Carlo point: what closes its gap when it is more than
    ``z_max`` standard errors off the recursion (the ``by_*`` flags of :func:`shrinks`)."""
    reasons = []
    if abs(z) > z_max:
        if by_width or by_both:
            reasons.append("finite width")
        if by_batch or by_both:
            reasons.append("finite batch")
        if not (by_width or by_batch or by_both):
            reasons.append("unexplained")
    return reasons


def spread_reasons(spread: montecarlo.Spread, layer: int) -> list[str]:
    """The reason the spread over networks gives at one layer: the statistic is exactly zero in
    some but not all networks (``degenerate``), or its mean is carried by a few (heavy tail)."""
    if spread.degenerate[layer]:
        return [f"exactly zero in {spread.zero_fraction[layer]:.0%} of networks"]
    if spread.heavy_tail[layer]:
        return ["heavy tail"]
    return []
