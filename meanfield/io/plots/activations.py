"""The activations figure: forward growth, gradient growth and the correlation of distinct
inputs against depth, one column per (norm, residual), one color per activation; recursion as
lines (solid: He-like init, dashed: depth-scaled), Monte-Carlo as points with error bars."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meanfield.io.plots.style import CYCLE, log10_errorbars, markevery, new_figure

ROWS = (
    ("log10_m2_z", r"$\log_{10} E[(z^l)^2]$"),
    ("log10_m2_dz", r"$\log_{10} E[(\partial E/\partial z^l)^2]$"),
    ("corr_z", r"corr$(z^l(x), z^l(x'))$"),
)
STYLES = {"he_like": "-", "depth_scaled": "--"}


def activation_figure(records: Sequence[dict], title: str = ""):
    """The figure of :func:`meanfield.analysis.activations.activation_profiles`' records."""
    columns = list(dict.fromkeys((r["norm"], r["residual"]) for r in records))
    activations = list(dict.fromkeys(r["activation"] for r in records))
    colors = {a: CYCLE[i % len(CYCLE)] for i, a in enumerate(activations)}
    fig, axes = new_figure(len(ROWS), len(columns), width=3.0, height=2.4)
    for j, (norm, res) in enumerate(columns):
        axes[0, j].set_title(f"{norm}, {'residual' if res else 'plain'}", fontsize=9)
        for rec in records:
            if (rec["norm"], rec["residual"]) != (norm, res):
                continue
            color, style = colors[rec["activation"]], STYLES[rec["init"]]
            for i, (key, _) in enumerate(ROWS):
                y = np.asarray(rec["recursion"][key], dtype=float)
                layers = np.arange(y.size)
                label = (
                    rec["activation"] if rec["init"] == "he_like" and i == 0 and j == 0 else None
                )
                axes[i, j].plot(layers, y, style, color=color, lw=1.2, label=label)
                mc = rec.get("montecarlo", {}).get(key)
                if mc is not None:
                    every = markevery(y.size)
                    m = np.asarray(mc["mean"], dtype=float)[::every]
                    se = np.asarray(mc["stderr"], dtype=float)[::every]
                    err = log10_errorbars(m, se) if key.startswith("log10_") else se
                    axes[i, j].errorbar(
                        layers[::every],
                        m,
                        yerr=err,
                        fmt="o",
                        ms=2.5,
                        color=color,
                        lw=0.8,
                        mfc="none" if rec["init"] == "depth_scaled" else color,
                    )
    for i, (_, label) in enumerate(ROWS):
        axes[i, 0].set_ylabel(label, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("layer $l$")
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6, ncol=2, frameon=False)
    fig.suptitle(
        (title + "\n" if title else "")
        + "lines: recursion (solid He-like, dashed depth-scaled); points: Monte-Carlo ± SE",
        fontsize=9,
    )
    return fig
