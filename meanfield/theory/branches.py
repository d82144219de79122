"""Branches of k weight layers (Li et al. 2016's shortcut depth) and the weight-normalized
blocks of Arpit et al. (2019): forward and backward second moments, gradient variances."""

from __future__ import annotations

import jax.numpy as jnp
from jax.typing import ArrayLike

from meanfield.core import architecture as arch
from meanfield.theory.common import (
    Array,
    activation_moments,
    alpha_of,
    check_layers,
    check_weight_layers,
    domain,
    input_moment,
)


@domain()
def branch_forward_second_moment(
    layer: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike,
    shortcut: int,
    activation: str = "identity",
    m2_x: ArrayLike = 1.0,
) -> Array:
    """E[(z^l)^2] of z^l = z^{l-1} + W_k f(... f(W_1 z^{l-1})), a branch of k = ``shortcut``
    weight layers without f after the last (Li et al. 2016's shortcut depth; for identity f
    also the block with it).

    .. math:: E[(z^l)^2] = (1 + \\alpha^k e_2^{k-1})^l\\, E[x^2]

    Exact at any width: E||a W||² = α||a||² for each weight, E||f(a W)||² = e_2 α||a||² for
    f = ReLU by the sign symmetry of W, and the branch, linear in W_k, is uncorrelated with
    z^{l-1}.
    """
    k = arch.static_int("shortcut", shortcut)
    e2 = activation_moments(activation).e2
    layer, _ = check_layers(layer)
    alpha = alpha_of(width, var_w)
    return input_moment("m2_x", m2_x) * (1.0 + alpha**k * e2 ** (k - 1)) ** layer


@domain()
def branch_backward_second_moment(
    layer: ArrayLike,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike,
    shortcut: int,
    activation: str = "identity",
) -> Array:
    """E[(dE/dz^l)^2] of the block of :func:`branch_forward_second_moment`:
    (1 + α^k a^{k-1})^{L-l}, a = E f'² (exact in the mean field; at any width for identity f).
    """
    k = arch.static_int("shortcut", shortcut)
    a = activation_moments(activation).a
    layer, depth = check_layers(layer, depth)
    alpha = alpha_of(width, var_w)
    return (1.0 + alpha**k * a ** (k - 1)) ** (depth - layer)


@domain()
def branch_gradient_variance(
    layer: ArrayLike,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike,
    shortcut: int,
    activation: str = "identity",
) -> Array:
    """Var[dE/dW] averaged over the k weights of block l of the block of
    :func:`branch_forward_second_moment`: every W_i gets the same, (α a)^{k-1} (1 + c)^{L-1}
    with c = α^k a^{k-1} (a = e_2 for identity and ReLU; the input of W_i has second moment
    (α e_2)^{i-1} q_{l-1}, its output cotangent (α a)^{k-i} p_l)."""
    k = arch.static_int("shortcut", shortcut)
    a = activation_moments(activation).a
    layer, depth = check_weight_layers(layer, depth)
    alpha = alpha_of(width, var_w)
    c = alpha**k * a ** (k - 1)
    return (alpha * a) ** (k - 1) * (1.0 + c) ** (depth - 1) + 0.0 * layer


@domain()
def weight_norm_forward_growth(layer: ArrayLike, blocks: ArrayLike) -> Array:
    """E||z^l||² / ||x||² = (1 + 1/B)^l in a stage of B weight-normalized blocks
    z + W_2 relu(W_1 z) with Arpit et al.'s (2019) init (γ = 2 for W_1, 1/B for W_2): the
    branch adds γ_1 γ_2 / 2 = 1/B of ||z||², uncorrelated with z. Bounded by e over the stage
    for any B. Exact in expectation at any width (the columns have fixed norms and random
    directions)."""
    layer, _ = check_layers(layer)
    arch.check_depth(blocks, "blocks")
    return (1.0 + 1.0 / jnp.asarray(blocks, jnp.result_type(float))) ** layer


@domain()
def weight_norm_backward_growth(layer: ArrayLike, depth: ArrayLike, blocks: ArrayLike) -> Array:
    """E||dE/dz^l||² / E||dE/dz^L||² = (1 + 1/B)^{L-l} for the network of
    :func:`weight_norm_forward_growth` (Arpit et al. 2019; mean field)."""
    layer, depth = check_layers(layer, depth)
    arch.check_depth(blocks, "blocks")
    return (1.0 + 1.0 / jnp.asarray(blocks, jnp.result_type(float))) ** (depth - layer)
