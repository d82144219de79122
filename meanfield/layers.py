"""The network language: every layer kind defined once, with what every engine needs from it.

A network is ``depth`` copies of one *block*, a small tree of layers; the statistics are
recorded at block boundaries (layer l = 0..L). The tree is built from three layer kinds and
two combinators:

==========================  ==================================================================
``Dense()``                 u = a W, W (n x n) drawn by the rule an init assigns to this Dense
                            (by its position in the block: variance, law, see
                            :func:`meanfield.inits.branch_init`)
``Activation(name)``        f elementwise: "identity" or "relu" (positively homogeneous)
``BatchNorm()``             per unit over the batch: (z - mean) / std, no ε, no affine
``serial(*layers)``         the layers one after another
``residual(branch, scale)`` z + β branch(z); β = ``scale``, or the init's branch scale if None
==========================  ==================================================================

so ``Block("relu", "bn_pre", shortcut=2)`` is
``residual(serial(BatchNorm(), Activation("relu"), Dense(), BatchNorm(), Activation("relu"),
Dense()))`` (:func:`block_tree`), and a tree that is not a preset is as good as one::

    unit = serial(BatchNorm(), Activation("relu"), Dense())
    meanfield.recursions.profile(residual(serial(unit, unit)), depth=100, width=256, var_w=2/256)

Each kind carries, in its class below:

* ``finite(x, net)``: its map on one sampled network's (batch, width) signal, used by both
  Monte-Carlo engines. ``Dense`` asks the engine for the product (``net.dense``), so explicit
  and weight-free weights are one switch. Signals are carried divided by the block input's
  scale (``Signal.relative``) until a BatchNorm makes them scale-free, which is exact for
  positively homogeneous layers (docs/theory.md §6).
* ``mean_field(s, mf)``: its exact infinite-width forward map on the :class:`State` (second
  moment q, mean m, pooled variance v, kernel gap q - k with k the cross moment of distinct
  inputs, all in log form relative to the block input), and ``backward(ct, mf)``, its rule for
  the cotangent's second moment p and batch-sum moment S (:class:`Cotangent`).
* ``conv(v, net)``: its convolutional Flax counterpart on a (batch, height, width, channels)
  array, inside the trainer's block module (:mod:`meanfield.models`: ``net.conv`` is a k x k
  convolution with the init's kernel, ``net.batch_norm`` Flax's BatchNorm).
* ``flags(f)``: what the mean field knows about its output (:class:`Flags`), so that a tree
  whose mean field is not exact (an activation of a non-Gaussian signal, a BatchNorm whose
  units differ in their variance over inputs) is refused before anything is computed.

No engine holds a ladder over layer kinds: a new activation or norm is one class here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meanfield import architecture as arch
from meanfield.gaussian import activation_moments, relu_kernel_gap_ratio

__all__ = [
    "Activation",
    "BatchNorm",
    "Cotangent",
    "Dense",
    "Flags",
    "Layer",
    "Residual",
    "Serial",
    "Signal",
    "State",
    "block_tree",
    "check_mean_field",
    "dense_activations",
    "dense_count",
    "has_batchnorm",
    "residual",
    "serial",
]


class Flags(NamedTuple):
    """What the mean field knows about a signal (static, per position in the tree).

    ``gaussian``: each unit is Gaussian over the network's weights, jointly over inputs (a Dense
    output, or a sum of such and the Gaussian input); ``centred``: zero mean; ``kzero``: distinct
    inputs uncorrelated (k = 0, a BatchNorm output); ``uniform``: every unit has the same
    variance over inputs (what BatchNorm's backward rule divides by)."""

    gaussian: bool
    centred: bool
    kzero: bool
    uniform: bool


# The network input x: Gaussian, one law for every unit; mean and cross moments as given.
INPUT_FLAGS = Flags(gaussian=True, centred=False, kzero=False, uniform=True)


def _meet(f: Flags, g: Flags) -> Flags:
    return Flags(*(a and b for a, b in zip(f, g, strict=True)))


@dataclasses.dataclass(frozen=True)
class Signal:
    """One network's signal at a point of the block: ``x`` (batch x width) is the signal itself
    when ``relative`` is False, else the signal divided by the block input's scale s (carried
    by the engine as log s). ``centred``: the rows sum to zero over the batch (structural rank
    of the weight-free engine)."""

    x: jax.Array
    relative: bool
    centred: bool


@dataclasses.dataclass(frozen=True)
class State:
    """Mean-field state of a signal: ``a`` = log q, ``t`` = m / √q, ``w`` = log v, ``r`` = log of
    the kernel gap q - k (the unit variance over inputs), relative to the block input's q0, v0
    and u0 when ``relative`` (so O(1) within a block, however large the input), else absolute
    (after a BatchNorm)."""

    a: jax.Array
    t: jax.Array
    w: jax.Array
    r: jax.Array
    relative: bool
    flags: Flags


class Cotangent(NamedTuple):
    """The backward map from the block output to a point of the block, in logs: the second
    moment p of dE/d(signal) there is e^lpp · p_out, its batch-sum moment S = (1/B) Σ_{b,b'}
    E dE_b dE_b' is e^lsp · p_out + e^lss · S_out (both linear in the output's (p, S))."""

    lpp: jax.Array
    lsp: jax.Array
    lss: jax.Array

    def plus(self, c: jax.Array) -> Cotangent:
        return Cotangent(*(_times(x, c) for x in self))


def _times(log_x: jax.Array, log_factor: jax.Array) -> jax.Array:
    """log(x · factor), -inf where x = 0 (a zero cotangent stays zero through 0/0)."""
    return jnp.where(jnp.isneginf(log_x), -jnp.inf, log_x + log_factor)


def _neg_inf(x: jax.Array) -> jax.Array:
    return jnp.full_like(x, -jnp.inf)


class Layer:
    """A layer kind. Subclasses are frozen dataclasses (hashable: trees are static arguments of
    the compiled engines) and define ``finite``, ``mean_field``, ``backward`` and ``flags``."""

    def children(self) -> tuple[Layer, ...]:
        return ()

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """u = a W with a fresh n x n weight per block; its variance and law come from the init
    rule, by the Dense's position in the block (0 = first)."""

    def finite(self, x: Signal, net: Any) -> Signal:
        return Signal(net.dense(x.x, x.centred), x.relative, x.centred)

    def mean_field(self, s: State, mf: Any) -> State:
        log_alpha = mf.next_log_alpha()
        mf.push((s, log_alpha))
        a = s.a + log_alpha
        # Centred Gaussian with kernel α(q, k): v = q, gap = α·gap.
        w = a - mf.log_w0 if s.relative else a
        return State(a, jnp.zeros_like(s.t), w, s.r + log_alpha, s.relative, self.flags(s.flags))

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        s, log_alpha = mf.pop()
        log_q, log_gap = mf.absolute(s)
        log_delta = jnp.minimum(mf.log_delta(s), 0.0)
        log_k = log_q + jnp.log1p(-jnp.exp(log_delta))  # k = q - gap: -inf when k = 0
        mf.record_weight(ct, log_gap, log_k)
        return ct.plus(log_alpha)

    def flags(self, f: Flags) -> Flags:
        return Flags(gaussian=True, centred=True, kzero=f.kzero, uniform=True)

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return net.conv(v)


@dataclasses.dataclass(frozen=True)
class Activation(Layer):
    """f applied elementwise. The mean field needs a centred Gaussian input (a Dense output,
    or a BatchNorm of a Gaussian signal); its expectations are closed forms
    (:mod:`meanfield.gaussian`: the arc-cosine kernels of ReLU)."""

    activation: str = "relu"

    def __post_init__(self):
        if self.activation not in arch.ACTIVATIONS:
            raise ValueError(
                f"Activation.activation must be one of {arch.ACTIVATIONS}, got {self.activation!r}"
            )

    @property
    def name(self) -> str:
        return self.activation

    @property
    def identity(self) -> bool:
        return self.activation == "identity"

    def finite(self, x: Signal, net: Any) -> Signal:
        if self.identity:
            return x
        return Signal(jax.nn.relu(x.x), x.relative, False)

    def mean_field(self, s: State, mf: Any) -> State:
        flags = self.flags(s.flags)
        if self.identity:
            return State(s.a, s.t, s.w, s.r, s.relative, flags)
        zero = jnp.isneginf(s.a)  # an identically zero input (a zero weight before it)
        log_delta = jnp.where(zero, 0.0, mf.log_delta(s))
        mf.push((zero, log_delta))
        fm = activation_moments(self.activation)
        ratio = relu_kernel_gap_ratio(1.0, jnp.exp(log_delta))  # gap out / gap in
        log_w_ref = mf.log_w0 if s.relative else 0.0
        return State(
            s.a + math.log(fm.e2),
            jnp.full_like(s.t, fm.e1 / math.sqrt(fm.e2)),
            s.a + math.log(fm.b) - log_w_ref,
            s.r + jnp.log(ratio),
            s.relative,
            flags,
        )

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        if self.identity:
            return ct
        zero, log_delta = mf.pop()
        # E f'(u)² = 1/2; E f'(u_a) f'(u_b) = (π - θ)/2π for inputs of correlation cos θ, so
        # a - d = θ/2π. relu'(0) = 0 (JAX's and PyTorch's convention): nothing flows back
        # through an identically zero input.
        theta = 2.0 * jnp.arcsin(jnp.sqrt(jnp.clip(jnp.exp(log_delta), 0.0, 2.0) / 2.0))
        log_a = jnp.where(zero, -jnp.inf, math.log(0.5))
        log_d = jnp.where(zero, -jnp.inf, jnp.log((jnp.pi - theta) / (2.0 * jnp.pi)))
        log_a_minus_d = jnp.where(zero, -jnp.inf, jnp.log(theta / (2.0 * jnp.pi)))
        lsp = jnp.logaddexp(_times(ct.lpp, log_a_minus_d), _times(ct.lsp, log_d))
        return Cotangent(_times(ct.lpp, log_a), lsp, _times(ct.lss, log_d))

    def flags(self, f: Flags) -> Flags:
        if self.identity:
            return f
        if not (f.gaussian and f.centred):
            raise ValueError(
                f"Activation({self.activation!r}) has no exact mean field here: its input must "
                "be a centred Gaussian signal (the output of a Dense, or a BatchNorm of a "
                f"Gaussian signal), got a signal with {f}"
            )
        # Units differ in their variance over inputs unless distinct inputs are uncorrelated.
        return Flags(gaussian=False, centred=False, kzero=False, uniform=f.kzero)

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return v if self.identity else jax.nn.relu(net.pre_activation(v))


@dataclasses.dataclass(frozen=True)
class BatchNorm(Layer):
    """(z - mean_b z) / std_b z per unit over the batch (biased variance, no ε, no affine); a
    unit constant over the batch maps to 0. In the mean field (population statistics) the
    output has q = 1, m = 0, k = 0, and the backward pass divides p by the unit variance of the
    input (the batch-mean terms of BN's backward are O(1/B); its batch sum is exactly 0)."""

    def finite(self, x: Signal, net: Any) -> Signal:
        z = x.x
        mean = jnp.mean(z, axis=0, keepdims=True)
        fixed = getattr(net, "fixed_batch_statistics", False)  # the Jacobian's convention
        centred = z - (jax.lax.stop_gradient(mean) if fixed else mean)
        var = jnp.mean(centred**2, axis=0, keepdims=True)
        if fixed:
            var = jax.lax.stop_gradient(var)
        positive = var > 0
        inv = jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, var, 1.0)), 0.0)
        return Signal(centred * inv, False, True)

    def mean_field(self, s: State, mf: Any) -> State:
        mf.push(mf.absolute(s)[1])  # log of the unit variance it divides by
        zero = jnp.zeros_like(s.a)
        return State(zero, zero, zero, zero, False, self.flags(s.flags))

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        log_unitvar = mf.pop()
        return Cotangent(_times(ct.lpp, -log_unitvar), _neg_inf(ct.lsp), _neg_inf(ct.lss))

    def flags(self, f: Flags) -> Flags:
        if not f.uniform:
            raise ValueError(
                "BatchNorm() has no exact mean field here: the variance over inputs of its "
                "input differs between units (a nonlinear activation of correlated inputs "
                "before it, with no BatchNorm or Dense in between), so its backward pass is "
                "not a division by one unit variance"
            )
        return Flags(gaussian=f.gaussian, centred=True, kzero=True, uniform=True)

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return net.batch_norm(v)


@dataclasses.dataclass(frozen=True)
class Serial(Layer):
    """The layers one after another."""

    layers: tuple[Layer, ...]

    def children(self) -> tuple[Layer, ...]:
        return self.layers

    @property
    def name(self) -> str:
        return "-".join(layer.name for layer in self.layers)

    def finite(self, x: Signal, net: Any) -> Signal:
        for layer in self.layers:
            x = layer.finite(x, net)
        return x

    def mean_field(self, s: State, mf: Any) -> State:
        for layer in self.layers:
            s = layer.mean_field(s, mf)
        return s

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        for layer in reversed(self.layers):
            ct = layer.backward(ct, mf)
        return ct

    def flags(self, f: Flags) -> Flags:
        for layer in self.layers:
            f = layer.flags(f)
        return f

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        for layer in self.layers:
            v = layer.conv(v, net)
        return v


@dataclasses.dataclass(frozen=True)
class Residual(Layer):
    """z + β branch(z), β = ``scale`` (>= 0), or the init rule's branch scale when None. In the
    mean field branch and skip are independent: second moments, variances and kernel gaps add,
    and so do the cotangent moments going back."""

    branch: Layer
    scale: float | None = None

    def __post_init__(self):
        if not isinstance(self.branch, Layer):
            raise ValueError(f"residual's branch must be a layer, got {self.branch!r}")
        if self.scale is not None:
            arch.check_nonnegative("scale", self.scale)
            object.__setattr__(self, "scale", float(self.scale))

    def children(self) -> tuple[Layer, ...]:
        return (self.branch,)

    @property
    def name(self) -> str:
        beta = "" if self.scale is None else f"*{self.scale!r}"
        return f"res[{self.branch.name}]{beta}"

    def _log_scale(self, mf: Any) -> jax.Array:
        if self.scale is None:
            return mf.log_scale
        return math.log(self.scale) if self.scale > 0 else -math.inf

    def finite(self, x: Signal, net: Any) -> Signal:
        h = self.branch.finite(x, net)
        beta = net.scale if self.scale is None else self.scale
        value = beta * h.x
        if x.relative and not h.relative:  # bring a scale-free branch to the skip's scale
            value = value * jnp.exp(-net.log_s)
        return Signal(x.x + value, x.relative, False)

    def mean_field(self, s: State, mf: Any) -> State:
        h = self.branch.mean_field(s, mf)
        two_log_beta = 2.0 * self._log_scale(mf)
        h = dataclasses.replace(h, a=h.a + two_log_beta, w=h.w + two_log_beta, r=h.r + two_log_beta)
        if s.relative and not h.relative:
            h = mf.to_relative(h)
        return merge(s, h, self.flags(s.flags))

    def backward(self, ct: Cotangent, mf: Any) -> Cotangent:
        inner = self.branch.backward(ct.plus(2.0 * self._log_scale(mf)), mf)
        return Cotangent(*(jnp.logaddexp(x, y) for x, y in zip(ct, inner, strict=True)))

    def flags(self, f: Flags) -> Flags:
        return _meet(f, self.branch.flags(f))

    def conv(self, v: jax.Array, net: Any) -> jax.Array:
        return v + net.branch_output(self.branch.conv(v, net), self.scale)


def merge(s: State, h: State, flags: Flags) -> State:
    """The state of s + h for independent s and h given in the same form: each increment is
    formed from O(1) terms, q_out/q_s = 1 + q_h/q_s + 2 t_s t_h √(q_h/q_s) and
    log v_out = log v_s + softplus(log v_h - log v_s) (likewise the gap)."""
    ratio = h.a - s.a
    sqrt_ratio = jnp.exp(0.5 * ratio)
    log_growth = jnp.log1p(jnp.exp(ratio) + 2.0 * sqrt_ratio * h.t * s.t)
    t = (s.t + sqrt_ratio * h.t) * jnp.exp(-0.5 * log_growth)
    w = s.w + _softplus(h.w - s.w)
    r = s.r + _softplus(h.r - s.r)
    return State(s.a + log_growth, t, w, r, s.relative, flags)


def _softplus(x: jax.Array) -> jax.Array:
    """log(1 + e^x), 0 at x = -inf."""
    return jnp.logaddexp(0.0, x)


# ------------------------------------------------------------------------------------------
# Building and reading trees


def serial(*layers: Layer) -> Serial:
    """The layers one after another (nested serials are flattened)."""
    flat: list[Layer] = []
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ValueError(f"serial takes layers, got {layer!r}")
        flat.extend(layer.layers if isinstance(layer, Serial) else (layer,))
    if not flat:
        raise ValueError("serial needs at least one layer")
    return Serial(tuple(flat))


def residual(branch: Layer, scale: float | None = None) -> Residual:
    """z + β branch(z): β = ``scale``, or the init's branch scale (1 for most schemes, 0 for
    SkipInit and ReZero) when None."""
    return Residual(branch, scale)


def walk(tree: Layer):
    """The layers of ``tree`` in order (pre-order)."""
    yield tree
    for child in tree.children():
        yield from walk(child)


def dense_count(tree: Layer) -> int:
    """Number of Dense layers in the block: the weights each block draws."""
    return sum(isinstance(x, Dense) for x in walk(tree))


def has_batchnorm(tree: Layer) -> bool:
    return any(isinstance(x, BatchNorm) for x in walk(tree))


def dense_activations(tree: Layer) -> tuple[str, ...]:
    """Per Dense, in order, the activation that follows it before the next Dense (or, where
    none does, the one before it; "identity" if there is none): what an init's rule reads
    (weight norm's γ, :func:`meanfield.inits.branch_init`). For a preset this is
    :meth:`~meanfield.architecture.Block.activations`."""
    leaves = [x for x in walk(tree) if isinstance(x, (Dense, Activation))]
    out = []
    for i, layer in enumerate(leaves):
        if not isinstance(layer, Dense):
            continue
        after = None
        for x in leaves[i + 1 :]:
            if isinstance(x, Dense):
                break
            after = x
            break
        before = next((x for x in reversed(leaves[:i]) if isinstance(x, Activation)), None)
        chosen = after or before
        out.append(chosen.activation if chosen is not None else "identity")
    return tuple(out)


def block_tree(block: arch.Block) -> Layer:
    """The tree of a preset :class:`~meanfield.architecture.Block` (its module docstring has
    the table): unit i is Dense, f (none); BatchNorm, Dense, f (bn_post); BatchNorm, f, Dense
    (bn_pre); the branch is the k units in order, and the block residual(branch) or, plain,
    the branch itself."""
    units = []
    for act in block.activations():
        f = Activation(act)
        if block.norm == "none":
            units.append(serial(Dense(), f))
        elif block.norm == "bn_post":
            units.append(serial(BatchNorm(), Dense(), f))
        else:
            units.append(serial(BatchNorm(), Activation(block.activation), Dense()))
    branch = serial(*units)
    return residual(branch) if block.residual else branch


def as_tree(network: Any) -> Layer:
    """A Block's tree, or the tree itself; anything else is refused by name."""
    if isinstance(network, arch.Block):
        return block_tree(network)
    if isinstance(network, Layer):
        return network
    raise ValueError(f"block must be a meanfield.Block or a meanfield.layers tree, got {network!r}")


def from_name(name: str) -> Layer:
    """The tree whose :attr:`~Layer.name` is ``name`` (e.g. ``'res[BatchNorm-relu-Dense]'``),
    the inverse of ``name`` for trees built with :func:`serial` and :func:`residual`."""

    def split(text: str) -> list[str]:
        parts, depth, start = [], 0, 0
        for i, ch in enumerate(text):
            depth += (ch == "[") - (ch == "]")
            if depth < 0:
                raise ValueError(f"unbalanced ']' in layers name {name!r}")
            if ch == "-" and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        if depth != 0:
            raise ValueError(f"unbalanced '[' in layers name {name!r}")
        return parts + [text[start:]]

    def one(text: str) -> Layer:
        if text.startswith("res[") and "]" in text:
            close = text.rindex("]")
            rest = text[close + 1 :]
            if rest and not rest.startswith("*"):
                raise ValueError(f"cannot read {text!r} in layers name {name!r}")
            return residual(serial_of(text[4:close]), float(rest[1:]) if rest else None)
        kinds = {"Dense": Dense, "BatchNorm": BatchNorm}
        if text in kinds:
            return kinds[text]()
        if text in arch.ACTIVATIONS:
            return Activation(text)
        raise ValueError(
            f"cannot read {text!r} in layers name {name!r}: a layer is Dense, BatchNorm, an "
            f"activation {arch.ACTIVATIONS} or res[...] (with *scale)"
        )

    def serial_of(text: str) -> Layer:
        items = [one(part) for part in split(text)]
        return items[0] if len(items) == 1 else serial(*items)

    if not isinstance(name, str) or not name:
        raise ValueError(f"a layers name must be a non-empty string, got {name!r}")
    return serial_of(name)


def network_from_name(name: str) -> arch.Block | Layer:
    """A preset by its name (:meth:`~meanfield.architecture.Block.from_name`), else a tree
    (:func:`from_name`): what a results file's ``block`` field reads back to."""
    try:
        return arch.Block.from_name(name)
    except ValueError:
        return from_name(name)


def check_mean_field(tree: Layer, flags: Flags = INPUT_FLAGS) -> Flags:
    """Raise ValueError, naming the layer, unless every layer of ``depth`` repeated blocks has
    an exact mean field; return the flags of the blocks' input (the weakest over depth)."""
    for _ in range(8):
        out = _meet(flags, tree.flags(flags))
        if out == flags:
            return flags
        flags = out
    return flags
