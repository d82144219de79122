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

How: both statistics of a grid of Var[w] (log-spaced, ``grid`` points between
``1e-6 / (nL)`` and ``10 / n``) come from one vmapped recursion; the first grid interval in
which a bound is crossed brackets the answer, and a safeguarded Newton iteration on
log Var[w] (derivatives by ``jax.grad`` through the recursion, bisection when a step leaves
the bracket) solves log(statistic) = log(bound) there to ``rtol``. No sampling.

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

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from meanfield import architecture as arch
from meanfield import inits, montecarlo, recursions
from meanfield.architecture import Block

__all__ = [
    "InitSolution",
    "band_curves",
    "log10_band_statistics",
    "montecarlo_band_statistics",
    "solve_init",
]

_LN10 = math.log(10.0)


@dataclasses.dataclass(frozen=True)
class InitSolution:
    """The solved initialization and what the recursion says of it."""

    block: Block
    depth: int
    width: float
    var_w: float  # the solved variance of one weight entry
    forward_growth: float  # q_L / q_0 at var_w
    gradient_spread: float  # max_l / min_l Var[dE/dW^l] at var_w
    binding: str  # which bound is met with equality: "forward_growth" or "gradient_spread"
    max_forward_growth: float
    max_gradient_spread: float

    @property
    def alpha(self) -> float:
        """n·Var[w]."""
        return self.width * self.var_w

    @property
    def c(self) -> float:
        """The c of the paper's c/(nL) that gives this variance: Var[w]·n·L."""
        return self.var_w * self.width * self.depth

    def initializer(self) -> inits.Initializer:
        """A Flax initializer ``init(key, shape, dtype)`` drawing N(0, var_w), for any shape.

        For a convolution with another fan-in than ``width``, solve at that fan-in, or use
        ``inits.get("depth_scaled", depth=L, c=solution.c)``, which scales with the fan-in.
        """
        var_w = self.var_w
        return functools.partial(_normal, var_w=var_w)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(block=self.block.name, alpha=self.alpha, c=self.c)
        return d


def _normal(key, shape, dtype=jnp.float32, *, var_w):
    return inits.normal(key, shape, var_w, dtype)


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


def solve_init(
    block: Block,
    *,
    depth: int,
    width: float,
    max_forward_growth: float = 10.0,
    max_gradient_spread: float = 10.0,
    grid: int = 256,
    rtol: float = 1e-6,
) -> InitSolution:
    """The largest Var[w] keeping forward growth and gradient spread within the bounds (module
    docstring). Computed in float64.

    Raises ValueError when even 10/n stays inside both bounds (the band does not constrain
    this block: e.g. BN keeps the growth linear) or when the bounds are not ratios > 1.
    """
    if not isinstance(block, Block):
        raise ValueError(f"block must be a meanfield.Block, got {block!r}")
    depth = arch.static_int("depth", depth)
    arch.check_width(width)
    growth_max = _check_bound("max_forward_growth", max_forward_growth)
    spread_max = _check_bound("max_gradient_spread", max_gradient_spread)
    grid = arch.static_int("grid", grid)
    arch.check_positive("rtol", rtol)
    logs_max = np.log10([growth_max, spread_max])
    with jax.enable_x64(True):
        lo, hi = math.log(1e-6 / (width * depth)), math.log(10.0 / width)
        log_v = np.linspace(lo, hi, grid)
        growth, spread = jax.jit(
            jax.vmap(lambda v: log10_band_statistics(block, depth, float(width), jnp.exp(v)))
        )(jnp.asarray(log_v))
        over = np.stack([np.asarray(growth), np.asarray(spread)]) > logs_max[:, None]
        if over[:, 0].any():
            raise ValueError(
                f"the bounds are exceeded already at var_w = {math.exp(lo):.3g}: "
                f"max_forward_growth={growth_max}, max_gradient_spread={spread_max}"
            )
        crossed = np.flatnonzero(over.any(axis=0))
        if crossed.size == 0:
            raise ValueError(
                f"block {block.name} stays within the bounds up to var_w = 10/n "
                f"(growth {10 ** float(growth[-1]):.3g}, spread {10 ** float(spread[-1]):.3g}): "
                "the band does not constrain it"
            )
        i = int(crossed[0])
        # The statistic that crosses first in this interval binds; solve it exactly.
        candidates = []
        for which in np.flatnonzero(over[:, i]):
            root = _newton_bisect(
                block,
                depth,
                float(width),
                int(which),
                logs_max[which],
                log_v[i - 1],
                log_v[i],
                rtol,
            )
            candidates.append((root, int(which)))
        root, which = min(candidates)
        g, s = log10_band_statistics(block, depth, float(width), jnp.exp(root))
        return InitSolution(
            block=block,
            depth=depth,
            width=float(width),
            var_w=float(math.exp(root)),
            forward_growth=float(10**g),
            gradient_spread=float(10**s),
            binding=("forward_growth", "gradient_spread")[which],
            max_forward_growth=growth_max,
            max_gradient_spread=spread_max,
        )


def _newton_bisect(block, depth, width, which, target, a, b, rtol) -> float:
    """Root of log10 statistic(exp(x)) = target on [a, b] (f(a) <= target < f(b))."""

    def f(x):
        return log10_band_statistics(block, depth, width, jnp.exp(x))[which] - target

    value_and_grad = jax.jit(jax.value_and_grad(f))
    x = 0.5 * (a + b)
    for _ in range(100):
        fx, dfx = (float(v) for v in value_and_grad(x))
        if fx > 0:
            b = x
        else:
            a = x
        step = x - fx / dfx if dfx > 0 else None
        x = step if step is not None and a < step < b else 0.5 * (a + b)
        if b - a < rtol or abs(fx) < rtol * 1e-3:
            break
    return x


def band_curves(block: Block, depth: int, width: float, var_ws) -> dict[str, np.ndarray]:
    """log10 forward growth and gradient spread (recursion) over an array of Var[w]."""
    with jax.enable_x64(True):
        v = jnp.asarray(var_ws, jnp.float64)
        growth, spread = jax.jit(
            jax.vmap(lambda x: log10_band_statistics(block, depth, float(width), x))
        )(v)
        return {
            "var_w": np.asarray(v),
            "log10_forward_growth": np.asarray(growth),
            "log10_gradient_spread": np.asarray(spread),
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
