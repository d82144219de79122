"""Exact infinite-width mean-field recursions for the toy ResNets, iterated layer by layer.

For every :class:`~meanfield.core.architecture.Block` (activation x norm x residual), the limit
n -> ∞ at fixed depth L and α = n·var_w of the per-layer statistics that
:mod:`meanfield.montecarlo` estimates at finite width (same names):

==================  ==========================================================================
``mean_z``          m_l = E z^l
``m2_z``            q_l = E (z^l)^2
``var_z``           q_l - m_l^2, pooled over units, inputs and networks
``unitvar_z``       mean over units of the variance over inputs of z_j^l (what BN divides by)
``m2_dz``           p_l = E (dE/dz^l)^2 for the loss E = Σ_b g_b·z^L_b, g i.i.d. N(0, 1)
``var_dw``          E (dE/dW^l_{ji})^2 / B, the batch gradient per input (NaN at l = 0)
``corr_z``          k_l / q_l, k = E z^l(x) z^l(x') for distinct inputs (raw, not centred)
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
m += e, q += s + 2 e m, u += s - k (branch and skip are independent in the
limit; a composed tree whose branch reaches its output from its input without a weight adds
the cross terms of docs/theory.md §10, forward and backward). Backward, p_{l-1} = p_l (1 + g_l)
(residual) or p_l g_l (plain) with g_l = α E f'^2, divided by u_{l-1} under BN (population
statistics: the batch-mean terms of BN's backward are O(1/B)).

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

from meanfield import inits, layers
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.layers import mean_field as mfb

__all__ = ["Profile", "profile", "STATISTICS"]

STATISTICS = ("mean_z", "m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw", "corr_z")
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
    corr_z: jax.Array  # k/q, the raw correlation of distinct inputs
    log10_m2_z: jax.Array
    log10_var_z: jax.Array
    log10_unitvar_z: jax.Array
    log10_m2_dz: jax.Array
    log10_var_dw: jax.Array
    overflow: jax.Array  # True where a raw statistic is not representable (its log10_ is finite)

    def as_dict(self) -> dict[str, jax.Array]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _kahan_add(total: jax.Array, comp: jax.Array, term: jax.Array):
    """Compensated (Kahan) summation step: returns the new total and compensation."""
    y = term - comp
    new = total + y
    return new, (new - total) - y


def _forward_scan(tree, flags, log_alphas, log_scale, init: tuple, max_depth: int):
    """The states (t, log(v/q), log(u/q), log q) of z^0..z^max_depth, layer axis first."""

    def body(carry, _):
        state, comps = carry
        t, *steps = mfb.forward_step(tree, flags, log_alphas, log_scale, state)
        # log(v/q), log(u/q) and log q are running sums of L increments: compensate them, or
        # float32 loses ~L·eps·|sum| (a factor e^6 in q at depth 10,000, He init; 54% of u in
        # relu-none, whose log(u/q) reaches -3700).
        logs, comps = zip(
            *(_kahan_add(*x) for x in zip(state[1:], comps, steps, strict=True)), strict=True
        )
        new = (t, *logs)
        return (new, comps), new

    zero = jnp.zeros_like(init[0])
    _, states = jax.lax.scan(body, (init, (zero,) * 3), length=max_depth)
    return tuple(jnp.concatenate([i[None], s], axis=0) for i, s in zip(init, states, strict=True))


def _backward_scan(log_step, lsp, lss):
    """(log p_l, log S_l) for l = 0..max_depth - 1 from the top (p_L = S_L = 1: g is i.i.d.
    over inputs), p_{l-1} = G_l p_l and S_{l-1} = A_l p_l + C_l S_l, from the blocks' log G,
    log A and log C. The logs are summed with compensation, S's increment formed from O(1)
    terms (S = p exactly without BN, S = 1 in a residual network whose branches start with BN:
    its increment is then exactly 0)."""

    def back(carry, x):
        (lp, cp), (ls, cs) = carry
        step, a_l, c_l = x
        finite = jnp.isfinite(ls)
        inc = jnp.logaddexp(a_l + jnp.where(finite, lp - ls, 0.0), c_l)
        kahan = _kahan_add(ls, cs, inc)
        direct = jnp.logaddexp(a_l + lp, c_l + ls)
        s_new = (jnp.where(finite, kahan[0], direct), jnp.where(finite, kahan[1], 0.0))
        p_new = _kahan_add(lp, cp, step)
        return (p_new, s_new), (p_new[0], s_new[0])

    zero = jnp.zeros_like(log_step[0])
    _, tails = jax.lax.scan(back, ((zero, zero), (zero, zero)), (log_step, lsp, lss), reverse=True)
    return tails


def _outputs(t, logs: dict, keep: jax.Array, dtype) -> Profile:
    """The Profile from the per-layer logs of its positive statistics and t = m/√q (layer
    axis first), NaN where ``keep`` is False."""
    out = {name: jnp.exp(v) for name, v in logs.items()}
    # No gradient at l = 0; set it explicitly (XLA's vectorized float32 exp maps NaN to finite
    # garbage on CPU).
    out["var_dw"] = out["var_dw"].at[0].set(jnp.nan)
    # m = t √q as one exp, so that m is finite wherever it fits (√q alone may not) and exactly
    # 0, not 0·inf = NaN, for a zero mean past the float range of √q.
    abs_t = jnp.abs(t)
    log_abs_t = jnp.log(jnp.where(abs_t > 0, abs_t, 1.0))
    out["mean_z"] = jnp.where(abs_t > 0, jnp.sign(t) * jnp.exp(log_abs_t + 0.5 * logs["m2_z"]), 0.0)
    # k/q = 1 - gap/q, from the logs (exact as the gap underflows: corr -> 1).
    out["corr_z"] = -jnp.expm1(logs["unitvar_z"] - logs["m2_z"])
    out.update({f"log10_{name}": v / _LN10 for name, v in logs.items()})
    overflow = jnp.zeros(t.shape, bool)
    for name in ("mean_z", *logs):
        overflow |= jnp.isinf(out[name])
    # A non-homogeneous activation evaluated past the float range gives NaN: flagged too.
    overflow |= jnp.isnan(logs["m2_z"])
    out["overflow"] = overflow
    nan = jnp.asarray(jnp.nan, dtype)
    out = {k: (jnp.where(keep, v, nan) if k != "overflow" else v & keep) for k, v in out.items()}
    # Layer axis last, so that leading axes match the inputs (and jax.vmap's convention).
    return Profile(**{k: jnp.moveaxis(v, 0, -1) for k, v in out.items()})


@functools.partial(jax.jit, static_argnames=("tree", "max_depth", "input_flags"))
def _profile(
    tree: layers.Layer,
    max_depth: int,
    input_flags: layers.Flags,
    alphas: tuple,
    log_scale: jax.Array,
    depth: jax.Array,
    start: tuple,
) -> Profile:
    flags = layers.check_mean_field(tree, input_flags)
    dtype = alphas[0].dtype
    shape = jnp.broadcast_shapes(
        *(a.shape for a in alphas), log_scale.shape, depth.shape, *(jnp.shape(v) for v in start)
    )
    log_alphas = tuple(jnp.log(jnp.broadcast_to(a, shape)) for a in alphas)
    log_scale = jnp.broadcast_to(log_scale, shape)
    init = tuple(jnp.broadcast_to(jnp.asarray(v, dtype), shape) for v in start)
    t, log_w, log_r, logq = _forward_scan(tree, flags, log_alphas, log_scale, init, max_depth)

    layer = jnp.arange(max_depth + 1).reshape((max_depth + 1,) + (1,) * len(shape))
    depth = jnp.broadcast_to(depth, shape)[None]
    active = layer <= depth

    # Backward map of block l (l = 1..max_depth) from the state of z^{l-1}.
    ct, weights = mfb.block_backward(
        tree,
        flags,
        tuple(a[None] for a in log_alphas),
        log_scale[None],
        (t[:-1], log_w[:-1], log_r[:-1], logq[:-1]),
    )
    live = active[1:]
    tail_p, tail_s = _backward_scan(
        jnp.where(live, ct.lpp, 0.0),
        jnp.where(live, ct.lsp, -jnp.inf),
        jnp.where(live, ct.lss, 0.0),
    )
    zero = jnp.zeros(shape, dtype)[None]
    logp = jnp.concatenate([tail_p, zero], axis=0)
    # Without BatchNorm nothing couples the inputs: S = p exactly, so use p's own sum.
    log_s = jnp.concatenate([tail_s, zero], axis=0) if layers.has_batchnorm(tree) else logp

    # Batch weight gradient of block l from the cotangent (p_l, S_l) at its output.
    log_g = mfb.log_var_dw(weights, logp[1:], log_s[1:])
    log_g = jnp.concatenate([jnp.full_like(log_g[:1], jnp.nan), log_g], axis=0)
    logs = {
        "m2_z": logq,
        "var_z": logq + log_w,
        "unitvar_z": logq + log_r,
        "m2_dz": logp,
        "var_dw": log_g,
    }
    # A (traced) depth past max_depth cannot be refused under vmap: its whole profile is NaN,
    # not one silently cut at max_depth.
    return _outputs(t, logs, active & (depth <= max_depth), dtype)


def profile(
    block: Block | layers.Layer,
    *,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike | None = None,
    max_depth: int | None = None,
    input_m2: ArrayLike = 1.0,
    input_mean: ArrayLike = 0.0,
    input_unitvar: ArrayLike | None = None,
    input_corr: ArrayLike | None = None,
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
        input_corr: instead of ``input_unitvar``, the correlation ρ in [0, 1) of distinct
            inputs' centred parts (``simulate``'s input_corr): input_unitvar =
            (input_m2 - input_mean²)(1 - ρ), and ``corr_z`` at l = 0 is
            (input_mean² + (input_m2 - input_mean²) ρ) / input_m2.
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
    tree = layers.as_tree(block)
    # An input known to be centred (a concrete zero mean) lets kinked activations see it.
    centred = not arch.is_traced(input_mean) and not np.any(np.asarray(input_mean))
    input_flags = layers.CENTRED_INPUT_FLAGS if centred else layers.INPUT_FLAGS
    layers.check_mean_field(tree, input_flags)
    arch.check_width(width)
    if (var_w is None) == (init is None):
        raise ValueError(f"give exactly one of var_w and init, got var_w={var_w!r}, init={init!r}")
    max_depth = arch.check_max_depth(depth, max_depth)
    rule = _rule(tree, width, depth, var_w, init, c, gain, branch_scale)
    inits.check_plain(tree, rule)
    scale = rule.scale
    alphas = [jnp.asarray(width) * jnp.asarray(v) for v in rule.var_w]
    dtype = jnp.result_type(float, *alphas, scale)
    alphas = tuple(a.astype(dtype) for a in alphas)
    log_scale = jnp.log(jnp.asarray(scale, dtype))
    input_unitvar = _input_unitvar(input_m2, input_mean, input_unitvar, input_corr)
    start = _start_state(input_m2, input_mean, input_unitvar)
    depth = jnp.asarray(depth, dtype=jnp.int32)
    return _profile(tree, max_depth, input_flags, alphas, log_scale, depth, start)


def _rule(tree, width, depth, var_w, init, c, gain, branch_scale) -> inits.BranchInit:
    """The rule each Dense of the block follows: ``var_w`` for all, or the scheme ``init``'s."""
    if init is None:
        arch.check_var_w(var_w)
        return inits.var_w_rule(var_w, shortcut=layers.dense_count(tree), branch_scale=branch_scale)
    return inits.branch_init(
        init,
        width=width,
        depth=depth,
        activations=layers.dense_activations(tree),
        c=c,
        gain=gain,
        branch_scale=branch_scale,
    )


def _input_unitvar(m2, mean, unitvar, corr):
    """The inputs' unit variance: ``unitvar``, or (m2 - mean²)(1 - corr) from ``corr``."""
    if corr is None:
        return unitvar
    if unitvar is not None:
        raise ValueError("give at most one of input_unitvar and input_corr")
    arch.check_all(
        "input_corr", corr, lambda r: (r >= 0) & (r < 1), "a number in [0, 1)", integer=False
    )
    return (jnp.asarray(m2) - jnp.asarray(mean) ** 2) * (1.0 - jnp.asarray(corr))


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
