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
of its bound. No sampling. Networks whose activations are integrated by quadrature (tanh,
gelu, ...) are evaluated in chunks that fit in memory, with a progress line for long calls
(:mod:`meanfield.analysis.solver_evaluation`).

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

import math

import jax
import jax.numpy as jnp
import numpy as np

from meanfield import montecarlo, recursions
from meanfield.analysis import structure
from meanfield.analysis.rootfind import Bracket, refine
from meanfield.analysis.solution import InitSolution
from meanfield.analysis.solver_evaluation import AUTO_SECONDS, Evaluator, plan
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.layers import Layer

__all__ = [
    "InitSolution",
    "band_curves",
    "log10_band_statistics",
    "montecarlo_band_statistics",
    "solve_init",
]

_LN10 = math.log(10.0)


def log10_band_statistics(
    block: Block | Layer, depth: int, width, var_w
) -> tuple[jax.Array, jax.Array]:
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


def _check_arguments(block, depth, width, grid, rtol, max_depth) -> tuple[int, int, int]:
    """The checked (depth, max_depth, grid) of :func:`solve_init`; ValueError naming what is
    out of range."""
    structure.tree_of(block)
    depth, max_depth = _check_depths(depth, max_depth)
    arch.check_width(width)
    grid = _check_grid(grid)
    arch.check_positive("rtol", rtol)
    if not rtol < 1:
        raise ValueError(f"rtol must be < 1 (a relative tolerance), got {rtol!r}")
    return depth, max_depth, grid


def _first_crossing(block: Block | Layer, log_v, values, over, growth_max, spread_max) -> int:
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


def _progress(progress, seconds: float) -> bool:
    """Whether to report: ``progress`` if given, else whether the call is estimated to take
    longer than :data:`~meanfield.analysis.solver_evaluation.AUTO_SECONDS`."""
    if progress is None:
        return seconds > AUTO_SECONDS
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True, False or None (automatic), got {progress!r}")
    return bool(progress)


def _bracket(evaluate: Evaluator, block, log_v, log_bounds, bounds) -> list[Bracket]:
    """The brackets of every statistic that first crosses its bound in the grid's first
    interval with a crossing (the first root binds)."""
    values, slopes = evaluate.grid(log_v, log_bounds)
    over = ~(values <= log_bounds)  # NaN counts as outside
    i = _first_crossing(block, log_v[: len(values)], values, over, *bounds)
    ends = [i - 1, i]
    # Derivatives at the two ends only, where the grid was scanned for values alone.
    if slopes is None:
        evaluate.phase = "bracket"
        slopes = evaluate(log_v[ends])[1]
    else:
        slopes = slopes[ends]
    return [
        Bracket(k, log_bounds[k], log_v[ends], values[ends], slopes)
        for k in np.flatnonzero(over[i])
    ]


def solve_init(
    block: Block | Layer,
    *,
    depth: int,
    width: float,
    max_forward_growth: float = 10.0,
    max_gradient_spread: float = 10.0,
    grid: int = 256,
    rtol: float = 1e-6,
    max_depth: int | None = None,
    progress: bool | None = None,
) -> InitSolution:
    """The largest Var[w] keeping forward growth and gradient spread within the bounds (module
    docstring). Computed in float64. ``block`` is a preset Block or a :mod:`meanfield.layers`
    tree.

    The binding statistic is returned within a relative ``rtol`` of its bound
    (``|statistic / bound - 1| <= rtol``; in practice far closer, since the iteration runs on
    to rtol / 1000), and the other one inside its bound (to ``rtol``, should both roots
    coincide). ``grid`` (an integer >= 2) is the
    number of log-spaced Var[w] from ``1e-6 / (nL)`` to ``10 / n`` that bracket the first
    crossing, both ends included; it is also the batch of points each refining step evaluates,
    except for networks with activations integrated by quadrature (tanh, gelu, ...), whose
    points are evaluated in chunks that fit in memory, a chunk a refining step
    (:mod:`meanfield.analysis.solver_evaluation`).

    One compiled program per (block, grid or chunk, max_depth) serves every call: depth, width
    and the bounds are its traced inputs, so calls that pass the same ``max_depth`` (default
    ``depth``; it must be >= ``depth``) compile once for all of their depths, widths and
    bounds.

    ``progress``: a line on stderr updated per evaluation (grid points done, refining step,
    seconds) and ending with the solution; None (the default) turns it on when the call is
    estimated to take longer than ``AUTO_SECONDS`` (20 s), as in :func:`meanfield.simulate`.
    It changes nothing that is computed.

    Raises ValueError when the largest variance, 10/n, stays inside both bounds at every grid
    point (the band does not constrain this block: e.g. BN keeps the growth linear), when the
    smallest one, 1e-6/(nL), is already outside them, when the arguments are out of range
    (bounds must be ratios > 1), or when ``rtol`` is finer than float64 can resolve.
    """
    depth, max_depth, grid = _check_arguments(block, depth, width, grid, rtol, max_depth)
    bounds = (
        _check_bound("max_forward_growth", max_forward_growth),
        _check_bound("max_gradient_spread", max_gradient_spread),
    )
    width = float(width)
    how = plan(block, max_depth, grid)
    evaluate = Evaluator(block, max_depth, depth, width, how, _progress(progress, how.seconds))
    log_bounds = np.log10(bounds)
    log_v = np.linspace(math.log(1e-6 / (width * depth)), math.log(10.0 / width), grid)
    try:
        brackets = _bracket(evaluate, block, log_v, log_bounds, bounds)
        evaluate.phase = "refining"
        refine(evaluate, how.chunk, brackets, rtol)
        sol = min(brackets, key=lambda br: br.root)
        if not sol.converged:
            raise ValueError(
                f"rtol={rtol!r} is finer than float64 resolves for {_STATISTICS[sol.which]} "
                f"(relative error {sol.error:.3g} at the narrowest bracket): use a larger rtol"
            )
    except ValueError:
        evaluate.finish("no solution")
        raise
    g, s = (float(10.0**v) for v in sol.root_values)
    var_w = float(math.exp(sol.root))
    evaluate.finish(f"var_w = {var_w:.4g} ({_STATISTICS[sol.which]} binds)")
    return InitSolution(
        block=block,
        depth=depth,
        width=width,
        var_w=var_w,
        forward_growth=g,
        gradient_spread=s,
        binding=_STATISTICS[sol.which],
        max_forward_growth=bounds[0],
        max_gradient_spread=bounds[1],
    )


_STATISTICS = ("forward_growth", "gradient_spread")


def band_curves(
    block: Block | Layer,
    depth: int,
    width: float,
    var_ws,
    *,
    max_depth: int | None = None,
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """log10 forward growth and gradient spread (recursion) over an array of Var[w] > 0.

    Evaluated by the program that :func:`solve_init` compiles: one per (block, max_depth
    (default ``depth``), number of points), reused by later calls and by the solver; for
    networks with activations integrated by quadrature, by its program of values alone, in
    chunks that fit in memory. ``progress`` as in :func:`solve_init`."""
    structure.tree_of(block)
    depth, max_depth = _check_depths(depth, max_depth)
    arch.check_width(width)
    v = np.asarray(var_ws, np.float64)
    arch.check_var_w(v)
    log_v = np.log(v.ravel())
    how = plan(block, max_depth, max(log_v.size, 1), refine=False)
    evaluate = Evaluator(
        block, max_depth, depth, float(width), how, _progress(progress, how.seconds)
    )
    values = evaluate.values(log_v)
    evaluate.finish("band curves")
    values = values.reshape(v.shape + (2,))
    return {
        "var_w": v,
        "log10_forward_growth": values[..., 0],
        "log10_gradient_spread": values[..., 1],
    }


def montecarlo_band_statistics(
    block: Block | Layer,
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
