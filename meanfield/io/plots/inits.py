"""Figures for choosing an initialization: the zoo of initializations layer by layer
(recursion and Monte-Carlo) and the solved init on its curves of forward growth and gradient
spread against c = Var[w]·n·L."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meanfield.io.plots.style import CYCLE, STAT_LABELS, markevery, new_figure


def init_zoo_figure(records: Sequence[dict], title: str | None = None):
    """log10 of E[(z^l)²], E[(dE/dz^l)²] and Var[dE/dW^l] against the layer for every init of
    the zoo: lines the recursion, markers Monte-Carlo (open where the mean is heavy-tailed);
    the second row repeats the first between ``zoom`` = (low, high) decades, where the
    initializations that keep the network near its scale lie. ``records`` as made by
    :func:`meanfield.analysis.sweeps.init_zoo_profiles`."""
    stats = ("m2_z", "m2_dz", "var_dw")
    zoom = (-3.5, 4.0)
    fig, axes = new_figure(2, 3, width=3.4, height=2.9)
    for i, rec in enumerate(records):
        color = CYCLE[i % len(CYCLE)]
        for ax, stat in [(axes[r, c], s) for r in range(2) for c, s in enumerate(stats)]:
            rec_log = np.array(rec["recursion"][stat], dtype=float)
            layers = np.arange(rec_log.size)
            ax.plot(layers, rec_log, color=color, linewidth=1.3, label=rec["label"])
            mc = np.array(rec["montecarlo"][stat]["log10_mean"], dtype=float)
            every = markevery(layers.size)
            heavy = np.zeros(layers.size, bool)
            heavy[np.asarray(rec["heavy_tail"].get(stat, []), int)] = True
            keep = np.zeros(layers.size, bool)
            keep[::every] = True
            for mask, face in ((keep & ~heavy, color), (keep & heavy, "none")):
                ax.plot(
                    layers[mask],
                    mc[mask],
                    "o",
                    markersize=3,
                    color=color,
                    markerfacecolor=face,
                    linestyle="none",
                )
    for c, stat in enumerate(stats):
        axes[0, c].set_ylabel(STAT_LABELS[stat])
        axes[1, c].set_ylabel(STAT_LABELS[stat] + " (zoom)")
        axes[1, c].set_ylim(*zoom)
        axes[1, c].set_xlabel("layer l")
        for r in range(2):
            axes[r, c].grid(alpha=0.3)
    axes[0, 1].legend(fontsize=6.5, frameon=False, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def solve_init_figure(records: Sequence[dict], title: str | None = None):
    """Forward growth q_L/q_0 and gradient spread against c = Var[w]·n·L (recursion, solid),
    one panel per block, with the bounds (dotted), He and c = 1 (vertical lines), the solved
    init (star) and Monte-Carlo at the solution (squares with ±1 SE). Each record is one
    block's entry of experiments/solve_init.py's results.json."""
    fig, axes = new_figure(1, len(records), width=3.6, height=3.0)
    for j, rec in enumerate(records):
        ax = axes[0, j]
        c = np.asarray(rec["curves"]["c"], dtype=float)
        for key, color, label in (
            ("log10_forward_growth", "#d62728", r"$q_L/q_0$"),
            ("log10_gradient_spread", "#1f77b4", "gradient spread"),
        ):
            ax.plot(c, np.asarray(rec["curves"][key], dtype=float), color=color, label=label)
            bound = rec["bounds"][key.replace("log10_", "max_")]
            ax.axhline(np.log10(bound), color=color, linestyle=":", linewidth=1)
            sol = rec["solution"]
            ax.plot(
                sol["c"], np.log10(sol[key.replace("log10_", "")]), "*", color=color, markersize=9
            )
            for mc in rec.get("montecarlo", []):
                ax.errorbar(
                    mc["c"],
                    mc[key],
                    yerr=mc[f"{key}_stderr"],
                    fmt="s",
                    color=color,
                    markersize=3.5,
                    capsize=2,
                    markerfacecolor="none",
                )
        for name, style in (("he", "--"), ("depth_scaled_c1", "-.")):
            ax.axvline(
                rec["reference"][name]["c"],
                color="0.4",
                linestyle=style,
                linewidth=1,
                label={"he": "He", "depth_scaled_c1": "c = 1"}[name],
            )
        ax.set_xscale("log")
        ax.set_xlabel(r"$c = n L\,\mathrm{Var}[w]$")
        ax.set_title(rec["block"], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if j == 0:
            ax.set_ylabel(r"$\log_{10}$ ratio")
            ax.legend(fontsize=7, frameon=False, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
