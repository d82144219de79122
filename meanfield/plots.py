"""Figure builders: records in (as made by :mod:`meanfield.sweeps` or read back from JSON),
``matplotlib.figure.Figure`` out. Nothing here computes science, shows a window or touches
pyplot's global state; callers save the figures (:func:`save_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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


def _figure(nrows: int, ncols: int, width: float = 3.1, height: float = 2.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def _markevery(n: int) -> int:
    return max(1, n // 12)


def _closed_form_line(ax, x, y, form: dict, color: str) -> None:
    """One closed-form curve, drawn by its kind: circles (exact), dotted (bound), dashed."""
    y = np.asarray(y, dtype=float)
    style = dict(KIND_STYLE[form["kind"]])
    if form["kind"] == "exact":
        style["markevery"] = _markevery(y.size)
    ax.plot(x, y, color=color, alpha=0.9, label=form["label"], **style)


def log10_errorbars(log10_mean, log10_stderr) -> np.ndarray:
    """Asymmetric error bars (2, N) in log10 space for mean ± stderr given as log10 values."""
    lm = np.asarray(log10_mean, dtype=float)
    rel = 10.0 ** (np.asarray(log10_stderr, dtype=float) - lm)
    lower = -np.log10(np.clip(1.0 - rel, 1e-3, None))
    return np.stack([lower, np.log10(1.0 + rel)])


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
    fig, axes = _figure(len(statistics), len(columns))
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
                _mc_points(ax, rec, stat, INIT_COLORS.get(rec["init"], "k"), _markevery(size))
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
                    _closed_form_line(ax, layers, f["log10_values"], f, color)
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
    fig, axes = _figure(len(quantities), len(columns))
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
                        _closed_form_line(ax, L, f["values"], f, color)
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


def gradient_figure(
    profiles: Sequence[dict],
    columns: Sequence[str],
    montecarlo: Sequence[dict] = (),
    title: str | None = None,
):
    """log10 Var[dE/dW^l] against layer l (log axis), one panel per block in ``columns`` and one
    color per depth L: recursion (solid), the paper's L/l law (dashed), the corrected exact
    law (circles), Monte-Carlo (squares with standard-error bars)."""
    fig, axes = _figure(1, len(columns), width=3.6, height=3.2)
    depths = sorted({int(r["depth"]) for r in profiles})
    color = {L: DEPTH_COLORS[i % len(DEPTH_COLORS)] for i, L in enumerate(depths)}
    for j, block in enumerate(columns):
        ax = axes[0, j]
        for rec in (r for r in profiles if r["block"] == block):
            L = int(rec["depth"])
            y = np.asarray(rec["recursion"]["log10_var_dw"], dtype=float)
            layers = np.arange(y.size)
            ax.plot(layers[1:], y[1:], color=color[L], linewidth=1.6, label=f"L = {L}: recursion")
            for f in rec["closed_forms"]:
                if f["statistic"] != "var_dw" or f["kind"] == "lower_bound":
                    continue
                yc = np.asarray(f["log10_values"], dtype=float)
                style = dict(KIND_STYLE[f["kind"]])
                if f["kind"] == "exact":
                    keep = np.unique(np.geomspace(1, L, 12).round().astype(int))
                    ax.plot(keep, yc[keep], color=color[L], **style)
                else:
                    ax.plot(layers[1:], yc[1:], color=color[L], **style)
        for rec in (r for r in montecarlo if r["block"] == block):
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
                color=color[L],
                elinewidth=0.8,
                capsize=1.5,
            )
        ax.set_xscale("log")
        ax.set_title(block, fontsize=10)
        ax.set_xlabel("layer l")
        if j == 0:
            ax.set_ylabel(STAT_LABELS["var_dw"])
        ax.grid(alpha=0.3, which="both")
        if j == 0:
            from matplotlib.lines import Line2D

            handles = [Line2D([], [], color=color[L], label=f"L = {L}") for L in depths]
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
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def figure_formats() -> tuple[str, ...]:
    """The file formats :func:`save_figure` can write: matplotlib's, by file extension."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


def add_formats_argument(parser) -> None:
    """The experiments' ``--formats`` flag, checked by argparse when the command line is read,
    so that a bad format stops a run before it computes anything."""
    formats = figure_formats()
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["png", "pdf"],
        choices=formats,
        metavar="FORMAT",
        help=f"figure formats, any of {' '.join(formats)} (default: png pdf)",
    )


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.<fmt>`` for each format (written to a temp name, then renamed).
    Every format is checked before anything is written."""
    known = figure_formats()
    bad = [f for f in formats if f not in known]
    if isinstance(formats, str) or bad:
        raise ValueError(f"formats must be a sequence of {', '.join(known)}; got {formats!r}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=150)
        os.replace(tmp, path)
        paths.append(path)
    return paths


SETUP_COLORS = ("#7f7f7f", "#e6a700", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b")


def learning_curves_figure(setups: Sequence[dict], title: str | None = None):
    """Validation accuracy and loss against epoch, one thin line per seed and one color per
    setup (the style of the paper's Fig. 2 and 3). Each setup is ``{"name", "label",
    "rows"}`` with the metric rows of :func:`meanfield.train.train_and_evaluate`; a seed that
    diverged ends with a cross at its last finite epoch."""
    fig, axes = _figure(1, 2, width=4.2, height=3.2)
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
    :func:`meanfield.initcheck.compare`): measured per network (thin lines), the log10 of their
    mean (squares), the mean-field recursion (solid), Monte-Carlo of the dense toy network at
    width C (dash-dotted) and the paper's closed forms (dashed)."""
    fig, axes = _figure(len(INITCHECK_ROWS), len(checks), width=3.3, height=2.5)
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
            every = _markevery(layers.size)
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


def solve_init_figure(records: Sequence[dict], title: str | None = None):
    """Forward growth q_L/q_0 and gradient spread against c = Var[w]·n·L (recursion, solid),
    one panel per block, with the bounds (dotted), He and c = 1 (vertical lines), the solved
    init (star) and Monte-Carlo at the solution (squares with ±1 SE). Each record is one
    block's entry of experiments/solve_init.py's results.json."""
    fig, axes = _figure(1, len(records), width=3.6, height=3.0)
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
    :func:`meanfield.finitewidth.width_sweep`, optional ``fit`` from ``extrapolate_width``):
    Monte-Carlo against n with the recursion, Euler's floor (dashed) and the fit a + b/n."""
    fig, axes = _figure(1, len(sweeps), width=3.5, height=3.0)
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
    """One panel per batch sweep (``rows`` from :func:`meanfield.finitewidth.batch_sweep`,
    optional ``finite_batch`` curve {"batch", "log10_value"}): Monte-Carlo against the BN
    batch B, with the recursion (B = ∞) and the exact finite-batch closed form."""
    fig, axes = _figure(1, len(sweeps), width=3.5, height=3.0)
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


REPORT_STAT_COLORS = {
    "m2_z": "#1f77b4",
    "var_z": "#17becf",
    "unitvar_z": "#2ca02c",
    "m2_dz": "#d62728",
    "var_dw": "#9467bd",
}


def calibration_figure(rows: Sequence[dict], z_max: float = 4.0, title: str | None = None):
    """z-score (Monte-Carlo − recursion)/SE against layer, one panel per (init, block), one
    color per statistic, on a symmetric-log axis with the ±z_max band shaded. Points flagged
    "unexplained" are crosses and heavy-tailed ones hollow. ``rows`` are
    :func:`meanfield.calibration.calibrate` rows (or read back from CSV/JSON)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    blocks = list(dict.fromkeys(r["block"] for r in rows))
    inits = list(dict.fromkeys(r["init"] for r in rows))
    fig, axes = _figure(len(inits), len(blocks), width=3.0, height=2.4)
    for i, init in enumerate(inits):
        for j, block in enumerate(blocks):
            ax = axes[i, j]
            ax.axhspan(-z_max, z_max, color="0.9", linewidth=0)
            mine = [r for r in rows if r["block"] == block and r["init"] == init]
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
            if i == 0:
                ax.set_title(block, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{init}\nz = (MC − recursion)/SE", fontsize=8)
            if i == len(inits) - 1:
                ax.set_xlabel("layer l")
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
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


SHORTCUT_COLORS = {1: "#d62728", 2: "#1f77b4", 3: "#2ca02c"}


def hessian_figure(datasets: Sequence[dict], title: str | None = None):
    """Condition number and spectral norm of the Hessian at zero against depth L, one column
    per data set, one color per shortcut depth k (solid: linear, dashed: tanh); the closed
    form cond(C) for k = 2 as a dotted line. Each data set: {"name", "rows": [{"depth",
    "shortcut", "activation", "condition", "max_abs", "method"}], "closed_form_condition"}.
    k >= 3 (H = 0) is noted in the panel, having no condition number to draw."""
    fig, axes = _figure(2, len(datasets), width=3.4, height=2.6)
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
    fig, axes = _figure(1, 2, width=3.8, height=3.0)
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


def init_comparison_figure(summary: Sequence[dict], title: str | None = None):
    """One bar group per training setup: validation accuracy after the first epoch (mean ± sd
    over seeds; a cross where every seed diverged), the predicted log10 forward growth
    q_L/q_0 and backward growth p_0/p_L, and the sd of ln σ_i of the input-output Jacobian.
    ``summary``: the rows of experiments/train_cifar.py's summary.json ({"label",
    "val_accuracy_epoch1_mean", "val_accuracy_epoch1_std", "predicted_forward_log10",
    "predicted_backward_log10", "predicted_jacobian_sd_log"})."""
    fig, axes = _figure(1, 3, width=3.0, height=3.4)
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


def init_zoo_figure(records: Sequence[dict], title: str | None = None):
    """log10 of E[(z^l)²], E[(dE/dz^l)²] and Var[dE/dW^l] against the layer for every init of
    the zoo: lines the recursion, markers Monte-Carlo (open where the mean is heavy-tailed);
    the second row repeats the first between ``zoom`` = (low, high) decades, where the
    initializations that keep the network near its scale lie. ``records`` as made by
    :func:`meanfield.sweeps.init_zoo_profiles`."""
    stats = ("m2_z", "m2_dz", "var_dw")
    zoom = (-3.5, 4.0)
    fig, axes = _figure(2, 3, width=3.4, height=2.9)
    for i, rec in enumerate(records):
        color = CYCLE[i % len(CYCLE)]
        for ax, stat in [(axes[r, c], s) for r in range(2) for c, s in enumerate(stats)]:
            rec_log = np.array(rec["recursion"][stat], dtype=float)
            layers = np.arange(rec_log.size)
            ax.plot(layers, rec_log, color=color, linewidth=1.3, label=rec["label"])
            mc = np.array(rec["montecarlo"][stat]["log10_mean"], dtype=float)
            every = _markevery(layers.size)
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
