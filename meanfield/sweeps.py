"""Sweeps over architectures, initializations and depths, returning plain records.

The experiments call these and save what they return; the records hold lists and floats only,
so they can go to JSON unchanged and be read back by :mod:`meanfield.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from meanfield import architecture as arch
from meanfield import inits, theory
from meanfield.architecture import Block
from meanfield.recursions import STATISTICS, profile

# Initializations of the branch weights that the sweeps compare (see meanfield.inits).
INITS = ("he", "glorot", "depth_scaled")


def init_var_w(init: str, width, depth, c: float = 1.0) -> jax.Array:
    """var_w of the named initialization for this width and depth (:func:`inits.var_w`)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return jnp.asarray(inits.var_w(init, fan_in=width, fan_out=width, depth=depth, c=c))


def _closed_forms64(block, **kwargs) -> list[theory.ClosedForm]:
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
        logs = _log10(vals)
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


def _log10(values) -> np.ndarray:
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
            forms = _closed_forms64(block, depth=depth, width=width, var_w=var_w)
            records.append(
                {
                    "block": block.name,
                    "init": init,
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
                            "log10_values": _log10(f.values),
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
