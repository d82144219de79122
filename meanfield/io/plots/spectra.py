"""Figures of spectra against depth: the condition number and spectral norm of the Hessian at
the zero initialization, and the spread of the input-output Jacobian's singular values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meanfield.io.plots.style import CYCLE, new_figure

SHORTCUT_COLORS = {1: "#d62728", 2: "#1f77b4", 3: "#2ca02c"}


def hessian_figure(datasets: Sequence[dict], title: str | None = None):
    """Condition number and spectral norm of the Hessian at zero against depth L, one column
    per data set, one color per shortcut depth k (solid: linear, dashed: tanh); the closed
    form cond(C) for k = 2 as a dotted line. Each data set: {"name", "rows": [{"depth",
    "shortcut", "activation", "condition", "max_abs", "method"}], "closed_form_condition"}.
    k >= 3 (H = 0) is noted in the panel, having no condition number to draw."""
    fig, axes = new_figure(2, len(datasets), width=3.4, height=2.6)
    for j, ds in enumerate(datasets):
        for k, color in SHORTCUT_COLORS.items():
            for act, style in (("linear", "-"), ("tanh", "--")):
                rs = [r for r in ds["rows"] if r["shortcut"] == k and r["activation"] == act]
                if not rs:
                    continue
                L = np.array([r["depth"] for r in rs], dtype=float)
                for i, key in enumerate(("condition", "max_abs")):
                    y = np.array([r[key] for r in rs], dtype=float)
                    if not np.isfinite(y).any() or np.nanmax(np.abs(y)) == 0:
                        continue
                    axes[i, j].plot(
                        L, y, style, color=color, marker="o", markersize=3, label=f"k = {k}, {act}"
                    )
        cf = ds.get("closed_form_condition")
        if cf:
            axes[0, j].axhline(
                cf,
                color=SHORTCUT_COLORS[2],
                linestyle=":",
                linewidth=1.2,
                label="k = 2 closed form σ_max(C)/σ_min(C)",
            )
        if any(r["shortcut"] >= 3 for r in ds["rows"]):
            axes[1, j].text(
                0.03,
                0.9,
                "k = 3: H = 0 at every depth",
                transform=axes[1, j].transAxes,
                fontsize=7,
                color=SHORTCUT_COLORS[3],
            )
        axes[0, j].set_title(ds["name"], fontsize=9)
        for i, label in enumerate(("condition number", r"spectral norm max$|\lambda|$")):
            ax = axes[i, j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            if j == 0:
                ax.set_ylabel(label)
            if i == 1:
                ax.set_xlabel("residual units L")
        axes[0, j].legend(fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def jacobian_figure(rows: Sequence[dict], title: str | None = None):
    """Spread of the input-output Jacobian's singular values against depth: the standard
    deviation of ln σ_i (mean ± SE over networks) and the median condition number
    σ_max/σ_min, one line per (init, norm). ``rows``: {"label", "depth", "sd_log_mean",
    "sd_log_stderr", "condition_median"} as written by experiments/jacobian_spectrum.py."""
    fig, axes = new_figure(1, 2, width=3.8, height=3.0)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for i, label in enumerate(labels):
        rs = sorted((r for r in rows if r["label"] == label), key=lambda r: r["depth"])
        L = np.array([r["depth"] for r in rs], dtype=float)
        sd = np.array([r["sd_log_mean"] for r in rs], dtype=float)
        se = np.array([r["sd_log_stderr"] for r in rs], dtype=float)
        cond = np.array([r["condition_median"] for r in rs], dtype=float)
        style = "--" if "BN" in label else "-"
        color = CYCLE[i % len(CYCLE)]
        axes[0, 0].errorbar(
            L, sd, yerr=se, fmt=style, marker="o", markersize=3, color=color, capsize=2, label=label
        )
        axes[0, 1].plot(L, cond, style, marker="o", markersize=3, color=color, label=label)
    axes[0, 0].set_ylabel(r"sd of $\ln \sigma_i$ (0: isometry)")
    axes[0, 0].set_yscale("symlog", linthresh=1e-7)  # RISOTTO sits at float32 rounding
    axes[0, 1].set_ylabel(r"median $\sigma_{max}/\sigma_{min}$")
    axes[0, 1].set_yscale("log")
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth L")
        ax.grid(alpha=0.3, which="both")
    axes[0, 1].legend(fontsize=6.5, frameon=False, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
