"""Comparison tables of the sweeps' records, one row per item, ready for CSV: closed form
against recursion (:func:`discrepancy_rows`), Monte-Carlo against recursion and closed forms
(:func:`montecarlo_discrepancy_rows`) and the depth sweep (:func:`depth_sweep_rows`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meanfield.recursions import STATISTICS

__all__ = ["depth_sweep_rows", "discrepancy_rows", "log10_or_nan", "montecarlo_discrepancy_rows"]


def log10_or_nan(values) -> np.ndarray:
    """log10 of the values in float64, NaN where it is not finite (zero, negative or inf)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = np.log10(np.asarray(values, dtype=np.float64))
    return np.where(np.isfinite(out), out, np.nan)


def discrepancy_rows(profiles: Sequence[dict]) -> list[dict]:
    """One row per (block, init, closed form): its largest relative gap to the recursion."""
    rows = []
    for rec in profiles:
        for f in rec["closed_forms"]:
            if f["statistic"] not in STATISTICS:
                continue
            r = np.asarray(rec["recursion"][f["statistic"]], dtype=float)
            c = np.asarray(f["values"], dtype=float)
            ok = np.isfinite(r) & np.isfinite(c) & (r != 0)
            rel = np.abs(c[ok] / r[ok] - 1.0) if ok.any() else np.array([np.nan])
            rows.append(
                {
                    "block": rec["block"],
                    "init": rec["init"],
                    "var_w": rec["var_w"],
                    "statistic": f["statistic"],
                    "closed_form": f["label"],
                    "source": f["source"],
                    "kind": f["kind"],
                    "max_rel_gap": float(np.max(rel)),
                    "closed_over_recursion_at_L": float(c[-1] / r[-1]) if ok[-1] else None,
                }
            )
    return rows


def montecarlo_discrepancy_rows(profiles: Sequence[dict], mc: Sequence[dict]) -> list[dict]:
    """Per (block, init, statistic, layer): MC mean ± SE, the median network, the 5-95% band
    and the sd of ln over networks with the heavy-tail flag (when the record has ``spread``),
    the recursion and the z-score (MC - recursion)/SE, and MC / closed form for the paper's
    and the corrected form.

    Computed from the log10 values, so it stays finite where raw values overflow.
    """
    by_key = {(r["block"], r["init"], r.get("depth")): r for r in profiles}
    rows = []
    for rec in mc:
        prof = by_key.get((rec["block"], rec["init"], rec.get("depth")))
        if prof is None:
            continue
        for stat in ("m2_z", "m2_dz", "var_dw"):
            lm = np.asarray(rec["montecarlo"][f"log10_{stat}"]["mean"], dtype=float)
            ls = np.asarray(rec["montecarlo"][f"log10_{stat}"]["stderr"], dtype=float)
            lr = np.asarray(prof["recursion"][f"log10_{stat}"], dtype=float)
            forms = {}
            for f in prof["closed_forms"]:
                if f["statistic"] == stat:
                    forms.setdefault(f["source"], f)
            with np.errstate(invalid="ignore", over="ignore"):
                z = (10.0 ** (lm - lr) - 1.0) / 10.0 ** (ls - lr)
            for layer in range(lm.size):
                if not np.isfinite(lm[layer]):
                    continue
                row = {
                    "block": rec["block"],
                    "init": rec["init"],
                    "depth": rec.get("depth"),
                    "statistic": stat,
                    "layer": layer,
                    "networks": rec["networks"],
                    "batch": rec["batch"],
                    "log10_mc_mean": lm[layer],
                    "log10_mc_stderr": ls[layer],
                    "log10_recursion": lr[layer],
                    "z_mc_vs_recursion": z[layer],
                }
                spread = rec.get("spread", {}).get(stat)
                if spread is not None:
                    fields = ("log10_median", "log10_q05", "log10_q95", "sd_ln", "zero_fraction")
                    for field in fields:
                        row[f"mc_{field}"] = float(np.asarray(spread[field], float)[layer])
                    row["heavy_tail"] = bool(np.asarray(spread["heavy_tail"])[layer])
                for source in ("paper", "corrected"):
                    f = forms.get(source)
                    lc = float(log10_or_nan([f["values"][layer]])[0]) if f else np.nan
                    row[f"{source}_form"] = f["label"] if f else ""
                    row[f"mc_over_{source}_form"] = (
                        10.0 ** (lm[layer] - lc) if np.isfinite(lc) else np.nan
                    )
                rows.append(row)
    return rows


def depth_sweep_rows(sweep: Sequence[dict]) -> list[dict]:
    """One row per (block, init, depth) of :func:`depth_sweep`: log10 growth and ratio."""
    rows = []
    for r in sweep:
        depths = np.asarray(r["depths"])
        var_w = np.broadcast_to(np.asarray(r["var_w"]), depths.shape)
        for L, v, g, q in zip(depths, var_w, r["log10_growth"], r["log10_ratio"], strict=True):
            rows.append(
                {
                    "block": r["block"],
                    "init": r["init"],
                    "depth": int(L),
                    "var_w": float(v),
                    "log10_growth": float(g),
                    "log10_grad_ratio": float(q),
                }
            )
    return rows
