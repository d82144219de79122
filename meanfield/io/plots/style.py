"""The shared look of the figures: colors and labels by initialization and statistic, how a
closed form is drawn by its kind, the empty figure grid and the log10 error bars that every
figure family builds on. matplotlib is imported only when a figure is made."""

from __future__ import annotations

import numpy as np

INIT_COLORS = {"he": "#1f77b4", "depth_scaled": "#d62728", "glorot": "#2ca02c"}
INIT_LABELS = {"he": "He, var_w = 2/n", "depth_scaled": "depth-scaled, c/(nL)", "glorot": "Glorot"}
# Line colors for figures with one line per configuration (matplotlib's tab10).
CYCLE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
KIND_STYLE = {  # how a closed form is drawn, by how it relates to the recursion
    "exact": dict(linestyle="none", marker="o", markersize=3.5, markerfacecolor="none"),
    "lower_bound": dict(linestyle=":", linewidth=1.4),
    "approximation": dict(linestyle="--", linewidth=1.2),
}
STAT_LABELS = {
    "m2_z": r"$\log_{10} E[(z^l)^2]$",
    "m2_dz": r"$\log_{10} E[(\partial E/\partial z^l)^2]$",
    "var_dw": r"$\log_{10} \mathrm{Var}[\partial E/\partial W^l]$",
    "unitvar_z": r"$\log_{10}\sigma_l^2$ (per unit)",
}


def new_figure(nrows: int, ncols: int, width: float = 3.1, height: float = 2.5):
    """A constrained-layout ``Figure`` of ``nrows`` x ``ncols`` panels (``width`` x ``height``
    inches each) and its axes as a 2-d array, made without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def markevery(n: int) -> int:
    """The marker stride for a curve of ``n`` points: about a dozen markers."""
    return max(1, n // 12)


def closed_form_line(ax, x, y, form: dict, color: str) -> None:
    """One closed-form curve, drawn by its kind: circles (exact), dotted (bound), dashed."""
    y = np.asarray(y, dtype=float)
    style = dict(KIND_STYLE[form["kind"]])
    if form["kind"] == "exact":
        style["markevery"] = markevery(y.size)
    ax.plot(x, y, color=color, alpha=0.9, label=form["label"], **style)


def log10_errorbars(log10_mean, log10_stderr) -> np.ndarray:
    """Asymmetric error bars (2, N) in log10 space for mean ± stderr given as log10 values."""
    lm = np.asarray(log10_mean, dtype=float)
    rel = 10.0 ** (np.asarray(log10_stderr, dtype=float) - lm)
    lower = -np.log10(np.clip(1.0 - rel, 1e-3, None))
    return np.stack([lower, np.log10(1.0 + rel)])
