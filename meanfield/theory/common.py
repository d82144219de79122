"""What every closed form shares: the array type and the argument checks (α = n·var_w, the
layer and depth, an input statistic, a block, a BN placement)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from meanfield.core import architecture as arch

Array = jax.Array


def alpha_of(width: ArrayLike, var_w: ArrayLike) -> Array:
    """α = n·var_w, after checking the width and the weight variance."""
    arch.check_width(width)
    arch.check_var_w(var_w)
    return jnp.asarray(width) * jnp.asarray(var_w)


def check_layers(layer: ArrayLike, depth: ArrayLike | None = None) -> tuple[Array, Array | None]:
    """The checked layer l (and depth L, None if not given) as arrays."""
    arch.check_layer(layer, depth)
    if depth is None:
        return jnp.asarray(layer), None
    arch.check_depth(depth)
    return jnp.asarray(layer), jnp.asarray(depth)


def input_moment(name: str, value: ArrayLike) -> Array:
    """An input statistic (``m2_x``, ``var_x``): a second moment or variance, finite and >= 0."""
    arch.check_nonnegative(name, value)
    return jnp.asarray(value)


def check_block(block: arch.Block) -> arch.Block:
    """``block``, if it is a :class:`meanfield.Block`; ValueError otherwise."""
    if not isinstance(block, arch.Block):
        raise ValueError(f"block must be a meanfield.Block, got {block!r}")
    return block


def norm_placement(norm: str) -> str:
    """``norm``, if it is a BN placement ("bn_post" or "bn_pre"); ValueError otherwise."""
    if norm not in ("bn_post", "bn_pre"):
        raise ValueError(f"norm must be one of ('bn_post', 'bn_pre'), got {norm!r}")
    return norm
