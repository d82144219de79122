"""Backward second moments and weight-gradient variances without normalization, eq. (20)-(27):
the residual and plain networks, the paper's bounds and the corrected forms."""

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
)
from meanfield.theory.forward import forward_second_moment


@domain()
def backward_second_moment(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str
) -> Array:
    """E[(dE/dz^l)^2] of the ResNet without normalization, eq. (20) and (25).

    .. math:: E[(\\partial E/\\partial z^l)^2] = (1 + a\\,n\\mathrm{Var}[w])^{L-l}

    with a = E f'(u)^2 = 1 (identity, exact at any width) or 1/2 (ReLU, exact in mean-field).
    """
    a = activation_moments(activation).a
    layer, depth = check_layers(layer, depth)
    return (1.0 + a * alpha_of(width, var_w)) ** (depth - layer)


@domain()
def relu_delta_variance(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Var[δ^l] = Var[dE/du^l] = ½ (1 + n Var[w]/2)^{L-l} of the ReLU ResNet, eq. (21).

    Exact in the mean-field limit (δ = f'(u) dE/dz with E f'^2 = 1/2).
    """
    return 0.5 * backward_second_moment(layer, depth, width, var_w, "relu")


@domain()
def identity_delta_variance(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Var[δ^l] = (1 + n Var[w])^{L-l} of the identity ResNet, eq. (26); exact at any width."""
    return backward_second_moment(layer, depth, width, var_w, "identity")


@domain()
def plain_backward_second_moment(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str
) -> Array:
    """E[(dE/dz^l)^2] = (a n Var[w])^{L-l} of the plain network (no skip, no normalization).

    The backward contrast of section 2 (Glorot & Bengio 2010; He et al. 2015).
    """
    a = activation_moments(activation).a
    layer, depth = check_layers(layer, depth)
    return (a * alpha_of(width, var_w)) ** (depth - layer)


@domain()
def relu_gradient_variance_lower_bound_paper(
    depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """The paper's lower bound ¼ (1 + n Var[w]/4)^{L-1} on Var[dE/dw^l] (ReLU), eq. (22).

    .. warning:: Valid, but the prefactor ¼ can be ½ and the base 1 + α/4 can be 1 + α/2; it
       says nothing about how the gradient varies with l. See
       :func:`relu_gradient_variance_lower_bound`.
    """
    arch.check_depth(depth)
    return 0.25 * (1.0 + alpha_of(width, var_w) / 4.0) ** (jnp.asarray(depth) - 1)


@domain()
def relu_gradient_variance_lower_bound(
    depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Corrected lower bound Var[dE/dW^l] >= ½ (1 + n Var[w]/2)^{L-1}, every l (ReLU, mean-field).

    The exact mean-field value is ½ (1 + α/2)^{L-l} E[(z^{l-1})^2] (eq. 15 with eq. 21 and
    gradient independence) and E[(z^{l-1})^2] >= (1 + α/2)^{l-1}
    (:func:`relu_second_moment_lower_bound`).
    """
    arch.check_depth(depth)
    return 0.5 * (1.0 + alpha_of(width, var_w) / 2.0) ** (jnp.asarray(depth) - 1)


@domain()
def identity_gradient_variance_paper(depth: ArrayLike, width: ArrayLike, var_w: ArrayLike) -> Array:
    """The paper's Var[dE/dw^l] = (1 + n Var[w]/2)^{L-1} for the identity ResNet, eq. (27).

    .. warning:: Wrong factor: with dE/dW^l = δ^l (z^{l-1})^T (not δ_z^l δ_z^{l-1} as printed),
       Var[δ^l] = (1+α)^{L-l} (eq. 26) and E(z^{l-1})^2 = (1+α)^{l-1} (eq. 7) give
       (1 + α)^{L-1}. See :func:`identity_gradient_variance`.
    """
    arch.check_depth(depth)
    return (1.0 + alpha_of(width, var_w) / 2.0) ** (jnp.asarray(depth) - 1)


@domain()
def identity_gradient_variance(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Corrected Var[dE/dW^l] = (1 + n Var[w])^{L-1} for the identity ResNet, the same for all l.

    Corrects eq. (27). Exact in expectation at any width for the per-example gradient; the
    batch gradient of a loss with independent output gradients per input has the same value.
    Blocks l = 1..L (block l holds W^l).
    """
    layer, depth = check_weight_layers(layer, depth)
    return identity_delta_variance(layer, depth, width, var_w) * forward_second_moment(
        layer - 1, width, var_w
    )
