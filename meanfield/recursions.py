"""Exact infinite-width mean-field recursions for the toy ResNets, iterated layer by layer.

For every :class:`~meanfield.architecture.Block` (activation x norm x residual), the limit
n -> ∞ at fixed depth L and α = n·var_w of the per-layer statistics that
:mod:`meanfield.montecarlo` estimates at finite width (same names):

==================  ==========================================================================
``mean_z``          m_l = E z^l
``m2_z``            q_l = E (z^l)^2
``var_z``           q_l - m_l^2, pooled over units, inputs and networks
``unitvar_z``       mean over units of the variance over inputs of z_j^l (what BN divides by)
``m2_dz``           p_l = E (dE/dz^l)^2 for the loss E = Σ_b g_b·z^L_b, g i.i.d. N(0, 1)
``var_dw``          E (dE/dW^l_{ji})^2 / B, the batch gradient per input (NaN at l = 0)
==================  ==========================================================================

plus ``log10_`` versions that stay finite where the raw values overflow.

The state carried from block to block is (m, q, u) with u = unitvar. Each block adds a branch h
whose mean e, second moment s and kernel gap s - k (k = E h(x)h(x') for distinct inputs) are
Gaussian expectations given the kernel of the branch input (docs/theory.md, section 2):

* none:    input z^{l-1}, kernel α(q, q - u) into f;
* bn_post: input BN(z^{l-1}), kernel α(1, 0) into f;
* bn_pre:  input f(BN(z^{l-1})), kernel α(e_2, e_1^2) through the identity;

and the residual update is m += e, q += s + 2 e m, u += s - k (branch and skip are
independent in the limit). Backward, p_{l-1} = p_l (1 + g_l) (residual) or p_l g_l (plain)
with g_l = α E f'^2, divided by u_{l-1} under BN (population statistics: the batch-mean terms of
BN's backward are O(1/B)).

Numerics: identity and ReLU blocks are positively homogeneous, so the state is carried as
(m/√q, log(u/q), log q) and log p is accumulated, both sums with Kahan compensation; depth
10,000 at He init gives finite ``log10_`` values, and the raw values are ``inf`` exactly where
they exceed the float range, flagged in ``Profile.overflow``. log(u/q) is updated without
cancellation (ReLU without BN drives u/q to 1e-8 by L = 50 and below the float range by
L = 10,000).

Example:
    >>> import meanfield
    >>> block = meanfield.Block(activation="identity", norm="none", residual=True)
    >>> prof = meanfield.recursions.profile(block, depth=3, width=100, var_w=0.01)
    >>> [round(float(q), 6) for q in prof.m2_z]
    [1.0, 2.0, 4.0, 8.0]
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from meanfield import architecture as arch
from meanfield.architecture import Block
from meanfield.gaussian import activation_moments, relu_kernel_gap_ratio

__all__ = ["Profile", "profile", "STATISTICS"]

STATISTICS = ("mean_z", "m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw")
_LN10 = math.log(10.0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Profile:
    """Per-layer statistics, each an array of shape (..., L + 1); index l is layer l (0 = input).

    Leading axes, if any, are the broadcast shape of ``width``, ``var_w`` and ``depth``. Entries
    past ``depth`` (when ``max_depth > depth``) and ``var_dw[..., 0]`` are NaN.
    """

    mean_z: jax.Array
    m2_z: jax.Array
    var_z: jax.Array
    unitvar_z: jax.Array
    m2_dz: jax.Array
    var_dw: jax.Array
    log10_m2_z: jax.Array
    log10_var_z: jax.Array
    log10_unitvar_z: jax.Array
    log10_m2_dz: jax.Array
    log10_var_dw: jax.Array
    overflow: jax.Array  # True where a raw statistic is not representable (its log10_ is finite)

    def as_dict(self) -> dict[str, jax.Array]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _branch_stats(activation: str, alpha: jax.Array, log_delta: jax.Array):
    """Branch h = f(u), u centred with kernel α(1, 1 - δ): (E h, E h^2, log(E h^2 - E h h'))."""
    if activation == "identity":
        return jnp.zeros_like(alpha), alpha, jnp.log(alpha) + log_delta
    ratio = relu_kernel_gap_ratio(alpha, jnp.exp(log_delta))  # gap / δ, finite as δ -> 0
    return jnp.sqrt(alpha / (2.0 * jnp.pi)), alpha / 2.0, jnp.log(ratio) + log_delta


def _forward_step(block: Block, alpha: jax.Array, state):
    """One block of the mean-field map on the state (t = m/√q, log(u/q), log q).

    Returns the new t and log(u/q) and the increment of log q (not the new log q: the caller
    sums increments with compensation).
    """
    t, log_r, logq = state
    fm = activation_moments(block.activation)
    # The branch input's second moment relative to q (log ra) and the log of its kernel gap
    # ratio δ = 1 - (cross moment)/(second moment).
    if block.norm == "none":
        log_ra, log_delta, branch_act = jnp.zeros_like(logq), log_r, block.activation
    elif block.norm == "bn_post":
        log_ra, log_delta, branch_act = -logq, jnp.zeros_like(log_r), block.activation
    else:  # bn_pre: W applied to f(BN(z)), whose kernel is (e2, e1^2)
        log_ra = math.log(fm.e2) - logq
        log_delta, branch_act = jnp.full_like(log_r, math.log(fm.b / fm.e2)), "identity"
    e, s, log_gap = _branch_stats(branch_act, alpha, log_delta)
    if not block.residual:
        return e / jnp.sqrt(s), log_gap - jnp.log(s), log_ra + jnp.log(s)
    sqrt_ra = jnp.exp(0.5 * log_ra)
    growth_m1 = jnp.exp(log_ra) * s + 2.0 * sqrt_ra * e * t  # q_l / q_{l-1} - 1 >= 0
    log_growth = jnp.log1p(growth_m1)
    t_new = (t + sqrt_ra * e) * jnp.exp(-0.5 * log_growth)
    return t_new, jnp.logaddexp(log_r, log_ra + log_gap) - log_growth, log_growth


def _kahan_add(total: jax.Array, comp: jax.Array, term: jax.Array):
    """Compensated (Kahan) summation step: returns the new total and compensation."""
    y = term - comp
    new = total + y
    return new, (new - total) - y


@functools.partial(jax.jit, static_argnames=("block", "max_depth"))
def _profile(
    block: Block, max_depth: int, alpha: jax.Array, depth: jax.Array, start: tuple
) -> Profile:
    dtype = alpha.dtype
    shape = jnp.broadcast_shapes(alpha.shape, depth.shape, *(jnp.shape(v) for v in start))
    alpha = jnp.broadcast_to(alpha, shape)
    fm = activation_moments(block.activation)

    def body(carry, _):
        state, comp = carry
        t, log_r, dlogq = _forward_step(block, alpha, state)
        # log q is a running sum of L terms: compensate it, or float32 loses ~L·eps·|log q|
        # (a factor e^6 in q at depth 10,000, He init).
        logq, comp = _kahan_add(state[2], comp, dlogq)
        return ((t, log_r, logq), comp), (t, log_r, logq)

    zero = jnp.zeros(shape, dtype)
    init = tuple(jnp.broadcast_to(jnp.asarray(v, dtype), shape) for v in start)
    _, states = jax.lax.scan(body, (init, zero), length=max_depth)
    # Layer axis first here: index l = 0..max_depth.
    t, log_r, logq = (
        jnp.concatenate([i[None], s], axis=0) for i, s in zip(init, states, strict=True)
    )

    layer = jnp.arange(max_depth + 1).reshape((max_depth + 1,) + (1,) * len(shape))
    depth = jnp.broadcast_to(depth, shape)[None]
    active = layer <= depth

    # Backward gain of block l (l = 1..max_depth) from the state of z^{l-1}.
    log_gain = jnp.broadcast_to(jnp.log(alpha * fm.a)[None], logq[:-1].shape)
    if block.norm != "none":
        log_gain = log_gain - logq[:-1] - log_r[:-1]  # divided by unitvar_{l-1}
    log_step = jnp.log1p(jnp.exp(log_gain)) if block.residual else log_gain
    log_step = jnp.where(active[1:], log_step, 0.0)

    # log p_l = sum_{k = l+1}^{L} log_step_k (p_L = 1), summed from the top with compensation.
    def back(carry, step):
        total, comp = _kahan_add(*carry, step)
        return (total, comp), total

    _, tail = jax.lax.scan(back, (zero, zero), log_step, reverse=True)
    logp = jnp.concatenate([tail, zero[None]], axis=0)

    # Batch weight gradient of block l.
    if block.norm == "none":
        log_g = math.log(fm.a) + logp[1:] + logq[:-1]
    elif block.norm == "bn_post":
        log_g = math.log(fm.a) + logp[1:]
    else:
        # b p_l + S_l e1^2 with S_l = (1/B) Σ_{b,b'} E dz_b dz_b' = 1 in a residual network (BN's
        # backward has zero batch sum, so Σ_b dz_b^l = Σ_b g_b) and [l = L] in a plain one.
        s_l = jnp.ones_like(logp[1:]) if block.residual else (layer[1:] == depth).astype(dtype)
        log_g = math.log(fm.b) + logp[1:]
        if fm.e1 > 0:
            log_g = jnp.logaddexp(log_g, jnp.log(s_l * fm.e1**2))
    log_g = jnp.concatenate([jnp.full_like(log_g[:1], jnp.nan), log_g], axis=0)

    logs = {
        "m2_z": logq,
        "var_z": logq + jnp.log1p(-(t**2)),
        "unitvar_z": logq + log_r,
        "m2_dz": logp,
        "var_dw": log_g,
    }
    out = {name: jnp.exp(v) for name, v in logs.items()}
    # No gradient at l = 0; set it explicitly (XLA's vectorized float32 exp maps NaN to finite
    # garbage on CPU).
    out["var_dw"] = out["var_dw"].at[0].set(jnp.nan)
    out["mean_z"] = t * jnp.exp(0.5 * logq)
    out.update({f"log10_{name}": v / _LN10 for name, v in logs.items()})
    overflow = jnp.zeros(logq.shape, bool)
    for name in ("mean_z", *logs):
        overflow |= jnp.isinf(out[name])
    out["overflow"] = overflow
    nan = jnp.asarray(jnp.nan, dtype)
    out = {
        k: (jnp.where(active, v, nan) if k != "overflow" else v & active) for k, v in out.items()
    }
    # Layer axis last, so that leading axes match the inputs (and jax.vmap's convention).
    return Profile(**{k: jnp.moveaxis(v, 0, -1) for k, v in out.items()})


def profile(
    block: Block,
    *,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike,
    max_depth: int | None = None,
    input_m2: ArrayLike = 1.0,
    input_mean: ArrayLike = 0.0,
    input_unitvar: ArrayLike | None = None,
) -> Profile:
    """Mean-field statistics of every layer l = 0..L of a network of ``depth`` blocks.

    Args:
        block: the architecture.
        depth: L, the number of blocks. A Python int, or an integer array / traced value
            (under ``jax.vmap``) together with ``max_depth``.
        width: n, the fan-in of every branch weight (enters only through α = n·var_w).
        var_w: variance of one weight entry. Scalars or arrays; ``width``, ``var_w`` and
            ``depth`` broadcast against each other.
        max_depth: length - 1 of the returned arrays; defaults to ``depth`` (which must then be
            concrete). Layers past ``depth`` are NaN.
        input_m2, input_mean, input_unitvar: the statistics of z^0 (``m2_z``, ``mean_z`` and
            ``unitvar_z`` at l = 0). The default is x ~ N(0, I): 1, 0 and 1 (``input_unitvar``
            defaults to ``input_m2 - input_mean**2``, i.e. inputs whose cross moments are the
            squared mean). Real data start elsewhere: the trainer's prediction check passes
            the measured statistics of the stem output. Requires input_m2 > 0,
            input_mean² < input_m2 and 0 < input_unitvar <= input_m2 - input_mean².

    Returns:
        :class:`Profile`; each array has shape
        ``broadcast(width, var_w, depth).shape + (max_depth + 1,)``.

    The profile is computed under ``jax.jit`` (block and max_depth static) and can be vmapped
    over ``width``, ``var_w`` and ``depth``::

        depths = jnp.array([10, 100, 1000])
        profs = jax.vmap(lambda L: profile(block, depth=L, width=n, var_w=1 / (n * L),
                                           max_depth=1000))(depths)
    """
    if not isinstance(block, Block):
        raise ValueError(f"block must be a meanfield.Block, got {block!r}")
    arch.check_width(width)
    arch.check_var_w(var_w)
    if max_depth is None:
        if isinstance(depth, jax.core.Tracer):
            raise ValueError("max_depth must be given when depth is traced (e.g. under jax.vmap)")
        max_depth = arch.static_int("depth", depth)
    else:
        max_depth = arch.static_int("max_depth", max_depth)
        arch.check_depth(depth)
        if not isinstance(depth, jax.core.Tracer) and jnp.any(jnp.asarray(depth) > max_depth):
            raise ValueError(f"depth must be <= max_depth={max_depth}, got {depth!r}")
    arch.check_depth(depth)
    alpha = jnp.asarray(width) * jnp.asarray(var_w)
    alpha = alpha.astype(jnp.result_type(float, alpha))
    start = _start_state(input_m2, input_mean, input_unitvar)
    return _profile(block, max_depth, alpha, jnp.asarray(depth, dtype=jnp.int32), start)


def _start_state(m2: ArrayLike, mean: ArrayLike, unitvar: ArrayLike | None) -> tuple:
    """(t, log(u/q), log q) of z^0 from its second moment, mean and unit variance."""
    arch.check_positive("input_m2", m2)
    if unitvar is not None:
        arch.check_positive("input_unitvar", unitvar)
    values = (m2, mean, unitvar)
    if not any(isinstance(v, jax.core.Tracer) for v in values):
        # Checked in NumPy: under an outer jit, jnp on constants would give tracers.
        m2_np, mean_np = np.asarray(m2, dtype=float), np.asarray(mean, dtype=float)
        if not np.all(np.isfinite(mean_np)):
            raise ValueError(f"input_mean must be finite, got {mean!r}")
        spread = m2_np - mean_np**2  # the largest unit variance possible: E z^2 - (E z)^2
        if np.any(spread <= 0):
            raise ValueError(
                f"input_mean**2 must be < input_m2, got input_mean={mean_np.tolist()}, "
                f"input_m2={m2_np.tolist()}"
            )
        if unitvar is not None and np.any(np.asarray(unitvar) > spread * (1 + 1e-6)):
            raise ValueError(
                f"input_unitvar must be <= input_m2 - input_mean**2 = {spread.tolist()}, "
                f"got {np.asarray(unitvar).tolist()}"
            )
    m2, mean = jnp.asarray(m2), jnp.asarray(mean)
    unitvar = m2 - mean**2 if unitvar is None else jnp.asarray(unitvar)
    return mean / jnp.sqrt(m2), jnp.log(unitvar / m2), jnp.log(m2)
