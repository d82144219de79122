"""Batch-normalized ResNets and plain networks, eq. (29)-(54): the paper's forms, the exact
population mean-field ones (Γ-ratio products) and the finite-batch identity BN gradient."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
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
    norm_placement,
)


@domain()
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
    layer, _ = check_layers(layer)
    return a * layer * alpha_of(width, var_w) + input_moment("var_x", var_x)


@domain()
def bn_sigma2_paper(layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str) -> Array:
    """The paper's approximation σ_l² ≈ a l n Var[w], eq. (40) (identity) and (47)/(51).

    .. warning:: Drops Var[x] (the paper's footnote 9), exact only when lα >> 1, and for ReLU
       uses the pooled instead of the per-unit variance. Correct: :func:`bn_unit_variance`.
    """
    a = activation_moments(activation).e2
    layer, _ = check_layers(layer)
    return a * layer * alpha_of(width, var_w)


@domain()
def bn_unit_variance(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str
) -> Array:
    """Per-unit variance σ_l² of z^l in a BN ResNet, both placements (population mean-field).

    .. math:: \\sigma_l^2 = 1 + l\\,n\\mathrm{Var}[w]\\,b_f,\\quad b_f = \\mathrm{Var} f(s)

    b_f = 1 (identity; eq. 31, exact) or (π-1)/(2π) ≈ 0.3408 (ReLU; corrects eq. 40 and 47).
    """
    b = activation_moments(activation).b
    layer, _ = check_layers(layer)
    return 1.0 + layer * alpha_of(width, var_w) * b


@domain()
def bn_mean(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str, norm: str
) -> Array:
    """E[z^l] of a BN ResNet (population mean-field).

    ReLU with BN on the branch input (Fig. 1b): every unit drifts by E relu(u) = sqrt(α/2π) per
    block, m_l = l sqrt(α/2π). Zero for identity and for BN before the activation (Fig. 4,
    eq. 44).
    """
    e1 = activation_moments(activation).e1
    layer, _ = check_layers(layer)
    drift = e1 * jnp.sqrt(alpha_of(width, var_w)) if norm_placement(norm) == "bn_post" else 0.0
    return layer * drift


@domain()
def bn_second_moment(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, activation: str, norm: str
) -> Array:
    """E[(z^l)^2] of a BN ResNet (population mean-field).

    bn_post: 1 + lα b_f + (l e_1)^2 α, i.e. per-unit variance plus the squared common drift;
    bn_pre:  1 + lα E f(s)^2 (eq. 47 read as a second moment; the per-unit means W_j·E f(ẑ) are
    spread with variance α e_1^2 per block).
    """
    m = activation_moments(activation)
    alpha = alpha_of(width, var_w)
    if norm_placement(norm) == "bn_post":
        return (
            bn_unit_variance(layer, width, var_w, activation)
            + bn_mean(layer, width, var_w, activation, norm) ** 2
        )
    layer, _ = check_layers(layer)
    return 1.0 + layer * alpha * m.e2


@domain()
def bn_gradient_growth_paper(layer: ArrayLike, depth: ArrayLike) -> Array:
    """The paper's law Var[δ_z^l] / Var[δ_z^L] = L / l for BN ResNets, eq. (41)-(42), (51)-(52).

    .. warning:: Identity: the lα >> 1 limit of :func:`bn_backward_second_moment`
       ((1 + Lα)/(1 + lα)). ReLU: wrong; the exponent is π/(π-1) ≈ 1.467
       (:func:`bn_relu_gradient_growth_asymptotic`).
    """
    layer, depth = check_weight_layers(layer, depth)
    return depth / layer


@domain()
def bn_gradient_variance_paper(layer: ArrayLike, depth: ArrayLike, activation: str) -> Array:
    """The paper's Var[dE/dw^l] ≈ a L/l for BN ResNets, eq. (42) (a = 1) and (54).

    .. warning:: See :func:`bn_gradient_variance` for the exact population mean-field value.
    """
    return activation_moments(activation).a * bn_gradient_growth_paper(layer, depth)


def log_gamma_ratio(x: Array, k: Array) -> Array:
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


def gamma_product(layer: Array, depth: Array, offset: Array, kappa: Array) -> Array:
    """prod_{k=l}^{L-1} (k + A + κ)/(k + A) = Γ(L+A+κ)Γ(l+A) / (Γ(L+A)Γ(l+A+κ))."""
    layer, depth, offset, kappa = jnp.broadcast_arrays(
        *(
            jnp.asarray(v, dtype=jnp.result_type(float, offset))
            for v in (layer, depth, offset, kappa)
        )
    )
    return jnp.exp(log_gamma_ratio(depth + offset, kappa) - log_gamma_ratio(layer + offset, kappa))


@domain()
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
    layer, depth = check_layers(layer, depth)
    alpha = alpha_of(width, var_w)
    return gamma_product(layer, depth, 1.0 / (alpha * m.b), m.a / m.b)


@domain()
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
    check_weight_layers(layer, depth)
    p = bn_backward_second_moment(layer, depth, width, var_w, activation)
    if norm_placement(norm) == "bn_post":
        return m.a * p
    return m.b * p + m.e1**2


@domain()
def bn_relu_gradient_growth_asymptotic(layer: ArrayLike, depth: ArrayLike) -> Array:
    """(L/l)^{π/(π-1)}: the l >> 1/α limit of the ReLU BN gradient growth (corrects eq. 52).

    The exponent κ = E f'^2 / Var f(s) = (1/2) / ((π-1)/(2π)) = π/(π-1) ≈ 1.4669.
    """
    m = activation_moments("relu")
    return bn_gradient_growth_paper(layer, depth) ** (m.a / m.b)


@domain()
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
    layer, depth = check_layers(layer, depth)
    alpha = alpha_of(width, var_w)
    kappa = m.a / m.b
    return jnp.where(layer >= 1, kappa ** (depth - layer), m.a * alpha * kappa ** (depth - 1))


@domain()
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
    layer, depth = check_layers(layer, depth)
    arch.check_all(
        "batch", batch, lambda a: a > 3, "a number > 3", integer=False, required=True
    )
    if not isinstance(residual, (bool, np.bool_)):
        raise ValueError(f"residual must be True or False, got {residual!r}")
    alpha = alpha_of(width, var_w)
    batch = jnp.asarray(batch, dtype=jnp.result_type(float, alpha))
    if not residual:
        step = jnp.log((batch - 2.0) / (batch - 3.0))
        first = jnp.log(alpha * batch * (batch - 2.0) / ((batch - 1.0) * (batch - 3.0)))
        top = jnp.maximum(layer, 1)
        return jnp.exp((depth - top) * step + jnp.where(layer == 0, first, 0.0))
    return gamma_product(
        layer, depth, (batch - 1.0) / (alpha * batch), (batch - 2.0) / (batch - 3.0)
    )
