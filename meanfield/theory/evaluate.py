"""Every closed form of one architecture, evaluated at l = 0..L for comparison with the
recursions and Monte-Carlo: :func:`closed_forms` and its :class:`ClosedForm` curves."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax.typing import ArrayLike

from meanfield.core import architecture as arch
from meanfield.core.gaussian import activation_moments
from meanfield.layers import Layer, preset_of
from meanfield.theory.catalog import CATALOG, At
from meanfield.theory.common import Array, check_block, domain


class ClosedForm(NamedTuple):
    """One closed-form curve over layers l = 0..L, comparable with a profile statistic."""

    statistic: str  # a profile name: "m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw"
    label: str  # formula and source, e.g. "eq. (27), paper"
    source: str  # "paper" (the paper's formula) or "corrected" (this project's)
    kind: str  # "exact" (equals the mean-field recursion), "lower_bound" or "approximation"
    values: Array  # shape (L + 1,); NaN where undefined (e.g. l = 0 for gradients)


@domain()
def closed_forms(
    block: arch.Block | Layer,
    *,
    depth: ArrayLike,
    width: ArrayLike,
    var_w: ArrayLike,
    max_depth: int | None = None,
) -> list[ClosedForm]:
    """Every closed form of :data:`CATALOG` that applies to ``block``, evaluated at l = 0..L.

    "exact" forms must equal :func:`meanfield.recursions.profile` to floating-point
    tolerance, "lower_bound" forms must lie below it, and "approximation" forms (the paper's
    where it is approximate or wrong) may disagree; the tests check all three.

    As in :func:`~meanfield.recursions.profile`, ``depth`` may be traced (under ``jax.vmap``)
    when ``max_depth`` fixes the length; entries past ``depth`` are NaN, and so is every entry
    when a traced ``depth`` exceeds ``max_depth`` (a concrete one raises ValueError).
    ``width`` and ``var_w`` are scalars here. Blocks of other activations or norms than the
    paper's have none. ``block`` is a :class:`meanfield.Block`, or a
    :mod:`meanfield.layers` tree: the forms of the preset it equals, none if it is no preset.
    """
    if isinstance(block, Layer):
        block = preset_of(block)
        if block is None:
            return []
    check_block(block)
    if block.activation not in arch.ACTIVATIONS or block.norm not in arch.NORMS:
        return []  # the catalog is written for the paper's activations and norms
    for name, value in (("width", width), ("var_w", var_w)):
        arch.check_scalar(name, value, "jax.vmap closed_forms over it")
    max_depth = arch.check_max_depth(depth, max_depth)
    layers = jnp.arange(max_depth + 1)
    # A traced depth past max_depth cannot be refused: its curves are all NaN, not cut short.
    active = (layers <= depth) & (depth <= max_depth)
    l = jnp.minimum(layers, depth)  # keeps every formula's layer <= depth; masked below
    at = At(
        l=l,
        lp=jnp.maximum(l[1:], 1),  # layers with a weight
        L=depth,
        n=width,
        v=var_w,
        act=block.activation,
        norm=block.norm,
        k=block.shortcut,
        last=block.activations()[-1],
        fm=activation_moments(block.activation),
    )
    nan = jnp.asarray(jnp.nan, jnp.result_type(float, var_w))
    out = []
    for entry in CATALOG:
        if not entry.applies(block):
            continue
        label = entry.label.format(k=at.k, km1=at.k - 1)
        values = jnp.where(active, jnp.broadcast_to(entry.evaluate(at), active.shape), nan)
        out.append(ClosedForm(entry.statistic, label, entry.source, entry.kind, values))
    return out
