"""Figures of the finite-width and finite-batch sweeps: Monte-Carlo (mean ± SE, median and
5-95% band over networks) against the width n or the BN batch B, beside the recursion, Euler's
floor, the fit a + b/n and the exact finite-batch closed form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meanfield.io.plots.style import log10_errorbars, new_figure


def _sweep_panel(ax, rows: Sequence[dict], x_key: str, color: str = "#1f77b4") -> None:
    """Monte-Carlo mean ± SE (points), median and 5-95% band over networks (line, shading)
    and the recursion (horizontal line) of one sweep, in log10."""
    rows = [r for r in rows if "log10_mc_mean" in r]
    x = np.array([r[x_key] for r in rows], dtype=float)
    lm = np.array([r["log10_mc_mean"] for r in rows], dtype=float)
    ls = np.array([r["log10_mc_stderr"] for r in rows], dtype=float)
    heavy = np.array([r["heavy_tail"] for r in rows], dtype=bool)
    med = np.array([r["log10_mc_median"] for r in rows], dtype=float)
    if np.isfinite(med).any():
        lo = np.array([r["log10_mc_q05"] for r in rows], dtype=float)
        hi = np.array([r["log10_mc_q95"] for r in rows], dtype=float)
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0, label="5-95% of networks")
        ax.plot(x, med, color=color, linewidth=1, label="median network")
    yerr = log10_errorbars(lm, ls)
    for mask, face, label in ((~heavy, color, "mean ± SE"), (heavy, "none", "mean (heavy tail)")):
        if mask.any():
            ax.errorbar(
                x[mask],
                lm[mask],
                yerr=yerr[:, mask],
                fmt="o",
                color=color,
                markerfacecolor=face,
                markersize=4,
                capsize=2,
                label=label,
            )
    ax.axhline(rows[0]["log10_recursion"], color="k", linewidth=1, label="recursion (n, B = ∞)")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3, which="both")


def width_sweep_figure(sweeps: Sequence[dict], title: str | None = None):
    """One panel per width sweep (records of experiments/finite_width.py: ``rows`` from
    :func:`meanfield.analysis.finitewidth.width_sweep`, optional ``fit`` from
    ``extrapolate_width``): Monte-Carlo against n with the recursion, Euler's floor (dashed) and the
    fit a + b/n."""
    fig, axes = new_figure(1, len(sweeps), width=3.5, height=3.0)
    for j, sw in enumerate(sweeps):
        ax = axes[0, j]
        rows = sw["rows"]
        _sweep_panel(ax, rows, "width")
        x = np.array([r["width"] for r in rows], dtype=float)
        if "log10_euler_floor" in rows[0]:
            floor = [r["log10_euler_floor"] for r in rows]
            ax.plot(
                x, floor, "--", color="#d62728", linewidth=1, label=r"Euler floor $q_L/(q_0 n)$"
            )
        fit = sw.get("fit")
        if fit:
            xs = np.geomspace(min(fit["widths"]), x.max(), 50)
            with np.errstate(invalid="ignore", divide="ignore"):
                ys = np.log10(fit["limit"] + fit["slope"] / xs)
            ax.plot(xs, ys, ":", color="0.3", linewidth=1.2, label="fit a + b/n")
        r0 = rows[0]
        ax.set_title(
            f"{r0['block']}\n{r0['quantity']}, L = {r0['depth']}, B = {r0['batch']}", fontsize=9
        )
        ax.set_xlabel("width n")
        if j == 0:
            ax.set_ylabel(r"$\log_{10}$ value")
        ax.legend(fontsize=6.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def batch_sweep_figure(sweeps: Sequence[dict], title: str | None = None):
    """One panel per batch sweep (``rows`` from :func:`meanfield.analysis.finitewidth.batch_sweep`,
    optional ``finite_batch`` curve {"batch", "log10_value"}): Monte-Carlo against the BN
    batch B, with the recursion (B = ∞) and the exact finite-batch closed form."""
    fig, axes = new_figure(1, len(sweeps), width=3.5, height=3.0)
    for j, sw in enumerate(sweeps):
        ax = axes[0, j]
        _sweep_panel(ax, sw["rows"], "batch")
        curve = sw.get("finite_batch")
        if curve:
            ax.plot(
                curve["batch"],
                curve["log10_value"],
                "-",
                color="#d62728",
                linewidth=1.2,
                label="n = ∞, finite B (exact)",
            )
        r0 = sw["rows"][0]
        ax.set_title(
            f"{r0['block']}\n{r0['quantity']}, L = {r0['depth']}, n = {r0['width']}", fontsize=9
        )
        ax.set_xlabel("BN batch B")
        if j == 0:
            ax.set_ylabel(r"$\log_{10}$ value")
        ax.legend(fontsize=6.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
