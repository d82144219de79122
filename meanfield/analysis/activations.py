"""Forward growth, gradient growth and the correlation of distinct inputs against depth, for
any activation and norm: the records of ``experiments/activations.py``.

Two initializations per activation: **He-like**, α = n·var_w = 1/E f'(u)² at u ~ N(0, 1)
(:func:`meanfield.theory.he_like_alpha`: χ₁ = 1 at unit variance, 2 for relu), and the
depth-scaled c/(nL) of the paper. Each tree runs its inits as one grid by both engines
(:func:`meanfield.sweep`), the inputs with a starting correlation ``input_corr``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from meanfield import theory
from meanfield.analysis.grid import sweep
from meanfield.core.architecture import Block
from meanfield.montecarlo.grid import configuration

__all__ = ["ACTIVATION_INITS", "activation_profiles"]

ACTIVATION_INITS = ("he_like", "depth_scaled")


def _var_w(init: str, activation: str, width: int, depth: int, c: float) -> float:
    if init == "he_like":
        return float(theory.he_like_alpha(activation)) / width
    return c / (width * depth)


def activation_profiles(
    activations: Sequence[str],
    norms: Sequence[str],
    *,
    width: int,
    depth: int,
    key: jax.Array,
    networks: int,
    batch: int,
    input_corr: float = 0.5,
    c: float = 1.0,
    residual: Sequence[bool] = (True, False),
    progress: bool = False,
) -> list[dict]:
    """One record per (activation, norm, residual, init): the recursion's per-layer
    ``log10_m2_z``, ``log10_m2_dz``, ``corr_z`` (and ``mean_z``), and with ``networks`` > 0
    the Monte-Carlo mean and standard error of each, with the configuration."""
    records = []
    for i, activation in enumerate(activations):
        for norm in norms:
            for res in residual:
                block = Block(activation, norm, res)
                var_w = [_var_w(init, activation, width, depth, c) for init in ACTIVATION_INITS]
                s = sweep(
                    block,
                    depth=depth,
                    width=width,
                    var_w=var_w,
                    input_corr=input_corr,
                    key=jax.random.fold_in(key, i),
                    networks=networks,
                    batch=batch,
                    progress=progress,
                )
                for j, init in enumerate(ACTIVATION_INITS):
                    rec = {
                        "activation": activation,
                        "norm": norm,
                        "residual": res,
                        "block": block.name,
                        "init": init,
                        "var_w": var_w[j],
                        "alpha": var_w[j] * width,
                        "width": width,
                        "depth": depth,
                        "input_corr": input_corr,
                        "recursion": {
                            k: np.asarray(getattr(s.recursion, k))[j]
                            for k in ("log10_m2_z", "log10_m2_dz", "corr_z", "mean_z")
                        },
                    }
                    if s.montecarlo is not None:
                        est = configuration(s.montecarlo, j)
                        rec["networks"], rec["batch"] = networks, batch
                        rec["montecarlo"] = {
                            k: {"mean": getattr(est, k).mean, "stderr": getattr(est, k).stderr}
                            for k in ("log10_m2_z", "log10_m2_dz", "corr_z", "mean_z")
                        }
                    records.append(rec)
    return records
