"""Figures of the statistics against layer and depth, one color per initialization: the
per-layer profiles (recursion, closed forms, Monte-Carlo), the forward growth and gradient
ratio against depth L with a plain-network contrast, and Var[dE/dW^l] against layer l for
several depths (the paper's L/l law against the corrected one)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meanfield.io.plots.style import (
    INIT_COLORS,
    INIT_LABELS,
    KIND_STYLE,
    STAT_LABELS,
    closed_form_line,
    log10_errorbars,
    markevery,
    new_figure,
)


def _mc_points(ax, rec: dict, stat: str, color: str, every: int) -> None:
    mc = rec["montecarlo"]
    lm = np.asarray(mc[f"log10_{stat}"]["mean"], dtype=float)
    ls = np.asarray(mc[f"log10_{stat}"]["stderr"], dtype=float)
    layers = np.arange(lm.size)
    keep = ((layers + every // 2) % every == 0) | (layers == lm.size - 1)  # between circles
    keep &= np.isfinite(lm)
    ax.errorbar(
        layers[keep],
        lm[keep],
        yerr=log10_errorbars(lm, ls)[:, keep],
        fmt="s",
        markersize=3,
        color=color,
        ecolor=color,
        elinewidth=0.8,
        capsize=1.5,
        label=f"Monte-Carlo (R = {rec['networks']}, B = {rec['batch']})",
    )


def profile_figure(
    records: Sequence[dict],
    columns: Sequence[str],
    statistics: Sequence[str] = ("m2_z", "m2_dz", "var_dw"),
    title: str | None = None,
    montecarlo: Sequence[dict] = (),
):
    """Per-layer statistics (rows) of the blocks in ``columns``: recursion as solid lines,
    closed forms as circles (exact), dotted lines (bounds) or dashed lines (approximations),
    Monte-Carlo as squares with ±1 standard-error bars, one color per initialization."""
    fig, axes = new_figure(len(statistics), len(columns))
    by_block: dict[str, list[dict]] = {}
    for rec in records:
        by_block.setdefault(rec["block"], []).append(rec)
    mc_by_block: dict[str, list[dict]] = {}
    for rec in montecarlo:
        mc_by_block.setdefault(rec["block"], []).append(rec)
    for j, block in enumerate(columns):
        for i, stat in enumerate(statistics):
            ax = axes[i, j]
            for rec in mc_by_block.get(block, []):
                size = len(rec["montecarlo"][f"log10_{stat}"]["mean"])
                _mc_points(ax, rec, stat, INIT_COLORS.get(rec["init"], "k"), markevery(size))
            for rec in by_block.get(block, []):
                color = INIT_COLORS.get(rec["init"], "k")
                y = np.asarray(rec["recursion"][f"log10_{stat}"], dtype=float)
                layers = np.arange(y.size)
                ax.plot(
                    layers,
                    y,
                    color=color,
                    linewidth=1.8,
                    label=f"{INIT_LABELS.get(rec['init'], rec['init'])}: recursion",
                )
                for f in rec["closed_forms"]:
                    if f["statistic"] != stat:
                        continue
                    closed_form_line(ax, layers, f["log10_values"], f, color)
            if i == 0:
                ax.set_title(block, fontsize=10)
            if i == len(statistics) - 1:
                ax.set_xlabel("layer l")
            if j == 0:
                ax.set_ylabel(STAT_LABELS.get(stat, stat))
            ax.grid(alpha=0.3)
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                ax.legend(fontsize=5.5, loc="best", frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def depth_figure(
    records: Sequence[dict],
    columns: Sequence[dict],
    title: str | None = None,
    contrast_inits: Sequence[str] = ("he",),
):
    """Forward growth q_L/q_0 (top) and gradient ratio Var[dE/dW^1]/Var[dE/dW^L] (bottom),
    log10 against depth L on a log axis. ``columns`` are dicts with ``block`` (residual) and
    optionally ``contrast`` (a plain block, drawn in thin lines for ``contrast_inits`` only:
    the depth-scaled init makes no sense without the skip). The y-range fits the residual
    network; the plain one may leave it, which is the point of the contrast."""
    quantities = (
        ("log10_growth", r"$E[(z^L)^2]/E[x^2]$"),
        (
            "log10_ratio",
            r"$\mathrm{Var}[\partial E/\partial W^1] / \mathrm{Var}[\partial E/\partial W^L]$",
        ),
    )
    fig, axes = new_figure(len(quantities), len(columns))
    by_block: dict[str, list[dict]] = {}
    for rec in records:
        by_block.setdefault(rec["block"], []).append(rec)
    for j, col in enumerate(columns):
        for i, (key, label) in enumerate(quantities):
            ax = axes[i, j]
            main_ys = []
            for name, thin in ((col["block"], False), (col.get("contrast"), True)):
                for rec in by_block.get(name, []) if name else []:
                    if thin and rec["init"] not in contrast_inits:
                        continue
                    color = INIT_COLORS.get(rec["init"], "k")
                    L = np.asarray(rec["depths"], dtype=float)
                    y = np.asarray(rec[key], dtype=float)
                    init = INIT_LABELS.get(rec["init"], rec["init"])
                    ax.plot(
                        L,
                        y,
                        color=color,
                        linewidth=0.9 if thin else 1.8,
                        alpha=0.6 if thin else 1.0,
                        label=f"{init}{' (plain)' if thin else ''}",
                    )
                    if thin:
                        continue
                    main_ys.append(y)
                    for f in rec["closed_forms"]:
                        if f["quantity"] != key:
                            continue
                        closed_form_line(ax, L, f["values"], f, color)
            ax.set_xscale("log")
            finite = np.concatenate([y[np.isfinite(y)] for y in main_ys]) if main_ys else []
            if len(finite):  # scale to the residual network; the plain one may leave the axes
                lo, hi = float(np.min(finite)), float(np.max(finite))
                pad = 0.15 * max(hi - lo, 1.0)
                ax.set_ylim(lo - pad, hi + pad)
            if i == 0:
                ax.set_title(col["block"], fontsize=10)
            if i == len(quantities) - 1:
                ax.set_xlabel("depth L")
            if j == 0:
                ax.set_ylabel(r"$\log_{10}$ " + label, fontsize=8)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=5.5, loc="best", frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


DEPTH_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")


def _gradient_recursion(ax, rec: dict, color: str) -> None:
    """One depth's recursion (solid) and its var_dw closed forms in a gradient panel: the
    exact law as circles at about a dozen log-spaced layers, approximations dashed; layer 0
    (the input) is left out of the log axis and bounds are not drawn."""
    L = int(rec["depth"])
    y = np.asarray(rec["recursion"]["log10_var_dw"], dtype=float)
    layers = np.arange(y.size)
    ax.plot(layers[1:], y[1:], color=color, linewidth=1.6, label=f"L = {L}: recursion")
    for f in rec["closed_forms"]:
        if f["statistic"] != "var_dw" or f["kind"] == "lower_bound":
            continue
        yc = np.asarray(f["log10_values"], dtype=float)
        style = dict(KIND_STYLE[f["kind"]])
        if f["kind"] == "exact":
            keep = np.unique(np.geomspace(1, L, 12).round().astype(int))
            ax.plot(keep, yc[keep], color=color, **style)
        else:
            ax.plot(layers[1:], yc[1:], color=color, **style)


def _gradient_montecarlo(ax, rec: dict, color: str) -> None:
    """One depth's Monte-Carlo var_dw in a gradient panel: squares with standard-error bars
    at about ten log-spaced layers."""
    L = int(rec["depth"])
    mc = rec["montecarlo"]["log10_var_dw"]
    lm = np.asarray(mc["mean"], dtype=float)
    keep = np.unique(np.geomspace(1, L, 10).round().astype(int))
    err = log10_errorbars(lm, np.asarray(mc["stderr"], dtype=float))
    ax.errorbar(
        keep,
        lm[keep],
        yerr=err[:, keep],
        fmt="s",
        markersize=3,
        color=color,
        elinewidth=0.8,
        capsize=1.5,
    )


def _gradient_legend(ax, color: dict[int, str], montecarlo: bool) -> None:
    """The legend of the first gradient panel: one entry per depth (its color) and one per
    line style (recursion, paper's law, corrected law and, if drawn, Monte-Carlo)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=f"L = {L}") for L, c in color.items()]
    handles += [
        Line2D([], [], color="k", linewidth=1.6, label="recursion"),
        Line2D([], [], color="k", **KIND_STYLE["approximation"], label="paper: a L/l"),
        Line2D([], [], color="k", **KIND_STYLE["exact"], label="corrected (exact)"),
    ]
    if montecarlo:
        handles.append(
            Line2D(
                [],
                [],
                color="k",
                marker="s",
                linestyle="none",
                markersize=3,
                label="Monte-Carlo ± SE",
            )
        )
    ax.legend(handles=handles, fontsize=6.5, loc="best", frameon=False)


def gradient_figure(
    profiles: Sequence[dict],
    columns: Sequence[str],
    montecarlo: Sequence[dict] = (),
    title: str | None = None,
):
    """log10 Var[dE/dW^l] against layer l (log axis), one panel per block in ``columns`` and one
    color per depth L: recursion (solid), the paper's L/l law (dashed), the corrected exact
    law (circles), Monte-Carlo (squares with standard-error bars)."""
    fig, axes = new_figure(1, len(columns), width=3.6, height=3.2)
    depths = sorted({int(r["depth"]) for r in profiles})
    color = {L: DEPTH_COLORS[i % len(DEPTH_COLORS)] for i, L in enumerate(depths)}
    for j, block in enumerate(columns):
        ax = axes[0, j]
        for rec in (r for r in profiles if r["block"] == block):
            _gradient_recursion(ax, rec, color[int(rec["depth"])])
        for rec in (r for r in montecarlo if r["block"] == block):
            _gradient_montecarlo(ax, rec, color[int(rec["depth"])])
        ax.set_xscale("log")
        ax.set_title(block, fontsize=10)
        ax.set_xlabel("layer l")
        if j == 0:
            ax.set_ylabel(STAT_LABELS["var_dw"])
        ax.grid(alpha=0.3, which="both")
        if j == 0:
            _gradient_legend(ax, color, bool(montecarlo))
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
