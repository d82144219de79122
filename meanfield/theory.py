"""Closed forms for signal propagation in the toy ResNets of Taki (2017), and their corrections.

One pure function per formula, named for what it returns. Every function takes scalars or
arrays (NumPy broadcasting), is written in ``jax.numpy`` and can be jitted and vmapped. The
variance of one weight entry is ``var_w``, the fan-in ``width`` (n), and α = n·var_w; ``layer``
is l (0 = input), ``depth`` is L. Inputs have zero mean and unit variance unless an argument
says otherwise (``m2_x``, ``var_x``: finite and >= 0), and the output gradient dE/dz^L has
zero mean and unit variance.

Where the paper is exact, one function gives its formula. Where it is approximate or wrong, a
``*_paper`` function gives the paper's formula and a sibling gives the correct one; each
docstring says which is which (see also docs/theory.md).

Initialization
    :func:`he_var_w`, :func:`glorot_var_w`, :func:`depth_scaled_var_w` (eq. 10/28),
    :func:`depth_scaled_growth` (eq. 9, exact), :func:`depth_scaled_growth_limit` (e^c).
Forward, no normalization
    :func:`forward_second_moment` (eq. 7-8, identity, exact at any width),
    :func:`plain_forward_second_moment` ((nVar[w])^L), :func:`plain_relu_forward_second_moment`,
    :func:`relu_variance_lower_bound_paper` (eq. 13-14), :func:`relu_variance_lower_bound`,
    :func:`relu_second_moment_lower_bound`, :func:`relu_growth_rate` (the exact asymptotic rate),
    :func:`relu_depth_scaled_log_second_moment` (what c/(nL) really gives for ReLU).
Backward, no normalization
    :func:`backward_second_moment` (eq. 20, 25), :func:`relu_delta_variance` (eq. 21),
    :func:`identity_delta_variance` (eq. 26), :func:`plain_backward_second_moment`,
    :func:`relu_gradient_variance_lower_bound_paper` (eq. 22),
    :func:`relu_gradient_variance_lower_bound`, :func:`identity_gradient_variance_paper`
    (eq. 27, wrong), :func:`identity_gradient_variance` (corrected).
Batch normalization (population limit, both placements)
    :func:`bn_variance_paper` (eq. 31, 47), :func:`bn_sigma2_paper` (eq. 40),
    :func:`bn_unit_variance`, :func:`bn_mean`, :func:`bn_second_moment`,
    :func:`bn_gradient_growth_paper` (L/l, eq. 41-42, 52), :func:`bn_gradient_variance_paper`
    (eq. 54), :func:`bn_backward_second_moment` (exact Γ-ratio), :func:`bn_gradient_variance`,
    :func:`bn_relu_gradient_growth_asymptotic` ((L/l)^{π/(π-1)}),
    :func:`plain_bn_backward_second_moment`, and at finite batch
    :func:`identity_bn_finite_batch_gradient_variance`.
Finite width, spread over networks (one input per network)
    :func:`finite_width_m2_sd` (the standard deviation of E[(z^l)^2] over networks) and
    :func:`finite_width_log_m2_spread` (mean and standard deviation of its log; NumPy), exact
    where a layer multiplies the squared norm by an independent factor: identity residual,
    identity plain and ReLU plain blocks without normalization.
Branches of k weight layers and the companion inits
    :func:`branch_forward_second_moment` ((1 + α^k e_2^{k-1})^l, exact at any width),
    :func:`branch_backward_second_moment`, :func:`branch_gradient_variance` (Li et al. 2016's
    shortcut depth), :func:`weight_norm_forward_growth` and
    :func:`weight_norm_backward_growth` ((1 + 1/B)^l, Arpit et al. 2019).
All of one architecture
    :func:`closed_forms` lists every formula above that applies to a block, labelled exact,
    lower bound or approximation, for comparison with the recursions and Monte-Carlo.

Example:
    >>> import meanfield.theory as t
    >>> float(t.forward_second_moment(10, width=100, var_w=0.01))  # (1 + 1)^10
    1024.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.typing import ArrayLike

from meanfield import architecture as arch
from meanfield.gaussian import activation_moments

Array = jax.Array

__all__ = [
    "ClosedForm",
    "CATALOG",
    "CatalogEntry",
    "closed_forms",
    "he_var_w",
    "glorot_var_w",
    "depth_scaled_var_w",
    "depth_scaled_growth",
    "depth_scaled_growth_limit",
    "forward_second_moment",
    "plain_forward_second_moment",
    "plain_relu_forward_second_moment",
    "relu_variance_lower_bound_paper",
    "relu_variance_lower_bound",
    "relu_second_moment_lower_bound",
    "relu_growth_rate",
    "relu_depth_scaled_log_second_moment",
    "backward_second_moment",
    "relu_delta_variance",
    "identity_delta_variance",
    "plain_backward_second_moment",
    "relu_gradient_variance_lower_bound_paper",
    "relu_gradient_variance_lower_bound",
    "identity_gradient_variance_paper",
    "identity_gradient_variance",
    "bn_variance_paper",
    "bn_sigma2_paper",
    "bn_unit_variance",
    "bn_mean",
    "bn_second_moment",
    "bn_gradient_growth_paper",
    "bn_gradient_variance_paper",
    "bn_backward_second_moment",
    "bn_gradient_variance",
    "bn_relu_gradient_growth_asymptotic",
    "plain_bn_backward_second_moment",
    "identity_bn_finite_batch_gradient_variance",
    "LogSpread",
    "finite_width_m2_sd",
    "finite_width_log_m2_spread",
]


def _alpha(width: ArrayLike, var_w: ArrayLike) -> Array:
    arch.check_width(width)
    arch.check_var_w(var_w)
    return jnp.asarray(width) * jnp.asarray(var_w)


def _layers(layer: ArrayLike, depth: ArrayLike | None = None) -> tuple[Array, Array | None]:
    arch.check_layer(layer, depth)
    if depth is None:
        return jnp.asarray(layer), None
    arch.check_depth(depth)
    return jnp.asarray(layer), jnp.asarray(depth)


def _input_moment(name: str, value: ArrayLike) -> Array:
    """An input statistic (``m2_x``, ``var_x``): a second moment or variance, finite and >= 0."""
    arch.check_nonnegative(name, value)
    return jnp.asarray(value)


def _check_block(block: arch.Block) -> arch.Block:
    if not isinstance(block, arch.Block):
        raise ValueError(f"block must be a meanfield.Block, got {block!r}")
    return block


def _norm_placement(norm: str) -> str:
    if norm not in ("bn_post", "bn_pre"):
        raise ValueError(f"norm must be one of ('bn_post', 'bn_pre'), got {norm!r}")
    return norm


# --------------------------------------------------------------------------------------------
# Initialization


def he_var_w(fan_in: ArrayLike) -> Array:
    """He et al. (2015) variance 2 / fan_in (the paper's "He's initialization", ref. [10])."""
    arch.check_width(fan_in)
    return 2.0 / jnp.asarray(fan_in)


def glorot_var_w(fan_in: ArrayLike, fan_out: ArrayLike | None = None) -> Array:
    """Glorot & Bengio (2010) variance 2 / (fan_in + fan_out); fan_out defaults to fan_in."""
    arch.check_width(fan_in)
    fan_out = fan_in if fan_out is None else fan_out
    arch.check_width(fan_out)
    return 2.0 / (jnp.asarray(fan_in) + jnp.asarray(fan_out))


def depth_scaled_var_w(width: ArrayLike, depth: ArrayLike, c: ArrayLike = 1.0) -> Array:
    """The paper's depth-scaled initialization, eq. (10) and (28).

    .. math:: \\mathrm{Var}[w] = \\frac{c}{nL}

    The paper's experiment uses c = 1 with n = 8·8·16 (fan-in of an 8x8 convolution with 16
    channels) and L = 100.
    """
    arch.check_width(width)
    arch.check_depth(depth)
    arch.check_positive("c", c)
    return jnp.asarray(c) / (jnp.asarray(width) * jnp.asarray(depth))


def depth_scaled_growth(depth: ArrayLike, c: ArrayLike = 1.0) -> Array:
    """Exact forward growth (1 + c/L)^L of an identity ResNet at Var[w] = c/(nL), eq. (9).

    The paper writes ≈ e^c; the exact value is below e^c for every L (2.594 at L = 10, c = 1)
    and tends to it as L -> ∞. For ReLU this init does *not* bound the growth: see
    :func:`relu_depth_scaled_log_second_moment`.
    """
    arch.check_depth(depth)
    arch.check_positive("c", c)
    depth = jnp.asarray(depth)
    return jnp.exp(depth * jnp.log1p(jnp.asarray(c) / depth))


def depth_scaled_growth_limit(c: ArrayLike = 1.0) -> Array:
    """e^c, the L -> ∞ limit (and upper bound) of :func:`depth_scaled_growth`, eq. (9)."""
    arch.check_positive("c", c)
    return jnp.exp(jnp.asarray(c))


# --------------------------------------------------------------------------------------------
# Forward, no normalization


def forward_second_moment(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, m2_x: ArrayLike = 1.0
) -> Array:
    """E[(z^l)^2] of the identity ResNet z^l = z^{l-1} + W^l z^{l-1}, eq. (7)-(8).

    .. math:: E[(z^l)^2] = (1 + n\\mathrm{Var}[w])^l\\, E[x^2]

    Exact at any width (E||(I + W) z||^2 = (1 + α)||z||^2 for every z); with E x = 0 it is
    also Var[z^l] (eq. 8).
    """
    layer, _ = _layers(layer)
    return _input_moment("m2_x", m2_x) * (1.0 + _alpha(width, var_w)) ** layer


def plain_forward_second_moment(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, m2_x: ArrayLike = 1.0
) -> Array:
    """E[(z^l)^2] = (n Var[w])^l E[x^2] of the plain identity network z^l = W^l z^{l-1}.

    The contrast of section 2.1 (Glorot & Bengio 2010); exact at any width.
    """
    layer, _ = _layers(layer)
    return _input_moment("m2_x", m2_x) * _alpha(width, var_w) ** layer


def plain_relu_forward_second_moment(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, m2_x: ArrayLike = 1.0
) -> Array:
    """E[(z^l)^2] = (n Var[w]/2)^l E[x^2] of the plain ReLU network z^l = relu(W^l z^{l-1}).

    He et al. (2015); E||relu(Wz)||^2 = (α/2)||z||^2 in expectation at any width, so He's
    α = 2 preserves the second moment.
    """
    layer, _ = _layers(layer)
    return _input_moment("m2_x", m2_x) * (_alpha(width, var_w) / 2.0) ** layer


def relu_variance_lower_bound_paper(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, var_x: ArrayLike = 1.0
) -> Array:
    """The paper's lower bound on Var[z^l] of the ReLU ResNet, eq. (13)-(14).

    .. math:: \\mathrm{Var}[z^l] \\ge (1 + n\\mathrm{Var}[w]/4)^l\\, \\mathrm{Var}[x]

    .. warning:: A valid but loose bound: it uses Jensen's (E|u|)^2 <= E u^2 where the exact
       value (E|u|)^2 = (2/π) E u^2 is known. See :func:`relu_variance_lower_bound` for the
       tightest bound of this form and :func:`relu_growth_rate` for the actual growth.
    """
    layer, _ = _layers(layer)
    return _input_moment("var_x", var_x) * (1.0 + _alpha(width, var_w) / 4.0) ** layer


def relu_variance_lower_bound(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, var_x: ArrayLike = 1.0
) -> Array:
    """Corrected lower bound on the pooled Var[z^l] of the ReLU ResNet (mean-field).

    .. math:: \\mathrm{Var}[z^l] \\ge \\left(1 + n\\mathrm{Var}[w]\\,\\frac{\\pi-1}{2\\pi}\\right)^l
              \\mathrm{Var}[x]

    Corrects eq. (14): the exact step is v_l = v_{l-1} + α q_{l-1}(π-1)/(2π) with
    q = E z^2 >= v (Var relu(u) = Var[u](π-1)/(2π) exactly), so the base is 1 + 0.3408 α,
    not 1 + α/4. Still a bound: the true growth is :func:`relu_growth_rate` per layer.
    """
    b = activation_moments("relu").b
    layer, _ = _layers(layer)
    return _input_moment("var_x", var_x) * (1.0 + b * _alpha(width, var_w)) ** layer


def relu_second_moment_lower_bound(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, m2_x: ArrayLike = 1.0
) -> Array:
    """E[(z^l)^2] >= (1 + n Var[w]/2)^l E[x^2] for the ReLU ResNet (mean-field).

    From q_l = (1 + α/2) q_{l-1} + 2 m_{l-1} sqrt(α q_{l-1}/2π) and m >= 0. Not in the paper;
    the second moment (what the next layer sees, eq. 4) is the quantity that matters.
    """
    layer, _ = _layers(layer)
    return _input_moment("m2_x", m2_x) * (1.0 + _alpha(width, var_w) / 2.0) ** layer


def relu_growth_rate(width: ArrayLike, var_w: ArrayLike) -> Array:
    """Asymptotic per-layer growth λ = lim q_{l+1}/q_l of E[z^2] in the ReLU ResNet (mean-field).

    With s = sqrt(α/2π) and t = m/sqrt(q) the ratio of mean to root second moment, the fixed
    point t* of the mean-field map solves (α/2)t^2 + 2s t^3 - 2s t - s^2 = 0 in (0, 1), and

    .. math:: \\lambda = 1 + \\alpha/2 + 2 s t^*.

    α = 1: λ = 2.1719 (identity ResNet: 2, the paper's bound: 1.25); α = 2 (He): λ = 2.9041.
    Not in the paper, which gives only the loose bound 1 + α/4 (eq. 14).
    """
    alpha = _alpha(width, var_w)
    s = jnp.sqrt(alpha / (2.0 * jnp.pi))

    def residual(t):
        return 0.5 * alpha * t**2 + 2.0 * s * t**3 - 2.0 * s * t - s**2

    # residual(0) = -s^2 < 0 and residual(1) = α/2 - s^2 = α(π-1)/(2π) > 0: bisect on (0, 1).
    lo = jnp.zeros_like(alpha)
    hi = jnp.ones_like(alpha)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = residual(mid) > 0
        return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

    lo, hi = jax.lax.fori_loop(0, 64, bisect, (lo, hi))
    t_star = 0.5 * (lo + hi)
    return 1.0 + 0.5 * alpha + 2.0 * s * t_star


def relu_depth_scaled_log_second_moment(depth: ArrayLike, c: ArrayLike = 1.0) -> Array:
    """Leading-order log E[(z^L)^2] of the ReLU ResNet at the paper's Var[w] = c/(nL).

    .. math:: \\log E[(z^L)^2] = \\sqrt{2cL/\\pi}\\,(1 + o(1))

    The mean m_L >= L sqrt(α/2π) = sqrt(cL/2π) grows without bound; once it dominates,
    dm/dl ≈ sqrt(α/2π) m. So eq. (10) does **not** keep ReLU activations O(1), contrary to the
    paper's conclusion after eq. (14). Convergence of the o(1) is slow (mean-field ratio
    log q_L / sqrt(2L/π) = 0.84, 0.95, 0.98 at L = 1e2, 1e3, 1e4, c = 1).
    """
    arch.check_depth(depth)
    arch.check_positive("c", c)
    return jnp.sqrt(2.0 * jnp.asarray(c) * jnp.asarray(depth) / jnp.pi)


# --------------------------------------------------------------------------------------------
# Backward, no normalization


def backward_second_moment(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str
) -> Array:
    """E[(dE/dz^l)^2] of the ResNet without normalization, eq. (20) and (25).

    .. math:: E[(\\partial E/\\partial z^l)^2] = (1 + a\\,n\\mathrm{Var}[w])^{L-l}

    with a = E f'(u)^2 = 1 (identity, exact at any width) or 1/2 (ReLU, exact in mean-field).
    """
    a = activation_moments(activation).a
    layer, depth = _layers(layer, depth)
    return (1.0 + a * _alpha(width, var_w)) ** (depth - layer)


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
    layer, _ = _layers(layer)
    alpha = _alpha(width, var_w)
    return _input_moment("m2_x", m2_x) * (1.0 + alpha**k * e2 ** (k - 1)) ** layer


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
    layer, depth = _layers(layer, depth)
    alpha = _alpha(width, var_w)
    return (1.0 + alpha**k * a ** (k - 1)) ** (depth - layer)


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
    layer, depth = _layers(layer, depth)
    alpha = _alpha(width, var_w)
    c = alpha**k * a ** (k - 1)
    return (alpha * a) ** (k - 1) * (1.0 + c) ** (depth - 1) + 0.0 * layer


def weight_norm_forward_growth(layer: ArrayLike, blocks: ArrayLike) -> Array:
    """E||z^l||² / ||x||² = (1 + 1/B)^l in a stage of B weight-normalized blocks
    z + W_2 relu(W_1 z) with Arpit et al.'s (2019) init (γ = 2 for W_1, 1/B for W_2): the
    branch adds γ_1 γ_2 / 2 = 1/B of ||z||², uncorrelated with z. Bounded by e over the stage
    for any B. Exact in expectation at any width (the columns have fixed norms and random
    directions)."""
    layer, _ = _layers(layer)
    arch.check_depth(blocks)
    return (1.0 + 1.0 / jnp.asarray(blocks, jnp.result_type(float))) ** layer


def weight_norm_backward_growth(layer: ArrayLike, depth: ArrayLike, blocks: ArrayLike) -> Array:
    """E||dE/dz^l||² / E||dE/dz^L||² = (1 + 1/B)^{L-l} for the network of
    :func:`weight_norm_forward_growth` (Arpit et al. 2019; mean field)."""
    layer, depth = _layers(layer, depth)
    arch.check_depth(blocks)
    return (1.0 + 1.0 / jnp.asarray(blocks, jnp.result_type(float))) ** (depth - layer)


def relu_delta_variance(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Var[δ^l] = Var[dE/du^l] = ½ (1 + n Var[w]/2)^{L-l} of the ReLU ResNet, eq. (21).

    Exact in the mean-field limit (δ = f'(u) dE/dz with E f'^2 = 1/2).
    """
    return 0.5 * backward_second_moment(layer, depth, width, var_w, "relu")


def identity_delta_variance(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Var[δ^l] = (1 + n Var[w])^{L-l} of the identity ResNet, eq. (26); exact at any width."""
    return backward_second_moment(layer, depth, width, var_w, "identity")


def plain_backward_second_moment(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str
) -> Array:
    """E[(dE/dz^l)^2] = (a n Var[w])^{L-l} of the plain network (no skip, no normalization).

    The backward contrast of section 2 (Glorot & Bengio 2010; He et al. 2015).
    """
    a = activation_moments(activation).a
    layer, depth = _layers(layer, depth)
    return (a * _alpha(width, var_w)) ** (depth - layer)


def relu_gradient_variance_lower_bound_paper(
    depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """The paper's lower bound ¼ (1 + n Var[w]/4)^{L-1} on Var[dE/dw^l] (ReLU), eq. (22).

    .. warning:: Valid, but the prefactor ¼ can be ½ and the base 1 + α/4 can be 1 + α/2; it
       says nothing about how the gradient varies with l. See
       :func:`relu_gradient_variance_lower_bound`.
    """
    arch.check_depth(depth)
    return 0.25 * (1.0 + _alpha(width, var_w) / 4.0) ** (jnp.asarray(depth) - 1)


def relu_gradient_variance_lower_bound(
    depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Corrected lower bound Var[dE/dW^l] >= ½ (1 + n Var[w]/2)^{L-1}, every l (ReLU, mean-field).

    The exact mean-field value is ½ (1 + α/2)^{L-l} E[(z^{l-1})^2] (eq. 15 with eq. 21 and
    gradient independence) and E[(z^{l-1})^2] >= (1 + α/2)^{l-1}
    (:func:`relu_second_moment_lower_bound`).
    """
    arch.check_depth(depth)
    return 0.5 * (1.0 + _alpha(width, var_w) / 2.0) ** (jnp.asarray(depth) - 1)


def identity_gradient_variance_paper(depth: ArrayLike, width: ArrayLike, var_w: ArrayLike) -> Array:
    """The paper's Var[dE/dw^l] = (1 + n Var[w]/2)^{L-1} for the identity ResNet, eq. (27).

    .. warning:: Wrong factor: with dE/dW^l = δ^l (z^{l-1})^T (not δ_z^l δ_z^{l-1} as printed),
       Var[δ^l] = (1+α)^{L-l} (eq. 26) and E(z^{l-1})^2 = (1+α)^{l-1} (eq. 7) give
       (1 + α)^{L-1}. See :func:`identity_gradient_variance`.
    """
    arch.check_depth(depth)
    return (1.0 + _alpha(width, var_w) / 2.0) ** (jnp.asarray(depth) - 1)


def identity_gradient_variance(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Corrected Var[dE/dW^l] = (1 + n Var[w])^{L-1} for the identity ResNet, the same for all l.

    Corrects eq. (27). Exact in expectation at any width for the per-example gradient; the
    batch gradient of a loss with independent output gradients per input has the same value.
    """
    layer, depth = _layers(layer, depth)
    return identity_delta_variance(layer, depth, width, var_w) * forward_second_moment(
        layer - 1, width, var_w
    )


# --------------------------------------------------------------------------------------------
# Batch normalization (population statistics unless stated)


def bn_variance_paper(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str, var_x: ArrayLike = 1.0
) -> Array:
    """The paper's Var[z^l] = a l n Var[w] + Var[x] of BN ResNets, eq. (31) and (47).

    a = 1 (identity) or 1/2 (ReLU). Exact as the *pooled* variance for identity (both
    placements) and for ReLU with BN before the activation (Fig. 4).

    .. warning:: For ReLU this is not the per-unit variance that BN divides by, which is
       1 + lα(π-1)/(2π) (:func:`bn_unit_variance`); the difference lα/(2π) is the spread of
       per-unit means. Using it as σ² is the error behind the paper's eq. (51)-(52).
    """
    a = activation_moments(activation).e2
    layer, _ = _layers(layer)
    return a * layer * _alpha(width, var_w) + _input_moment("var_x", var_x)


def bn_sigma2_paper(layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str) -> Array:
    """The paper's approximation σ_l² ≈ a l n Var[w], eq. (40) (identity) and (47)/(51).

    .. warning:: Drops Var[x] (the paper's footnote 9), exact only when lα >> 1, and for ReLU
       uses the pooled instead of the per-unit variance. Correct: :func:`bn_unit_variance`.
    """
    a = activation_moments(activation).e2
    layer, _ = _layers(layer)
    return a * layer * _alpha(width, var_w)


def bn_unit_variance(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str
) -> Array:
    """Per-unit variance σ_l² of z^l in a BN ResNet, both placements (population mean-field).

    .. math:: \\sigma_l^2 = 1 + l\\,n\\mathrm{Var}[w]\\,b_f,\\quad b_f = \\mathrm{Var} f(s)

    b_f = 1 (identity; eq. 31, exact) or (π-1)/(2π) ≈ 0.3408 (ReLU; corrects eq. 40 and 47).
    """
    b = activation_moments(activation).b
    layer, _ = _layers(layer)
    return 1.0 + layer * _alpha(width, var_w) * b


def bn_mean(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str, norm: str
) -> Array:
    """E[z^l] of a BN ResNet (population mean-field).

    ReLU with BN on the branch input (Fig. 1b): every unit drifts by E relu(u) = sqrt(α/2π) per
    block, m_l = l sqrt(α/2π). Zero for identity and for BN before the activation (Fig. 4,
    eq. 44).
    """
    e1 = activation_moments(activation).e1
    layer, _ = _layers(layer)
    drift = e1 * jnp.sqrt(_alpha(width, var_w)) if _norm_placement(norm) == "bn_post" else 0.0
    return layer * drift


def bn_second_moment(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str, norm: str
) -> Array:
    """E[(z^l)^2] of a BN ResNet (population mean-field).

    bn_post: 1 + lα b_f + (l e_1)^2 α, i.e. per-unit variance plus the squared common drift;
    bn_pre:  1 + lα E f(s)^2 (eq. 47 read as a second moment; the per-unit means W_j·E f(ẑ) are
    spread with variance α e_1^2 per block).
    """
    m = activation_moments(activation)
    alpha = _alpha(width, var_w)
    if _norm_placement(norm) == "bn_post":
        return (
            bn_unit_variance(layer, width, var_w, activation)
            + bn_mean(layer, width, var_w, activation, norm) ** 2
        )
    layer, _ = _layers(layer)
    return 1.0 + layer * alpha * m.e2


def bn_gradient_growth_paper(layer: ArrayLike, depth: ArrayLike) -> Array:
    """The paper's law Var[δ_z^l] / Var[δ_z^L] = L / l for BN ResNets, eq. (41)-(42), (51)-(52).

    .. warning:: Identity: the lα >> 1 limit of :func:`bn_backward_second_moment`
       ((1 + Lα)/(1 + lα)). ReLU: wrong; the exponent is π/(π-1) ≈ 1.467
       (:func:`bn_relu_gradient_growth_asymptotic`).
    """
    layer, depth = _layers(layer, depth)
    return depth / layer


def bn_gradient_variance_paper(layer: ArrayLike, depth: ArrayLike, activation: str) -> Array:
    """The paper's Var[dE/dw^l] ≈ a L/l for BN ResNets, eq. (42) (a = 1) and (54).

    .. warning:: See :func:`bn_gradient_variance` for the exact population mean-field value.
    """
    return activation_moments(activation).a * bn_gradient_growth_paper(layer, depth)


def _log_gamma_ratio(x: Array, k: Array) -> Array:
    """log Γ(x + k) - log Γ(x) for x > 0, k >= 0, without the cancellation of lgamma - lgamma."""
    # Shift x up by 8 with Γ(x+1) = xΓ(x), then use Stirling's series for the difference; every
    # term is O(k log x), so the absolute error stays near float epsilon for any depth.
    shift = jnp.arange(8.0, dtype=x.dtype).reshape((8,) + (1,) * x.ndim)
    head = jnp.sum(jnp.log1p(k[None] / (x[None] + shift)), axis=0)
    y = x + 8.0
    inv_y, inv_yk = 1.0 / y, 1.0 / (y + k)
    stirling = (
        (y - 0.5) * jnp.log1p(k / y)
        + k * jnp.log(y + k)
        - k
        + (inv_yk - inv_y) / 12.0
        - (inv_yk**3 - inv_y**3) / 360.0
        + (inv_yk**5 - inv_y**5) / 1260.0
        - (inv_yk**7 - inv_y**7) / 1680.0
        + (inv_yk**9 - inv_y**9) / 1188.0
    )
    return stirling - head


def _gamma_product(layer: Array, depth: Array, offset: Array, kappa: Array) -> Array:
    """prod_{k=l}^{L-1} (k + A + κ)/(k + A) = Γ(L+A+κ)Γ(l+A) / (Γ(L+A)Γ(l+A+κ))."""
    layer, depth, offset, kappa = jnp.broadcast_arrays(
        *(
            jnp.asarray(v, dtype=jnp.result_type(float, offset))
            for v in (layer, depth, offset, kappa)
        )
    )
    return jnp.exp(
        _log_gamma_ratio(depth + offset, kappa) - _log_gamma_ratio(layer + offset, kappa)
    )


def bn_backward_second_moment(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str
) -> Array:
    """E[(dE/dz^l)^2] of a BN ResNet, both placements, population mean-field (corrects eq. 41, 52).

    From eq. (38) with the per-unit σ_k² = 1 + kα b_f (:func:`bn_unit_variance`):

    .. math::
        p_l = \\prod_{k=l}^{L-1}\\Bigl(1 + \\frac{a\\alpha}{1 + k\\alpha b_f}\\Bigr)
            = \\frac{\\Gamma(L + A + \\kappa)\\,\\Gamma(l + A)}
                   {\\Gamma(L + A)\\,\\Gamma(l + A + \\kappa)},
        \\quad A = \\frac{1}{\\alpha b_f},\\ \\kappa = \\frac{a}{b_f}.

    Identity: κ = 1 and p_l = (1 + Lα)/(1 + lα), which is L/l only when lα >> 1. ReLU:
    κ = π/(π-1) ≈ 1.467, so p_l ~ (L/l)^{1.467}, not L/l.
    """
    m = activation_moments(activation)
    layer, depth = _layers(layer, depth)
    alpha = _alpha(width, var_w)
    return _gamma_product(layer, depth, 1.0 / (alpha * m.b), m.a / m.b)


def bn_gradient_variance(
    layer: ArrayLike,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike,
    activation: str,
    norm: str,
) -> Array:
    """Var[dE/dW^l] of a BN ResNet: batch gradient per input, population mean-field (eq. 54).

    With p_l = :func:`bn_backward_second_moment` and the batch gradient
    dE/dW^l = Σ_b δ_b a_b^T divided by B:

    * bn_post (a = BN(z), zero mean per unit): a p_l, a = E f'(u)^2;
    * bn_pre (a = f(BN(z))): b_f p_l + e_1^2 (= p_l (π-1)/(2π) + 1/(2π) for ReLU). The constant
      comes from the common mean of f(ẑ) and Σ_b dE/dz_b^l = Σ_b dE/dz_b^L, which BN's zero-sum
      backward keeps for every l. The per-example gradient is E f(ẑ)^2 p_l = p_l / 2; the paper's
      coefficient Var f(ẑ) (eq. 53) is the one of the growing part only.
    """
    m = activation_moments(activation)
    p = bn_backward_second_moment(layer, depth, width, var_w, activation)
    if _norm_placement(norm) == "bn_post":
        return m.a * p
    return m.b * p + m.e1**2


def bn_relu_gradient_growth_asymptotic(layer: ArrayLike, depth: ArrayLike) -> Array:
    """(L/l)^{π/(π-1)}: the l >> 1/α limit of the ReLU BN gradient growth (corrects eq. 52).

    The exponent κ = E f'^2 / Var f(s) = (1/2) / ((π-1)/(2π)) = π/(π-1) ≈ 1.4669.
    """
    m = activation_moments("relu")
    return bn_gradient_growth_paper(layer, depth) ** (m.a / m.b)


def plain_bn_backward_second_moment(
    layer: ArrayLike, depth: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str
) -> Array:
    """E[(dE/dz^l)^2] of the plain BN network (no skip), population mean-field.

    Below the first block the per-unit variance is α b_f, so each backward step multiplies by
    κ = a/b_f (1 for identity, π/(π-1) for ReLU), independent of Var[w]:
    p_l = κ^{L-l} for l >= 1 and p_0 = aα κ^{L-1} (the input has unit variance). This per-layer
    factor is what the residual connection turns into the power law of
    :func:`bn_backward_second_moment`.
    """
    m = activation_moments(activation)
    layer, depth = _layers(layer, depth)
    alpha = _alpha(width, var_w)
    kappa = m.a / m.b
    return jnp.where(layer >= 1, kappa ** (depth - layer), m.a * alpha * kappa ** (depth - 1))


def identity_bn_finite_batch_gradient_variance(
    layer: ArrayLike,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike,
    batch: ArrayLike,
    residual: bool = True,
) -> Array:
    """Var[dE/dW^l] of the identity BN ResNet with batch statistics over B inputs (n -> ∞).

    With B finite, BN's backward is the projection Π = I - 11^T/B - ẑẑ^T/B (rank B-2) divided by
    the batch σ̂ (the paper's eq. 37 keeps only part of it). The centred batch kernel of z^l has
    eigenvalue s_l = 1 + lαB/(B-1), σ̂² ~ s χ²_{B-1}/B so E[1/σ̂²] = B/((B-3)s), and
    E Π = (B-2)/(B-1)(I - 11^T/B). The isotropic part π_l of the backward kernel obeys
    π_{l-1} = π_l (1 + αB(B-2) / ((B-1)(B-3) s_{l-1})), π_L = 1, and Var[dE/dW^l] = π_l:

    .. math::
        \\pi_l = \\frac{\\Gamma(L+A+\\kappa)\\Gamma(l+A)}{\\Gamma(L+A)\\Gamma(l+A+\\kappa)},
        \\quad A = \\frac{B-1}{\\alpha B},\\ \\kappa = \\frac{B-2}{B-3}.

    Requires B > 3; tends to :func:`bn_backward_second_moment` as B -> ∞. For the plain
    network (``residual=False``) the centred eigenvalue is s_0 = 1, s_k = αB/(B-1) (k >= 1), so
    π_l = ((B-2)/(B-3))^{L-l} for l >= 1 (1 in the population limit: the finite batch alone makes
    plain BN gradients grow), and π_0 = αB(B-2)/((B-1)(B-3)) π_1.
    """
    layer, depth = _layers(layer, depth)
    arch._check_all("batch", batch, lambda a: a > 3, "a number > 3", integer=False)
    if not isinstance(residual, (bool, np.bool_)):
        raise ValueError(f"residual must be True or False, got {residual!r}")
    alpha = _alpha(width, var_w)
    batch = jnp.asarray(batch, dtype=jnp.result_type(float, alpha))
    if not residual:
        step = jnp.log((batch - 2.0) / (batch - 3.0))
        first = jnp.log(alpha * batch * (batch - 2.0) / ((batch - 1.0) * (batch - 3.0)))
        top = jnp.maximum(layer, 1)
        return jnp.exp((depth - top) * step + jnp.where(layer == 0, first, 0.0))
    return _gamma_product(
        layer, depth, (batch - 1.0) / (alpha * batch), (batch - 2.0) / (batch - 3.0)
    )


# --------------------------------------------------------------------------------------------
# Finite width: the spread over networks of E[(z^l)^2] with one input per network
#
# With B = 1 and no normalization, three blocks multiply the squared norm by a factor that is
# independent of everything before it, because W z ~ N(0, var_w |z|^2 I) whatever z's
# direction: m2_z^l = Y X_1 ... X_l, with Y = |x|^2/n ~ χ²_n/n the input's and
#   identity residual  X = |u + W u|^2 = (α/n) χ'²(n, λ = n/α)  (noncentral, u a unit vector),
#   identity plain     X = (α/n) χ²_n,
#   ReLU plain         X = (α/n) χ²_K, K ~ Binomial(n, 1/2) active units.
# ReLU residual blocks have no such factorization: u + relu(W u) depends on u's direction
# through its mean, so the factors are correlated (docs/finite-width.md).

_SPREAD_BLOCKS = ("identity-none-residual", "identity-none-plain", "relu-none-plain")


def _spread_block(block: arch.Block) -> str:
    if _check_block(block).name not in _SPREAD_BLOCKS:
        raise ValueError(
            f"block must be one of {_SPREAD_BLOCKS} (blocks whose layers multiply |z|^2 by an "
            f"independent factor), got {getattr(block, 'name', block)!r}"
        )
    return block.name


def _factor_moments(name: str, n: Array, alpha: Array) -> tuple[Array, Array]:
    """(E X, E X²) of one layer's factor X = |z^l|² / |z^{l-1}|²."""
    if name == "identity-none-residual":
        return 1.0 + alpha, (1.0 + alpha) ** 2 + 2.0 * alpha * (alpha + 2.0) / n
    if name == "identity-none-plain":
        return alpha, alpha**2 * (1.0 + 2.0 / n)
    return alpha / 2.0, alpha**2 * (0.25 + 1.25 / n)


def finite_width_m2_sd(
    block: arch.Block, layer: ArrayLike, width: ArrayLike, var_w: ArrayLike
) -> Array:
    """Standard deviation over networks of m2_z^l = |z^l|²/n, one input x ~ N(0, I_n).

    Exact at any width for the blocks of :func:`finite_width_log_m2_spread`: with m2_z^l =
    Y X_1 ... X_l (independent factors), E[(m2_z^l)²] = (1 + 2/n) (E X²)^l and
    E[m2_z^l] = (E X)^l, where for the identity residual block E X = 1 + α and
    Var X = 2α(α + 2)/n (a noncentral χ²), for the identity plain block E X = α,
    Var X = 2α²/n, and for the ReLU plain block E X = α/2, Var X = 5α²/(4n).
    The relative spread sqrt((1 + 2/n)(1 + Var X/(E X)²)^l - 1) grows without bound in l at
    fixed n: for the identity residual block its square is about 2lα(α+2)/(n(1+α)²) while small.
    """
    name = _spread_block(block)
    layer, _ = _layers(layer)
    alpha = _alpha(width, var_w)
    n = jnp.asarray(width, dtype=jnp.result_type(float, alpha))
    mean_x, m2_x = _factor_moments(name, n, alpha)
    log_mean2 = 2.0 * layer * jnp.log(mean_x)
    rel = jnp.expm1(jnp.log1p(2.0 / n) + layer * jnp.log(m2_x / mean_x**2))
    return jnp.exp(0.5 * (log_mean2 + jnp.log(rel)))


class LogSpread(NamedTuple):
    """Mean and standard deviation over networks of ln m2_z^l, arrays over l = 0..L."""

    mean: np.ndarray
    sd: np.ndarray


def _log_chi2_moments(dof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E ln χ²_k, E (ln χ²_k)²) for k = ``dof`` degrees of freedom (k > 0)."""
    half = 0.5 * dof
    mean = math.log(2.0) + scipy.special.digamma(half)
    return mean, scipy.special.polygamma(1, half) + mean**2


def _mixture_log_moments(dof: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Mean and variance of ln χ²_K for K = ``dof`` with probabilities ``weights``."""
    m1, m2 = _log_chi2_moments(dof)
    weights = weights / weights.sum()
    mean = float(np.sum(weights * m1))
    return mean, float(max(np.sum(weights * m2) - mean**2, 0.0))


def _log_factor_moments(name: str, n: int, alpha: float) -> tuple[float, float]:
    """Mean and variance of ln X for one layer's factor."""
    scale = math.log(alpha / n)
    if name == "identity-none-plain":
        m1, m2 = _log_chi2_moments(np.asarray(float(n)))
        return scale + float(m1), float(m2 - m1**2)
    if name == "identity-none-residual":
        # χ'²(n, λ) is χ²_{n+2J} with J ~ Poisson(λ/2); sum J over ±12 sd around its mean.
        mu = 0.5 * n / alpha
        half = 12.0 * math.sqrt(mu) + 30.0
        j = np.arange(max(0, math.floor(mu - half)), math.ceil(mu + half) + 1, dtype=np.float64)
        log_p = j * math.log(mu) - mu - scipy.special.gammaln(j + 1.0)
        mean, var = _mixture_log_moments(n + 2.0 * j, np.exp(log_p - log_p.max()))
        return scale + mean, var
    # ReLU plain: K ~ Binomial(n, 1/2) active units, conditioned on K >= 1 (a network with
    # every unit off, probability 2^-n per layer, has m2_z = 0 and no logarithm).
    k = np.arange(1, n + 1, dtype=np.float64)
    log_p = scipy.special.gammaln(n + 1.0) - scipy.special.gammaln(k + 1.0)
    log_p = log_p - scipy.special.gammaln(n - k + 1.0)
    mean, var = _mixture_log_moments(k, np.exp(log_p - log_p.max()))
    return scale + mean, var


def finite_width_log_m2_spread(
    block: arch.Block, depth: int, width: int, var_w: float
) -> LogSpread:
    """Mean and standard deviation over networks of ln m2_z^l, l = 0..L, one input per network.

    Exact at any width n (x ~ N(0, I_n), Gaussian weights, no normalization): ln m2_z^l is the
    sum of the independent terms ln(χ²_n/n) and ln X_1, ..., ln X_l (see
    :func:`finite_width_m2_sd` for the laws of X), so its mean and variance add. With
    E ln χ²_k = ln 2 + ψ(k/2) and Var ln χ²_k = ψ'(k/2): the identity plain block's factor is
    a χ²_n, the ReLU plain block's a χ²_K mixed over K ~ Binomial(n, 1/2) (conditioned on
    K >= 1), and the identity residual block's a noncentral χ'²(n, n/α) = χ²_{n+2J} mixed over
    J ~ Poisson(n/2α). For small Var X the variance per layer is about Var X/(E X)², so the
    standard deviation of ln m2_z^L grows like sqrt(L/n): for the identity residual block,
    sd² ≈ 2Lα(α+2)/(n(1+α)²) (Hanin's 5L/n for He-initialized ReLU plain networks). Once
    it passes about 1 the mean E[m2_z^L] = (E X)^L is carried by rare networks, and the
    typical (median) network sits near exp(mean) instead.

    NumPy in float64 (a Poisson sum with a data-dependent range); not traceable by jit.
    """
    name = _spread_block(block)
    depth = arch.static_int("depth", depth)
    width = arch.static_int("width", width)
    arch.check_var_w(var_w)
    m_in, v_in = _log_factor_moments("identity-none-plain", width, 1.0)  # Y = χ²_n / n
    m_x, v_x = _log_factor_moments(name, width, float(width) * float(var_w))
    layers = np.arange(depth + 1, dtype=np.float64)
    return LogSpread(mean=m_in + layers * m_x, sd=np.sqrt(v_in + layers * v_x))


# --------------------------------------------------------------------------------------------
# All closed forms of one architecture, for comparison with recursions and Monte-Carlo


class ClosedForm(NamedTuple):
    """One closed-form curve over layers l = 0..L, comparable with a profile statistic."""

    statistic: str  # a profile name: "m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw"
    label: str  # formula and source, e.g. "eq. (27), paper"
    source: str  # "paper" (the paper's formula) or "corrected" (this project's)
    kind: str  # "exact" (equals the mean-field recursion), "lower_bound" or "approximation"
    values: Array  # shape (L + 1,); NaN where undefined (e.g. l = 0 for gradients)


class _At(NamedTuple):
    """What a catalogue entry evaluates: layers l (0..max_depth, capped at L), lp (the layers
    with a weight, 1..max_depth), L, n, Var[w], the block's activation f, its norm, k, the
    activation after the last weight, and f's Gaussian moments."""

    l: Array
    lp: Array
    L: Array
    n: Array
    v: Array
    act: str
    norm: str
    k: int
    last: str
    fm: Any


def _pad(values: Array) -> Array:
    """Gradient curves: NaN at l = 0."""
    return jnp.concatenate([jnp.full((1,), jnp.nan, values.dtype), values])


class CatalogEntry(NamedTuple):
    """One closed form of the catalogue: the statistic it gives, its label, source and kind,
    which preset blocks it applies to, and how it is evaluated."""

    statistic: str
    label: str
    source: str  # "paper" or "corrected"
    kind: str  # "exact", "lower_bound" or "approximation"
    applies: Callable[[arch.Block], bool]
    evaluate: Callable[[_At], Array]


def _paper_block(b: arch.Block) -> bool:  # one weight layer, f after it
    return b.shortcut == 1 and b.final_activation


def _when(residual: bool, norms: tuple, acts: tuple, k1: bool = True):
    def applies(b: arch.Block) -> bool:
        return (
            b.residual == residual
            and b.norm in norms
            and b.activation in acts
            and _paper_block(b) == k1
        )

    return applies


_BN = ("bn_post", "bn_pre")
_ALL = arch.ACTIVATIONS
_E = CatalogEntry

# Which forms apply to which block, in the order they are listed; "every form is tested" is a
# loop over this table (tests/test_theory.py).
CATALOG: tuple[CatalogEntry, ...] = (
    # Branches of k weight layers: exact where the branch is linear in its last weight without
    # normalization, and the BN forward (the last weight sees a BN output whatever precedes
    # it, so the k = 1 form holds with the last layer's activation).
    _E(
        "m2_z",
        "(1+α^{k} e_2^{km1})^l",
        "corrected",
        "exact",
        lambda b: (
            not _paper_block(b)
            and b.residual
            and b.norm == "none"
            and b.activations()[-1] == "identity"
        ),
        lambda a: branch_forward_second_moment(a.l, a.n, a.v, a.k, a.act),
    ),
    _E(
        "m2_dz",
        "(1+α^{k} a^{km1})^(L-l)",
        "corrected",
        "exact",
        lambda b: (
            not _paper_block(b)
            and b.residual
            and b.norm == "none"
            and b.activations()[-1] == "identity"
        ),
        lambda a: branch_backward_second_moment(a.l, a.L, a.n, a.v, a.k, a.act),
    ),
    _E(
        "var_dw",
        "(αa)^{km1}(1+α^{k} a^{km1})^(L-1)",
        "corrected",
        "exact",
        lambda b: (
            not _paper_block(b)
            and b.residual
            and b.norm == "none"
            and b.activations()[-1] == "identity"
        ),
        lambda a: _pad(branch_gradient_variance(a.lp, a.L, a.n, a.v, a.k, a.act)),
    ),
    _E(
        "m2_z",
        "1+lα(b_f+l e_1²) (post) / 1+lα e_2 (pre)",
        "corrected",
        "exact",
        _when(True, _BN, _ALL, k1=False),
        lambda a: bn_second_moment(a.l, a.n, a.v, a.last, a.norm),
    ),
    _E(
        "unitvar_z",
        "σ² = 1 + lα b_f",
        "corrected",
        "exact",
        _when(True, _BN, _ALL, k1=False),
        lambda a: bn_unit_variance(a.l, a.n, a.v, a.last if a.norm == "bn_post" else a.act),
    ),
    # The paper's block (k = 1), residual, no BN.
    _E(
        "m2_z",
        "(1+α)^l, eq. (7)",
        "paper",
        "exact",
        _when(True, ("none",), ("identity",)),
        lambda a: forward_second_moment(a.l, a.n, a.v),
    ),
    _E(
        "m2_dz",
        "(1+α)^(L-l), eq. (25)",
        "paper",
        "exact",
        _when(True, ("none",), ("identity",)),
        lambda a: backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
    _E(
        "var_dw",
        "(1+α/2)^(L-1), eq. (27)",
        "paper",
        "approximation",
        _when(True, ("none",), ("identity",)),
        lambda a: _pad(
            jnp.broadcast_to(identity_gradient_variance_paper(a.L, a.n, a.v), a.lp.shape)
        ),
    ),
    _E(
        "var_dw",
        "(1+α)^(L-1)",
        "corrected",
        "exact",
        _when(True, ("none",), ("identity",)),
        lambda a: _pad(identity_gradient_variance(a.lp, a.L, a.n, a.v)),
    ),
    _E(
        "var_z",
        "(1+α/4)^l bound, eq. (14)",
        "paper",
        "lower_bound",
        _when(True, ("none",), ("relu",)),
        lambda a: relu_variance_lower_bound_paper(a.l, a.n, a.v),
    ),
    _E(
        "var_z",
        "(1+α(π-1)/2π)^l bound",
        "corrected",
        "lower_bound",
        _when(True, ("none",), ("relu",)),
        lambda a: relu_variance_lower_bound(a.l, a.n, a.v),
    ),
    _E(
        "m2_z",
        "(1+α/2)^l bound",
        "corrected",
        "lower_bound",
        _when(True, ("none",), ("relu",)),
        lambda a: relu_second_moment_lower_bound(a.l, a.n, a.v),
    ),
    _E(
        "m2_dz",
        "(1+α/2)^(L-l), eq. (20)",
        "paper",
        "exact",
        _when(True, ("none",), ("relu",)),
        lambda a: backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
    _E(
        "var_dw",
        "¼(1+α/4)^(L-1) bound, eq. (22)",
        "paper",
        "lower_bound",
        _when(True, ("none",), ("relu",)),
        lambda a: _pad(
            jnp.broadcast_to(relu_gradient_variance_lower_bound_paper(a.L, a.n, a.v), a.lp.shape)
        ),
    ),
    _E(
        "var_dw",
        "½(1+α/2)^(L-1) bound",
        "corrected",
        "lower_bound",
        _when(True, ("none",), ("relu",)),
        lambda a: _pad(
            jnp.broadcast_to(relu_gradient_variance_lower_bound(a.L, a.n, a.v), a.lp.shape)
        ),
    ),
    # The paper's block, residual, with BN (eq. 29-54).
    _E(
        "m2_z",
        "1+lα(b_f+l e_1²) (post) / 1+lα e_2 (pre)",
        "corrected",
        "exact",
        _when(True, _BN, _ALL),
        lambda a: bn_second_moment(a.l, a.n, a.v, a.act, a.norm),
    ),
    _E(
        "var_z",
        "a lα + Var x, eq. (31)/(47)",
        "paper",
        "exact",
        lambda b: _when(True, _BN, _ALL)(b) and (b.activation == "identity" or b.norm == "bn_pre"),
        lambda a: bn_variance_paper(a.l, a.n, a.v, a.act),
    ),
    _E(
        "unitvar_z",
        "σ² ≈ a lα, eq. (40)/(51)",
        "paper",
        "approximation",
        _when(True, _BN, _ALL),
        lambda a: bn_sigma2_paper(a.l, a.n, a.v, a.act),
    ),
    _E(
        "unitvar_z",
        "σ² = 1 + lα b_f",
        "corrected",
        "exact",
        _when(True, _BN, _ALL),
        lambda a: bn_unit_variance(a.l, a.n, a.v, a.act),
    ),
    _E(
        "m2_dz",
        "L/l, eq. (41)/(52)",
        "paper",
        "approximation",
        _when(True, _BN, _ALL),
        lambda a: _pad(bn_gradient_growth_paper(a.lp, a.L)),
    ),
    _E(
        "m2_dz",
        "Γ-ratio",
        "corrected",
        "exact",
        _when(True, _BN, _ALL),
        lambda a: bn_backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
    _E(
        "var_dw",
        "a L/l, eq. (42)/(54)",
        "paper",
        "approximation",
        _when(True, _BN, _ALL),
        lambda a: _pad(bn_gradient_variance_paper(a.lp, a.L, a.act)),
    ),
    _E(
        "var_dw",
        "a p_l (post) / b_f p_l + e_1² (pre)",
        "corrected",
        "exact",
        _when(True, _BN, _ALL),
        lambda a: _pad(bn_gradient_variance(a.lp, a.L, a.n, a.v, a.act, a.norm)),
    ),
    # Plain networks (the paper's contrast), without and with BN.
    _E(
        "m2_z",
        "(e_2 α)^l",
        "corrected",
        "exact",
        _when(False, ("none",), _ALL),
        lambda a: _plain_forward(a.act)(a.l, a.n, a.v),
    ),
    _E(
        "m2_dz",
        "(a α)^(L-l)",
        "corrected",
        "exact",
        _when(False, ("none",), _ALL),
        lambda a: plain_backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
    _E(
        "var_dw",
        "a (aα)^(L-l) (e_2 α)^(l-1)",
        "corrected",
        "exact",
        _when(False, ("none",), _ALL),
        lambda a: _pad(
            a.fm.a
            * plain_backward_second_moment(a.lp, a.L, a.n, a.v, a.act)
            * _plain_forward(a.act)(a.lp - 1, a.n, a.v)
        ),
    ),
    _E(
        "m2_dz",
        "κ^(L-l)",
        "corrected",
        "exact",
        _when(False, _BN, _ALL),
        lambda a: plain_bn_backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
)


def _plain_forward(act: str):
    return plain_forward_second_moment if act == "identity" else plain_relu_forward_second_moment


def closed_forms(
    block: arch.Block,
    *,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike,
    max_depth: int | None = None,
) -> list[ClosedForm]:
    """Every closed form of :data:`CATALOG` that applies to ``block``, evaluated at l = 0..L.

    "exact" forms must equal :func:`meanfield.recursions.profile` to floating-point
    tolerance, "lower_bound" forms must lie below it, and "approximation" forms (the paper's
    where it is approximate or wrong) may disagree; the tests check all three.

    As in :func:`~meanfield.recursions.profile`, ``depth`` may be traced (under ``jax.vmap``)
    when ``max_depth`` fixes the length; entries past ``depth`` are NaN, and so is every entry
    when a traced ``depth`` exceeds ``max_depth`` (a concrete one raises ValueError).
    ``width`` and ``var_w`` are scalars here. ``block`` must be a :class:`meanfield.Block`.
    """
    _check_block(block)
    if max_depth is None:
        if isinstance(depth, jax.core.Tracer):
            raise ValueError("max_depth must be given when depth is traced (e.g. under jax.vmap)")
        max_depth = arch.static_int("depth", depth)
    else:
        max_depth = arch.static_int("max_depth", max_depth)
        arch.check_depth(depth)
        if not isinstance(depth, jax.core.Tracer) and np.any(np.asarray(depth) > max_depth):
            raise ValueError(f"depth must be <= max_depth={max_depth}, got {depth!r}")
    layers = jnp.arange(max_depth + 1)
    # A traced depth past max_depth cannot be refused: its curves are all NaN, not cut short.
    active = (layers <= depth) & (depth <= max_depth)
    l = jnp.minimum(layers, depth)  # keeps every formula's layer <= depth; masked below
    at = _At(
        l=l,
        lp=jnp.maximum(l[1:], 1),  # layers with a weight
        L=depth,
        n=width,
        v=var_w,
        act=block.activation,
        norm=block.norm,
        k=block.shortcut,
        last=block.activations()[-1],
        fm=activation_moments(block.activation),
    )
    nan = jnp.asarray(jnp.nan, jnp.result_type(float, var_w))
    out = []
    for entry in CATALOG:
        if not entry.applies(block):
            continue
        label = entry.label.format(k=at.k, km1=at.k - 1)
        values = jnp.where(active, jnp.broadcast_to(entry.evaluate(at), active.shape), nan)
        out.append(ClosedForm(entry.statistic, label, entry.source, entry.kind, values))
    return out
