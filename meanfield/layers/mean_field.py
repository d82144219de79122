"""The recursion's side of the language: the context (``mf``) that each layer's
``mean_field`` and ``backward`` read and write while :mod:`meanfield.recursions` interprets a
block, and the block-level forward step and backward map built from them."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from meanfield.layers.base import Cotangent, Layer, State
from meanfield.layers.combinators import Residual

__all__ = ["MeanField", "block_backward", "block_forward", "forward_step", "log_var_dw"]


class MeanField:
    """What a block's layers read and write while the recursion interprets its tree
    (:mod:`meanfield.layers`): the block input's state in absolute logs (``log_q0``, ``log_w0``
    = log(v0/q0), ``log_r0`` = log(u0/q0)), log α of each Dense in order, log β, the records a
    layer's forward map keeps for its backward rule, and the weight-gradient terms."""

    def __init__(self, log_q0, log_w0, log_r0, log_alphas, log_scale):
        self.log_q0, self.log_w0, self.log_r0 = log_q0, log_w0, log_r0
        self.log_alphas, self.log_scale = log_alphas, log_scale
        self.dense = 0
        self.stack: list = []
        self.weights: list = []

    def next_log_alpha(self):
        log_alpha = self.log_alphas[self.dense]
        self.dense += 1
        return log_alpha

    def push(self, record) -> None:
        self.stack.append(record)

    def pop(self):
        return self.stack.pop()

    def absolute(self, s: State):
        """(log q, log gap) of ``s`` in absolute terms."""
        if not s.relative:
            return s.a, s.r
        return s.a + self.log_q0, s.r + self.log_q0 + self.log_r0

    def log_delta(self, s: State):
        """log(gap / q) = log(1 - ρ) of ``s``, from O(1) terms where it is relative."""
        return s.r + self.log_r0 - s.a if s.relative else s.r - s.a

    def to_relative(self, s: State) -> State:
        return dataclasses.replace(
            s,
            a=s.a - self.log_q0,
            w=s.w - self.log_q0 - self.log_w0,
            r=s.r - self.log_q0 - self.log_r0,
            relative=True,
        )

    def record_weight(self, ct: Cotangent, log_gap, log_k) -> None:
        self.weights.append((ct, log_gap, log_k))


def block_forward(tree: Layer, flags, mf: MeanField, t) -> State:
    """The block's output state, relative to its input, whose mean is t·√q0."""
    zero = jnp.zeros_like(t)
    out = tree.mean_field(State(zero, t, zero, zero, True, flags), mf)
    if not isinstance(tree, Residual):  # plain: the block is the branch, times β
        two_log_beta = 2.0 * mf.log_scale
        out = dataclasses.replace(
            out, a=out.a + two_log_beta, w=out.w + two_log_beta, r=out.r + two_log_beta
        )
    return out if out.relative else mf.to_relative(out)


def forward_step(tree: Layer, flags, log_alphas: tuple, log_scale, state):
    """One block of the mean-field map on the state (t = m/√q, log(v/q), log(u/q), log q),
    v = q - m² the pooled variance.

    Returns the new t and the increments of the three logs (the caller sums them with
    compensation). Each increment is formed from O(1) terms (the block's states are carried
    relative to its input, :class:`meanfield.State`), so that none is a difference of
    the large logs themselves (v/q = 1 - t² is ~1e-4 at depth 10,000 of relu-bn_post, which
    1 - t² in float32 would get 17% wrong).
    """
    t, log_w, log_r, logq = state
    out = block_forward(tree, flags, MeanField(logq, log_w, log_r, log_alphas, log_scale), t)
    return out.t, out.w - out.a, out.r - out.a, out.a


def logsumexp(terms: list) -> jax.Array:
    """log Σ exp(terms), -inf (not NaN) where every term is -inf."""
    stacked = jnp.stack(jnp.broadcast_arrays(*terms))
    top = jnp.max(stacked, axis=0, keepdims=True)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    return jnp.log(jnp.sum(jnp.exp(stacked - safe), axis=0)) + safe[0]


def block_backward(tree: Layer, flags, log_alphas, log_scale, state):
    """The backward map of blocks whose inputs have ``state``: the :class:`~meanfield.layers.
    Cotangent` from the block output to its input (skip included), and per Dense (cotangent
    at its output, log gap and log k of its input), from which the weight gradient is
    p·gap + S·k (docs/theory.md §2)."""
    t, log_w, log_r, logq = state
    mf = MeanField(logq, log_w, log_r, log_alphas, log_scale)
    block_forward(tree, flags, mf, t)
    zero = jnp.zeros_like(logq)
    ct = Cotangent(zero, jnp.full_like(zero, -jnp.inf), zero)
    if not isinstance(tree, Residual):
        ct = ct.plus(2.0 * log_scale)
    return tree.backward(ct, mf), mf.weights


def log_var_dw(weights: list, logp, logs):
    """log of the weight gradient E (dE/dW_ji)² / B, averaged over the block's Dense layers,
    from the output cotangent's log p and log S."""
    terms = []
    for ct, log_gap, log_k in weights:
        log_p = ct.lpp + logp
        log_s = jnp.logaddexp(ct.lsp + logp, ct.lss + logs)
        terms.append(jnp.logaddexp(log_p + log_gap, log_s + log_k))
    return logsumexp(terms) - math.log(len(terms))
