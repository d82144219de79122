"""Where the infinite-width recursion and sampled networks part: width and batch sweeps.

The recursions of :mod:`meanfield.recursions` are the n -> ∞, B -> ∞ limit at fixed depth.
:func:`width_sweep` measures one statistic over a range of widths at fixed depth and batch,
next to the recursion and, for positively homogeneous networks, the floor that Euler's identity
puts under the input-side gradient; :func:`extrapolate_width` fits a + b/n to it, so the
limit can be read off and compared. :func:`batch_sweep` does the same over the BN batch B at
fixed width, next to the exact n -> ∞, finite-B closed form where one exists.

Every function takes a preset :class:`~meanfield.core.architecture.Block` or a
:mod:`meanfield.layers` tree; what they ask of it (a BatchNorm? positively homogeneous?) is
read from its layers (:mod:`meanfield.analysis.structure`).

A *quantity* is a statistic at a layer, ``("m2_dz", 0)``, or the gradient ratio
``("grad_ratio", None)`` = Var[dE/dW^1] / Var[dE/dW^L]. Records are flat dicts of floats
(log10 values, so nothing overflows) ready for CSV and :mod:`meanfield.io.plots`.

**Euler's floor.** A block without normalization (identity or ReLU) is positively homogeneous
of degree 1, so the map z^l -> z^L satisfies J z^l = z^L, and for the loss E = g · z^L the
gradient dE/dz^l = J^T g has the component (z^L · g)/|z^l| along z^l/|z^l|, exactly. Its
second moment per unit, averaged over g, is |z^L|²/(n |z^l|²): so, per input,
m2_dz^l >= (q_L / q_l)/n at any width. It grows at the forward rate while the mean-field
gradient grows at the slower backward rate, so at fixed n it takes over once L is large enough
(docs/finite-width.md). This needs every layer homogeneous of degree 1: no norm (with BN the
network is homogeneous of degree 0 in z^l and the component is zero) and activations of the
arc-cosine family (identity, relu, leaky_relu, abs); other networks get no floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from meanfield import montecarlo, recursions, theory
from meanfield.analysis import structure
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.layers import Layer

__all__ = [
    "QUANTITIES",
    "batch_sweep",
    "extrapolate_width",
    "finite_batch_gradient_ratio",
    "width_sweep",
]

_LN10 = math.log(10.0)
QUANTITIES = ("mean_z", "m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw", "grad_ratio")


def _check_quantity(quantity: tuple, depth: int) -> tuple[str, int | None]:
    if not (isinstance(quantity, tuple) and len(quantity) == 2) or quantity[0] not in QUANTITIES:
        raise ValueError(
            f"quantity must be (statistic, layer) with statistic in {QUANTITIES}, got {quantity!r}"
        )
    stat, layer = quantity
    if stat == "grad_ratio":
        return stat, None
    arch.check_layer(layer, depth)
    if stat == "var_dw" and layer == 0:
        raise ValueError("quantity ('var_dw', 0) is undefined: layer 0 has no weight")
    return stat, int(layer)


def _montecarlo_point(est: montecarlo.Estimate, stat: str, layer: int | None) -> dict:
    """log10 mean ± SE, median and 5-95% band over networks and sd of ln at one point."""
    if stat == "grad_ratio":
        lm = np.asarray(est.log10_var_dw.mean, np.float64)
        ls = np.asarray(est.log10_var_dw.stderr, np.float64)
        rel = np.hypot(10.0 ** (ls[1] - lm[1]), 10.0 ** (ls[-1] - lm[-1]))
        tails = est.spread["var_dw"].heavy_tail
        return {
            "log10_mc_mean": lm[1] - lm[-1],
            # Delta method, the two means taken as independent (overstates a positive correlation).
            "log10_mc_stderr": lm[1] - lm[-1] + math.log10(rel),
            "log10_mc_median": math.nan,
            "log10_mc_q05": math.nan,
            "log10_mc_q95": math.nan,
            "sd_ln": math.nan,
            "heavy_tail": bool(tails[1] or tails[-1]),
        }
    log_stat = getattr(est, f"log10_{stat}") if stat != "mean_z" else None
    spread = est.spread[stat]
    if log_stat is None:  # mean_z: raw values, no logs
        return {
            "mc_mean": float(est.mean_z.mean[layer]),
            "mc_stderr": float(est.mean_z.stderr[layer]),
            "mc_median": float(spread.median[layer]),
            "mc_q05": float(spread.q05[layer]),
            "mc_q95": float(spread.q95[layer]),
            "heavy_tail": False,
        }
    return {
        "log10_mc_mean": float(log_stat.mean[layer]),
        "log10_mc_stderr": float(log_stat.stderr[layer]),
        "log10_mc_median": float(spread.log10_median[layer]),
        "log10_mc_q05": float(spread.log10_q05[layer]),
        "log10_mc_q95": float(spread.log10_q95[layer]),
        "sd_ln": float(spread.sd_ln[layer]),  # over the networks where it is positive
        "zero_fraction": float(spread.zero_fraction[layer]),
        "heavy_tail": bool(spread.heavy_tail[layer]),
    }


def _recursion_point(prof: recursions.Profile, stat: str, layer: int | None) -> float:
    if stat == "grad_ratio":
        return float(prof.log10_var_dw[1] - prof.log10_var_dw[-1])
    if stat == "mean_z":
        return float(prof.mean_z[layer])
    return float(getattr(prof, f"log10_{stat}")[layer])


def _point(
    block: Block | Layer,
    quantity: tuple,
    *,
    key: jax.Array,
    depth: int,
    width: int,
    alpha: float,
    networks: int,
    batch: int,
    **simulate_kwargs,
) -> dict:
    stat, layer = _check_quantity(quantity, depth)
    var_w = alpha / width
    est = montecarlo.simulate(
        block,
        key=key,
        depth=depth,
        width=width,
        var_w=var_w,
        networks=networks,
        batch=batch,
        warn=False,
        **simulate_kwargs,
    )
    prof = recursions.profile(block, depth=depth, width=width, var_w=var_w)
    row = {
        "block": block.name,
        "quantity": stat if layer is None else f"{stat}[{layer}]",
        "statistic": stat,
        "layer": layer,
        "depth": depth,
        "width": width,
        "batch": batch,
        "alpha": alpha,
        "var_w": var_w,
        "networks": networks,
        "seconds": est.seconds,
    }
    row |= _montecarlo_point(est, stat, layer)
    row["log10_recursion"] = _recursion_point(prof, stat, layer)
    if stat == "m2_dz" and structure.is_homogeneous(block):
        # Euler's floor (q_L / q_l)/n, with the mean-field forward moments.
        log10_m2 = np.asarray(prof.log10_m2_z, np.float64)
        row["log10_euler_floor"] = float(log10_m2[-1] - log10_m2[layer] - math.log10(width))
    return row


def width_sweep(
    block: Block | Layer,
    quantity: tuple,
    *,
    key: jax.Array,
    widths: Sequence[int],
    depth: int,
    alpha: float,
    networks: int,
    batch: int,
    **simulate_kwargs,
) -> list[dict]:
    """One row per width n: Monte-Carlo of ``quantity`` at var_w = α/n, and the recursion.

    Columns: ``log10_mc_mean``, ``log10_mc_stderr``, the median and 5-95% band over networks
    (``log10_mc_median``, ``log10_mc_q05``, ``log10_mc_q95``), ``sd_ln``, ``heavy_tail``,
    ``log10_recursion`` (the n -> ∞ value) and, for the input-side gradient of positively
    homogeneous networks (no norm, arc-cosine activations), ``log10_euler_floor``. Width i uses
    ``fold_in(key, i)``.
    """
    structure.tree_of(block)
    arch.check_positive("alpha", alpha)
    widths = [arch.static_int("widths", w) for w in widths]
    return [
        _point(
            block,
            quantity,
            key=jax.random.fold_in(key, i),
            depth=depth,
            width=w,
            alpha=float(alpha),
            networks=networks,
            batch=batch,
            **simulate_kwargs,
        )
        for i, w in enumerate(widths)
    ]


def finite_batch_gradient_ratio(
    block: Block | Layer, depth: int, width: int, alpha: float, batch: int
) -> float:
    """log10 of Var[dE/dW^1]/Var[dE/dW^L] at n -> ∞ and a finite batch of B inputs.

    A network without BatchNorm (no norm, or LayerNorm and RMSNorm, which act per input) has no
    batch dependence: its value at every B is the recursion's. With BatchNorm it is the exact
    closed form of the identity blocks with BN (the presets identity-bn_post and
    identity-bn_pre with one weight per branch, residual or plain), and NaN where none exists
    (any other network with BN, or B <= 3).
    """
    tree = structure.tree_of(block)
    depth = arch.static_int("depth", depth)
    width = arch.static_int("width", width)
    arch.check_positive("alpha", alpha)
    batch = arch.static_int("batch", batch)
    if not structure.has_batchnorm(tree):
        prof = recursions.profile(tree, depth=depth, width=width, var_w=alpha / width)
        return _recursion_point(prof, "grad_ratio", None)
    found = structure.preset(block)
    closed = found is not None and found.activation == "identity" and found.shortcut == 1
    if not closed or batch <= 3:
        return math.nan
    with jax.enable_x64(True):
        pi = theory.identity_bn_finite_batch_gradient_variance(
            np.array([1, depth]), depth, width, alpha / width, batch, residual=found.residual
        )
    return float(np.log10(pi[0] / pi[1]))


def batch_sweep(
    block: Block | Layer,
    quantity: tuple,
    *,
    key: jax.Array,
    batches: Sequence[int],
    width: int,
    depth: int,
    alpha: float,
    networks: int,
    **simulate_kwargs,
) -> list[dict]:
    """One row per BN batch B: Monte-Carlo of ``quantity``, the recursion (B -> ∞) and, for the
    gradient ratio of identity blocks with BN, the exact n -> ∞ finite-B closed form
    (:func:`meanfield.theory.identity_bn_finite_batch_gradient_variance`) as
    ``log10_finite_batch``. Batch i uses ``fold_in(key, i)``. The network must contain a
    BatchNorm: LayerNorm and RMSNorm act per input, so nothing else depends on B."""
    if not structure.has_batchnorm(structure.tree_of(block)):
        raise ValueError(
            f"batch_sweep needs a block with BN (a BatchNorm layer; LayerNorm and RMSNorm act "
            f"per input and do not depend on the batch), got {block.name!r}"
        )
    arch.check_positive("alpha", alpha)
    rows = []
    for i, b in enumerate(batches):
        b = arch.static_int("batches", b)
        if b < 2:
            raise ValueError(f"batches must be >= 2 (BN uses the batch statistics), got {b}")
        row = _point(
            block,
            quantity,
            key=jax.random.fold_in(key, i),
            depth=depth,
            width=width,
            alpha=float(alpha),
            networks=networks,
            batch=b,
            **simulate_kwargs,
        )
        if quantity[0] == "grad_ratio":
            row["log10_finite_batch"] = finite_batch_gradient_ratio(block, depth, width, alpha, b)
        rows.append(row)
    return rows


def extrapolate_width(rows: Sequence[dict], min_width: int = 1) -> dict:
    """Weighted least-squares fit of the Monte-Carlo mean to a + b/n over widths >= min_width.

    Returns the fitted limit ``a`` (the n -> ∞ value) with its standard error, ``b`` with its
    standard error, the
    recursion's value and the z-score (a - recursion)/SE, all in linear (not log) units, and the
    fit's χ² per degree of freedom. Heavy-tailed rows are dropped (their errors are not
    trustworthy); at least three rows must remain.
    """
    use = [
        r for r in rows if r["width"] >= min_width and not r["heavy_tail"] and "log10_mc_mean" in r
    ]
    if len(use) < 3:
        raise ValueError(
            f"extrapolate_width needs >= 3 rows with width >= {min_width} and no heavy tail, "
            f"got {len(use)}"
        )
    x = np.array([1.0 / r["width"] for r in use])
    y = np.array([10.0 ** r["log10_mc_mean"] for r in use])
    se = np.array([10.0 ** r["log10_mc_stderr"] for r in use])
    design = np.stack([np.ones_like(x), x], axis=1) / se[:, None]
    coef, *_ = np.linalg.lstsq(design, y / se, rcond=None)
    cov = np.linalg.inv(design.T @ design)
    resid = (y - np.stack([np.ones_like(x), x], axis=1) @ coef) / se
    limit, limit_se = float(coef[0]), float(math.sqrt(cov[0, 0]))
    recursion = 10.0 ** use[0]["log10_recursion"]
    return {
        "limit": limit,
        "limit_stderr": limit_se,
        "slope": float(coef[1]),
        "slope_stderr": float(math.sqrt(cov[1, 1])),
        "recursion": recursion,
        "z_limit_vs_recursion": (limit - recursion) / limit_se,
        "chi2_per_dof": float(np.sum(resid**2) / max(len(use) - 2, 1)),
        "widths": [r["width"] for r in use],
    }
