"""Finite width: the spread over networks of E[(z^l)^2] with one input per network, exact for
the blocks whose layers multiply the squared norm by an independent factor."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.typing import ArrayLike

from meanfield.core import architecture as arch
from meanfield.theory.common import Array, alpha_of, check_block, check_layers, domain

# With B = 1 and no normalization, three blocks multiply the squared norm by a factor that is
# independent of everything before it, because W z ~ N(0, var_w |z|^2 I) whatever z's
# direction: m2_z^l = Y X_1 ... X_l, with Y = |x|^2/n ~ χ²_n/n the input's and
#   identity residual  X = |u + W u|^2 = (α/n) χ'²(n, λ = n/α)  (noncentral, u a unit vector),
#   identity plain     X = (α/n) χ²_n,
#   ReLU plain         X = (α/n) χ²_K, K ~ Binomial(n, 1/2) active units.
# ReLU residual blocks have no such factorization: u + relu(W u) depends on u's direction
# through its mean, so the factors are correlated (docs/finite-width.md).

SPREAD_BLOCKS = ("identity-none-residual", "identity-none-plain", "relu-none-plain")


def spread_block(block: arch.Block) -> str:
    """The name of ``block``, if it is one of :data:`SPREAD_BLOCKS`; ValueError otherwise."""
    if check_block(block).name not in SPREAD_BLOCKS:
        raise ValueError(
            f"block must be one of {SPREAD_BLOCKS} (blocks whose layers multiply |z|^2 by an "
            f"independent factor), got {getattr(block, 'name', block)!r}"
        )
    return block.name


def factor_moments(name: str, n: Array, alpha: Array) -> tuple[Array, Array]:
    """(E X, E X²) of one layer's factor X = |z^l|² / |z^{l-1}|²."""
    if name == "identity-none-residual":
        return 1.0 + alpha, (1.0 + alpha) ** 2 + 2.0 * alpha * (alpha + 2.0) / n
    if name == "identity-none-plain":
        return alpha, alpha**2 * (1.0 + 2.0 / n)
    return alpha / 2.0, alpha**2 * (0.25 + 1.25 / n)


@domain()
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
    name = spread_block(block)
    layer, _ = check_layers(layer)
    alpha = alpha_of(width, var_w)
    n = jnp.asarray(width, dtype=jnp.result_type(float, alpha))
    mean_x, m2_x = factor_moments(name, n, alpha)
    log_mean2 = 2.0 * layer * jnp.log(mean_x)
    rel = jnp.expm1(jnp.log1p(2.0 / n) + layer * jnp.log(m2_x / mean_x**2))
    return jnp.exp(0.5 * (log_mean2 + jnp.log(rel)))


class LogSpread(NamedTuple):
    """Mean and standard deviation over networks of ln m2_z^l, arrays over l = 0..L."""

    mean: np.ndarray
    sd: np.ndarray


def log_chi2_moments(dof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E ln χ²_k, E (ln χ²_k)²) for k = ``dof`` degrees of freedom (k > 0)."""
    half = 0.5 * dof
    mean = math.log(2.0) + scipy.special.digamma(half)
    return mean, scipy.special.polygamma(1, half) + mean**2


def mixture_log_moments(dof: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Mean and variance of ln χ²_K for K = ``dof`` with probabilities ``weights``."""
    m1, m2 = log_chi2_moments(dof)
    weights = weights / weights.sum()
    mean = float(np.sum(weights * m1))
    return mean, float(max(np.sum(weights * m2) - mean**2, 0.0))


def log_factor_moments(name: str, n: int, alpha: float) -> tuple[float, float]:
    """Mean and variance of ln X for one layer's factor."""
    scale = math.log(alpha / n)
    if name == "identity-none-plain":
        m1, m2 = log_chi2_moments(np.asarray(float(n)))
        return scale + float(m1), float(m2 - m1**2)
    if name == "identity-none-residual":
        # χ'²(n, λ) is χ²_{n+2J} with J ~ Poisson(λ/2); sum J over ±12 sd around its mean.
        mu = 0.5 * n / alpha
        half = 12.0 * math.sqrt(mu) + 30.0
        j = np.arange(max(0, math.floor(mu - half)), math.ceil(mu + half) + 1, dtype=np.float64)
        log_p = j * math.log(mu) - mu - scipy.special.gammaln(j + 1.0)
        mean, var = mixture_log_moments(n + 2.0 * j, np.exp(log_p - log_p.max()))
        return scale + mean, var
    # ReLU plain: K ~ Binomial(n, 1/2) active units, conditioned on K >= 1 (a network with
    # every unit off, probability 2^-n per layer, has m2_z = 0 and no logarithm).
    k = np.arange(1, n + 1, dtype=np.float64)
    log_p = scipy.special.gammaln(n + 1.0) - scipy.special.gammaln(k + 1.0)
    log_p = log_p - scipy.special.gammaln(n - k + 1.0)
    mean, var = mixture_log_moments(k, np.exp(log_p - log_p.max()))
    return scale + mean, var


@domain()
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
    name = spread_block(block)
    depth = arch.static_int("depth", depth)
    width = arch.static_int("width", width)
    arch.check_var_w(var_w)
    arch.check_scalar("var_w", var_w, "theory.finite_width_m2_sd takes arrays")
    m_in, v_in = log_factor_moments("identity-none-plain", width, 1.0)  # Y = χ²_n / n
    m_x, v_x = log_factor_moments(name, width, float(width) * float(var_w))
    layers = np.arange(depth + 1, dtype=np.float64)
    return LogSpread(mean=m_in + layers * m_x, sd=np.sqrt(v_in + layers * v_x))
