"""What theory says about a :class:`~meanfield.training.models.ResNetConfig` at initialization, for
the training comparison: :func:`init_predictions`, the mean-field growth of its forward and
backward profiles and the spectrum of the input-output Jacobian of sampled dense networks.
:func:`recursion_weights` gives the recursion's weight arguments of a configuration (used by
:mod:`meanfield.training.initcheck` too, which re-exports :func:`init_predictions`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from meanfield import layers, recursions
from meanfield.training.models import ZOO_INITS, ResNetConfig

__all__ = ["init_predictions", "recursion_weights"]


def recursion_weights(config: ResNetConfig) -> dict:
    """The recursion's weight arguments for ``config``: its variance, or, for the companion
    schemes, the scheme itself (their rules depend only on the fan-in k·k·C and the depth)."""
    if config.init in ZOO_INITS:
        return dict(init=config.init, c=config.c, branch_scale=config.branch_scale)
    return dict(var_w=config.var_w, branch_scale=config.branch_scale)


def init_predictions(
    config: ResNetConfig,
    *,
    key: jax.Array,
    jacobian_width: int = 64,
    networks: int = 8,
) -> dict[str, Any]:
    """What theory says about ``config`` at initialization, for the training comparison:

    * ``forward_log10``: log10 q_L/q_0 and ``backward_log10``: log10 p_0/p_L from the
      mean-field recursion of its block and init at fan-in k·k·C (from x ~ N(0, I));
    * for RISOTTO (no recursion) the exact 0 and 0 of its construction, y -> M_l y on the
      signal y (the backward is that of y, the quantity RISOTTO keeps isometric);
    * ``jacobian_sd_log`` and ``jacobian_log10_condition``: the median over ``networks``
      sampled dense networks of width ``jacobian_width`` (same block, same α per layer) of the
      standard deviation of ln σ_i and of log10 σ_max/σ_min of dz^L/dx
      (:mod:`meanfield.analysis.jacobian`; BN statistics held fixed over a batch of 8). None where
      the Jacobian is not defined (a learned branch scale other than SkipInit's).

    ``key`` is the typed key (``jax.random.key``) of the sampled networks
    (:func:`meanfield.analysis.jacobian.singular_values`).
    """
    from meanfield.analysis import jacobian

    if config.init == "risotto":  # exact: every block maps y to M_l y, |h^l| = |h^0| per pixel
        sv = jacobian.singular_values(
            "risotto",
            key=key,
            depth=config.depth,
            width=jacobian_width,
            networks=networks,
        )
        stats = jacobian.spectrum_stats(sv)
        return {
            "forward_log10": 0.0,
            "backward_log10": 0.0,
            "jacobian_width": jacobian_width,
            "jacobian_networks": networks,
            "jacobian_sd_log": float(np.median(stats.sd_log)),
            "jacobian_log10_condition": float(np.median(np.log10(stats.condition))),
        }
    with jax.enable_x64(True):
        prof = recursions.profile(
            config.block,
            depth=config.depth,
            width=float(config.fan_in),
            **recursion_weights(config),
        )
        logq = np.asarray(prof.log10_m2_z, np.float64)
        logp = np.asarray(prof.log10_m2_dz, np.float64)
    out: dict[str, Any] = {
        "forward_log10": float(logq[-1] - logq[0]),
        "backward_log10": float(logp[0] - logp[-1]),
        "jacobian_width": jacobian_width,
        "jacobian_networks": networks,
        "jacobian_sd_log": None,
        "jacobian_log10_condition": None,
    }
    if config.branch_scale is not None and config.init != "skipinit":
        return out
    sv = jacobian.singular_values(
        config.init,
        key=key,
        depth=config.depth,
        width=jacobian_width,
        networks=networks,
        batch=8 if layers.has_batchnorm(config.tree) else 1,
        c=config.c,
        alpha=config.branch_scale or 0.0,
        block=config.block,
    )
    stats = jacobian.spectrum_stats(sv)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["jacobian_sd_log"] = float(np.median(stats.sd_log))
        out["jacobian_log10_condition"] = float(np.median(np.log10(stats.condition)))
    return out
