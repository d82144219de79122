"""What every closed form shares: the array type, the argument checks (α = n·var_w, the layer
and depth, an input statistic, a block, a BN placement, an activation, a correlation) and
:func:`domain`, the decorator that gives every public function the rule of
:mod:`meanfield.theory` for arguments out of their domain: a ValueError naming the argument
for concrete values, NaN wherever a traced one is out of its domain."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from meanfield.core import architecture as arch
from meanfield.core import gaussian

Array = jax.Array


def domain(**checks: Callable[[str, object], None]):
    """Decorator of a public closed form: run ``checks`` (argument name -> a check of
    (name, value) such as :func:`meanfield.core.architecture.check_positive`) on the named
    arguments, then the function inside :func:`meanfield.core.architecture.traced_domain`.
    Concrete values out of their domain raise ValueError in the checks; the conditions the
    checks recorded on traced values make the result NaN wherever one of them fails, instead
    of a number computed from an argument that is out of its domain (0.5 for layer -1)."""

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            with arch.traced_domain() as conditions:
                if checks:
                    bound = signature.bind(*args, **kwargs)
                    bound.apply_defaults()
                    for name, check in checks.items():
                        check(name, bound.arguments[name])
                result = fn(*args, **kwargs)
            return nan_outside(result, conditions)

        return checked

    return wrap


def nan_outside(result, conditions: list) -> object:
    """``result`` (an array or a tree of them; other leaves, such as labels, are kept) with
    NaN wherever one of the traced boolean ``conditions`` is false."""
    if not conditions:
        return result
    shape = jnp.broadcast_shapes(*(jnp.shape(c) for c in conditions))
    ok = functools.reduce(jnp.logical_and, (jnp.broadcast_to(c, shape) for c in conditions))

    def guard(x):
        if isinstance(x, str) or not isinstance(x, (jax.Array, np.ndarray, float, int)):
            return x
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.result_type(float))
        out = jnp.broadcast_shapes(x.shape, ok.shape)
        return jnp.where(jnp.broadcast_to(ok, out), jnp.broadcast_to(x, out), jnp.nan)

    return jax.tree_util.tree_map(guard, result)


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


def check_weight_layers(layer: ArrayLike, depth: ArrayLike) -> tuple[Array, Array]:
    """The checked l and L of a statistic of the weight of block l: 1 <= l <= L."""
    arch.check_all(
        "layer",
        layer,
        lambda a: a >= 1,
        "an integer >= 1 (the block of a weight)",
        integer=True,
        required=True,
    )
    return check_layers(layer, depth)


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


def activation_moments(activation: str) -> gaussian.ActivationMoments:
    """The Gaussian moments of ``activation``, one of the paper's
    (:data:`meanfield.core.architecture.ACTIVATIONS`), for which the closed forms are written;
    ValueError for anything else, a name or not."""
    if not isinstance(activation, str) or activation not in arch.ACTIVATIONS:
        raise ValueError(f"activation must be one of {arch.ACTIVATIONS}, got {activation!r}")
    return gaussian.activation_moments(activation)


def check_activation(name: str, activation) -> None:
    """Raise ValueError unless ``activation`` is a name of
    :data:`meanfield.core.architecture.ACTIVATION_NAMES` or an elementwise JAX function."""
    if callable(activation):
        return
    if not isinstance(activation, str) or activation not in arch.ACTIVATION_NAMES:
        raise ValueError(
            f"{name} must be one of {arch.ACTIVATION_NAMES} or an elementwise JAX function, "
            f"got {activation!r}"
        )


def check_correlation(name: str, value: ArrayLike) -> None:
    """Raise ValueError unless ``value`` is a correlation: a number in [-1, 1]."""
    arch.check_all(
        name, value, lambda a: (a >= -1) & (a <= 1), "a number in [-1, 1]", integer=False
    )


def check_count(name: str, value: ArrayLike) -> None:
    """Raise ValueError unless ``value`` is an integer >= 1 (a number of iterations)."""
    arch.check_all(name, value, lambda a: a >= 1, "an integer >= 1", integer=True, required=True)
