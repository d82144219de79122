"""Forward second moments and variances without normalization: the identity ResNet (eq. 7-8),
the plain networks, the ReLU ResNet's bounds (eq. 13-14, corrected) and its exact growth rate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from meanfield.core import architecture as arch
from meanfield.theory.common import (
    Array,
    activation_moments,
    alpha_of,
    check_layers,
    domain,
    input_moment,
)


@domain()
def forward_second_moment(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, m2_x: ArrayLike = 1.0
) -> Array:
    """E[(z^l)^2] of the identity ResNet z^l = z^{l-1} + W^l z^{l-1}, eq. (7)-(8).

    .. math:: E[(z^l)^2] = (1 + n\\mathrm{Var}[w])^l\\, E[x^2]

    Exact at any width (E||(I + W) z||^2 = (1 + α)||z||^2 for every z); with E x = 0 it is
    also Var[z^l] (eq. 8).
    """
    layer, _ = check_layers(layer)
    return input_moment("m2_x", m2_x) * (1.0 + alpha_of(width, var_w)) ** layer


@domain()
def plain_forward_second_moment(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, m2_x: ArrayLike = 1.0
) -> Array:
    """E[(z^l)^2] = (n Var[w])^l E[x^2] of the plain identity network z^l = W^l z^{l-1}.

    The contrast of section 2.1 (Glorot & Bengio 2010); exact at any width.
    """
    layer, _ = check_layers(layer)
    return input_moment("m2_x", m2_x) * alpha_of(width, var_w) ** layer


@domain()
def plain_relu_forward_second_moment(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, m2_x: ArrayLike = 1.0
) -> Array:
    """E[(z^l)^2] = (n Var[w]/2)^l E[x^2] of the plain ReLU network z^l = relu(W^l z^{l-1}).

    He et al. (2015); E||relu(Wz)||^2 = (α/2)||z||^2 in expectation at any width, so He's
    α = 2 preserves the second moment.
    """
    layer, _ = check_layers(layer)
    return input_moment("m2_x", m2_x) * (alpha_of(width, var_w) / 2.0) ** layer


@domain()
def relu_variance_lower_bound_paper(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, var_x: ArrayLike = 1.0
) -> Array:
    """The paper's lower bound on Var[z^l] of the ReLU ResNet, eq. (13)-(14).

    .. math:: \\mathrm{Var}[z^l] \\ge (1 + n\\mathrm{Var}[w]/4)^l\\, \\mathrm{Var}[x]

    .. warning:: A valid but loose bound: it uses Jensen's (E|u|)^2 <= E u^2 where the exact
       value (E|u|)^2 = (2/π) E u^2 is known. See :func:`relu_variance_lower_bound` for the
       tightest bound of this form and :func:`relu_growth_rate` for the actual growth.
    """
    layer, _ = check_layers(layer)
    return input_moment("var_x", var_x) * (1.0 + alpha_of(width, var_w) / 4.0) ** layer


@domain()
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
    layer, _ = check_layers(layer)
    return input_moment("var_x", var_x) * (1.0 + b * alpha_of(width, var_w)) ** layer


@domain()
def relu_second_moment_lower_bound(
    layer: ArrayLike, width: ArrayLike, var_w: ArrayLike, m2_x: ArrayLike = 1.0
) -> Array:
    """E[(z^l)^2] >= (1 + n Var[w]/2)^l E[x^2] for the ReLU ResNet (mean-field).

    From q_l = (1 + α/2) q_{l-1} + 2 m_{l-1} sqrt(α q_{l-1}/2π) and m >= 0. Not in the paper;
    the second moment (what the next layer sees, eq. 4) is the quantity that matters.
    """
    layer, _ = check_layers(layer)
    return input_moment("m2_x", m2_x) * (1.0 + alpha_of(width, var_w) / 2.0) ** layer


@domain()
def relu_growth_rate(width: ArrayLike, var_w: ArrayLike) -> Array:
    """Asymptotic per-layer growth λ = lim q_{l+1}/q_l of E[z^2] in the ReLU ResNet (mean-field).

    With s = sqrt(α/2π) and t = m/sqrt(q) the ratio of mean to root second moment, the fixed
    point t* of the mean-field map solves (α/2)t^2 + 2s t^3 - 2s t - s^2 = 0 in (0, 1), and

    .. math:: \\lambda = 1 + \\alpha/2 + 2 s t^*.

    α = 1: λ = 2.1719 (identity ResNet: 2, the paper's bound: 1.25); α = 2 (He): λ = 2.9041.
    Not in the paper, which gives only the loose bound 1 + α/4 (eq. 14).
    """
    alpha = alpha_of(width, var_w)
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


@domain()
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
