"""A grid of configurations of one block, by the recursion and by Monte-Carlo, each in one
compiled program: :func:`sweep`.

The recursion's :func:`~meanfield.recursions.profile` broadcasts its traced values (var_w, c,
gain, depth up to ``max_depth``, β, the input's second moment), so the whole grid is one
jitted call; Monte-Carlo's :func:`~meanfield.montecarlo.grid.simulate_grid` runs every
(configuration, network) as an item of one chunked, sharded program.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from meanfield import layers
from meanfield.montecarlo import Estimate
from meanfield.montecarlo.grid import grid_values, simulate_grid
from meanfield.recursions import Profile, profile

__all__ = ["Sweep", "sweep"]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What :func:`sweep` returns: ``config`` (each value of the grid as an array of shape
    (C,): var_w, c, gain, depth, input_std, input_mean, input_corr, branch_scale; var_w is
    NaN where ``init`` sets
    it), ``recursion`` (a :class:`~meanfield.recursions.Profile`, arrays (C, max_depth + 1))
    and ``montecarlo`` (an :class:`~meanfield.montecarlo.Estimate` of the same shape, or None
    when ``networks`` is 0)."""

    config: dict[str, np.ndarray]
    recursion: Profile
    montecarlo: Estimate | None


def _check_not_empty(values: dict, more: dict, key) -> None:
    """Raise ValueError naming the first swept argument (of ``values`` and ``more``, then the
    Monte-Carlo ``key``) given as an empty array: a grid of no configurations has nothing to
    compute (and its maximum depth is undefined)."""
    for name, value in (values | more).items():
        if value is None or isinstance(value, (str, bytes)):
            continue
        try:
            size = np.size(value)
        except (TypeError, ValueError):
            continue  # not array-like: the grid's own checks name it
        if size == 0:
            raise ValueError(
                f"{name} must be a number or a non-empty 1-D array of them (one value per "
                f"configuration of the grid), got an empty {type(value).__name__}: {value!r}"
            )
    if isinstance(key, jax.Array) and key.size == 0:
        raise ValueError(
            "key must be one key or a non-empty array of them (one per configuration), got an "
            f"empty array of shape {key.shape}"
        )


def _configuration(grid: dict, var_w, branch_scale) -> dict[str, np.ndarray]:
    """The grid's values as :attr:`Sweep.config`: var_w NaN where an init sets it, branch_scale
    NaN where the init's own is used."""
    config = dict(grid)
    if var_w is None:
        config["var_w"] = np.full(grid["var_w"].shape, np.nan)
    if branch_scale is None:
        config["branch_scale"] = np.full(grid["branch_scale"].shape, np.nan)
    return config


def sweep(
    block,
    *,
    depth,
    width,
    var_w=None,
    init: str | None = None,
    c=1.0,
    gain=1.0,
    max_depth: int | None = None,
    input_std=1.0,
    input_mean=0.0,
    input_corr=0.0,
    branch_scale=None,
    key: jax.Array | None = None,
    networks: int = 0,
    batch: int = 64,
    **simulate_kwargs,
) -> Sweep:
    """A grid over var_w (or the ``c`` and ``gain`` of ``init``), depth, the inputs' scale,
    mean and correlation, branch scale and seeds of one block: the recursion as one program,
    and, with ``networks`` > 0, Monte-Carlo as one program
    (:func:`meanfield.montecarlo.grid.simulate_grid`, which says how ``key`` gives seeds;
    ``simulate_kwargs`` go to it: chunk_size, precision, engine, progress).

    Values are numbers or 1-D arrays that broadcast to C configurations::

        v = np.geomspace(0.1, 10, 64) / n
        s = meanfield.sweep(block, depth=100, width=n, var_w=v, key=jax.random.key(0),
                            networks=256, batch=16)
        s.recursion.log10_m2_z[:, -1], s.montecarlo.log10_m2_z.mean[:, -1]

    Past each configuration's depth every statistic is NaN. An empty array is refused by name.
    """
    tree = layers.as_tree(block)
    _check_not_empty(
        dict(var_w=var_w, c=c, gain=gain, depth=depth, width=width, input_std=input_std),
        dict(input_mean=input_mean, input_corr=input_corr, branch_scale=branch_scale),
        key if networks else None,
    )
    grid = grid_values(var_w, init, c, gain, depth, input_std, branch_scale, input_mean, input_corr)
    max_depth = int(grid["depth"].max()) if max_depth is None else max_depth
    config = _configuration(grid, var_w, branch_scale)
    prof = profile(
        tree,
        depth=grid["depth"],
        width=width,
        var_w=None if var_w is None else grid["var_w"],
        init=init,
        c=grid["c"],
        gain=grid["gain"],
        max_depth=max_depth,
        input_m2=grid["input_std"].astype(float) ** 2 + grid["input_mean"].astype(float) ** 2,
        input_mean=grid["input_mean"],
        input_corr=grid["input_corr"],
        branch_scale=None if branch_scale is None else grid["branch_scale"],
    )
    est = None
    if networks:
        if key is None:
            raise ValueError("sweep needs a key when networks > 0 (jax.random.key(seed))")
        est = simulate_grid(
            tree,
            key=key,
            depth=grid["depth"],
            width=width,
            networks=networks,
            batch=batch,
            var_w=var_w if var_w is None else grid["var_w"],
            init=init,
            c=grid["c"],
            gain=grid["gain"],
            max_depth=max_depth,
            input_std=grid["input_std"],
            input_mean=grid["input_mean"],
            input_corr=grid["input_corr"],
            branch_scale=None if branch_scale is None else grid["branch_scale"],
            **simulate_kwargs,
        )
    return Sweep(config, prof, est)
