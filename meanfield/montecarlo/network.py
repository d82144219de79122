"""One sampled network of a block tree: its forward and backward pass and its statistics.

:func:`network_statistics` propagates B inputs through one network of a
:class:`~meanfield.core.architecture.Block` (or a :mod:`meanfield.layers` tree), in a checkpointed
``lax.scan`` over layers that draws each layer's weights from ``fold_in(network_key, layer)``,
and reads the backward statistics out of the probes (:mod:`meanfield.montecarlo.probes`).
Its ``_Network`` is the engine a block's layers call for their Dense products, explicit
(:func:`meanfield.inits.branch_weight`) or weight-free (:mod:`meanfield.montecarlo.weightfree`).
RISOTTO's network has its own scan (:mod:`meanfield.montecarlo.risotto`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from meanfield import inits, layers
from meanfield.core.architecture import Block
from meanfield.core.sampling import standard_normal
from meanfield.montecarlo.probes import grad_gate, gram_probe, moments
from meanfield.montecarlo.progress import LAYER_PROGRESS
from meanfield.montecarlo.risotto import risotto_statistics
from meanfield.montecarlo.weightfree import (
    SAVE_WEIGHTFREE,
    structural_rank,
    weightfree_linear_with_gram,
    weightfree_orthogonal_with_gram,
)


def _rms(z: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(z**2))


class _Network:
    """What a block's layers ask of the engine in one sampled network (the ``net`` of
    :meth:`meanfield.layers.Dense.finite`): the product of each Dense, drawn from its own key,
    with the Gram matrices of its input and of its output's cotangent (read by the probe) kept
    for the weight-gradient statistics, and the rank the weight-free layers lost."""

    def __init__(self, linear, n_dense, key_w, layer, probes, log_s, scale, precision):
        self.linear, self.n_dense, self.key_w, self.layer = linear, n_dense, key_w, layer
        self.probes, self.log_s, self.scale, self.precision = probes, log_s, scale, precision
        self.grams: list = []
        self.deficit = jnp.zeros((), log_s.dtype)

    def dense(self, a_hat: jax.Array, centred: bool) -> jax.Array:
        i = len(self.grams)
        # Unique per (layer, position); the same key as the one-layer engine when K = 1.
        key = jax.random.fold_in(self.key_w, (self.layer - 1) * self.n_dense + i + 1)
        gram = jax.lax.stop_gradient(jnp.matmul(a_hat, a_hat.T, precision=self.precision))
        u, rank = self.linear(a_hat, gram, key, i)
        if rank is not None:  # weight-free: eigenvalues cut beyond what the structure implies
            structural = structural_rank(jax.lax.stop_gradient(a_hat), centred)
            self.deficit = self.deficit + jnp.maximum(structural - rank, 0.0)
        self.grams.append(gram)
        return gram_probe(u, self.probes[i], self.precision)


def _engine_linear(engine: str, rule, n: int, dtype, precision):
    """The product a Dense asks for, (a_hat, gram, key, position) -> (U, rank or None)."""
    if engine == "weightfree" and rule.law == "gaussian":
        stds = [jnp.sqrt(jnp.asarray(v, dtype)) for v in rule.var_w]
        return lambda a, gram, k, i: weightfree_linear_with_gram(a, gram, k, stds[i], precision)
    if engine == "weightfree" and rule.law == "orthogonal":
        gains = [jnp.sqrt(jnp.asarray(v, dtype) * n) for v in rule.var_w]
        return lambda a, gram, k, i: weightfree_orthogonal_with_gram(
            a, gram, k, gains[i], precision
        )
    if engine == "weightfree":
        raise ValueError(
            f"engine='weightfree' needs Gaussian or orthogonal weights, got {rule.law}"
        )

    def explicit(a, gram, k, i):
        w = inits.branch_weight(k, (n, n), rule, i, dtype)
        return jnp.matmul(a, w, precision=precision), None

    return explicit


def _branch_rule(tree: layers.Layer, var_w, init, n: int, depth: int, n_dense: int, branch_scale):
    """The init rule of every block (:class:`meanfield.inits.BranchInit`): N(0, var_w) for all
    k Dense layers, or the scheme's when ``init`` is (scheme, c, gain); ``branch_scale``, when
    given, replaces its branch scale."""
    if init is None:
        rule = inits.var_w_rule(var_w, shortcut=n_dense)
    else:
        scheme, c, gain = init
        acts = layers.dense_activations(tree)
        rule = inits.branch_init(scheme, width=n, depth=depth, activations=acts, c=c, gain=gain)
    if branch_scale is not None:
        rule = rule._replace(scale=branch_scale)
    return rule


def _block_output(tree: layers.Layer, z_hat: jax.Array, net: _Network):
    """(block output at the scale of z_hat, the Gram matrices of the k Dense inputs, the
    rank lost). Positively homogeneous layers keep the scale of z_hat; after a BatchNorm
    the signal is scale-free and is brought back to the scale of z_hat where it joins the
    skip (:class:`meanfield.layers.Residual`) or leaves the block."""
    out = tree.finite(layers.Signal(z_hat, True, False), net)
    z_new = out.x
    if not isinstance(tree, layers.Residual):  # plain: the block is the branch, times β
        z_new = net.scale * out.x if out.relative else net.scale * out.x * jnp.exp(-net.log_s)
    return z_new, jnp.stack(net.grams), net.deficit


def _layer_step(
    tree: layers.Layer,
    linear,
    n_dense: int,
    key_w,
    scale,
    precision,
    progress_every: int = 0,
    active_depth=None,
):
    """The scan body over layers: ((z_hat, log s), (layer, Gram probes, gate)) -> the next
    carry and (moments of z_hat, log s, Gram matrices of the Dense inputs, rank lost). The
    output is renormalized to unit RMS, its scale carried in log s. With ``progress_every``
    > 0 every that many layers call :data:`~meanfield.montecarlo.progress.LAYER_PROGRESS`
    (in the forward pass and again in the backward pass's recomputation). With
    ``active_depth`` (traced) the blocks past it are the identity: their output is their
    input, exactly, so the network is the one of ``active_depth`` blocks."""

    # The backward pass recomputes each layer from its input (re-drawing explicit weights
    # instead of storing them); only the weight-free layers' outputs and Gram factors,
    # O(B·n + B²) each, are kept, so their normals are not drawn twice.
    @functools.partial(jax.checkpoint, policy=SAVE_WEIGHTFREE)
    def layer_step(carry, inputs):
        z_hat, log_s = carry
        layer, probes, gate = inputs
        if progress_every:
            jax.lax.cond(
                layer % progress_every == 0,
                lambda: jax.debug.callback(LAYER_PROGRESS.report, layer),
                lambda: None,
            )
        net = _Network(linear, n_dense, key_w, layer, probes, log_s, scale, precision)
        z_new, gram_a, deficit = _block_output(tree, z_hat, net)
        rho = jax.lax.stop_gradient(_rms(z_new))
        rho = jnp.where(rho > 0, rho, 1.0)
        if active_depth is not None:
            active = layer <= active_depth
            z_new = jnp.where(active, z_new, z_hat)
            rho = jnp.where(active, rho, 1.0)
        z_new = grad_gate(z_new / rho, gate)
        log_s = log_s + jnp.log(rho)
        return (z_new, log_s), (moments(z_new), log_s, gram_a, deficit)

    return layer_step


def _loss(layer_step, x: jax.Array, g: jax.Array, log_input_std, depth: int, dtype):
    """The normalized network's loss E_hat = Σ_b g_b · z_hat^L as a function of (probes,
    gates), with the forward statistics as its auxiliary output."""

    def loss(probes, gates):
        z0 = grad_gate(x, gates[0])
        log_s0 = jnp.full((), log_input_std, dtype)
        layers = jnp.arange(1, depth + 1)
        (z_last, _), (mom, log_ss, grams, deficit) = jax.lax.scan(
            layer_step, (z0, log_s0), (layers, probes, gates[1:])
        )
        loss_hat = jnp.sum(g * z_last)
        aux = (
            jnp.concatenate([moments(x)[None], mom]),
            jnp.concatenate([log_s0[None], log_ss]),
            grams,
            jnp.concatenate([jnp.zeros((1,), dtype), deficit]),
        )
        return loss_hat, aux

    return loss


def _read_out(grads, aux, n: int, batch: int, dtype) -> dict[str, jax.Array]:
    """The statistics of the network (see :func:`network_statistics`) from what the backward
    pass of the normalized network returned: ``grads`` = (Gram matrices of δ_hat, the gates'
    (log r, mean square of dE_hat/dz_hat)) and ``aux`` = the forward statistics."""
    B = batch
    mom, log_s, grams, deficit = aux
    gram_d, gate_ct = grads
    log_r, m2_dz_hat = gate_ct[:, 0], gate_ct[:, 1]
    # Forward statistics of z^l = s_l · z_hat^l.
    mean_hat, m2_hat, unitvar_hat = mom[:, 0], mom[:, 1], mom[:, 2]
    var_hat = jnp.maximum(m2_hat - mean_hat**2, 0.0)
    # Backward: the gate at layer k removed r_k; the cotangent the gate at l received is
    # missing prod_{k>l} r_k, the one at the probe of layer l also r_l. In the normalized
    # network dE/dz^l = (s_L / s_l) dE_hat/dz_hat^l and dE/dW^l = s_L Σ_b δ_hat_b a_hat_b^T.
    tail_excl = jnp.cumsum(log_r[::-1])[::-1] - log_r  # Σ_{k>l} log r_k
    tail_incl = tail_excl + log_r
    log_sL = log_s[-1]
    log_m2_dz = jnp.log(m2_dz_hat) + 2 * (tail_excl + log_sL - log_s)
    # A Python float: the int n² B passes int32 from width 4096 at batch 128 (OverflowError).
    sq_dw = jnp.mean(jnp.sum(gram_d * grams, axis=(2, 3)), axis=1) / (float(n) * n * B)
    log_var_dw = jnp.log(jnp.maximum(sq_dw, 0.0)) + 2 * (tail_incl[1:] + log_sL)
    log_var_dw = jnp.concatenate([jnp.full((1,), jnp.nan, dtype), log_var_dw])
    two_log_s = 2 * log_s
    return {
        "mean_z": mean_hat * jnp.exp(log_s),
        "log_m2_z": jnp.log(m2_hat) + two_log_s,
        "log_var_z": jnp.log(var_hat) + two_log_s,
        "log_unitvar_z": jnp.log(unitvar_hat) + two_log_s,
        "log_m2_dz": log_m2_dz,
        "log_var_dw": log_var_dw,
        "rank_deficit": deficit,
    }


def network_statistics(
    block: Block | layers.Layer,
    depth: int,
    width: int,
    batch: int,
    var_w: jax.Array,
    key: jax.Array,
    precision=jax.lax.Precision.HIGHEST,
    init: tuple | None = None,
    engine: str = "explicit",
    input_std: float = 1.0,
    branch_scale: float | None = None,
    progress_every: int = 0,
    log_input_std=None,
    active_depth=None,
    input_shift=0.0,
    input_corr=0.0,
) -> dict[str, jax.Array]:
    """Per-layer statistics of one sampled network (arrays of length depth + 1).

    ``block`` is a preset or a :mod:`meanfield.layers` tree; each block's layers run their
    finite-width maps on the network's (batch, width) signal. Weights are N(0, var_w), or
    follow :func:`meanfield.inits.branch_init` when ``init`` is a tuple (scheme, c, gain):
    per-Dense variances, law (Gaussian, orthogonal, weight-normalized) and branch scale.
    ``branch_scale`` (static) multiplies every branch output, overriding the scheme's.
    ``engine="weightfree"`` samples what each Dense computes instead
    (:func:`weightfree_linear`; Gaussian or orthogonal weights). Returns ``mean_z`` and
    ``log_<name>`` (natural log) for ``m2_z``, ``var_z``, ``unitvar_z``, ``m2_dz`` and
    ``var_dw``, and ``rank_deficit``: per layer the number of Gram eigenvalues the weight-free
    layers dropped beyond the structural rank of their inputs (0 at l = 0 and for explicit
    weights); with k > 1 Dense layers per block, ``var_dw`` is the mean over the k weights.
    Unbatched; :func:`simulate` vmaps it over networks. The inputs are ``input_std`` times
    standard normal (carried as the initial log-scale, so nothing else changes).
    ``input_std``, ``var_w``, ``branch_scale`` and the ``c`` and ``gain`` of ``init`` may be
    traced; ``log_input_std``, when given, is log(input_std) computed by the caller.
    ``init=("risotto", ...)`` simulates RISOTTO's own network instead
    (:func:`meanfield.montecarlo.risotto.risotto_statistics`). ``progress_every`` (static):
    report the scan's layer every that many layers (:mod:`meanfield.montecarlo.progress`).
    ``input_shift`` = mean / input_std and ``input_corr`` = ρ (both may be traced) give the
    inputs x_b = input_std·(shift + √ρ·c + √(1 - ρ)·e_b), c one N(0, I) draw per network
    shared by its B inputs: mean input_std·shift, correlation of distinct inputs' centred
    parts ρ (at 0 and 0, the default, x_b = input_std·e_b exactly).
    ``active_depth`` (an int, may be traced, <= ``depth``): the network has that many blocks,
    the scan still runs ``depth`` (the blocks past it are the identity, and what a scheme
    reads of the depth is ``active_depth``), and the statistics past it are NaN: one
    compiled program for every depth up to ``depth``, with the same weights per layer.
    """
    dtype = jnp.result_type(float, var_w)
    if init is not None and init[0] == "risotto":
        return risotto_statistics(depth, width, batch, key, precision, input_std, dtype, engine)
    tree = layers.as_tree(block)
    n, B, L, K = width, batch, depth, layers.dense_count(tree)
    key_x, key_g, key_w = jax.random.split(key, 3)
    x = standard_normal(key_x, (B, n), dtype)
    common = standard_normal(jax.random.fold_in(key_x, 1), (1, n), dtype)
    x = jnp.sqrt(1.0 - input_corr) * x + jnp.sqrt(input_corr) * common + input_shift
    g = standard_normal(key_g, (B, n), dtype)
    rule_depth = L if active_depth is None else active_depth
    rule = _branch_rule(tree, var_w, init, n, rule_depth, K, branch_scale)
    scale = jnp.asarray(rule.scale, dtype)
    linear = _engine_linear(engine, rule, n, dtype, precision)
    step = _layer_step(tree, linear, K, key_w, scale, precision, progress_every, active_depth)
    if log_input_std is None:
        log_input_std = math.log(input_std)
    loss = _loss(step, x, g, log_input_std, L, dtype)
    # Only O(L·B²) statistics come out of the backward pass: per layer the gate's
    # (log r, mean square of dE_hat/dz_hat) and per weight the Gram matrix of δ_hat.
    probes = jnp.zeros((L, K, B, B), dtype)
    gates = jnp.zeros((L + 1, 2), dtype)
    grads, aux = jax.grad(loss, argnums=(0, 1), has_aux=True)(probes, gates)
    out = _read_out(grads, aux, n, B, dtype)
    if active_depth is None:
        return out
    live = jnp.arange(L + 1) <= active_depth
    return {k: jnp.where(live, v, 0.0 if k == "rank_deficit" else jnp.nan) for k, v in out.items()}
