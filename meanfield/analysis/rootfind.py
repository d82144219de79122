"""The root-finder of :func:`meanfield.solve_init`: a safeguarded Newton iteration on log Var[w]
in brackets, all refined at once with a fixed batch of points a step.

A :class:`Bracket` holds [a, b] with f(a) <= 0 < f(b) for f(x) = log10 statistic(e^x) - log10
bound, f and f' known at both ends; :func:`refine` narrows every open bracket with Newton steps
(bisection when a step would leave the bracket or stops halving it), the rest of each batch
spread evenly, until |statistic / bound - 1| is within tolerance at an end.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_STEPS", "Bracket", "refine", "relative_error"]

MAX_STEPS = 200  # bisection alone narrows a grid interval to float64 resolution in ~60
_LN10 = math.log(10.0)


class Bracket:
    """The root of f(x) = log10 statistic_k(e^x) - log10 bound_k on [a, b], f(a) <= 0 < f(b),
    with f, f' and both statistics known at the two ends."""

    def __init__(self, which, log_bound, x, values, slopes):
        self.which, self.log_bound = int(which), float(log_bound)
        self.x = np.asarray(x, np.float64)  # [a, b]
        self.values = np.asarray(values, np.float64)  # (2, 2): both statistics at a and b
        self.f = self.values[:, self.which] - self.log_bound
        self.df = np.asarray(slopes, np.float64)[:, self.which]
        self.halved = True  # whether the last step at least halved the bracket
        self.done = False  # no further step: tolerance met or bracket exhausted
        self.converged = False  # set at the end: |statistic / bound - 1| <= rtol at the root

    @property
    def _best(self) -> int:
        """The end nearer the root by |f| (ties to a, the end inside the bound)."""
        return int(relative_error(self.f[1]) < relative_error(self.f[0]))

    @property
    def error(self) -> float:
        return relative_error(self.f[self._best])

    @property
    def root(self) -> float:
        return float(self.x[self._best])

    @property
    def root_values(self) -> np.ndarray:
        return self.values[self._best]

    def points(self, m: int) -> np.ndarray:
        """The m >= 1 points to evaluate next: the Newton step from the better end when it lies
        strictly inside the bracket (and, when it is the only point, the last step halved the
        bracket; otherwise this is bisection), and evenly spaced points filling the rest."""
        a, b = self.x
        j = self._best
        newton = self.x[j] - self.f[j] / self.df[j] if self.df[j] > 0 else np.nan
        use_newton = bool(a < newton < b) and (m > 1 or self.halved)
        n_even = m - int(use_newton)
        even = a + (b - a) * np.arange(1, n_even + 1) / (n_even + 1)
        pts = np.concatenate([[newton] if use_newton else [], even])
        return pts[(pts > a) & (pts < b)]  # none when no float64 lies between a and b

    def update(self, x, values, slopes) -> None:
        """Narrow to the first sign change among the ends and the newly evaluated points."""
        x = np.concatenate([self.x[:1], x, self.x[1:]])
        order = np.argsort(x, kind="stable")
        x = x[order]
        values = np.concatenate([self.values[:1], values, self.values[1:]])[order]
        df = np.concatenate([self.df[:1], slopes[:, self.which], self.df[1:]])[order]
        f = values[:, self.which] - self.log_bound
        hi = int(np.argmax(~(f <= 0)))  # the first point outside the bound (b at the latest)
        keep = [hi - 1, hi]
        self.halved = x[hi] - x[hi - 1] <= 0.5 * (self.x[1] - self.x[0])
        self.x, self.values, self.f, self.df = x[keep], values[keep], f[keep], df[keep]


def relative_error(f: float) -> float:
    """|statistic / bound - 1| from f = log10(statistic / bound)."""
    return abs(math.expm1(f * _LN10)) if math.isfinite(f) else math.inf


def refine(evaluate, batch: int, brackets: list[Bracket], rtol: float) -> None:
    """Safeguarded Newton iteration in every bracket at once, ``batch`` points a step shared
    among the brackets still open; each stops at |statistic / bound - 1| <= rtol / 1000 at an
    end, or when no float64 is left inside it, and is ``converged`` if <= rtol."""
    tight = 1e-3 * rtol
    for br in brackets:
        br.done = br.error <= tight
    for _ in range(MAX_STEPS):
        todo = [br for br in brackets if not br.done]
        if not todo:
            break
        shares = [batch // len(todo) + (j < batch % len(todo)) for j in range(len(todo))]
        pts = [br.points(m) for br, m in zip(todo, shares, strict=True)]
        for br, p in zip(todo, pts, strict=True):
            br.done = p.size == 0
        x = np.concatenate(pts)
        if x.size == 0:
            break
        values, slopes = evaluate(np.pad(x, (0, batch - x.size), mode="edge"))
        start = 0
        for br, p in zip(todo, pts, strict=True):
            if p.size:
                stop = start + p.size
                br.update(p, values[start:stop], slopes[start:stop])
                br.done = br.error <= tight
                start = stop
    for br in brackets:
        br.converged = br.error <= rtol
