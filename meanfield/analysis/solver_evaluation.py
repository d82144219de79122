"""How :func:`meanfield.solve_init` evaluates the recursion at its points: the compiled
programs, their chunks sized by memory, the run-time estimate and the progress line.

**Where the time goes.** One point (a Var[w]) is one recursion of ``max_depth`` blocks and its
forward-mode derivative. For activations with closed forms (the arc-cosine family, erf and sin
of a centred input) a point costs microseconds per layer, and the whole grid is one program.
An activation integrated by quadrature (tanh, gelu, silu, ...) evaluates a tensor grid of
:data:`meanfield.core.activations.DEGREE_2D`² nodes per layer, and the recursion's backward map
evaluates all layers at once: measured on a 2-core CPU, about 4 MB and 4-6 ms per point, layer
and such activation with the derivative (0.78 GB and 0.36 s per point for gelu-ln_pre at
L = 100), 1.4 MB and 2-5 ms for the values alone. The solver's 256 points in one program asked
XLA for 100 GB there. So for such networks the points are evaluated in chunks that fit
:data:`CHUNK_BYTES`, each chunk by the same compiled program (one compile per chunk size, not
per call); the bracketing grid is scanned from the smallest variance upwards with values only,
and stops at the first chunk where a bound is crossed (the rest of the grid cannot change the
bracket); the derivatives are taken at the bracket's two ends and at the refining steps, which
evaluate one chunk each.

**Progress.** With ``progress=None`` a call estimated (:func:`plan`) to take longer than
:data:`AUTO_SECONDS` prints a line to stderr that it updates per chunk (grid points done,
refining step, seconds) and ends with the solution, as :func:`meanfield.simulate` does.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from meanfield import recursions
from meanfield.analysis import structure
from meanfield.montecarlo.progress import AUTO_SECONDS

__all__ = [
    "AUTO_SECONDS",
    "CHUNK_BYTES",
    "Evaluator",
    "Plan",
    "evaluate_points",
    "log10_statistics",
    "plan",
    "values_points",
]

# Memory one compiled evaluation may take: the chunk size for networks with quadrature.
CHUNK_BYTES = 1e9
# Per point, layer and quadrature activation (2-core CPU; see the module docstring).
_QUADRATURE_BYTES = 4e6  # values and derivatives
_VALUE_BYTES = 1.5e6  # values alone
_QUADRATURE_SECONDS = 6e-3
_VALUE_SECONDS = 3e-3
# Per point and layer without quadrature, values and derivatives.
_CLOSED_FORM_SECONDS = 1e-6
# Refining steps of a typical solve (rtol = 1e-6), for the estimate.
_REFINE_STEPS = 12


def log10_statistics(block: Any, max_depth: int, depth, width, log_v) -> jax.Array:
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
def evaluate_points(block: Any, max_depth: int, depth, width, log_v) -> tuple[jax.Array, ...]:
    """Both log10 statistics and their derivatives in log Var[w] (forward mode) at each of the
    points ``log_v`` (P,): two (P, 2) arrays. One program per (block, max_depth, P)."""

    def point(x):
        return jax.jvp(
            lambda y: log10_statistics(block, max_depth, depth, width, y),
            (x,),
            (jnp.ones_like(x),),
        )

    return jax.vmap(point)(log_v)


@functools.partial(jax.jit, static_argnames=("block", "max_depth"))
def values_points(block: Any, max_depth: int, depth, width, log_v) -> jax.Array:
    """Both log10 statistics alone at each of the points ``log_v`` (P,): (P, 2)."""
    return jax.vmap(lambda x: log10_statistics(block, max_depth, depth, width, x))(log_v)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a solve evaluates: ``chunk`` points per program with derivatives (also the points
    of each refining step), ``value_chunk`` per program of values alone, and the estimated
    ``seconds`` of the whole solve on a 2-core CPU (compilation not counted)."""

    grid: int
    chunk: int
    value_chunk: int
    seconds: float

    @property
    def chunked(self) -> bool:
        """Whether the grid is evaluated in chunks (networks with quadrature), not at once."""
        return self.chunk < self.grid


def plan(block: Any, max_depth: int, grid: int, refine: bool = True) -> Plan:
    """The :class:`Plan` of evaluating ``block`` with arrays of ``max_depth`` blocks at ``grid``
    points and, with ``refine``, the refining steps of a solve, from what its tree costs
    (module docstring)."""
    quadratures = structure.quadrature_activations(block)
    steps = _REFINE_STEPS if refine else 0
    if quadratures == 0:
        seconds = (1 + steps) * grid * max_depth * _CLOSED_FORM_SECONDS
        return Plan(grid, grid, grid, seconds)
    layers = max_depth * quadratures
    chunk = int(np.clip(CHUNK_BYTES // (_QUADRATURE_BYTES * layers), 1, grid))
    value_chunk = int(np.clip(CHUNK_BYTES // (_VALUE_BYTES * layers), 1, grid))
    slopes = (2 + steps * chunk) if refine else 0
    seconds = layers * (grid * _VALUE_SECONDS + slopes * _QUADRATURE_SECONDS)
    return Plan(grid, chunk, value_chunk, seconds)


class Evaluator:
    """The solver's points, evaluated in float64 in chunks of the :class:`Plan`, with a
    progress line on stderr when ``report`` is True."""

    def __init__(self, block, max_depth: int, depth: int, width: float, how: Plan, report: bool):
        self.block, self.max_depth, self.how, self.report = block, max_depth, how, report
        self.depth, self.width = depth, width
        self.points, self.steps = 0, 0
        self.phase = "grid"  # then "bracket" (derivatives at its ends), then "refining"
        self.start = time.perf_counter()

    def _run(self, program, log_v: np.ndarray, size: int) -> list:
        """``program`` on ``log_v`` in chunks of ``size`` points (the last one padded)."""
        if log_v.size == 0:
            return [np.zeros((0, 2))] * (2 if program is evaluate_points else 1)
        out = []
        for first in range(0, log_v.size, size):
            part = log_v[first : first + size]
            padded = np.pad(part, (0, size - part.size), mode="edge")
            with jax.enable_x64(True):
                got = program(
                    self.block,
                    self.max_depth,
                    jnp.asarray(self.depth, jnp.int32),
                    jnp.asarray(self.width, jnp.float64),
                    jnp.asarray(padded, jnp.float64),
                )
                got = got if isinstance(got, tuple) else (got,)
                out.append(tuple(np.asarray(g)[: part.size] for g in got))
            self.points += part.size
            self._line()
        return [np.concatenate(parts) for parts in zip(*out, strict=True)]

    def __call__(self, log_v) -> tuple[np.ndarray, np.ndarray]:
        """Values and derivatives, (P, 2) each, at the points ``log_v``."""
        if self.phase == "refining":
            self.steps += 1
        values, slopes = self._run(evaluate_points, np.asarray(log_v, np.float64), self.how.chunk)
        return values, slopes

    def values(self, log_v) -> np.ndarray:
        """Values alone, (P, 2), at the points ``log_v``: by the program with derivatives, all
        at once, when the plan is not chunked (the program a solve compiles); else by the
        program of values, chunk by chunk."""
        log_v = np.asarray(log_v, np.float64)
        if not self.how.chunked:
            return self(log_v)[0]
        return self._run(values_points, log_v, self.how.value_chunk)[0]

    def grid(self, log_v: np.ndarray, log_bounds: np.ndarray):
        """(values, derivatives or None) of the bracketing grid from its smallest variance
        up: all of it at once, with derivatives, when the plan is not chunked; else values
        alone, chunk by chunk, up to the first chunk where a bound is crossed."""
        if not self.how.chunked:
            return self(log_v)
        done = []
        for first in range(0, log_v.size, self.how.value_chunk):
            values = self.values(log_v[first : first + self.how.value_chunk])
            done.append(values)
            if np.any(~(values <= log_bounds)):  # NaN counts as outside
                break
        return np.concatenate(done), None

    def _line(self) -> None:
        if not self.report:
            return
        if self.phase == "refining":
            what = f"refining, step {self.steps}"
        elif self.phase == "bracket":
            what = "derivatives at the bracket's ends"
        else:
            what = f"grid {self.points}/{self.how.grid} points"
        self._print(f"{what}, {time.perf_counter() - self.start:.1f} s   ", end="")

    def _print(self, text: str, end: str) -> None:
        name = self.block.name
        print(f"\r  solve_init {name}: {text}", end=end, file=sys.stderr, flush=True)

    def finish(self, text: str) -> None:
        """End the progress line with ``text`` (the solution, or why there is none)."""
        if self.report:
            seconds = time.perf_counter() - self.start
            self._print(f"{text}; {self.points} points in {seconds:.1f} s" + " " * 8, end="\n")
