"""Depth-aware initialization from the mean-field recursion: the largest weight variance that
keeps a network's forward growth and gradient spread inside a band.

For a block, depth L and width n, :func:`solve_init` finds the largest Var[w] such that, in the
exact infinite-width recursion (:func:`meanfield.recursions.profile`, inputs N(0, I)),

* the forward growth q_L / q_0 = E[(z^L)²] / E[(z^0)²] is at most ``max_forward_growth``, and
* the gradient spread max_l Var[dE/dW^l] / min_l Var[dE/dW^l] (l = 1..L) is at most
  ``max_gradient_spread``,

and the same holds for every smaller Var[w]. "Largest" because a smaller variance always stays
inside the band (the network tends to the identity as Var[w] -> 0) but learns through weaker
branches; the solution is the strongest branch the band allows, the role c plays in the
paper's c/(nL).

How: both statistics of a grid of Var[w] (log-spaced, ``grid`` >= 2 points from
``1e-6 / (nL)`` to ``10 / n``, both ends included) come from one vmapped recursion; the first
grid interval in which a bound is crossed brackets the answer, and a safeguarded Newton
iteration on log Var[w] solves log(statistic) = log(bound) there: derivatives by forward-mode
differentiation through the recursion, each evaluation narrowing the bracket, bisection when
a Newton step would leave it or stops halving it, and the rest of each batch of ``grid``
points spread evenly over the bracket. The binding statistic ends within a relative ``rtol``
of its bound. No sampling.

Example:
    >>> import meanfield
    >>> sol = meanfield.solve_init(meanfield.Block("identity", "none"), depth=100, width=256,
    ...                            max_forward_growth=10.0)
    >>> round(sol.forward_growth, 4), sol.binding
    (10.0, 'forward_growth')
    >>> round(sol.var_w * 256, 6) == round(10 ** (1 / 100) - 1, 6)  # (1 + α)^L = 10
    True
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from meanfield import montecarlo, recursions
from meanfield.analysis.rootfind import Bracket, refine
from meanfield.analysis.solution import InitSolution
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block

__all__ = [
    "InitSolution",
    "band_curves",
    "log10_band_statistics",
    "montecarlo_band_statistics",
    "solve_init",
]

_LN10 = math.log(10.0)


def log10_band_statistics(block: Block, depth: int, width, var_w) -> tuple[jax.Array, jax.Array]:
    """log10 of (q_L / q_0, max_l / min_l Var[dE/dW^l]) from the recursion; ``var_w`` may be
    an array or traced (differentiable)."""
    prof = recursions.profile(block, depth=depth, width=width, var_w=var_w)
    growth = prof.log10_m2_z[..., -1] - prof.log10_m2_z[..., 0]
    dw = prof.log10_var_dw[..., 1:]
    return growth, jnp.max(dw, axis=-1) - jnp.min(dw, axis=-1)


def _check_bound(name: str, value) -> float:
    arch.check_positive(name, value)
    if not value > 1:
        raise ValueError(f"{name} must be > 1 (a ratio of second moments), got {value!r}")
    return float(value)


def _check_grid(grid) -> int:
    message = (
        "grid must be a Python integer >= 2 (the number of Var[w] from 1e-6/(nL) to 10/n, "
        f"both ends included), got {grid!r}"
    )
    try:
        grid = arch.static_int("grid", grid)
    except ValueError:
        raise ValueError(message) from None
    if grid < 2:
        raise ValueError(message)
    return grid


def _check_depths(depth, max_depth) -> tuple[int, int]:
    """The checked (depth, max_depth), max_depth defaulting to depth."""
    depth = arch.static_int("depth", depth)
    max_depth = depth if max_depth is None else arch.static_int("max_depth", max_depth)
    if max_depth < depth:
        raise ValueError(f"max_depth must be >= depth={depth}, got {max_depth!r}")
    return depth, max_depth


def _evaluator(block: Block, max_depth: int, depth: int, width: float):
    """``evaluate(log_v)``: :func:`_evaluate` at the points ``log_v`` in float64, as NumPy."""

    def evaluate(log_v):
        with jax.enable_x64(True):
            values, slopes = _evaluate(
                block,
                max_depth,
                jnp.asarray(depth, jnp.int32),
                jnp.asarray(width, jnp.float64),
                jnp.asarray(log_v, jnp.float64),
            )
            return np.asarray(values), np.asarray(slopes)

    return evaluate


def _first_crossing(block: Block, log_v, values, over, growth_max, spread_max) -> int:
    """The index i of the first grid point outside a bound (``over``: per point and statistic),
    so that [log_v[i - 1], log_v[i]] brackets the answer; ValueError when the first point is
    already outside or no point is."""
    if over[0].any():
        first = 10.0 ** values[0]
        raise ValueError(
            f"the bounds are exceeded already at var_w = {math.exp(log_v[0]):.3g} "
            f"(growth {first[0]:.3g}, spread {first[1]:.3g}): "
            f"max_forward_growth={growth_max}, max_gradient_spread={spread_max}"
        )
    crossed = np.flatnonzero(over.any(axis=1))
    if crossed.size == 0:
        last = 10.0 ** values[-1]
        raise ValueError(
            f"block {block.name} stays within the bounds at all {log_v.size} grid points up to "
            f"var_w = 10/n (growth {last[0]:.3g}, spread {last[1]:.3g} there): the band does "
            "not constrain it"
        )
    return int(crossed[0])


def solve_init(
    block: Block,
    *,
    depth: int,
    width: float,
    max_forward_growth: float = 10.0,
    max_gradient_spread: float = 10.0,
    grid: int = 256,
    rtol: float = 1e-6,
    max_depth: int | None = None,
) -> InitSolution:
    """The largest Var[w] keeping forward growth and gradient spread within the bounds (module
    docstring). Computed in float64.

    The binding statistic is returned within a relative ``rtol`` of its bound
    (``|statistic / bound - 1| <= rtol``; in practice far closer, since the iteration runs on
    to rtol / 1000), and the other one inside its bound (to ``rtol``, should both roots
    coincide). ``grid`` (an integer >= 2) is the
    number of log-spaced Var[w] from ``1e-6 / (nL)`` to ``10 / n`` that bracket the first
    crossing, both ends included; it is also the batch of points each refining step evaluates.

    One compiled program per (block, grid, max_depth) serves every call: depth, width and the
    bounds are its traced inputs, so calls that pass the same ``max_depth`` (default
    ``depth``; it must be >= ``depth``) compile once for all of their depths, widths and
    bounds.

    Raises ValueError when the largest variance, 10/n, stays inside both bounds at every grid
    point (the band does not constrain this block: e.g. BN keeps the growth linear), when the
    smallest one, 1e-6/(nL), is already outside them, when the arguments are out of range
    (bounds must be ratios > 1), or when ``rtol`` is finer than float64 can resolve.
    """
    if not isinstance(block, Block):
        raise ValueError(f"block must be a meanfield.Block, got {block!r}")
    depth, max_depth = _check_depths(depth, max_depth)
    arch.check_width(width)
    growth_max = _check_bound("max_forward_growth", max_forward_growth)
    spread_max = _check_bound("max_gradient_spread", max_gradient_spread)
    grid = _check_grid(grid)
    arch.check_positive("rtol", rtol)
    if not rtol < 1:
        raise ValueError(f"rtol must be < 1 (a relative tolerance), got {rtol!r}")
    width = float(width)
    log_bounds = np.log10([growth_max, spread_max])
    evaluate = _evaluator(block, max_depth, depth, width)

    log_v = np.linspace(math.log(1e-6 / (width * depth)), math.log(10.0 / width), grid)
    values, slopes = evaluate(log_v)
    over = ~(values <= log_bounds)  # NaN counts as outside
    i = _first_crossing(block, log_v, values, over, growth_max, spread_max)
    # Every statistic that crosses in this interval is solved; the first root binds.
    brackets = [
        Bracket(k, log_bounds[k], *(arr[[i - 1, i]] for arr in (log_v, values, slopes)))
        for k in np.flatnonzero(over[i])
    ]
    refine(evaluate, grid, brackets, rtol)
    sol = min(brackets, key=lambda br: br.root)
    if not sol.converged:
        raise ValueError(
            f"rtol={rtol!r} is finer than float64 resolves for {_STATISTICS[sol.which]} "
            f"(relative error {sol.error:.3g} at the narrowest bracket): use a larger rtol"
        )
    g, s = (float(10.0**v) for v in sol.root_values)
    return InitSolution(
        block=block,
        depth=depth,
        width=width,
        var_w=float(math.exp(sol.root)),
        forward_growth=g,
        gradient_spread=s,
        binding=_STATISTICS[sol.which],
        max_forward_growth=growth_max,
        max_gradient_spread=spread_max,
    )


_STATISTICS = ("forward_growth", "gradient_spread")


def _log10_statistics(block: Block, max_depth: int, depth, width, log_v) -> jax.Array:
    """[log10 q_L/q_0, log10 gradient spread] at Var[w] = exp(log_v) for a network of a traced
    ``depth`` <= ``max_depth`` blocks (the layers past ``depth`` are masked out)."""
    prof = recursions.profile(
        block, depth=depth, width=width, var_w=jnp.exp(log_v), max_depth=max_depth
    )
    growth = prof.log10_m2_z[depth] - prof.log10_m2_z[0]
    layer = jnp.arange(max_depth + 1)
    inside = (layer >= 1) & (layer <= depth)
    dw = prof.log10_var_dw
    spread = jnp.max(jnp.where(inside, dw, -jnp.inf)) - jnp.min(jnp.where(inside, dw, jnp.inf))
    return jnp.stack([growth, spread])


@functools.partial(jax.jit, static_argnames=("block", "max_depth"))
def _evaluate(block: Block, max_depth: int, depth, width, log_v) -> tuple[jax.Array, jax.Array]:
    """Both log10 statistics and their derivatives in log Var[w] (forward mode) at each of the
    points ``log_v`` (P,): two (P, 2) arrays. The grid and every refining step of a solve
    evaluate P = ``grid`` points, so a solve compiles this once."""

    def point(x):
        return jax.jvp(
            lambda y: _log10_statistics(block, max_depth, depth, width, y),
            (x,),
            (jnp.ones_like(x),),
        )

    return jax.vmap(point)(log_v)


def band_curves(
    block: Block, depth: int, width: float, var_ws, *, max_depth: int | None = None
) -> dict[str, np.ndarray]:
    """log10 forward growth and gradient spread (recursion) over an array of Var[w] > 0.

    Evaluated by the program that :func:`solve_init` compiles: one per (block, max_depth
    (default ``depth``), number of points), reused by later calls and by the solver."""
    depth, max_depth = _check_depths(depth, max_depth)
    arch.check_width(width)
    v = np.asarray(var_ws, np.float64)
    arch.check_var_w(v)
    with jax.enable_x64(True):
        values, _ = _evaluate(
            block,
            max_depth,
            jnp.asarray(depth, jnp.int32),
            jnp.asarray(float(width), jnp.float64),
            jnp.log(jnp.asarray(v.ravel(), jnp.float64)),
        )
        values = np.asarray(values).reshape(v.shape + (2,))
    return {
        "var_w": v,
        "log10_forward_growth": values[..., 0],
        "log10_gradient_spread": values[..., 1],
    }


def montecarlo_band_statistics(
    block: Block,
    *,
    depth: int,
    width: int,
    var_w: float,
    networks: int,
    batch: int,
    key: jax.Array,
) -> dict[str, float]:
    """The same two statistics from sampled networks (:func:`meanfield.montecarlo.simulate`):
    log10 of the ratio of the means over networks, with a delta-method standard error
    (treating the two means as independent, which overstates it when they correlate).
    ``heavy_tail`` is True when any of the four means is carried by a few networks
    (:data:`meanfield.montecarlo.HEAVY_TAIL_SD_LN`), so that error is not to be trusted."""
    est = montecarlo.simulate(
        block,
        key=key,
        depth=depth,
        width=width,
        var_w=var_w,
        networks=networks,
        batch=batch,
        warn=False,
    )
    lm = np.asarray(est.log10_m2_z.mean, np.float64)
    ls = np.asarray(est.log10_m2_z.stderr, np.float64)
    dw = np.asarray(est.log10_var_dw.mean, np.float64)[1:]
    dws = np.asarray(est.log10_var_dw.stderr, np.float64)[1:]
    rel = 10.0 ** (ls - lm)  # relative standard errors of the means
    hi, lo = int(np.argmax(dw)), int(np.argmin(dw))
    rel_dw = 10.0 ** (dws - dw)
    tails = est.spread["m2_z"].heavy_tail[[0, -1]].tolist()
    tails += est.spread["var_dw"].heavy_tail[1:][[hi, lo]].tolist()
    return {
        "log10_forward_growth": float(lm[-1] - lm[0]),
        "log10_forward_growth_stderr": float(math.hypot(rel[0], rel[-1]) / _LN10),
        "log10_gradient_spread": float(dw[hi] - dw[lo]),
        "log10_gradient_spread_stderr": float(math.hypot(rel_dw[hi], rel_dw[lo]) / _LN10),
        "heavy_tail": bool(any(tails)),
        "networks": networks,
        "batch": batch,
        "width": width,
    }
