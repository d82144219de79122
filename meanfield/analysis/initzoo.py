"""The init zoo: recursion against Monte-Carlo over layers for every named initialization of
the branch weights (:data:`meanfield.inits.BRANCH_SCHEMES`, and RISOTTO), as plain records.

:func:`init_zoo_profiles` is re-exported by :mod:`meanfield.analysis.sweeps`, where the experiments
call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from meanfield.core.architecture import Block
from meanfield.recursions import profile

__all__ = ["init_zoo_profiles"]

# Statistics that init_zoo_profiles compares.
_ZOO = ("m2_z", "m2_dz", "var_dw")


def _zoo_recursion(block: Block, init: str, branch_scale, *, depth: int, width: int) -> dict:
    """Statistic -> log10 per layer (float64) of one init-zoo setup: the recursion, or for
    "risotto" the exact statement of its construction (see :func:`init_zoo_profiles`)."""
    if init == "risotto":  # unit inputs and unit loss weights: log10 1 = 0 throughout
        flat = np.zeros(depth + 1)
        return {"m2_z": flat, "m2_dz": flat, "var_dw": np.full(depth + 1, np.nan)}
    with jax.enable_x64(True):
        prof = profile(block, depth=depth, width=width, init=init, branch_scale=branch_scale)
        return {s: np.asarray(getattr(prof, f"log10_{s}"), np.float64) for s in _ZOO}


def _zoo_montecarlo(est, rec_log: dict, heavy: dict) -> tuple[dict, dict]:
    """The ``montecarlo`` and ``max_abs_z`` fields of an init-zoo record (see
    :func:`init_zoo_profiles`), from the estimate, the recursion and the heavy-tail layers."""
    mc, zs = {}, {}
    for s in _ZOO:
        stat = getattr(est, s)
        mean = np.asarray(stat.mean, np.float64)
        se = np.asarray(stat.stderr, np.float64)
        ref = 10.0 ** rec_log[s]
        ok = (ref > 0) & (se > 0) & np.isfinite(mean)
        ok[np.asarray(heavy.get(s, []), int)] = False
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.abs(mean - ref) / se
        zs[s] = float(np.max(z[ok])) if ok.any() else None
        log_mean = np.asarray(getattr(est, f"log10_{s}").mean, np.float64)
        mc[s] = {
            "log10_mean": np.where(np.isfinite(log_mean), log_mean, np.nan).tolist(),
            "log10_stderr": np.asarray(getattr(est, f"log10_{s}").stderr, float).tolist(),
        }
    return mc, zs


def init_zoo_profiles(
    setups: Sequence[tuple],
    *,
    key: jax.Array,
    width: int,
    depth: int,
    networks: int,
    batch: int,
    progress: bool = False,
) -> list[dict]:
    """Recursion and Monte-Carlo over layers l = 0..depth for every setup
    ``(label, block, init, branch_scale)`` (``init`` any of
    :data:`meanfield.inits.BRANCH_SCHEMES`, ``branch_scale`` None for the scheme's own; or
    "risotto" with ``block = inits.RISOTTO_BLOCK``, whose "recursion" is the exact statement
    of its construction: y^l = M_l y^{l-1} with M_l orthogonal keeps E[y²] = 1 and
    E[(dE/dy)²] = 1 at every layer; it has none for ``var_dw``, given as NaN).

    Each record: label, block, init, branch_scale, ``recursion`` (statistic -> log10 per
    layer, in float64), ``montecarlo`` (statistic -> {"log10_mean", "log10_stderr"}),
    ``heavy_tail`` (statistic -> layers whose mean is carried by a few networks) and
    ``max_abs_z`` (statistic -> the largest |MC - recursion|/SE over layers without a heavy
    tail and with a positive recursion value; None where there is none). Statistics:
    m2_z, m2_dz, var_dw.
    """
    from meanfield import montecarlo

    records = []
    for i, (label, block, init, branch_scale) in enumerate(setups):
        rec_log = _zoo_recursion(block, init, branch_scale, depth=depth, width=width)
        est = montecarlo.simulate(
            block,
            key=jax.random.fold_in(key, i),
            depth=depth,
            width=width,
            init=init,
            branch_scale=branch_scale,
            networks=networks,
            batch=batch,
            progress=progress,
            warn=False,
        )
        heavy = est.heavy_tails()
        mc, zs = _zoo_montecarlo(est, rec_log, heavy)
        records.append(
            {
                "label": label,
                "block": block.name,
                "init": init,
                "branch_scale": branch_scale,
                "depth": depth,
                "width": width,
                "networks": networks,
                "batch": batch,
                "seconds": est.seconds,
                "recursion": {
                    s: np.where(np.isfinite(v), v, np.nan).tolist() for s, v in rec_log.items()
                },
                "montecarlo": mc,
                "heavy_tail": {k: v.tolist() for k, v in heavy.items()},
                "max_abs_z": zs,
            }
        )
    return records
