"""The companion papers' schemes for residual branches (docs/companions.md).

Each needs more than one number, so each is a function of its own: :func:`fixup` (Zhang et
al. 2019), :func:`branch_scale` (SkipInit, ReZero), :func:`risotto_type_c` with
:data:`RISOTTO_BLOCK` (an exact looks-linear orthogonal block) and :func:`weight_norm` with
:func:`weight_norm_gamma` (Arpit et al. 2019).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from meanfield import theory
from meanfield.core import architecture as arch
from meanfield.inits.initializers import check_shape, fan_in_out, normal, orthogonal, zero

Array = jax.Array


def fixup(
    key: Array,
    shape: Sequence[int],
    *,
    depth: int,
    layers_per_branch: int = 2,
    last: bool = False,
    dtype: DTypeLike = jnp.float32,
) -> Array:
    """A Fixup weight (Zhang et al. 2019) of a residual branch with m = ``layers_per_branch``
    weight layers in a network of L = ``depth`` branches: zero for the branch's last layer
    (``last=True``), else He, N(0, 2/fan_in), with the standard deviation times
    L^(-1/(2m-2)), so the variance is 2/fan_in · L^(-1/(m-1)). (The code of the paper confirms
    the minus sign that some summaries drop.) Fixup's scalar multipliers start at 1 and its
    scalar biases at 0; they do not change the function at init."""
    m = arch.static_int("layers_per_branch", layers_per_branch)
    if m < 2:
        raise ValueError(f"layers_per_branch must be >= 2 (Fixup scales by L^(-1/(2m-2))), got {m}")
    arch.check_depth(depth)
    if last:
        return zero(key, shape, dtype)
    fan_in, _ = fan_in_out(check_shape(shape))
    return normal(key, shape, var_w=fixup_var_w(fan_in, depth, m), dtype=dtype)


def fixup_var_w(fan_in: ArrayLike, depth: ArrayLike, m: int) -> Array:
    """He's 2/fan_in times (L^(-1/(2m-2)))², the variance of Fixup's inner branch layers."""
    depth = jnp.asarray(depth, jnp.result_type(float))
    return theory.he_var_w(fan_in) * depth ** (-1.0 / (m - 1))


def branch_scale(scheme: str, *, depth: int | None = None, value: float = 0.0) -> float:
    """The scalar that multiplies every residual branch at init: ``"skipinit"`` (De & Smith
    2020): ``value``, 0 by default, which must stay below 1/sqrt(depth) when depth is given
    (their "small" variant); ``"rezero"`` (Bachlechner et al. 2021): 0. Either way a
    zero-scaled network is the identity at init."""
    if scheme == "rezero":
        return 0.0
    if scheme != "skipinit":
        raise ValueError(f"scheme must be one of ('skipinit', 'rezero'), got {scheme!r}")
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise ValueError(f"value must be a finite number >= 0, got {value!r}")
    if depth is not None:
        arch.check_depth(depth)
        if value >= 1.0 / math.sqrt(depth):
            raise ValueError(
                f"value must be < 1/sqrt(depth) = {1 / math.sqrt(depth):.3g} for SkipInit, "
                f"got {value!r}"
            )
    return float(value)


# RISOTTO's type-C block as a Block value: two weights per branch, ReLU, no BN (its ReLU comes
# after the sum, on looks-linear channels; the simulator and the trainer build it themselves).
RISOTTO_BLOCK = arch.Block("relu", "none", True, shortcut=2)


def risotto_type_c(
    key: Array,
    n: int,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    dtype: DTypeLike = jnp.float32,
) -> tuple[Array, Array]:
    """(W_1, W_2), 2n x 2n, of a RISOTTO-style type-C block h -> relu(α W_2 relu(W_1 h) + β h)
    on looks-linear channels h = [relu(y); relu(-y)]: W_1 = [[I, -I], [-I, I]] and
    W_2 = (1/α) [[M - βI, -M], [-M, M - βI]] with M Haar-orthogonal, so the block maps y to
    M y exactly (an exact construction; the paper's own parametrization is unverified,
    docs/companions.md). Matrices act on column vectors (h -> W h)."""
    n = arch.static_int("n", n)
    arch.check_positive("alpha", alpha)
    if not (isinstance(beta, numbers.Real) and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number, got {beta!r}")
    m = orthogonal(key, (n, n), dtype=dtype)
    eye = jnp.eye(n, dtype=dtype)
    w1 = jnp.block([[eye, -eye], [-eye, eye]])
    w2 = jnp.block([[m - beta * eye, -m], [-m, m - beta * eye]]) / alpha
    return w1, w2


def weight_norm_gamma(position: str, blocks: int | None = None) -> float:
    """γ of Arpit et al. (2019) for a layer of a weight-normalized ResNet: 2 for a layer
    followed by ReLU (``"first"`` of a branch), 1/B for the ``"last"`` layer of a branch in a
    stage of B blocks, 1 for the ``"stem"``, a ``"shortcut"`` projection and any other layer
    with no nonlinearity after it (``"linear"``)."""
    if position == "first":
        return 2.0
    if position in ("stem", "shortcut", "linear"):
        return 1.0
    if position != "last":
        raise ValueError(
            "position must be one of ('first', 'last', 'stem', 'shortcut', 'linear'), "
            f"got {position!r}"
        )
    return 1.0 / arch.static_int("blocks", blocks)


def weight_norm(
    key: Array, shape: Sequence[int], *, gamma: float, dtype: DTypeLike = jnp.float32
) -> tuple[Array, Array]:
    """(g, v) of a weight-normalized layer w = g v/||v|| (Arpit et al. 2019): v Gaussian (only
    its direction matters), normalized per output unit (the last axis: a column in the Flax
    convention), and g = sqrt(γ fan_in / fan_out) for every unit (their forward rule; γ from
    :func:`weight_norm_gamma`). Returns g with shape (fan_out,) and v of ``shape``."""
    shape = check_shape(shape)
    arch.check_positive("gamma", gamma)
    fan_in, fan_out = fan_in_out(shape)
    v = normal(key, shape, var_w=1.0 / fan_in, dtype=dtype)
    g = jnp.full((fan_out,), math.sqrt(gamma * fan_in / fan_out), dtype)
    return g, v
