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
from meanfield.analysis.tables import (
    depth_sweep_rows,
    discrepancy_rows,
    log10_or_nan,
    montecarlo_discrepancy_rows,
)
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.montecarlo.grid import configuration, simulate_grid
from meanfield.recursions import profile

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
    "profiles_and_depth_sweep",
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


def _closed_form_grid(block, width, depths, var_w, max_depth: int):
    """(every closed form of the block, as labels, and its values at each configuration:
    arrays of shape (C, max_depth + 1)) in float64, one vmapped program for the grid."""

    def at(L, v):
        forms = theory.closed_forms(block, depth=L, width=width, var_w=v, max_depth=max_depth)
        return [f.values for f in forms]

    with jax.enable_x64(True):
        meta = theory.closed_forms(block, depth=1, width=width, var_w=float(var_w[0]))
        values = jax.jit(jax.vmap(at))(jnp.asarray(depths), jnp.asarray(var_w, jnp.float64))
        return meta, [np.asarray(v) for v in values]


def _form_record(f, values) -> dict:
    return {
        "statistic": f.statistic,
        "label": f.label,
        "source": f.source,
        "kind": f.kind,
        "values": values,
        "log10_values": log10_or_nan(values),
    }


def _depth_forms(meta, values, depths) -> list[dict]:
    """log10 growth q_L and gradient ratio var_dw[1]/var_dw[L] of every closed form that gives
    them, at each depth (rows of ``values`` = the depths)."""
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


def profiles_and_depth_sweep(
    blocks: Sequence[Block],
    inits: Sequence[str],
    *,
    width: float,
    depth: int | None,
    depths: Sequence[int] = (),
    c: float = 1.0,
) -> tuple[list[dict], list[dict]]:
    """The records of :func:`layer_profiles` at ``depth`` and of :func:`depth_sweep` over
    ``depths`` (either may be left out: None, or no depths), from one recursion program and
    one closed-form program per block: every (init, depth) is one configuration of a grid
    (:func:`meanfield.sweep`), so a block compiles once however many inits and depths."""
    if depth is not None:
        depth = arch.static_int("depth", depth)
    depths = np.asarray(sorted({arch.static_int("depths", int(d)) for d in depths}), int)
    own = [] if depth is None else [depth]
    per_init = np.concatenate([own, depths]).astype(int)
    max_depth = int(per_init.max())
    grid_depth = np.tile(per_init, len(inits))
    grid_var_w = np.concatenate(
        [
            np.broadcast_to(init_var_w(i, width, jnp.asarray(per_init), c), per_init.shape)
            for i in inits
        ]
    )
    profiles, sweep = [], []
    for block in blocks:
        prof = profile(block, depth=grid_depth, width=width, var_w=grid_var_w, max_depth=max_depth)
        prof = {k: np.asarray(v) for k, v in prof.as_dict().items()}
        meta, values = _closed_form_grid(block, width, grid_depth, grid_var_w, max_depth)
        for j, init in enumerate(inits):
            first = j * per_init.size
            if depth is not None:
                var_w = float(grid_var_w[first])
                profiles.append(
                    {
                        "block": block.name,
                        "init": init,
                        "depth": depth,
                        "var_w": var_w,
                        "alpha": var_w * width,
                        "recursion": {k: v[first, : depth + 1] for k, v in prof.items()},
                        "closed_forms": [
                            _form_record(f, vals[first, : depth + 1])
                            for f, vals in zip(meta, values, strict=True)
                        ],
                    }
                )
            if depths.size:
                rows = np.arange(first + len(own), first + per_init.size)
                sweep.append(
                    {
                        "block": block.name,
                        "init": init,
                        "depths": depths,
                        "var_w": grid_var_w[rows],
                        "log10_growth": prof["log10_m2_z"][rows, depths],
                        "log10_ratio": prof["log10_var_dw"][rows, 1]
                        - prof["log10_var_dw"][rows, depths],
                        "closed_forms": _depth_forms(meta, [v[rows] for v in values], depths),
                    }
                )
    return profiles, sweep


def layer_profiles(
    blocks: Sequence[Block], inits: Sequence[str], *, width: float, depth: int, c: float = 1.0
) -> list[dict]:
    """Recursion and closed forms over layers l = 0..depth for every (block, init).

    Each record: block name, init, var_w, ``recursion`` (statistic -> list over layers, with the
    ``log10_`` versions) and ``closed_forms`` (list of dicts: statistic, label, source, kind,
    values, log10_values).
    """
    return profiles_and_depth_sweep(blocks, inits, width=width, depth=depth, c=c)[0]


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
    var_dw[1]/var_dw[L] from the recursion (one program over all depths and inits), and the
    same two numbers from every closed form that gives them.
    """
    return profiles_and_depth_sweep(blocks, inits, width=width, depth=None, depths=depths, c=c)[1]


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
    (block, init) gets its own key, folded from ``key``; a block's inits run as one grid
    (:func:`meanfield.montecarlo.simulate_grid`: one program, the networks of a
    :func:`~meanfield.montecarlo.simulate` call with that key). ``simulate_kwargs`` go to
    the grid (chunk_size, precision, engine, input_std, branch_scale).
    """
    kwargs = {k: v for k, v in simulate_kwargs.items() if k != "warn"}  # the records say it
    records = []
    for i, block in enumerate(blocks):
        var_w = [float(init_var_w(init, width, depth, c)) for init in inits_]
        keys = [jax.random.fold_in(jax.random.fold_in(key, i), j) for j in range(len(inits_))]
        # The block's inits as one grid: one program, the networks of simulate(key=keys[j]).
        grid = simulate_grid(
            block,
            key=jnp.stack(keys),
            depth=depth,
            width=width,
            var_w=var_w,
            networks=networks,
            batch=batch,
            progress=bool(progress),
            **kwargs,
        )
        for j, init in enumerate(inits_):
            est = configuration(grid, j)
            stats = est.as_dict()
            records.append(
                {
                    "block": block.name,
                    "init": init,
                    "depth": depth,
                    "width": width,
                    "var_w": var_w[j],
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
