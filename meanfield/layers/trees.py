"""Building and reading trees: presets, names, counts, and the check that a tree has an exact
mean field."""

from __future__ import annotations

import functools
from typing import Any

from meanfield.core import architecture as arch
from meanfield.layers.activation import Activation
from meanfield.layers.base import INPUT_FLAGS, Flags, Layer, meet
from meanfield.layers.combinators import residual, serial
from meanfield.layers.dense import Dense
from meanfield.layers.norm import BatchNorm, LayerNorm, RMSNorm


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
    :meth:`~meanfield.core.architecture.Block.activations`."""
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
    """The tree of a preset :class:`~meanfield.core.architecture.Block` (its module docstring has
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
            norm = {"bn_pre": BatchNorm, "ln_pre": LayerNorm, "rms_pre": RMSNorm}[block.norm]
            units.append(serial(norm(), Activation(block.activation), Dense()))
    branch = serial(*units)
    return residual(branch) if block.residual else branch


def preset_of(tree: Layer) -> arch.Block | None:
    """The preset :class:`~meanfield.architecture.Block` whose tree is ``tree``, or None (what
    the closed forms, which are written for presets, apply to)."""
    return _presets_by_tree().get(tree)


@functools.lru_cache(maxsize=1)
def _presets_by_tree() -> dict:
    found: dict = {}
    for block in _all_presets():
        found.setdefault(block_tree(block), block)  # a tree two presets share: the first
    return found


def _all_presets():
    for act in arch.ACTIVATION_NAMES:
        for norm in arch.NORM_NAMES:
            for res in (True, False):
                for k in arch.SHORTCUTS:
                    for final in (True, False) if norm not in arch.PRE_NORMS else (True,):
                        yield arch.Block(act, norm, res, k, final)


def as_tree(network: Any) -> Layer:
    """A Block's tree, or the tree itself, for an engine to run; anything else is refused by
    name, and so is a tree without a Dense layer: its networks have no weight to sample (all
    are the same map), nothing for var_w or an init to set, and no weight gradient. A
    residual whose branch has no weight is fine inside a block that has one
    (``serial(residual(LayerNorm()), Dense(), Activation("relu"))``)."""
    if isinstance(network, arch.Block):
        return block_tree(network)
    if not isinstance(network, Layer):
        raise ValueError(
            f"block must be a meanfield.Block or a meanfield.layers tree, got {network!r}"
        )
    if dense_count(network) == 0:
        raise ValueError(
            "block must have at least one Dense layer (the weights that var_w or init set and "
            f"Monte-Carlo samples), got {network.name!r}, which has none: add one, e.g. "
            "serial(tree, Dense())"
        )
    return network


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
        kinds = {"Dense": Dense, "BatchNorm": BatchNorm, "LayerNorm": LayerNorm}
        kinds["RMSNorm"] = RMSNorm
        if text in kinds:
            return kinds[text]()
        if text in arch.ACTIVATION_NAMES:
            return Activation(text)
        if text.startswith("leaky_relu:"):
            return Activation("leaky_relu", float(text.split(":", 1)[1]))
        raise ValueError(
            f"cannot read {text!r} in layers name {name!r}: a layer is Dense, BatchNorm, "
            f"LayerNorm, RMSNorm, an activation {arch.ACTIVATION_NAMES} (leaky_relu:slope) "
            "or res[...] (with *scale)"
        )

    def serial_of(text: str) -> Layer:
        items = [one(part) for part in split(text)]
        return items[0] if len(items) == 1 else serial(*items)

    if not isinstance(name, str) or not name:
        raise ValueError(f"a layers name must be a non-empty string, got {name!r}")
    return serial_of(name)


def network_from_name(name: str) -> arch.Block | Layer:
    """A preset by its name (:meth:`~meanfield.core.architecture.Block.from_name`), else a tree
    (:func:`from_name`): what a results file's ``block`` field reads back to."""
    try:
        return arch.Block.from_name(name)
    except ValueError:
        return from_name(name)


def check_mean_field(tree: Layer, flags: Flags = INPUT_FLAGS) -> Flags:
    """Raise ValueError, naming the layer, unless every layer of ``depth`` repeated blocks has
    an exact mean field; return the flags of the blocks' input (the weakest over depth)."""
    for _ in range(8):
        out = meet(flags, tree.flags(flags))
        if out == flags:
            return flags
        flags = out
    return flags
