"""Branch rules: the simulator's and the trainer's view of every scheme.

:func:`branch_init` turns any of :data:`BRANCH_SCHEMES` into a :class:`BranchInit` (each
weight layer's per-entry variance, how it is drawn, and the branch scale β), :func:`var_w_rule`
does the same for an explicit variance, :func:`check_plain` refuses a plain network that such
a rule would start at zero, and :func:`branch_weight` draws one weight of a branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from meanfield import layers, theory
from meanfield.core import architecture as arch
from meanfield.core.sampling import standard_normal
from meanfield.inits.companions import fixup_var_w, weight_norm_gamma
from meanfield.inits.initializers import (
    SCHEMES,
    check_shape,
    check_square,
    fan_in_out,
    orthogonal,
    var_w,
)

Array = jax.Array

# Schemes for a whole residual branch (per-layer variances, law, branch scale): branch_init.
BRANCH_SCHEMES = SCHEMES + ("fixup", "skipinit", "rezero", "weight_norm")


class BranchInit(NamedTuple):
    """How the k weights of one residual branch start: ``var_w[i]`` is the per-entry variance
    of W_{i+1} (0: a zero matrix), ``law`` how it is drawn (one of :data:`LAWS`), ``scale``
    the scalar β that multiplies the branch output (z^l = z^{l-1} + β h)."""

    scheme: str
    law: str
    var_w: tuple
    scale: Any


def _plain_variances(
    scheme: str, width: ArrayLike, depth: ArrayLike, k: int, c: ArrayLike, gain: ArrayLike
) -> tuple:
    """The k per-layer variances of a plain scheme (:data:`SCHEMES`): its var_w, every layer."""
    v = var_w(scheme, fan_in=width, depth=depth, c=c, gain=gain)
    if scheme == "depth_scaled":
        arch.check_positive("c", c)
    return (v,) * k


def _fixup_variances(width: ArrayLike, depth: ArrayLike, k: int) -> tuple:
    """Fixup's k per-layer variances: 2/n · L^(-1/(k-1)) for W_1..W_{k-1}, then 0 for W_k."""
    he = theory.he_var_w(width)
    inner = (fixup_var_w(width, depth, k),) * (k - 1) if k > 1 else ()
    return inner + (jnp.zeros_like(he),)


def _check_zero_scale(scheme: str, depth: ArrayLike, branch_scale: ArrayLike | None) -> None:
    """Refuse a ``branch_scale`` for rezero (0 at init), and one >= 1/sqrt(depth) for
    skipinit (SkipInit's "small" α); traced values are not checked."""
    if scheme == "rezero" and branch_scale is not None:
        raise ValueError(f"branch_scale must be None for rezero (0 at init), got {branch_scale!r}")
    if scheme == "skipinit" and branch_scale is not None:
        if not (arch.is_traced(depth) or arch.is_traced(branch_scale)):
            bound = 1.0 / np.sqrt(np.asarray(depth, float))  # SkipInit's "small" α
            if np.any(np.asarray(branch_scale) >= bound):
                raise ValueError(
                    f"branch_scale must be < 1/sqrt(depth) = {float(np.min(bound)):.3g} "
                    f"for skipinit, got {branch_scale!r}"
                )


def _weight_norm_variances(width: ArrayLike, depth: ArrayLike, acts: tuple[str, ...]) -> tuple:
    """Weight norm's per-layer variances γ_i/n: γ = 2 before a ReLU, 1 before none, and
    1/L for the last layer (one stage of L blocks)."""
    gammas = [weight_norm_gamma("first" if a == "relu" else "linear") for a in acts[:-1]]
    inv_depth = 1.0 / jnp.asarray(depth, jnp.result_type(float))  # γ of "last", B = L
    n = jnp.asarray(width, jnp.result_type(float))
    return tuple(g / n for g in gammas) + (inv_depth / n,)


def branch_init(
    scheme: str,
    *,
    width: ArrayLike,
    depth: ArrayLike,
    activations: Sequence[str] = ("relu",),
    c: ArrayLike = 1.0,
    gain: ArrayLike = 1.0,
    branch_scale: ArrayLike | None = None,
) -> BranchInit:
    """The rule of ``scheme`` for a branch whose k = len(``activations``) weight layers are
    each followed (or, bn_pre, preceded) by the given activation
    (:meth:`meanfield.Block.activations`), in a network of ``depth`` blocks of ``width``
    (square weights). ``branch_scale`` overrides β (default: 0 for skipinit and rezero, else
    1); for SkipInit it must stay below 1/sqrt(depth). Values may be traced (vmap over depth
    or width). See the table in the docstring of :mod:`meanfield.inits`.

    Example:
        >>> r = branch_init("fixup", width=64, depth=16, activations=("relu", "relu"))
        >>> r.law, [float(v) * 64 for v in r.var_w], r.scale   # 2 · 16^(-1), then zero
        ('gaussian', [0.125, 0.0], 1.0)
    """
    if not isinstance(scheme, str) or scheme not in BRANCH_SCHEMES:
        raise ValueError(f"init must be one of {BRANCH_SCHEMES}, got {scheme!r}")
    acts = tuple(activations)
    k = len(acts)
    if k < 1:
        raise ValueError(f"activations must name at least one layer, got {activations!r}")
    arch.check_width(width)
    arch.check_depth(depth)
    if branch_scale is not None:
        arch.check_nonnegative("branch_scale", branch_scale)
    scale = 1.0
    law = "gaussian"
    if scheme in SCHEMES:
        variances = _plain_variances(scheme, width, depth, k, c, gain)
        law = "orthogonal" if scheme == "orthogonal" else "gaussian"
    elif scheme == "fixup":
        variances = _fixup_variances(width, depth, k)
    elif scheme in ("skipinit", "rezero"):
        variances = (theory.he_var_w(width),) * k
        scale = 0.0
        _check_zero_scale(scheme, depth, branch_scale)
    else:  # weight_norm
        law = "weight_norm"
        variances = _weight_norm_variances(width, depth, acts)
    if branch_scale is not None:
        scale = branch_scale
    return BranchInit(scheme, law, tuple(variances), scale)


def var_w_rule(
    var_w: ArrayLike,
    *,
    shortcut: int = 1,
    branch_scale: ArrayLike | None = None,
    scheme: str = "var_w",
    law: str = "gaussian",
) -> BranchInit:
    """The rule of a branch whose k = ``shortcut`` weights all have per-entry variance
    ``var_w`` (validated by the caller; 0 is a zero weight), scaled by ``branch_scale``
    (checked >= 0; default 1)."""
    if branch_scale is not None:
        arch.check_nonnegative("branch_scale", branch_scale)
    scale = 1.0 if branch_scale is None else branch_scale
    return BranchInit(scheme, law, (var_w,) * shortcut, scale)


def check_plain(block: Any, rule: BranchInit) -> None:
    """Raise ValueError when a plain (non-residual) ``block`` would start every branch at zero
    under ``rule`` (β = 0 or a zero weight): the network then computes 0 and its statistics
    are not defined. Traced values are not checked."""
    tree = layers.as_tree(block)
    if isinstance(tree, layers.Residual):
        return
    if any(arch.is_traced(v) for v in (rule.scale, *rule.var_w)):
        return
    if bool(jnp.any(jnp.asarray(rule.scale) == 0)) or any(
        bool(jnp.any(jnp.asarray(v) == 0)) for v in rule.var_w
    ):
        raise ValueError(
            f"init={rule.scheme!r} starts every branch at zero, so the plain network "
            f"{tree.name if not isinstance(block, arch.Block) else block.name} computes 0; "
            "use a residual block"
        )


def branch_weight(
    key: Array,
    shape: Sequence[int],
    rule: BranchInit,
    position: int,
    dtype: DTypeLike = jnp.float32,
) -> Array:
    """Draw W_{position+1} of a branch under ``rule`` (:func:`branch_init`); ``shape`` is
    (..., fan_in, fan_out) with fan-in = fan-out for the orthogonal law. Gaussian: i.i.d.
    N(0, var_w); orthogonal: sqrt(var_w·n) times a Haar matrix; weight_norm: w = g v/||v|| per
    output unit (column) with g² = var_w · fan_in (Arpit et al.'s g = sqrt(γ fan_in/fan_out)
    for a square weight). A zero variance gives zeros under every law. The Gaussian and
    weight-norm draws use :func:`meanfield.core.sampling.standard_normal` (the Monte-Carlo engine's
    sampler: ``jax.random.normal``'s numbers in JAX's original counter layout)."""
    arch.check_key(key)
    v = jnp.asarray(rule.var_w[position], dtype)
    if rule.law == "gaussian":
        return jnp.sqrt(v) * standard_normal(key, check_shape(shape), dtype)
    fan_in, _ = fan_in_out(shape)
    if rule.law == "orthogonal":
        n = check_square(shape)
        return jnp.sqrt(v * n) * orthogonal(key, shape, dtype=dtype)
    v_dir = standard_normal(key, check_shape(shape), dtype)
    flat = v_dir.reshape(fan_in, -1)
    norms = jnp.sqrt(jnp.sum(flat**2, axis=0, keepdims=True))
    return (jnp.sqrt(v * fan_in) * flat / norms).reshape(check_shape(shape))
