"""Sweeps over architectures, initializations and depths, returning plain records.

Closed forms and recursions (:func:`layer_profiles`, :func:`depth_sweep`), Monte-Carlo
(:func:`montecarlo_profiles`; the init zoo's :func:`init_zoo_profiles`, from
:mod:`meanfield.analysis.initzoo`) and their comparison tables (:func:`discrepancy_rows`,
:func:`montecarlo_discrepancy_rows`).

The experiments call these and save what they return; the records hold lists and floats only,
so they can go to JSON unchanged and be read back by :mod:`meanfield.io.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from meanfield import inits, theory
from meanfield.analysis.initzoo import init_zoo_profiles
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.recursions import STATISTICS, profile

__all__ = [
    "INITS",
    "depth_sweep",
    "depth_sweep_rows",
    "discrepancy_rows",
    "init_var_w",
    "init_zoo_profiles",
    "layer_profiles",
    "montecarlo_discrepancy_rows",
    "montecarlo_profiles",
]

# Initializations of the branch weights that the sweeps compare (see meanfield.inits).
INITS = ("he", "glorot", "depth_scaled")


def init_var_w(init: str, width, depth, c: float = 1.0) -> jax.Array:
    """var_w of the named initialization for this width and depth (:func:`inits.var_w`)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return jnp.asarray(inits.var_w(init, fan_in=width, fan_out=width, depth=depth, c=c))


def closed_forms64(block, **kwargs) -> list[theory.ClosedForm]:
    """:func:`meanfield.theory.closed_forms` with the values as float64 NumPy arrays."""
    # Closed forms are plain powers; float64 keeps them representable far deeper than float32
    # (He init, identity: 3^L overflows float32 at L = 81, float64 at L = 647). Values beyond
    # the float64 range come out inf/0 and are stored as missing.
    with jax.enable_x64(True):
        return [
            f._replace(values=np.asarray(f.values, dtype=np.float64))
            for f in theory.closed_forms(block, **kwargs)
        ]


def _depth_closed_forms(block, width, depths, var_w) -> list[dict]:
    """log10 growth q_L and gradient ratio from every closed form, at each depth (vmapped)."""
    max_depth = int(depths[-1])

    def at(L, v):
        forms = theory.closed_forms(block, depth=L, width=width, var_w=v, max_depth=max_depth)
        return [f.values for f in forms]

    with jax.enable_x64(True):
        meta = theory.closed_forms(block, depth=1, width=width, var_w=float(var_w[0]))
        values = jax.jit(jax.vmap(at))(jnp.asarray(depths), jnp.asarray(var_w, jnp.float64))
        values = [np.asarray(v) for v in values]
    forms = []
    rows = np.arange(len(depths))
    for f, vals in zip(meta, values, strict=True):
        logs = log10_or_nan(vals)
        if f.statistic == "m2_z":
            key, value = "log10_growth", logs[rows, depths]
        elif f.statistic == "var_dw" and f.kind != "lower_bound":  # a bound bounds no ratio
            key, value = "log10_ratio", logs[:, 1] - logs[rows, depths]
        else:
            continue
        forms.append(
            {"quantity": key, "label": f.label, "source": f.source, "kind": f.kind, "values": value}
        )
    return forms


def log10_or_nan(values) -> np.ndarray:
    """log10 of the values in float64, NaN where it is not finite (zero, negative or inf)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = np.log10(np.asarray(values, dtype=np.float64))
    return np.where(np.isfinite(out), out, np.nan)


def layer_profiles(
    blocks: Sequence[Block], inits: Sequence[str], *, width: float, depth: int, c: float = 1.0
) -> list[dict]:
    """Recursion and closed forms over layers l = 0..depth for every (block, init).

    Each record: block name, init, var_w, ``recursion`` (statistic -> list over layers, with the
    ``log10_`` versions) and ``closed_forms`` (list of dicts: statistic, label, source, kind,
    values, log10_values).
    """
    depth = arch.static_int("depth", depth)
    records = []
    for block in blocks:
        for init in inits:
            var_w = float(init_var_w(init, width, depth, c))
            prof = profile(block, depth=depth, width=width, var_w=var_w)
            rec = {k: np.asarray(v) for k, v in prof.as_dict().items()}
            forms = closed_forms64(block, depth=depth, width=width, var_w=var_w)
            records.append(
                {
                    "block": block.name,
                    "init": init,
                    "depth": depth,
                    "var_w": var_w,
                    "alpha": var_w * width,
                    "recursion": rec,
                    "closed_forms": [
                        {
                            "statistic": f.statistic,
                            "label": f.label,
                            "source": f.source,
                            "kind": f.kind,
                            "values": np.asarray(f.values),
                            "log10_values": log10_or_nan(f.values),
                        }
                        for f in forms
                    ],
                }
            )
    return records


def depth_sweep(
    blocks: Sequence[Block],
    inits: Sequence[str],
    *,
    width: float,
    depths: Sequence[int],
    c: float = 1.0,
) -> list[dict]:
    """End-to-end growth against depth L for every (block, init).

    For each L: the forward growth q_L/q_0 = m2_z[L] (q_0 = 1), the gradient ratio
    var_dw[1]/var_dw[L] from the recursion (one vmapped call over all depths), and the same two
    numbers from every closed form that gives them.
    """
    depths = np.asarray(sorted({arch.static_int("depths", int(d)) for d in depths}))
    max_depth = int(depths[-1])
    records = []
    for block in blocks:
        for init in inits:
            var_w = jnp.broadcast_to(init_var_w(init, width, jnp.asarray(depths), c), depths.shape)

            def final(L, v, block=block):
                p = profile(block, depth=L, width=width, var_w=v, max_depth=max_depth)
                return p.log10_m2_z[L], p.log10_var_dw[1] - p.log10_var_dw[L]

            log10_growth, log10_ratio = jax.vmap(final)(jnp.asarray(depths), var_w)
            forms = _depth_closed_forms(block, width, depths, np.asarray(var_w))
            records.append(
                {
                    "block": block.name,
                    "init": init,
                    "depths": depths,
                    "var_w": np.asarray(var_w),
                    "log10_growth": np.asarray(log10_growth),
                    "log10_ratio": np.asarray(log10_ratio),
                    "closed_forms": forms,
                }
            )
    return records


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


def montecarlo_profiles(
    blocks: Sequence[Block],
    inits_: Sequence[str],
    *,
    key: jax.Array,
    width: int,
    depth: int,
    networks: int,
    batch: int,
    c: float = 1.0,
    progress: bool = False,
    **simulate_kwargs,
) -> list[dict]:
    """Monte-Carlo estimates over layers l = 0..depth for every (block, init).

    Each record: block, init, var_w, networks, batch, seconds, ``montecarlo`` (statistic ->
    {"mean", "stderr"} lists, with the ``log10_`` versions), ``spread`` (statistic -> the
    fields of :class:`meanfield.montecarlo.Spread`: median, 5-95% band, mean and sd of ln) and
    ``heavy_tail`` (statistic -> the layers where the mean is carried by a few networks; no
    warning is issued, the record says it). BN blocks need ``batch >= 2``. Every
    (block, init) gets its own key, folded from ``key``.
    """
    from meanfield import montecarlo

    records = []
    for i, block in enumerate(blocks):
        for j, init in enumerate(inits_):
            var_w = float(init_var_w(init, width, depth, c))
            est = montecarlo.simulate(
                block,
                key=jax.random.fold_in(jax.random.fold_in(key, i), j),
                depth=depth,
                width=width,
                var_w=var_w,
                networks=networks,
                batch=batch,
                progress=progress,
                **({"warn": False} | simulate_kwargs),
            )
            stats = est.as_dict()
            records.append(
                {
                    "block": block.name,
                    "init": init,
                    "depth": depth,
                    "width": width,
                    "var_w": var_w,
                    "networks": networks,
                    "batch": batch,
                    "seconds": est.seconds,
                    "montecarlo": {
                        k: v for k, v in stats.items() if isinstance(v, dict) and k != "spread"
                    },
                    "spread": stats["spread"],
                    "heavy_tail": {k: v.tolist() for k, v in est.heavy_tails().items()},
                    "overflow": est.overflow,
                }
            )
    return records


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
