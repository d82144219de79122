"""Figures of training: validation learning curves per setup, the check of the predicted
per-layer statistics against the measured network at initialization, and the bar chart that
sets early accuracy beside the predicted growth and Jacobian spread of each setup."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meanfield.io.plots.style import KIND_STYLE, markevery, new_figure

SETUP_COLORS = ("#7f7f7f", "#e6a700", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b")


def learning_curves_figure(setups: Sequence[dict], title: str | None = None):
    """Validation accuracy and loss against epoch, one thin line per seed and one color per
    setup (the style of the paper's Fig. 2 and 3). Each setup is ``{"name", "label",
    "rows"}`` with the metric rows of :func:`meanfield.training.train.train_and_evaluate`; a seed
    that diverged ends with a cross at its last finite epoch."""
    fig, axes = new_figure(1, 2, width=4.2, height=3.2)
    for i, setup in enumerate(setups):
        color = SETUP_COLORS[i % len(SETUP_COLORS)]
        seeds = sorted({r["seed"] for r in setup["rows"]})
        for j, seed in enumerate(seeds):
            rows = sorted((r for r in setup["rows"] if r["seed"] == seed), key=lambda r: r["epoch"])
            epochs = np.array([r["epoch"] for r in rows], dtype=float)
            for ax, key in zip(axes[0], ("val_accuracy", "val_loss"), strict=True):
                y = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
                ax.plot(
                    epochs,
                    y,
                    color=color,
                    linewidth=1.1,
                    alpha=0.85,
                    marker="o" if len(epochs) < 8 else None,
                    markersize=2.5,
                    label=setup["label"] if j == 0 else None,
                )
                dead = [r for r in rows if r["diverged_at_step"] is not None]
                finite = np.flatnonzero(np.isfinite(y))
                if dead and finite.size:
                    ax.plot(epochs[finite[-1]], y[finite[-1]], "x", color=color, markersize=6)
    axes[0, 0].set_ylabel("validation accuracy")
    axes[0, 1].set_ylabel("validation loss")
    axes[0, 1].set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7, frameon=False, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


INITCHECK_ROWS = {
    "m2_z": r"$\log_{10} E[(z^l)^2]$",
    "m2_dz": r"$\log_{10} E[(\partial E/\partial z^l)^2]$ / layer L",
    "var_dw": r"$\log_{10} E[(\partial E/\partial W^l)^2]$ / layer L",
}


def initcheck_figure(checks: Sequence[dict], title: str | None = None):
    """The prediction check, one column per setup (``{"label", "check"}`` with the record of
    :func:`meanfield.training.initcheck.compare`): measured per network (thin lines), the log10 of
    their mean (squares), the mean-field recursion (solid), Monte-Carlo of the dense toy network at
    width C (dash-dotted) and the paper's closed forms (dashed)."""
    fig, axes = new_figure(len(INITCHECK_ROWS), len(checks), width=3.3, height=2.5)
    for j, item in enumerate(checks):
        check = item["check"]
        for i, (stat, ylabel) in enumerate(INITCHECK_ROWS.items()):
            ax = axes[i, j]
            s = check["statistics"][stat]
            per_seed = np.asarray(s["per_seed_log10"], dtype=float)
            layers = np.arange(per_seed.shape[1])
            for y in per_seed:
                ax.plot(layers, y, color="0.65", linewidth=0.6)
            mean = np.asarray(s["log10_of_mean"], dtype=float)
            every = markevery(layers.size)
            ax.plot(
                layers[::every],
                mean[::every],
                "s",
                color="k",
                markersize=3,
                label=f"measured, mean of {check['networks']}",
            )
            ax.plot(
                layers,
                np.asarray(s["predicted_log10"], dtype=float),
                color="#d62728",
                linewidth=1.6,
                label="mean-field recursion",
            )
            if "toy_log10" in s:
                ax.plot(
                    layers,
                    np.asarray(s["toy_log10"], dtype=float),
                    color="#2ca02c",
                    linewidth=1.2,
                    linestyle="-.",
                    label=f"Monte-Carlo, dense, width {check['toy']['width']}",
                )
            for form in check["closed_forms"] if stat == "m2_dz" else ():
                if form["source"] == "paper":
                    ax.plot(
                        layers,
                        np.asarray(form["log10_values"], dtype=float),
                        color="#1f77b4",
                        **KIND_STYLE["approximation"],
                        label=f"paper: {form['label']}",
                    )
            if i == 0:
                ax.set_title(item["label"], fontsize=9)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=8)
            if i == len(INITCHECK_ROWS) - 1:
                ax.set_xlabel("layer l")
            ax.grid(alpha=0.3)
            if j == 0 or stat == "m2_dz":
                ax.legend(fontsize=6, frameon=False, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def init_comparison_figure(summary: Sequence[dict], title: str | None = None):
    """One bar group per training setup: validation accuracy after the first epoch (mean ± sd
    over seeds; a cross where every seed diverged), the predicted log10 forward growth
    q_L/q_0 and backward growth p_0/p_L, and the sd of ln σ_i of the input-output Jacobian.
    ``summary``: the rows of experiments/train_cifar.py's summary.json ({"label",
    "val_accuracy_epoch1_mean", "val_accuracy_epoch1_std", "predicted_forward_log10",
    "predicted_backward_log10", "predicted_jacobian_sd_log"})."""
    fig, axes = new_figure(1, 3, width=3.0, height=3.4)
    names = [s.get("setup", s["label"]) for s in summary]
    x = np.arange(len(summary))

    def values(key):
        return np.array([np.nan if s.get(key) is None else s[key] for s in summary], float)

    acc, sd = values("val_accuracy_epoch1_mean"), values("val_accuracy_epoch1_std")
    ax = axes[0, 0]
    ax.bar(x, np.nan_to_num(acc), yerr=np.nan_to_num(sd), color="#1f77b4", capsize=2)
    for i in np.flatnonzero(np.isnan(acc)):
        ax.plot(i, 0.0, "x", color="#d62728", markersize=8)
    ax.axhline(0.1, color="0.5", linestyle=":", linewidth=1)  # chance
    ax.set_title("val. accuracy, epoch 1", fontsize=9)
    ax = axes[0, 1]
    ax.bar(x - 0.2, values("predicted_forward_log10"), 0.4, color="#ff7f0e", label="forward")
    ax.bar(x + 0.2, values("predicted_backward_log10"), 0.4, color="#2ca02c", label="backward")
    ax.set_title(r"predicted $\log_{10}$ growth, $q_L/q_0$ and $p_0/p_L$", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax = axes[0, 2]
    ax.bar(x, values("predicted_jacobian_sd_log"), color="#9467bd")
    ax.set_title(r"Jacobian spread, sd of $\ln \sigma_i$", fontsize=9)
    for ax in axes[0]:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
