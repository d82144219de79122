"""Frozen, validated values that name a network, and the checks for sizes.

Everything else in meanfield takes these values and does not validate them again.

A residual block (Taki 2017, eq. 3, 29, 43) maps z^{l-1} (width n) to z^l:

=========  =====================================  ==============================
``norm``   branch                                 paper
=========  =====================================  ==============================
none       u = W z^{l-1},      h = f(u)           eq. 3, Fig. 1a
bn_post    u = W BN(z^{l-1}),  h = f(u)           eq. 29, Fig. 1b
bn_pre     h = W f(BN(z^{l-1}))                   eq. 43, Fig. 4
ln_pre     h = W f(LN(z^{l-1}))                   the pre-LN block (transformers)
rms_pre    h = W f(RMS(z^{l-1}))                  the same with RMSNorm
=========  =====================================  ==============================

and z^l = z^{l-1} + h when ``residual`` is True, z^l = h for the plain network used as
contrast. BN normalizes every unit by its mean and (biased) variance over the inputs; LN
normalizes every input by its mean and variance over the units, RMSNorm by its root mean
square over the units; none has epsilon or affine parameters. ``activation`` is any name of
:data:`ACTIVATION_NAMES` (the paper's are identity and relu).

Shortcut depth (Li et al. 2016): a branch of ``shortcut`` = k weight layers is the unit of the
table repeated k times, W_1 first:

=========  ==========================================================
``norm``   branch with k weight layers
=========  ==========================================================
none       h = f(W_k f(... f(W_1 z^{l-1})))
bn_post    h = f(W_k BN(... f(W_1 BN(z^{l-1}))))
bn_pre     h = W_k f(BN(... W_1 f(BN(z^{l-1}))))   (ln_pre, rms_pre alike)
=========  ==========================================================

so k = 1 is the paper's block. ``final_activation=False`` drops the f after W_k (for
``none`` and ``bn_post``; a ``bn_pre`` branch already ends with W_k): with k = 2 and no BN
this is the branch z -> W_2 relu(W_1 z) of the no-normalization ResNets of Fixup, SkipInit
and Arpit et al. (2019).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import numbers
from typing import Any

import numpy as np

# The paper's activations and norms (what all_blocks() spans and the closed forms are written
# for), and every name a Block accepts.
ACTIVATIONS = ("identity", "relu")
ACTIVATION_NAMES = (
    *ACTIVATIONS,
    *("leaky_relu", "abs", "tanh", "erf", "gelu", "gelu_tanh", "silu", "softplus", "elu"),
    *("sigmoid", "sin"),
)
NORMS = ("none", "bn_post", "bn_pre")
NORM_NAMES = (*NORMS, "ln_pre", "rms_pre")
PRE_NORMS = ("bn_pre", "ln_pre", "rms_pre")  # norm and activation before the weight
SHORTCUTS = (1, 2, 3)


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a tracer (inside jit/vmap): such values cannot be inspected, and
    were checked where they were made."""
    import jax

    return isinstance(value, jax.core.Tracer)


@dataclasses.dataclass(frozen=True)
class Block:
    """One residual block kind; frozen, hashable (usable as a static jit argument).

    Example:
        >>> Block(activation="relu", norm="bn_post", residual=True).name
        'relu-bn_post-residual'
    """

    activation: str = "relu"  # f: "identity" or "relu"
    norm: str = "none"  # "none" (Fig. 1a), "bn_post" (Fig. 1b), "bn_pre" (Fig. 4)
    residual: bool = True  # z + branch(z); False gives the plain network z = branch(z)
    shortcut: int = 1  # k, weight layers per residual branch (the paper's block has one)
    final_activation: bool = True  # False: no f after the branch's last weight (none, bn_post)

    def __post_init__(self):
        if not isinstance(self.activation, str) or self.activation not in ACTIVATION_NAMES:
            raise ValueError(
                f"Block.activation must be one of {ACTIVATION_NAMES}, got {self.activation!r}"
            )
        if not isinstance(self.norm, str) or self.norm not in NORM_NAMES:
            raise ValueError(f"Block.norm must be one of {NORM_NAMES}, got {self.norm!r}")
        if not isinstance(self.residual, (bool, np.bool_)):
            raise ValueError(f"Block.residual must be True or False, got {self.residual!r}")
        # An integer (not bool, not float: 2.0 == 2 would pass ``in`` but name the block
        # '-k2.0', which from_name cannot read back, and break the engines' range(k)).
        integral = isinstance(self.shortcut, numbers.Integral) and not isinstance(
            self.shortcut, (bool, np.bool_)
        )
        if not integral or self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"Block.shortcut must be an integer in {SHORTCUTS} (weight layers per branch; "
                f"1 is the paper's block; not a bool or float), got {self.shortcut!r}"
            )
        if not isinstance(self.final_activation, (bool, np.bool_)):
            raise ValueError(
                f"Block.final_activation must be True or False, got {self.final_activation!r}"
            )
        if not self.final_activation and self.norm in PRE_NORMS:
            raise ValueError(
                f"Block.final_activation must be True for norm={self.norm!r} (the branch "
                "already ends with its weight, h = W_k f(N(...))), got False"
            )
        object.__setattr__(self, "residual", bool(self.residual))
        object.__setattr__(self, "shortcut", int(self.shortcut))
        object.__setattr__(self, "final_activation", bool(self.final_activation))

    def activations(self) -> tuple[str, ...]:
        """The activation after each of the k weight layers of the branch ("identity" where
        none is applied): for none and bn_post f after every W_i, except the last when
        ``final_activation`` is False; for bn_pre the f that precedes W_i."""
        acts = [self.activation] * self.shortcut
        if not self.final_activation:
            acts[-1] = "identity"
        return tuple(acts)

    @property
    def name(self) -> str:
        """Short label used in results and plots, e.g. ``'relu-bn_pre-plain'``; a branch of
        k > 1 weight layers adds ``-k2``, one without its last activation ``-linear``
        (``'relu-none-residual-k2-linear'``)."""
        name = f"{self.activation}-{self.norm}-{'residual' if self.residual else 'plain'}"
        if self.shortcut != 1:
            name += f"-k{self.shortcut}"
        if not self.final_activation:
            name += "-linear"
        return name

    @classmethod
    def from_name(cls, name: str) -> Block:
        """Inverse of :attr:`name`."""
        parts = name.split("-") if isinstance(name, str) else []
        final_activation = not (len(parts) > 3 and parts[-1] == "linear")
        if not final_activation:
            parts = parts[:-1]
        shortcut = 1
        if len(parts) == 4 and parts[3][:1] == "k" and parts[3][1:].isdigit():
            shortcut = int(parts[3][1:])
            parts = parts[:3]
        if len(parts) != 3 or parts[2] not in ("residual", "plain"):
            raise ValueError(
                f"block name must look like 'relu-bn_post-residual' "
                f"(activation-norm-residual|plain[-k2][-linear]), got {name!r}"
            )
        return cls(
            activation=parts[0],
            norm=parts[1],
            residual=parts[2] == "residual",
            shortcut=shortcut,
            final_activation=final_activation,
        )


def all_blocks(activations: tuple[str, ...] = ACTIVATIONS) -> tuple[Block, ...]:
    """The paper's 12 architectures: activation x norm x (residual, plain); or the same with
    other ``activations``."""
    return tuple(
        Block(activation=a, norm=nm, residual=r)
        for r in (True, False)
        for nm in NORMS
        for a in activations
    )


def check_all(
    name: str, value: Any, ok, allowed: str, integer: bool, required: bool = False
) -> None:
    """Raise ValueError naming ``name``, the first bad value and what is ``allowed`` unless
    every entry of ``value`` is a finite real number (an integer if ``integer``) with ``ok``
    true. None passes unless ``required``.

    A traced value (inside ``jax.jit``, ``vmap`` or ``grad``) cannot be inspected: inside
    :func:`traced_domain` (every public function of :mod:`meanfield.theory`) the condition is
    recorded as a traced boolean, and that function returns NaN wherever it fails; elsewhere
    a traced value passes (the engines check their values before they trace them)."""
    if value is None:
        if required:
            raise ValueError(f"{name} must be {allowed}, got None")
        return
    if is_traced(value):
        _record(value, ok, integer)
        return
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    arr = np.asarray(value)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if integer and not np.issubdtype(arr.dtype, np.integer):
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
    bad = ~(np.isfinite(arr) & ok(arr))
    if np.any(bad):
        shown = arr[bad].ravel()[0].item() if arr.ndim else arr.item()
        raise ValueError(f"{name} must be {allowed}, got {shown!r}")


# The conditions recorded on traced values by the checks, while a traced_domain is active.
_DOMAIN: contextvars.ContextVar[list | None] = contextvars.ContextVar("domain", default=None)


@contextlib.contextmanager
def traced_domain():
    """Collect, in the list this yields, one traced boolean per check of a traced value made
    while it is active (true where that value is allowed); a nested one collects its own."""
    token = _DOMAIN.set([])
    try:
        yield _DOMAIN.get()
    finally:
        _DOMAIN.reset(token)


def _record(value: Any, ok, integer: bool) -> None:
    """Append to the active :func:`traced_domain` where the traced ``value`` is finite, an
    integer if ``integer``, and ``ok``."""
    conditions = _DOMAIN.get()
    if conditions is None:
        return
    import jax.numpy as jnp

    v = jnp.asarray(value)
    if jnp.issubdtype(v.dtype, jnp.complexfloating):
        conditions.append(jnp.zeros(v.shape, bool))
        return
    good = jnp.isfinite(v) & ok(v)
    if integer and jnp.issubdtype(v.dtype, jnp.inexact):
        good = good & (v == jnp.round(v))
    conditions.append(good)


def check_depth(depth: Any, name: str = "depth") -> None:
    """Raise ValueError unless ``depth`` is an integer >= 1 (or an array of them)."""
    check_all(name, depth, lambda a: a >= 1, "an integer >= 1", integer=True, required=True)


def check_width(width: Any, name: str = "width") -> None:
    """Raise ValueError unless ``width`` is a finite number >= 1 (or an array of them)."""
    check_all(name, width, lambda a: a >= 1, "a finite number >= 1", integer=False, required=True)


def check_var_w(var_w: Any) -> None:
    """Raise ValueError unless ``var_w`` is a finite number > 0 (or an array of them)."""
    check_all("var_w", var_w, lambda a: a > 0, "a finite number > 0", integer=False, required=True)


def check_positive(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is finite and > 0 (used for c, batch, ...)."""
    check_all(name, value, lambda a: a > 0, "a finite number > 0", integer=False, required=True)


def check_nonnegative(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is finite and >= 0 (a branch scale, ...)."""
    check_all(name, value, lambda a: a >= 0, "a finite number >= 0", integer=False, required=True)


def check_finite(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a finite real number (or an array of them)."""
    check_all(name, value, lambda a: a == a, "a finite number", integer=False, required=True)


def check_layer(layer: Any, depth: Any = None) -> None:
    """Raise ValueError unless 0 <= layer (<= depth when both are given); a traced layer or
    depth is recorded as :func:`check_all` says."""
    check_all("layer", layer, lambda a: a >= 0, "an integer >= 0", integer=True, required=True)
    if depth is None:
        return
    if is_traced(layer) or is_traced(depth):
        _record(layer, lambda a: a <= depth, integer=False)
        return
    if np.any(np.asarray(layer) > np.asarray(depth)):
        raise ValueError(f"layer must be <= depth, got layer={layer!r}, depth={depth!r}")


def check_scalar(name: str, value: Any, hint: str = "") -> None:
    """Raise ValueError unless ``value`` is one number (an array of shape (), which may be
    traced), not an array of several; ``hint`` says where arrays are taken instead."""
    shape = np.shape(value) if not is_traced(value) else value.shape
    if shape != ():
        extra = f"; {hint}" if hint else ""
        raise ValueError(f"{name} must be a scalar (one number{extra}), got shape {shape}")


def check_key(key: Any, name: str = "key") -> None:
    """Raise ValueError unless ``key`` is one PRNG key: a typed key of shape ()
    (``jax.random.key(seed)``) or one raw uint32 key (``jax.random.PRNGKey(seed)``), not an
    array of keys such as ``jax.random.split(key, 4)``."""
    import jax
    import jax.numpy as jnp

    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return
        what = f"an array of keys of shape {key.shape}"
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.ndim == 1:
        return
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        what = f"an array of raw keys of shape {key.shape}"
    else:
        what = repr(key)
    raise ValueError(
        f"{name} must be one PRNG key from jax.random.key(seed), got {what} (give one key; "
        "keys from jax.random.split are for jax.vmap)"
    )


def check_max_depth(depth: Any, max_depth: int | None) -> int:
    """The static length - 1 of per-layer arrays: ``max_depth``, or a concrete ``depth`` when
    it is None (a traced depth needs ``max_depth``); ``depth`` is checked to be an integer
    >= 1 and, where concrete, <= ``max_depth``."""
    if max_depth is None:
        if is_traced(depth):
            raise ValueError("max_depth must be given when depth is traced (e.g. under jax.vmap)")
        max_depth = static_int("depth", depth)
    else:
        max_depth = static_int("max_depth", max_depth)
        check_depth(depth)
        if not is_traced(depth) and np.any(np.asarray(depth) > max_depth):
            raise ValueError(f"depth must be <= max_depth={max_depth}, got {depth!r}")
    check_depth(depth)
    return max_depth


def static_int(name: str, value: Any) -> int:
    """A concrete Python int >= 1 (a size that fixes array shapes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
            value = int(value)
        else:
            raise ValueError(f"{name} must be a Python integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a Python integer >= 1, got {value!r}")
    return int(value)
