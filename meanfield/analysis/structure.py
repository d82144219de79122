"""What the analyses ask of a network, answered by reading its tree.

Every analysis takes a network as a preset :class:`~meanfield.core.architecture.Block` or as a
:mod:`meanfield.layers` tree. The questions they ask of it (is there a BatchNorm, whose batch
statistics couple the inputs? is the network positively homogeneous, so that Euler's identity
holds? which preset's closed forms apply? how many activations does the recursion evaluate by
quadrature?) are answered here from the tree's layers, never from a preset's fields: a preset's
``norm`` is not "none" for LayerNorm and RMSNorm, which act per input and have no batch
dependence, and a tree has no such fields at all.
"""

from __future__ import annotations

from typing import Any

from meanfield import layers
from meanfield.core.architecture import Block

__all__ = [
    "has_batchnorm",
    "has_norm",
    "is_homogeneous",
    "preset",
    "quadrature_activations",
    "tree_of",
]

_NORMS = (layers.BatchNorm, layers.LayerNorm, layers.RMSNorm)
# Non-homogeneous activations whose Gaussian expectations are closed forms for a centred input
# (meanfield.core.activations.expectations); every other one is integrated by quadrature.
_CLOSED_FORM_CENTRED = ("erf", "sin")


def tree_of(network: Any, argument: str = "block") -> layers.Layer:
    """The :mod:`meanfield.layers` tree of ``network`` (a Block's
    :func:`~meanfield.layers.block_tree`, or the tree itself, which must have a Dense layer:
    :func:`~meanfield.layers.as_tree`); ValueError naming ``argument`` and what it may be
    otherwise."""
    if not isinstance(network, (Block, layers.Layer)):
        raise ValueError(
            f"{argument} must be a meanfield.Block or a meanfield.layers tree (e.g. "
            f"meanfield.layers.residual(meanfield.layers.serial(...))), got {network!r}"
        )
    return layers.as_tree(network)


def has_batchnorm(network: Any) -> bool:
    """Whether a BatchNorm is in the network: the only layer whose statistics are taken over
    the batch, so the only source of a finite-batch effect."""
    return layers.has_batchnorm(tree_of(network))


def has_norm(network: Any) -> bool:
    """Whether any norm (BatchNorm, LayerNorm, RMSNorm) is in the network."""
    return any(isinstance(x, _NORMS) for x in layers.walk(tree_of(network)))


def is_homogeneous(network: Any) -> bool:
    """Whether the block map is positively homogeneous of degree 1 (z -> c z gives c times the
    output for c > 0): no norm (a norm is of degree 0) and only positively homogeneous
    activations (the arc-cosine family: identity, relu, leaky_relu, abs). Dense layers,
    serial composition and the residual sum keep the degree."""
    tree = tree_of(network)
    return not has_norm(tree) and all(
        x.homogeneous for x in layers.walk(tree) if isinstance(x, layers.Activation)
    )


def preset(network: Any) -> Block | None:
    """The preset Block the network is (a Block itself, or the preset whose tree it is), or None:
    what the closed forms of :mod:`meanfield.theory`, written for presets, apply to."""
    if isinstance(network, Block):
        return network
    return layers.preset_of(tree_of(network))


def _quadratures(layer: layers.Layer, flags: layers.Flags) -> tuple[int, layers.Flags]:
    """(activations of ``layer`` evaluated by quadrature, the flags of its output) for an input
    with ``flags``: the flags decide whether an erf or a sin sees a centred input."""
    if isinstance(layer, layers.Serial):
        count = 0
        for child in layer.layers:
            k, flags = _quadratures(child, flags)
            count += k
        return count, flags
    if isinstance(layer, layers.Residual):
        count, out = _quadratures(layer.branch, flags)
        return count, layers.Flags(*(a and b for a, b in zip(flags, out, strict=True)))
    count = 0
    if isinstance(layer, layers.Activation) and not (layer.identity or layer.homogeneous):
        closed = layer.activation in _CLOSED_FORM_CENTRED and flags.centred
        count = int(not closed)
    return count, layer.flags(flags)


def quadrature_activations(network: Any) -> int:
    """How many activations of one block the recursion integrates by Gauss-Hermite quadrature
    (tanh, gelu, silu, ... and any callable; erf and sin where their input has a mean): each
    costs a grid of :data:`meanfield.core.activations.DEGREE_2D`² nodes per layer and per
    point, where the others are closed forms. For inputs N(0, I)."""
    tree = tree_of(network)
    flags = layers.check_mean_field(tree, layers.CENTRED_INPUT_FLAGS)
    return _quadratures(tree, flags)[0]
