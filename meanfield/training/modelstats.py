"""The per-layer measurement of :class:`meanfield.training.models.ResNet` (``taps`` given): the
statistics of z^l on the batch (:func:`layer_stats`) and the probe :func:`gradient_tap`, the
identity forward whose cotangent is log(mean((dE/dz^l)²)); both computed as natural logs by
:func:`log_mean_square`, without overflow. :mod:`meanfield.training.models` re-exports
:func:`log_mean_square`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gradient_tap", "layer_stats", "log_mean_square"]


def log_mean_square(x: jax.Array, axis=None) -> jax.Array:
    """log(mean(x²)) without overflow: x ~ 1e20 is a float32 number, x² is not.

    Scaled by s = max|x| first: log mean((x/s)²) + 2 log s. -inf where x is all zero.
    """
    x = x.astype(jnp.float32)
    s = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=axis, keepdims=True))
    safe = jnp.where(s > 0, s, 1.0)
    out = jnp.log(jnp.mean(jnp.square(x / safe), axis=axis, keepdims=True)) + 2 * jnp.log(s)
    return jnp.squeeze(out, axis=axis) if axis is not None else out.reshape(())


@jax.custom_vjp
def gradient_tap(z: jax.Array, tap: jax.Array) -> jax.Array:
    """Identity on z; the cotangent of ``tap`` is log(mean((dE/dz)²)) (a per-layer probe)."""
    del tap
    return z


def _tap_fwd(z, tap):
    return z, None


def _tap_bwd(_, ct):
    return ct, log_mean_square(ct)


gradient_tap.defvjp(_tap_fwd, _tap_bwd)


def layer_stats(z: jax.Array) -> dict[str, jax.Array]:
    """Per-layer statistics of z (B, H, W, C) pooled over inputs, positions and channels, as
    natural logs where they can exceed the float range (z ~ 1e23 at He init, L = 100)."""
    z = z.astype(jnp.float32)
    centred = z - jax.lax.stop_gradient(jnp.mean(z, axis=0, keepdims=True))
    return {
        "mean_z": jnp.mean(z),
        "log_m2_z": log_mean_square(z),
        # Each (position, channel) is a unit; its variance over the batch, averaged.
        "log_unitvar_z": log_mean_square(centred),
    }
