"""The calibration figure of the report: z-scores of Monte-Carlo against the recursion per
layer, one panel per (init, block), with heavy-tailed and unexplained points marked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meanfield.io.plots.style import new_figure

REPORT_STAT_COLORS = {
    "m2_z": "#1f77b4",
    "var_z": "#17becf",
    "unitvar_z": "#2ca02c",
    "m2_dz": "#d62728",
    "var_dw": "#9467bd",
}


def _calibration_panel(ax, mine: Sequence[dict], z_max: float) -> None:
    """One (init, block) panel: z against layer per statistic, hollow circles where heavy-tailed
    and crosses where unexplained, on a symmetric-log axis (linear inside ±z_max, shaded)
    whose range covers the largest finite |z| and at least 10 z_max."""
    ax.axhspan(-z_max, z_max, color="0.9", linewidth=0)
    for stat, color in REPORT_STAT_COLORS.items():
        rs = [r for r in mine if r["statistic"] == stat]
        if not rs:
            continue
        layer = np.array([r["layer"] for r in rs], dtype=float)
        z = np.array([r["z"] for r in rs], dtype=float)
        ax.plot(layer, z, color=color, linewidth=1, label=stat)
        flags = [r["flag"] for r in rs]
        heavy = np.array(["heavy tail" in f for f in flags])
        odd = np.array(["unexplained" in f for f in flags])
        if heavy.any():
            ax.plot(
                layer[heavy],
                z[heavy],
                "o",
                color=color,
                markerfacecolor="none",
                markersize=3,
            )
        if odd.any():
            ax.plot(layer[odd], z[odd], "x", color=color, markersize=4)
    ax.set_yscale("symlog", linthresh=z_max)
    lim = max(10.0 * z_max, *(abs(r["z"]) for r in mine if np.isfinite(r["z"])))
    ticks = [t for t in (z_max, 10 * z_max, 100 * z_max, 1000 * z_max) if t <= lim]
    ticks = sorted({0.0, *ticks, *(-t for t in ticks)})
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_ylim(-1.1 * lim, 1.1 * lim)
    ax.grid(alpha=0.3)


def _calibration_legend(fig, rows: Sequence[dict], z_max: float) -> None:
    """The figure's legend below the panels: the statistics present, the two point flags and
    the shaded |z| <= z_max band."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    present = {r["statistic"] for r in rows}
    handles = [
        Line2D([], [], color=c, label=s) for s, c in REPORT_STAT_COLORS.items() if s in present
    ]
    handles += [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markerfacecolor="none",
            color="0.3",
            label="heavy tail",
        ),
        Line2D([], [], linestyle="none", marker="x", color="0.3", label="unexplained"),
        Patch(color="0.9", label=f"|z| <= {z_max:g}"),
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False
    )


def calibration_figure(rows: Sequence[dict], z_max: float = 4.0, title: str | None = None):
    """z-score (Monte-Carlo − recursion)/SE against layer, one panel per (init, block), one
    color per statistic, on a symmetric-log axis with the ±z_max band shaded. Points flagged
    "unexplained" are crosses and heavy-tailed ones hollow. ``rows`` are
    :func:`meanfield.analysis.calibration.calibrate` rows (or read back from CSV/JSON)."""
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    inits = list(dict.fromkeys(r["init"] for r in rows))
    fig, axes = new_figure(len(inits), len(blocks), width=3.0, height=2.4)
    for i, init in enumerate(inits):
        for j, block in enumerate(blocks):
            ax = axes[i, j]
            mine = [r for r in rows if r["block"] == block and r["init"] == init]
            _calibration_panel(ax, mine, z_max)
            if i == 0:
                ax.set_title(block, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{init}\nz = (MC − recursion)/SE", fontsize=8)
            if i == len(inits) - 1:
                ax.set_xlabel("layer l")
    _calibration_legend(fig, rows, z_max)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
