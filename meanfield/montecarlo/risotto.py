"""RISOTTO's type-C network, simulated by its own scan (it is not a block tree).

:func:`risotto_statistics` is what :func:`meanfield.montecarlo.network_statistics` runs for
``init=("risotto", ...)``: h^0 = [relu(y^0); relu(-y^0)] on 2n looks-linear channels,
h^l = relu(W_2 relu(W_1 h^{l-1}) + h^{l-1}), with the statistics of the signal y = top - bottom
half that the channels carry. The explicit engine draws the 2n x 2n weights of
:func:`meanfield.inits.risotto_type_c`; the weight-free one uses the block's structure and
:func:`meanfield.montecarlo.weightfree.weightfree_orthogonal_with_gram`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from meanfield import inits
from meanfield.core.sampling import standard_normal
from meanfield.montecarlo.probes import gram_probe, moments, signal_probe
from meanfield.montecarlo.weightfree import (
    SAVE_WEIGHTFREE,
    structural_rank,
    weightfree_orthogonal_with_gram,
)


def _signal(h: jax.Array, n: int) -> jax.Array:
    """The signal y = top - bottom half of the looks-linear channels h (B x 2n)."""
    return h[:, :n] - h[:, n:]


def _dense_block(key, n, dtype, precision):
    """The block's two layers with explicit 2n x 2n weights drawn from ``key``: (first,
    second), ``second`` returning (its output, a rank deficit of 0)."""
    matmul = functools.partial(jnp.matmul, precision=precision)
    w1, w2 = inits.risotto_type_c(key, n, dtype=dtype)
    return (lambda x: matmul(x, w1.T)), (lambda a: (matmul(a, w2.T), jnp.zeros((), dtype)))


def _structured_block(key, n, dtype, precision):
    """The block's two layers from its structure (weight-free): W_1 h = [t, -t] with t the
    signal of h, and W_2 a = [t' M^T - a_top, -t' M^T - a_bot] with t' the signal of a and
    t' M^T weight-free orthogonal; ``second`` returns (its output, the rank it lost)."""
    matmul = functools.partial(jnp.matmul, precision=precision)

    def first(x):
        t = _signal(x, n)
        return jnp.concatenate([t, -t], axis=-1)

    def second(a):
        t = jax.lax.stop_gradient(_signal(a, n))
        gram = matmul(t, t.T)
        tm, rank = weightfree_orthogonal_with_gram(
            _signal(a, n), gram, key, jnp.ones((), dtype), precision
        )
        deficit = jnp.maximum(structural_rank(t, False) - rank, 0.0)
        return jnp.concatenate([tm - a[:, :n], -tm - a[:, n:]], axis=-1), deficit

    return first, second


def _layer_step(block_of, key_w, n, precision):
    """The scan body over blocks: (h, (layer, Gram probes, signal probe)) -> (h_new,
    (moments of its signal, Gram matrices of the two layers' inputs, rank lost))."""
    matmul = functools.partial(jnp.matmul, precision=precision)

    # The backward pass re-draws each block's weights (explicit) or keeps the weight-free
    # layer's frame and Gram factors (weight-free).
    @functools.partial(jax.checkpoint, policy=SAVE_WEIGHTFREE)
    def layer_step(h, inputs):
        layer, probes, probe_y = inputs
        first, second = block_of(jax.random.fold_in(key_w, layer))
        a2 = jax.nn.relu(gram_probe(first(h), probes[0], precision))
        u2, deficit = second(a2)
        h_new = jax.nn.relu(gram_probe(u2, probes[1], precision) + h)
        grams = jax.lax.stop_gradient(jnp.stack([matmul(h, h.T), matmul(a2, a2.T)]))
        return signal_probe(h_new, probe_y), (moments(_signal(h_new, n)), grams, deficit)

    return layer_step


def risotto_statistics(depth, width, batch, key, precision, input_std, dtype, engine):
    """Per-layer statistics of one RISOTTO network (type C, :func:`inits.risotto_type_c`):
    h^0 = [relu(y^0); relu(-y^0)] on 2n channels, h^l = relu(W_2 relu(W_1 h^{l-1}) + h^{l-1}),
    loss E = Σ_b g_b · y^L with y = top - bottom half. The forward statistics and ``m2_dz``
    are those of the signal y^l (n units) and of dE/dy^l; ``var_dw`` is the mean over W_1, W_2
    of (1/((2n)² B)) Σ (dE/dW)². Every block maps y to M_l y with M_l orthogonal, so m2_z and
    m2_dz are the same at every layer of every network.

    ``engine="weightfree"`` uses the block's structure instead of its 2n x 2n matrices: W_1 h
    = [t, -t] with t = top - bottom half of h, and W_2 a = [t' M^T - a_top, -t' M^T - a_bot]
    with t' = a_top - a_bot, where t' M^T is :func:`weightfree_orthogonal` (M^T is Haar). The
    cotangents at both weight outputs, and so the statistics, are those of the dense layers."""
    n, B, L = width, batch, depth
    key_x, key_g, key_w = jax.random.split(key, 3)
    y0 = input_std * standard_normal(key_x, (B, n), dtype)
    g = standard_normal(key_g, (B, n), dtype)
    make = _structured_block if engine == "weightfree" else _dense_block
    block_of = functools.partial(make, n=n, dtype=dtype, precision=precision)
    layer_step = _layer_step(block_of, key_w, n, precision)

    def loss(probes, probe_y):
        h0 = signal_probe(jax.nn.relu(jnp.concatenate([y0, -y0], axis=-1)), probe_y[0])
        layers = jnp.arange(1, L + 1)
        h_last, (mom, grams, deficit) = jax.lax.scan(layer_step, h0, (layers, probes, probe_y[1:]))
        mom = jnp.concatenate([moments(y0)[None], mom])
        deficit = jnp.concatenate([jnp.zeros((1,), dtype), deficit])
        return jnp.sum(g * _signal(h_last, n)), (mom, grams, deficit)

    probes = jnp.zeros((L, 2, B, B), dtype)
    probe_y = jnp.zeros((L + 1,), dtype)
    (gram_d, m2_dy), (mom, grams, deficit) = jax.grad(loss, argnums=(0, 1), has_aux=True)(
        probes, probe_y
    )
    mean, m2, unitvar = mom[:, 0], mom[:, 1], mom[:, 2]
    sq_dw = jnp.mean(jnp.sum(gram_d * grams, axis=(2, 3)), axis=1) / (float(2 * n) ** 2 * B)
    return {
        "mean_z": mean,
        "log_m2_z": jnp.log(m2),
        "log_var_z": jnp.log(jnp.maximum(m2 - mean**2, 0.0)),
        "log_unitvar_z": jnp.log(unitvar),
        "log_m2_dz": jnp.log(m2_dy),
        "log_var_dw": jnp.concatenate([jnp.full((1,), jnp.nan, dtype), jnp.log(sq_dw)]),
        "rank_deficit": deficit,
    }
