"""Custom-VJP probes: identities in the forward pass whose backward pass reads out statistics.

Each takes a zero ``probe`` argument whose cotangent carries what the backward pass measured, so
``jax.grad`` returns O(1) or O(B²) numbers per layer instead of cotangent arrays the size of the
activations: :func:`grad_gate` (renormalizes the cotangent and records its log-scale and mean
square), :func:`gram_probe` (the Gram matrix D D^T of a Dense output's cotangent) and
:func:`signal_probe` (the mean square of dE/dy on RISOTTO's looks-linear channels); and
:func:`moments`, the forward statistics of a layer's output.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@jax.custom_vjp
def grad_gate(z: jax.Array, probe: jax.Array) -> jax.Array:
    """Identity forward. Backward renormalizes the cotangent to unit RMS and returns, as the
    cotangent of the 2-vector ``probe``, (log of the factor it removed, mean square of the
    cotangent it received), so jax.grad reads both out without an array the size of z."""
    del probe
    return z


def _gate_fwd(z, probe):
    return z, jnp.zeros((2,), z.dtype)


def _gate_bwd(template, ct):
    m2 = jnp.mean(ct**2)
    positive = m2 > 0
    rms = jnp.sqrt(jnp.where(positive, m2, 1.0))
    return ct / rms, (jnp.stack([jnp.log(rms), m2]) + template).astype(template.dtype)


grad_gate.defvjp(_gate_fwd, _gate_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def gram_probe(u: jax.Array, probe: jax.Array, precision) -> jax.Array:
    """Identity forward; backward returns the cotangent D (B x n) unchanged and D D^T (B x B)
    as the cotangent of ``probe``: the weight-gradient statistics need only this Gram matrix."""
    del probe
    return u


def _gram_probe_fwd(u, probe, precision):
    return u, None


def _gram_probe_bwd(precision, _, ct):
    return ct, jnp.matmul(ct, ct.T, precision=precision)


gram_probe.defvjp(_gram_probe_fwd, _gram_probe_bwd)


@jax.custom_vjp
def signal_probe(h: jax.Array, probe: jax.Array) -> jax.Array:
    """Identity on looks-linear channels h = [relu(y); relu(-y)] (B x 2n). Backward returns the
    cotangent unchanged and, as the cotangent of the scalar ``probe``, the mean square of
    dE/dy = (dh/dy)^T dE/dh = top ⊙ 1(y > 0) - bottom ⊙ 1(y < 0), the gradient with respect to
    the signal y that the channels carry."""
    del probe
    return h


def _signal_probe_fwd(h, probe):
    return h, h


def _signal_probe_bwd(h, ct):
    n = h.shape[-1] // 2
    dy = jnp.where(h[:, :n] > 0, ct[:, :n], 0.0) - jnp.where(h[:, n:] > 0, ct[:, n:], 0.0)
    return ct, jnp.mean(dy**2)


signal_probe.defvjp(_signal_probe_fwd, _signal_probe_bwd)


def moments(z: jax.Array) -> jax.Array:
    """(mean, mean square, mean over units of the variance over inputs) of z (B x n)."""
    z = jax.lax.stop_gradient(z)
    return jnp.stack([jnp.mean(z), jnp.mean(z**2), jnp.mean(jnp.var(z, axis=0))])
