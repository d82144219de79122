"""K networks in one program: one network's function mapped over stacked networks
(:func:`map_seeds`), by ``jax.vmap`` or by a loop unrolled in the program, whichever is faster on
the backend (:func:`seed_map_for_backend`). The trainer and the prediction check use it;
:mod:`meanfield.training.models` re-exports these names.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["SEED_MAPS", "map_seeds", "seed_map_for_backend"]

SEED_MAPS = ("auto", "vmap", "unroll")


def seed_map_for_backend(how: str = "auto") -> str:
    """``"vmap"`` or ``"unroll"``: ``auto`` unrolls on CPU, where XLA runs the grouped
    convolutions of a vmapped conv net 15-50x slower than K separate ones (docs/performance.md),
    and vmaps elsewhere."""
    if how not in SEED_MAPS:
        raise ValueError(f"seed_map must be one of {SEED_MAPS}, got {how!r}")
    if how == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return how


def map_seeds(fn, in_axes: tuple, how: str = "auto"):
    """``fn`` of one network mapped over stacked networks (axis 0 where ``in_axes`` is 0,
    shared where it is None), by ``jax.vmap`` or by an unrolled loop in the same program.

    Both give the same result up to float rounding; the loop exists for XLA:CPU (see
    :func:`seed_map_for_backend`).
    """
    how = seed_map_for_backend(how)
    if how == "vmap":
        return jax.vmap(fn, in_axes=in_axes)

    def unrolled(*args):
        sizes = {
            jax.tree_util.tree_leaves(a)[0].shape[0]
            for a, ax in zip(args, in_axes, strict=True)
            if ax == 0 and jax.tree_util.tree_leaves(a)
        }
        if len(sizes) != 1:
            raise ValueError(f"mapped arguments must share one leading size, got {sorted(sizes)}")
        (k,) = sizes
        outs = [
            fn(
                *(
                    jax.tree_util.tree_map(lambda v, i=i: v[i], a) if ax == 0 else a
                    for a, ax in zip(args, in_axes, strict=True)
                )
            )
            for i in range(k)
        ]
        return jax.tree_util.tree_map(lambda *vs: jnp.stack(vs), *outs)

    return unrolled
