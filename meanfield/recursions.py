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

(with k > 1 weight layers per branch the units are composed one after another, and each may
have its own α and the branch a scale β: docs/theory.md §9), and the residual update is
m += e, q += s + 2 e m, u += s - k (branch and skip are
independent in the limit). Backward, p_{l-1} = p_l (1 + g_l) (residual) or p_l g_l (plain)
with g_l = α E f'^2, divided by u_{l-1} under BN (population statistics: the batch-mean terms of
BN's backward are O(1/B)).

Numerics: identity and ReLU blocks are positively homogeneous, so the state is carried as
(m/√q, log(v/q), log(u/q), log q), v = q - m², and log p is accumulated; every log is a sum of
per-layer increments with Kahan compensation, the forward increments formed from O(1) terms
(never as a difference of the large logs themselves, nor v/q as 1 - (m/√q)², which deep
relu-bn_post makes ~1e-4). Depth 10,000 at He init gives finite ``log10_`` values, and the raw
values are ``inf`` exactly where they exceed the float range, flagged in ``Profile.overflow``.
ReLU without BN drives u/q to 1e-8 by L = 50 and below the float range by L = 10,000 (log(u/q)
~ -3700 at α = 2). In float32 at depth 10,000 and α from 0.01 to 5 every field keeps a relative
error (for a ``log10_`` value, its error times ln 10) below ~10 ulps of its natural log plus
~√L ulps, checked against float64 for every preset block; the ulps of the log grow with |log α|
in plain BN networks, whose backward step log(α/u) is a difference of two logs of that size.

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
from meanfield import inits
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
    past ``depth`` (when ``max_depth > depth``) and ``var_dw[..., 0]`` are NaN; so is every entry
    of a profile whose traced ``depth`` exceeds ``max_depth``.
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
    """Branch h = f(u), u centred with kernel α(1, 1 - δ): (E h, E h^2, log((E h^2 - E h h')/δ),
    log Var h). The gap is returned relative to δ so that callers can add log δ in whatever
    form keeps it accurate; Var h = E h^2 - (E h)^2 is given in closed form (α or α b_f), not
    as that difference."""
    if activation == "identity":
        return jnp.zeros_like(alpha), alpha, jnp.log(alpha), jnp.log(alpha)
    ratio = relu_kernel_gap_ratio(alpha, jnp.exp(log_delta))  # gap / δ, finite as δ -> 0
    log_var = jnp.log(alpha * activation_moments("relu").b)
    return jnp.sqrt(alpha / (2.0 * jnp.pi)), alpha / 2.0, jnp.log(ratio), log_var


def _units(block: Block, alphas: tuple, log_scale: jax.Array, log_r: jax.Array, logq: jax.Array):
    """The k weight layers of one branch, from the state (log(u/q), log q) of its input.

    Returns the branch output's statistics, relative to the input of its last weight layer
    (``log_ra``, its second moment relative to q; ``e``, ``s``, ``log_var``: mean, second
    moment and log variance of β h for a unit-second-moment input; ``log_gap_r``: the log of
    its kernel gap minus log(u/q), which without BN is summed from O(1) terms rather than
    taken as that difference, since float32 would round it to the ulp of |log(u/q)|, ~3700
    at depth 10,000 of ReLU), and per layer i the log second moment of W_i's input relative
    to q (``log_rho_in``, no BN) and the log of the unit variance that the BN before W_i
    divides by (``log_uv_in``, with BN).
    """
    acts = block.activations()
    fm = activation_moments(block.activation)
    log_rho_in, log_uv_in = [], []
    if block.norm == "none":
        # rel = log δ_i - log(u/q): δ_1 = u/q, and each unit multiplies δ by gap/(δ s).
        log_rho, rel = jnp.zeros_like(logq), jnp.zeros_like(log_r)
        for i, act in enumerate(acts):
            log_rho_in.append(log_rho)
            e, s, log_ratio, log_var = _branch_stats(act, alphas[i], log_r + rel)
            rel = rel + log_ratio  # now log gap_i - log(u/q)
            if i + 1 < len(acts):
                log_rho, rel = log_rho + jnp.log(s), rel - jnp.log(s)
        log_ra, log_gap_r = log_rho_in[-1], rel
    elif block.norm == "bn_post":  # every W_i sees a BN output: kernel (1, 0)
        log_uv = logq + log_r
        for i, act in enumerate(acts):
            log_uv_in.append(log_uv)
            e, s, log_gap, log_var = _branch_stats(act, alphas[i], jnp.zeros_like(log_r))
            log_uv = log_gap  # the next BN divides by this unit's variance over inputs
        log_ra = -logq
        log_gap_r = log_gap - log_r
    else:  # bn_pre: W_i applied to f(BN(.)), whose kernel is (e2, e1^2)
        log_uv = logq + log_r
        for i in range(len(acts)):
            log_uv_in.append(log_uv)
            log_uv = jnp.log(alphas[i] * fm.b)
        log_delta = jnp.full_like(log_r, math.log(fm.b / fm.e2))
        e, s, log_ratio, log_var = _branch_stats("identity", alphas[-1], log_delta)
        log_gap = log_ratio + log_delta
        log_ra = math.log(fm.e2) - logq
        log_gap_r = log_gap - log_r
    scale = jnp.exp(log_scale)
    return {
        "log_ra": log_ra,
        "e": scale * e,
        "s": scale**2 * s,
        "log_gap_r": log_gap_r + 2.0 * log_scale,
        "log_var": log_var + 2.0 * log_scale,
        "log_rho_in": log_rho_in,
        "log_uv_in": log_uv_in,
    }


def _forward_step(block: Block, alphas: tuple, log_scale: jax.Array, state):
    """One block of the mean-field map on the state (t = m/√q, log(v/q), log(u/q), log q),
    v = q - m² the pooled variance.

    Returns the new t and the increments of the three logs (the caller sums them with
    compensation). Each increment is computed from O(1) terms: log(v/q) and log(u/q) as
    softplus(log of what the branch adds, relative to the current value) - log(q_l/q_{l-1}),
    so that neither is a difference of large numbers (v/q = 1 - t² is ~1e-4 at depth 10,000
    of relu-bn_post, which 1 - t² in float32 would get 17% wrong).
    """
    t, log_w, log_r, logq = state
    br = _units(block, alphas, log_scale, log_r, logq)
    log_ra, e, s = br["log_ra"], br["e"], br["s"]
    log_s = jnp.log(s)
    if not block.residual:
        d_log_w = br["log_var"] - log_s - log_w
        return e / jnp.sqrt(s), d_log_w, br["log_gap_r"] - log_s, log_ra + log_s
    sqrt_ra = jnp.exp(0.5 * log_ra)
    growth_m1 = jnp.exp(log_ra) * s + 2.0 * sqrt_ra * e * t  # q_l / q_{l-1} - 1 >= 0
    log_growth = jnp.log1p(growth_m1)
    t_new = (t + sqrt_ra * e) * jnp.exp(-0.5 * log_growth)
    # Branch and skip are independent: v and u each grow by the branch's own variance / gap.
    d_log_w = _softplus(log_ra + br["log_var"] - log_w) - log_growth
    d_log_r = _softplus(log_ra + br["log_gap_r"]) - log_growth
    return t_new, d_log_w, d_log_r, log_growth


def _softplus(x: jax.Array) -> jax.Array:
    """log(1 + e^x), 0 at x = -inf."""
    return jnp.logaddexp(0.0, x)


def _logsumexp(terms: list) -> jax.Array:
    """log Σ exp(terms), -inf (not NaN) where every term is -inf."""
    stacked = jnp.stack(jnp.broadcast_arrays(*terms))
    top = jnp.max(stacked, axis=0, keepdims=True)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    return jnp.log(jnp.sum(jnp.exp(stacked - safe), axis=0)) + safe[0]


def _times(log_x: jax.Array, log_factor: jax.Array) -> jax.Array:
    """log(x · factor), and -inf where x = 0: a zero cotangent stays zero through a BN whose
    input is identically zero (0/0 in the factor)."""
    return jnp.where(jnp.isneginf(log_x), -jnp.inf, log_x + log_factor)


def _branch_backward(block: Block, alphas: tuple, log_scale, log_r, logq, logp, s_l):
    """(log of the branch's backward gain G, log of var_dw averaged over the k weights) of
    blocks whose input has state (log(u/q), log q) and whose output cotangent has second
    moment p (log ``logp``) and batch-sum moment ``s_l`` (used by bn_pre only).

    Going down the branch from dE/dh = β dE/dz^l: f' multiplies the second moment by
    a = E f'², W_i^T by α_i, the BN before W_i divides by the unit variance of its input.
    The weight gradient of W_i is P_i times the second moment of W_i's input (P_i the second
    moment of dE/du_i), plus, for bn_pre's mean e1 of f(BN(.)), the batch-sum term S e1² of
    the last weight (BN's backward has zero batch sum, so S = 0 inside the branch).
    """
    acts = block.activations()
    fm = activation_moments(block.activation)
    br = _units(block, alphas, log_scale, log_r, logq)
    log_d = 2.0 * log_scale + jnp.zeros_like(logq)  # dE/dh relative to p
    log_dw = [None] * len(acts)
    for i in reversed(range(len(acts))):
        log_a = math.log(activation_moments(acts[i]).a)
        if acts[i] == "relu" and block.norm != "bn_pre":
            # A zero weight (Fixup's last layer) makes u_i = 0 exactly, where relu'(0) = 0
            # (the convention of JAX and PyTorch): nothing flows back through the branch.
            log_a = jnp.where(alphas[i] > 0, log_a, -jnp.inf)
        if block.norm == "none":
            log_p_i = log_d + log_a
            log_dw[i] = log_p_i + logp + logq + br["log_rho_in"][i]
            log_d = _times(log_p_i, jnp.log(alphas[i]))
        elif block.norm == "bn_post":
            log_p_i = log_d + log_a
            log_dw[i] = log_p_i + logp
            log_d = _times(log_p_i, jnp.log(alphas[i]) - br["log_uv_in"][i])
        else:
            log_p_i = log_d
            log_dw[i] = math.log(fm.b) + log_p_i + logp
            if i == len(acts) - 1 and fm.e1 > 0:
                log_dw[i] = jnp.logaddexp(log_dw[i], 2.0 * log_scale + jnp.log(s_l * fm.e1**2))
            log_d = _times(log_p_i, jnp.log(alphas[i]) + log_a - br["log_uv_in"][i])
    return log_d, _logsumexp(log_dw) - math.log(len(acts))


def _kahan_add(total: jax.Array, comp: jax.Array, term: jax.Array):
    """Compensated (Kahan) summation step: returns the new total and compensation."""
    y = term - comp
    new = total + y
    return new, (new - total) - y


@functools.partial(jax.jit, static_argnames=("block", "max_depth"))
def _profile(
    block: Block,
    max_depth: int,
    alphas: tuple,
    log_scale: jax.Array,
    depth: jax.Array,
    start: tuple,
) -> Profile:
    dtype = alphas[0].dtype
    shape = jnp.broadcast_shapes(
        *(a.shape for a in alphas), log_scale.shape, depth.shape, *(jnp.shape(v) for v in start)
    )
    alphas = tuple(jnp.broadcast_to(a, shape) for a in alphas)
    log_scale = jnp.broadcast_to(log_scale, shape)

    def body(carry, _):
        state, comps = carry
        t, *steps = _forward_step(block, alphas, log_scale, state)
        # log(v/q), log(u/q) and log q are running sums of L increments: compensate them, or
        # float32 loses ~L·eps·|sum| (a factor e^6 in q at depth 10,000, He init; 54% of u in
        # relu-none, whose log(u/q) reaches -3700).
        logs, comps = zip(
            *(_kahan_add(*x) for x in zip(state[1:], comps, steps, strict=True)), strict=True
        )
        new = (t, *logs)
        return (new, comps), new

    zero = jnp.zeros(shape, dtype)
    init = tuple(jnp.broadcast_to(jnp.asarray(v, dtype), shape) for v in start)
    _, states = jax.lax.scan(body, (init, (zero,) * 3), length=max_depth)
    # Layer axis first here: index l = 0..max_depth.
    t, log_w, log_r, logq = (
        jnp.concatenate([i[None], s], axis=0) for i, s in zip(init, states, strict=True)
    )

    layer = jnp.arange(max_depth + 1).reshape((max_depth + 1,) + (1,) * len(shape))
    depth = jnp.broadcast_to(depth, shape)[None]
    active = layer <= depth

    # Backward gain of block l (l = 1..max_depth) from the state of z^{l-1}.
    b_alphas = tuple(jnp.broadcast_to(a, shape)[None] for a in alphas)
    b_scale = jnp.broadcast_to(log_scale, shape)[None]
    nan = jnp.zeros_like(logq[:-1])
    log_gain, _ = _branch_backward(block, b_alphas, b_scale, log_r[:-1], logq[:-1], nan, 1.0)
    log_step = jnp.log1p(jnp.exp(log_gain)) if block.residual else log_gain
    log_step = jnp.where(active[1:], log_step, 0.0)

    # log p_l = sum_{k = l+1}^{L} log_step_k (p_L = 1), summed from the top with compensation.
    def back(carry, step):
        total, comp = _kahan_add(*carry, step)
        return (total, comp), total

    _, tail = jax.lax.scan(back, (zero, zero), log_step, reverse=True)
    logp = jnp.concatenate([tail, zero[None]], axis=0)

    # Batch weight gradient of block l. S_l = (1/B) Σ_{b,b'} E dz_b dz_b' (bn_pre's mean term)
    # is 1 in a residual network (BN's backward has zero batch sum, so Σ_b dz_b^l = Σ_b g_b)
    # and [l = L] in a plain one.
    s_l = jnp.ones_like(logp[1:]) if block.residual else (layer[1:] == depth).astype(dtype)
    _, log_g = _branch_backward(block, b_alphas, b_scale, log_r[:-1], logq[:-1], logp[1:], s_l)
    log_g = jnp.concatenate([jnp.full_like(log_g[:1], jnp.nan), log_g], axis=0)

    logs = {
        "m2_z": logq,
        "var_z": logq + log_w,
        "unitvar_z": logq + log_r,
        "m2_dz": logp,
        "var_dw": log_g,
    }
    out = {name: jnp.exp(v) for name, v in logs.items()}
    # No gradient at l = 0; set it explicitly (XLA's vectorized float32 exp maps NaN to finite
    # garbage on CPU).
    out["var_dw"] = out["var_dw"].at[0].set(jnp.nan)
    # m = t √q as one exp, so that m is finite wherever it fits (√q alone may not) and exactly
    # 0, not 0·inf = NaN, for a zero mean past the float range of √q.
    abs_t = jnp.abs(t)
    log_abs_t = jnp.log(jnp.where(abs_t > 0, abs_t, 1.0))
    out["mean_z"] = jnp.where(abs_t > 0, jnp.sign(t) * jnp.exp(log_abs_t + 0.5 * logq), 0.0)
    out.update({f"log10_{name}": v / _LN10 for name, v in logs.items()})
    overflow = jnp.zeros(logq.shape, bool)
    for name in ("mean_z", *logs):
        overflow |= jnp.isinf(out[name])
    out["overflow"] = overflow
    nan = jnp.asarray(jnp.nan, dtype)
    # A (traced) depth past max_depth cannot be refused under vmap: its whole profile is NaN,
    # not one silently cut at max_depth.
    keep = active & (depth <= max_depth)
    out = {k: (jnp.where(keep, v, nan) if k != "overflow" else v & keep) for k, v in out.items()}
    # Layer axis last, so that leading axes match the inputs (and jax.vmap's convention).
    return Profile(**{k: jnp.moveaxis(v, 0, -1) for k, v in out.items()})


def profile(
    block: Block,
    *,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike | None = None,
    max_depth: int | None = None,
    input_m2: ArrayLike = 1.0,
    input_mean: ArrayLike = 0.0,
    input_unitvar: ArrayLike | None = None,
    init: str | None = None,
    c: ArrayLike = 1.0,
    gain: ArrayLike = 1.0,
    branch_scale: ArrayLike | None = None,
) -> Profile:
    """Mean-field statistics of every layer l = 0..L of a network of ``depth`` blocks.

    Args:
        block: the architecture (any shortcut depth k: the branch's k weight layers are
            composed one after another).
        depth: L, the number of blocks. A Python int, or an integer array / traced value
            (under ``jax.vmap``) together with ``max_depth``.
        width: n, the fan-in of every branch weight (enters only through α = n·var_w).
        var_w: variance of one weight entry. Scalars or arrays; ``width``, ``var_w`` and
            ``depth`` broadcast against each other. Give either ``var_w`` or ``init``.
        max_depth: length - 1 of the returned arrays; defaults to ``depth`` (which must then be
            concrete). Layers past ``depth`` are NaN. A concrete ``depth > max_depth`` raises
            ValueError; a traced one (under ``jax.vmap``) cannot be refused, so every entry of
            its profile is NaN (``overflow`` False) instead.
        input_m2, input_mean, input_unitvar: the statistics of z^0 (``m2_z``, ``mean_z`` and
            ``unitvar_z`` at l = 0). The default is x ~ N(0, I): 1, 0 and 1 (``input_unitvar``
            defaults to ``input_m2 - input_mean**2``, i.e. inputs whose cross moments are the
            squared mean). Real data start elsewhere: the trainer's prediction check passes
            the measured statistics of the stem output. Requires input_m2 > 0,
            input_mean² < input_m2 and 0 < input_unitvar <= input_m2 - input_mean².
        init, c, gain: a scheme of :data:`meanfield.inits.BRANCH_SCHEMES`; each weight layer
            of a branch gets the α = n·var_w of its rule (:func:`meanfield.inits.branch_init`),
            and the branch is multiplied by the rule's β. Orthogonal and weight-normalized
            weights have the Gaussian mean field of the same α.
        branch_scale: β >= 0 multiplying every branch (overrides the scheme's).

    With k > 1 weight layers per branch ``var_dw`` is the mean over the branch's k weights.

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
    if (var_w is None) == (init is None):
        raise ValueError(f"give exactly one of var_w and init, got var_w={var_w!r}, init={init!r}")
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
    if init is None:
        arch.check_var_w(var_w)
        rule = inits.var_w_rule(var_w, shortcut=block.shortcut, branch_scale=branch_scale)
    else:
        rule = inits.branch_init(
            init,
            width=width,
            depth=depth,
            activations=block.activations(),
            c=c,
            gain=gain,
            branch_scale=branch_scale,
        )
    inits.check_plain(block, rule)
    scale = rule.scale
    alphas = [jnp.asarray(width) * jnp.asarray(v) for v in rule.var_w]
    dtype = jnp.result_type(float, *alphas, scale)
    alphas = tuple(a.astype(dtype) for a in alphas)
    log_scale = jnp.log(jnp.asarray(scale, dtype))
    start = _start_state(input_m2, input_mean, input_unitvar)
    return _profile(block, max_depth, alphas, log_scale, jnp.asarray(depth, dtype=jnp.int32), start)


def _start_state(m2: ArrayLike, mean: ArrayLike, unitvar: ArrayLike | None) -> tuple:
    """(t, log(v/q), log(u/q), log q) of z^0 from its second moment, mean and unit variance."""
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
    t = mean / jnp.sqrt(m2)
    return t, jnp.log1p(-(t**2)), jnp.log(unitvar / m2), jnp.log(m2)
