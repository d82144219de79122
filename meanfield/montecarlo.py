"""Monte-Carlo over sampled finite-width networks: forward and backward, with standard errors.

:func:`simulate` draws R independent networks of a :class:`~meanfield.architecture.Block`,
propagates B inputs x ~ N(0, I_n) through each, backpropagates the loss E = Σ_b g_b · z^L_b with
g i.i.d. N(0, 1) (independent of everything, so dE/dz^L has zero mean and unit variance; the
same choice as :mod:`meanfield.recursions`), and returns per-layer statistics with the names of
the recursions, each as a mean over networks and its standard error.

How it is computed:

* **No approximation.** Weights are i.i.d. N(0, var_w), BN uses the batch statistics of the
  network's own B inputs (biased variance, no ε, no affine), and the backward pass is JAX
  autodiff through everything, BN's batch statistics included.
* **Memory.** Each layer's weights are drawn inside the ``lax.scan`` over layers from
  ``fold_in(network_key, layer)``; the scan body is ``jax.checkpoint``-ed so the backward pass
  re-draws them instead of storing them. What is stored per network is O(L·B·n) activations
  (each layer's input, and the weight-free engine's layer outputs), never O(L·n²) weights. The
  backward statistics are read out by custom-VJP probes as O(B²) numbers per layer, not as
  cotangent arrays the size of the activations. Networks are processed in chunks
  (``chunk_size``, chosen from available memory by default), each chunk one jitted call.
* **Overflow.** The forward pass carries z^l / s_l and log s_l (renormalized every layer), and a
  custom-VJP gate renormalizes the cotangent every layer and records its log-scale, so depth
  1000 at He init gives finite ``log10_`` statistics; raw statistics are ``inf`` exactly where
  they exceed the float range.
* **Devices.** Each chunk's network axis is sharded over all devices (``jax.sharding``), so the
  same call runs on one CPU, one GPU or many accelerator cores; per-network keys come from
  ``jax.random.split(key, networks)``, so the result does not depend on chunking or devices.
* **Engines.** ``engine="explicit"`` draws every n x n weight matrix; ``"weightfree"`` samples
  only what a layer computes, U = A W ~ N(0, s2 A A^T) per column, and in the backward pass
  W^T D from the law of W given U (:func:`weightfree_linear`; docs/theory.md §7): exact, and
  O(nB² + B³) per layer instead of O(n²B); for Haar-orthogonal weights likewise
  (:func:`weightfree_orthogonal`). ``"auto"`` takes it for both when 4B <= n. Every factor
  of a Gram matrix it uses is a function of that matrix alone (symmetric square roots, the
  pseudo-inverse), never of the eigenvectors ``eigh`` happens to return, so a network's
  numbers do not depend on the chunk size. Gram eigenvalues below λ_max·B·eps are treated as
  zero; where that removes rank beyond what the inputs' structure implies (B - 1 after BN,
  all-zero inputs or units), ``Estimate.rank_deficit`` says where and :func:`simulate` warns
  (:class:`RankDeficitWarning`).
* **Branches and inits.** A block with ``shortcut`` = k draws k weights per branch, each from
  its own key; ``init`` names a branch rule of :func:`meanfield.inits.branch_init` (per-layer
  variance, law, branch scale β: Fixup, SkipInit, ReZero, weight norm besides the standard
  schemes). Orthogonal weights have their own weight-free layer
  (:func:`weightfree_orthogonal`); weight-normalized ones need the explicit engine.
* **Normals.** Every Gaussian draw (inputs, the loss vector g, Gaussian and weight-normalized
  weights, the weight-free draws) comes from :func:`meanfield.sampling.standard_normal`:
  JAX's threefry normals (its original counter layout), from a hash that XLA fuses, 2.7-3.2x
  ``jax.random.normal``'s rate on CPU. Explicit Haar-orthogonal weights
  (:func:`meanfield.inits.orthogonal`), bound by their QR, keep ``jax.random.normal``.
* **Precision.** Matrix products use ``Precision.HIGHEST`` by default (full float32 on GPUs,
  which otherwise use TF32); ``precision="default"`` is the fast setting.

Per network r (z^l is B x n, d^l = dE/dz^l) the statistics are

==============  ======================================================================
``mean_z``      (1/nB) Σ_jb z_jb
``m2_z``        (1/nB) Σ_jb z_jb²
``var_z``       m2_z - mean_z² (pooled over units and inputs of the network)
``unitvar_z``   (1/n) Σ_j (1/B) Σ_b (z_jb - z̄_j)², the biased batch variance BN divides by
``m2_dz``       (1/nB) Σ_jb d_jb²
``var_dw``      (1/(n² B)) Σ_ji (dE/dW^l_ji)², dE/dW^l = Σ_b δ_b a_b^T (NaN at l = 0)
==============  ======================================================================

and across networks the estimate is the mean over the R networks with standard error
std_r / sqrt(R) (sample standard deviation, ddof = 1). The ``log10_`` statistics are
log10 of that mean and of that standard error, computed without overflow.

**The spread, not only the mean.** At finite width a statistic such as m2_z^L is a product of
per-layer factors, so across networks it is log-normal-like: the standard deviation of its log
grows like sqrt(L/n), and once it passes about 1 the mean is carried by a few rare networks
while the typical network sits far below it, and the standard error, itself estimated from
those few networks, is not trustworthy. ``Estimate.spread`` therefore gives, per statistic and
layer, the median, the 5-95% band and the mean and standard deviation over networks of the
natural log (:class:`Spread`); ``heavy_tail`` marks layers where that standard deviation
exceeds :data:`HEAVY_TAIL_SD_LN` = 1, or where the statistic is exactly zero in some networks
and not in others (a ReLU layer dead in some networks: ``zero_fraction``, ``degenerate``), and
:func:`simulate` then warns (:class:`HeavyTailWarning`). For a log-normal with σ = 1 the mean
is e^{σ²/2} = 1.65 times the median and the relative standard error of a sample mean,
sqrt((e^{σ²} - 1)/R), needs R of order e^{σ²} networks to mean anything; at σ = 2 it is
already 55/R.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from meanfield import architecture as arch
from meanfield import inits, layers
from meanfield.architecture import Block
from meanfield.sampling import standard_normal

__all__ = [
    "ENGINES",
    "HEAVY_TAIL_SD_LN",
    "PRECISIONS",
    "Estimate",
    "HeavyTailWarning",
    "NetworkMemoryError",
    "RankDeficitWarning",
    "Spread",
    "Stat",
    "network_statistics",
    "simulate",
    "weightfree_linear",
    "weightfree_orthogonal",
]

PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": jax.lax.Precision.DEFAULT}
_LN10 = math.log(10.0)
# Per-network statistics kept in log form (positive), and the raw mean.
_LOG_STATS = ("m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw")
# Above this standard deviation over networks of ln(statistic) the mean is called heavy-tailed.
HEAVY_TAIL_SD_LN = 1.0


class HeavyTailWarning(UserWarning):
    """A Monte-Carlo mean is carried by a few networks, or some networks' statistic is exactly
    zero while others' is not; its standard error is not reliable."""


class RankDeficitWarning(UserWarning):
    """The weight-free engine treated as zero Gram eigenvalues that the structure of the
    layer's inputs does not make zero (nearly parallel inputs in float32): in those directions
    the backward pass samples W^T D afresh instead of from its law given U."""


class NetworkMemoryError(MemoryError):
    """One network does not fit in the device memory available to the simulation."""


class Stat(NamedTuple):
    """Mean over networks and its standard error, each an array over layers l = 0..L."""

    mean: jax.Array
    stderr: jax.Array


class Spread(NamedTuple):
    """How one statistic is spread over the R networks, each an array over layers l = 0..L.

    ``median``, ``q05`` and ``q95`` are the median and the 5% and 95% quantiles over all
    networks (``log10_`` versions stay finite where raw values overflow; a network whose
    statistic is exactly 0 counts as 0, log10 = -inf, so a layer where more than 5% of the
    networks are exactly zero has ``q05`` = 0). ``mean_ln`` and ``sd_ln`` are the mean and
    standard deviation (ddof = 1) of the natural log of the statistic over the networks where
    it is positive, so exp(mean_ln) is the geometric mean of those, the typical live network
    (where every network is 0: mean_ln = -inf and sd_ln = 0; with one positive network sd_ln
    is NaN, and the layer is flagged). ``zero_fraction`` is the fraction of networks whose
    statistic is exactly 0 (a dead ReLU layer, a gradient that an init makes exactly zero);
    ``degenerate`` marks layers where 0 < ``zero_fraction`` < 1: an atom at zero besides a
    continuous part, whose log has infinite spread. ``heavy_tail`` is ``sd_ln >
    HEAVY_TAIL_SD_LN`` or ``degenerate``, so a NaN from zeros is never read as "not heavy".
    For ``mean_z``, which can be negative, the log fields are NaN and ``degenerate`` and
    ``heavy_tail`` are False (``zero_fraction`` still counts exact zeros). Where a statistic
    is undefined in every network (``var_dw`` at l = 0) every field but the flags is NaN.
    """

    median: np.ndarray
    q05: np.ndarray
    q95: np.ndarray
    log10_median: np.ndarray
    log10_q05: np.ndarray
    log10_q95: np.ndarray
    mean_ln: np.ndarray
    sd_ln: np.ndarray
    heavy_tail: np.ndarray
    zero_fraction: np.ndarray = None
    degenerate: np.ndarray = None


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Monte-Carlo estimate: per-layer :class:`Stat` for every statistic of the recursions.

    ``log10_m2_z`` etc. hold log10 of the mean and of the standard error; ``overflow`` is True
    at layers where a raw mean is not representable in the float type.
    """

    mean_z: Stat
    m2_z: Stat
    var_z: Stat
    unitvar_z: Stat
    m2_dz: Stat
    var_dw: Stat
    log10_m2_z: Stat
    log10_var_z: Stat
    log10_unitvar_z: Stat
    log10_m2_dz: Stat
    log10_var_dw: Stat
    overflow: np.ndarray
    networks: int
    batch: int
    seconds: float  # wall time of the simulation, compilation included
    # Statistic name (mean_z, m2_z, var_z, unitvar_z, m2_dz, var_dw) -> its spread over networks.
    spread: dict[str, Spread] = dataclasses.field(default_factory=dict)
    # Per layer (0..L): the fraction of networks where a weight-free layer's pseudo-inverse
    # dropped Gram eigenvalues beyond the structural rank of its inputs (B - 1 after BN, fewer
    # with all-zero inputs or units), and the largest number dropped in one network (summed
    # over the branch's k weights). Always 0 for the explicit engine; see RankDeficitWarning.
    rank_deficit: np.ndarray | None = None
    rank_deficit_max: np.ndarray | None = None

    def heavy_tails(self) -> dict[str, np.ndarray]:
        """Statistic -> the layers flagged ``heavy_tail`` in its :class:`Spread`: the sd over
        the positive networks of ln exceeds HEAVY_TAIL_SD_LN, or the statistic is exactly
        zero in some networks but not in all (``degenerate``)."""
        return {
            k: np.flatnonzero(v.heavy_tail) for k, v in self.spread.items() if v.heavy_tail.any()
        }

    def as_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Stat):
                v = {"mean": v.mean, "stderr": v.stderr}
            elif f.name == "spread":
                v = {k: s._asdict() for k, s in v.items()}
            out[f.name] = v
        return out


# ------------------------------------------------------------------------------------------
# One network


@jax.custom_vjp
def _grad_gate(z: jax.Array, probe: jax.Array) -> jax.Array:
    """Identity forward. Backward renormalizes the cotangent to unit RMS and returns, as the
    cotangent of the 2-vector ``probe``, (log of the factor it removed, mean square of the
    cotangent it received), so jax.grad reads both out without an array the size of z."""
    del probe
    return z


def _gate_fwd(z, probe):
    return z, jnp.zeros((2,), z.dtype)


def _gate_bwd(template, ct):
    m2 = jnp.mean(ct**2)
    positive = m2 > 0
    rms = jnp.sqrt(jnp.where(positive, m2, 1.0))
    return ct / rms, (jnp.stack([jnp.log(rms), m2]) + template).astype(template.dtype)


_grad_gate.defvjp(_gate_fwd, _gate_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _gram_probe(u: jax.Array, probe: jax.Array, precision) -> jax.Array:
    """Identity forward; backward returns the cotangent D (B x n) unchanged and D D^T (B x B)
    as the cotangent of ``probe``: the weight-gradient statistics need only this Gram matrix."""
    del probe
    return u


def _gram_probe_fwd(u, probe, precision):
    return u, None


def _gram_probe_bwd(precision, _, ct):
    return ct, jnp.matmul(ct, ct.T, precision=precision)


_gram_probe.defvjp(_gram_probe_fwd, _gram_probe_bwd)


def _gram_factor(k: jax.Array):
    """For a symmetric PSD B x B matrix K: (V, λ, λ^+) with K = V diag(λ) V^T, λ clipped at
    0 and set to 0 below the cut-off λ_max · B · eps (the rank tolerance of
    ``numpy.linalg.matrix_rank``), and λ^+ the reciprocal eigenvalues of the pseudo-inverse,
    0 where λ is. V is not a function of K (eigh may return any sign or rotation of the
    eigenvectors, and batched and unbatched calls do differ); only products V f(λ) V^T are
    used, which are."""
    lam, vec = jnp.linalg.eigh(k)
    lam = jnp.maximum(lam, 0.0)
    cutoff = jnp.max(lam) * k.shape[0] * jnp.finfo(k.dtype).eps
    keep = lam > cutoff
    lam = jnp.where(keep, lam, 0.0)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    return vec, lam, inv


def _sym(vec, values, precision):
    """V diag(values) V^T: a function of the matrix alone, whatever basis eigh chose."""
    return jnp.matmul(vec * values[None, :], vec.T, precision=precision)


def _numerical_rank(inv: jax.Array) -> jax.Array:
    """Number of eigenvalues kept by :func:`_gram_factor`, as a float (no integer cotangent)."""
    return jnp.sum(inv > 0).astype(inv.dtype)


def _structural_rank(a: jax.Array, centred: bool) -> jax.Array:
    """The rank that the structure of A (B x n) allows: at most its number of nonzero rows
    (inputs a ReLU did not zero entirely) and of nonzero columns (units), and one less than
    its nonzero rows when they are centred over the batch (BN output, identity after it)."""
    nonzero = a != 0
    rows = jnp.sum(jnp.any(nonzero, axis=1))
    cols = jnp.sum(jnp.any(nonzero, axis=0))
    if centred:
        rows = jnp.maximum(rows - 1, 0)
    return jnp.minimum(rows, cols).astype(a.dtype)


def _gaussian_with_gram(key, vec, lam, std, shape, precision):
    """Columns i.i.d. N(0, std² K) for K = V diag(λ) V^T: K^{1/2} G with K^{1/2} = V diag(sqrt
    λ) V^T, the symmetric square root, and G standard normal (B x m). Any C with C C^T = K
    gives the same law; the symmetric root is the one that depends on K alone, so a network
    draws the same numbers whichever eigenvectors eigh returned (they differ in sign between
    batched and unbatched calls, i.e. between chunk sizes)."""
    g = standard_normal(key, shape, vec.dtype)
    return std * jnp.matmul(_sym(vec, jnp.sqrt(lam), precision), g, precision=precision)


def weightfree_linear(a: jax.Array, key: jax.Array, std: jax.Array, precision) -> jax.Array:
    """U = A W for W (n x m) with i.i.d. N(0, std²) entries, sampled without forming W.

    Forward: the columns of U are independent N(0, std² A A^T) (B x B). Backward, for a
    cotangent D: W given U = A W is A^+ U + P W~ with A^+ = A^T (A A^T)^+, P the projection off
    the rows of A and W~ fresh, so D W^T = D U^T (A A^T)^+ A + X P where the rows-by-inputs
    matrix X = D W~^T has independent columns N(0, std² D D^T). Cost O(B² (n + m) + B³) and
    B (n + m) normals instead of n m. ``key`` must be unique to this layer of this network.
    """
    gram = jax.lax.stop_gradient(jnp.matmul(a, a.T, precision=precision))
    return _weightfree_linear(a, gram, key, std, precision)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _weightfree_linear(a, gram, key, std, precision):
    """:func:`weightfree_linear` given ``gram`` = A A^T (without gradient), which the caller
    may have computed already; its pseudo-inverse is kept for the backward pass. Returns (U,
    the numerical rank of ``gram`` that the pseudo-inverse keeps)."""
    u, (pinv, rank) = _weightfree_forward(a, gram, key, std, precision)
    return u, rank


def _weightfree_forward(a, gram, key, std, precision):
    vec, lam, inv = _gram_factor(gram)
    m = a.shape[1]  # square branch weights: fan-out = fan-in
    u = _gaussian_with_gram(jax.random.fold_in(key, 0), vec, lam, std, (a.shape[0], m), precision)
    return u, (_sym(vec, inv, precision), _numerical_rank(inv))


def _weightfree_fwd(a, gram, key, std, precision):
    u, (pinv, rank) = _weightfree_forward(a, gram, key, std, precision)
    u, pinv = (checkpoint_name(x, "weightfree") for x in (u, pinv))
    return (u, rank), (a, u, key, std, pinv)


def _conditional_cotangent(d, u, x, a, pinv, precision):
    """D W^T given U = A W: D U^T (A A^T)^+ A + X P = X + (D U^T - X A^T)(A A^T)^+ A, with X
    = D W~^T the fresh part and P the projection off the rows of A (never formed)."""
    du = jnp.matmul(d, u.T, precision=precision)
    xa = jnp.matmul(x, a.T, precision=precision)
    return x + jnp.matmul(jnp.matmul(du - xa, pinv, precision=precision), a, precision=precision)


def _weightfree_bwd(precision, res, cts):
    a, u, key, std, pinv = res
    d = cts[0]  # the rank output has no cotangent that matters
    vec_d, lam_d, _ = _gram_factor(jnp.matmul(d, d.T, precision=precision))
    x = _gaussian_with_gram(jax.random.fold_in(key, 1), vec_d, lam_d, std, a.shape, precision)
    ct_gram = jnp.zeros((a.shape[0], a.shape[0]), a.dtype)
    return _conditional_cotangent(d, u, x, a, pinv, precision), ct_gram, None, jnp.zeros_like(std)


_weightfree_linear.defvjp(_weightfree_fwd, _weightfree_bwd)


def _orthonormal_rows(g, precision):
    """(g g^T)^{-1/2} g: orthonormal rows spanning those of g (B x n, B <= rank). For g
    standard normal, or its projection onto a subspace, the rows are a uniformly (Haar)
    distributed orthonormal B-frame of that space."""
    vec, _, inv = _gram_factor(jnp.matmul(g, g.T, precision=precision))
    return jnp.matmul(_sym(vec, jnp.sqrt(inv), precision), g, precision=precision)


def weightfree_orthogonal(a: jax.Array, key: jax.Array, gain: jax.Array, precision) -> jax.Array:
    """U = gain · A R for R a Haar-orthogonal n x n matrix, sampled without forming R.

    Forward: with A A^T = V Λ V^T, the rows of A span a subspace with orthonormal basis
    Q^T = Λ^{-1/2} V^T A, and R^T maps it to a uniformly random orthonormal frame F, so
    U = gain · V Λ^{1/2} Φ with Φ = F^T (B x n, orthonormal rows, :func:`_orthonormal_rows` of
    a Gaussian). Backward, for a cotangent D: R given R^T Q = F maps F to Q and the complement
    of F to that of Q by an independent Haar isometry, so D R^T = (D F) Q^T + V_e Λ_e^{1/2} Ψ,
    where E = D (I - F F^T) has E E^T = V_e Λ_e V_e^T and Ψ is a fresh uniform orthonormal
    B-frame orthogonal to the rows of A. Needs n >= 2B (room for Ψ); cost O(nB² + B³).
    ``key`` must be unique to this layer of this network.
    """
    gram = jax.lax.stop_gradient(jnp.matmul(a, a.T, precision=precision))
    return _weightfree_orthogonal(a, gram, key, gain, precision)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _weightfree_orthogonal(a, gram, key, gain, precision):
    """:func:`weightfree_orthogonal` given ``gram`` = A A^T; returns (U, the numerical rank
    of ``gram``), as :func:`_weightfree_linear`."""
    u, (_, _, rank) = _weightfree_orthogonal_forward(a, gram, key, gain, precision)
    return u, rank


def _weightfree_orthogonal_forward(a, gram, key, gain, precision):
    # With Φ~ = V^T Φ (a Haar frame too: the law of Φ is invariant under rotations of its
    # rows), U = gain · V Λ^{1/2} Φ~ = gain · K^{1/2} Φ, and the backward pass below needs
    # only K^{+1/2} and the projection onto the range of K: functions of K alone, so the
    # numbers do not depend on the eigenvectors eigh returns.
    vec, lam, inv = _gram_factor(gram)
    g = standard_normal(jax.random.fold_in(key, 0), a.shape, a.dtype)
    phi = _orthonormal_rows(g, precision)
    u = gain * jnp.matmul(_sym(vec, jnp.sqrt(lam), precision), phi, precision=precision)
    # K^+, K^{+1/2} and the projection onto the range of K.
    factors = tuple(_sym(vec, f, precision) for f in (inv, jnp.sqrt(inv), (inv > 0) * 1.0))
    return u, (factors, phi, _numerical_rank(inv))


def _weightfree_orthogonal_fwd(a, gram, key, gain, precision):
    u, (factors, phi, rank) = _weightfree_orthogonal_forward(a, gram, key, gain, precision)
    u, factors, phi = jax.tree.map(lambda x: checkpoint_name(x, "weightfree"), (u, factors, phi))
    return (u, rank), (a, key, gain, factors, phi)


def _weightfree_orthogonal_bwd(precision, res, cts):
    a, key, gain, (pinv, inv_sqrt, proj), phi = res
    d = cts[0]
    matmul = functools.partial(jnp.matmul, precision=precision)
    # F = Φ^T P_K in the row frame: D F on the directions A spans, (D F) Q^T = D Φ^T K^{+1/2} A.
    d_phi = matmul(matmul(d, phi.T), proj)
    known = matmul(matmul(matmul(d, phi.T), inv_sqrt), a)
    e = d - matmul(d_phi, phi)
    vec_e, lam_e, _ = _gram_factor(matmul(e, e.T))
    fresh = standard_normal(jax.random.fold_in(key, 1), a.shape, a.dtype)
    psi = _orthonormal_rows(_project_off_rows(fresh, a, pinv, precision), precision)
    rest = matmul(_sym(vec_e, jnp.sqrt(lam_e), precision), psi)
    ct_gram = jnp.zeros((a.shape[0], a.shape[0]), a.dtype)
    return gain * (known + rest), ct_gram, None, jnp.zeros_like(gain)


def _project_off_rows(x, a, pinv, precision):
    """X (I - A^T (A A^T)^+ A): the rows of X projected off the row space of A."""
    xa = jnp.matmul(x, a.T, precision=precision)
    return x - jnp.matmul(jnp.matmul(xa, pinv, precision=precision), a, precision=precision)


_weightfree_orthogonal.defvjp(_weightfree_orthogonal_fwd, _weightfree_orthogonal_bwd)

ENGINES = ("explicit", "weightfree", "auto")
_SAVE_WEIGHTFREE = jax.checkpoint_policies.save_only_these_names("weightfree")


def _rms(z: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(z**2))


@jax.custom_vjp
def _signal_probe(h: jax.Array, probe: jax.Array) -> jax.Array:
    """Identity on looks-linear channels h = [relu(y); relu(-y)] (B x 2n). Backward returns the
    cotangent unchanged and, as the cotangent of the scalar ``probe``, the mean square of
    dE/dy = (dh/dy)^T dE/dh = top ⊙ 1(y > 0) - bottom ⊙ 1(y < 0), the gradient with respect to
    the signal y that the channels carry."""
    del probe
    return h


def _signal_probe_fwd(h, probe):
    return h, h


def _signal_probe_bwd(h, ct):
    n = h.shape[-1] // 2
    dy = jnp.where(h[:, :n] > 0, ct[:, :n], 0.0) - jnp.where(h[:, n:] > 0, ct[:, n:], 0.0)
    return ct, jnp.mean(dy**2)


_signal_probe.defvjp(_signal_probe_fwd, _signal_probe_bwd)


def _moments(z: jax.Array) -> jax.Array:
    """(mean, mean square, mean over units of the variance over inputs) of z (B x n)."""
    z = jax.lax.stop_gradient(z)
    return jnp.stack([jnp.mean(z), jnp.mean(z**2), jnp.mean(jnp.var(z, axis=0))])


def _risotto_statistics(depth, width, batch, key, precision, input_std, dtype, engine):
    """Per-layer statistics of one RISOTTO network (type C, :func:`inits.risotto_type_c`):
    h^0 = [relu(y^0); relu(-y^0)] on 2n channels, h^l = relu(W_2 relu(W_1 h^{l-1}) + h^{l-1}),
    loss E = Σ_b g_b · y^L with y = top - bottom half. The forward statistics and ``m2_dz``
    are those of the signal y^l (n units) and of dE/dy^l; ``var_dw`` is the mean over W_1, W_2
    of (1/((2n)² B)) Σ (dE/dW)². Every block maps y to M_l y with M_l orthogonal, so m2_z and
    m2_dz are the same at every layer of every network.

    ``engine="weightfree"`` uses the block's structure instead of its 2n x 2n matrices: W_1 h
    = [t, -t] with t = top - bottom half of h, and W_2 a = [t' M^T - a_top, -t' M^T - a_bot]
    with t' = a_top - a_bot, where t' M^T is :func:`weightfree_orthogonal` (M^T is Haar). The
    cotangents at both weight outputs, and so the statistics, are those of the dense layers."""
    n, B, L = width, batch, depth
    key_x, key_g, key_w = jax.random.split(key, 3)
    y0 = input_std * standard_normal(key_x, (B, n), dtype)
    g = standard_normal(key_g, (B, n), dtype)
    matmul = functools.partial(jnp.matmul, precision=precision)

    def signal(h):
        return h[:, :n] - h[:, n:]

    def dense(key):
        w1, w2 = inits.risotto_type_c(key, n, dtype=dtype)
        return (lambda x: matmul(x, w1.T)), (lambda a: (matmul(a, w2.T), jnp.zeros((), dtype)))

    def structured(key):
        def first(x):
            t = signal(x)
            return jnp.concatenate([t, -t], axis=-1)

        def second(a):
            t = jax.lax.stop_gradient(signal(a))
            gram = matmul(t, t.T)
            tm, rank = _weightfree_orthogonal(signal(a), gram, key, jnp.ones((), dtype), precision)
            deficit = jnp.maximum(_structural_rank(t, False) - rank, 0.0)
            return jnp.concatenate([tm - a[:, :n], -tm - a[:, n:]], axis=-1), deficit

        return first, second

    layers_of = structured if engine == "weightfree" else dense

    # The backward pass re-draws each block's weights (explicit) or keeps the weight-free
    # layer's frame and Gram factors (weight-free).
    @functools.partial(jax.checkpoint, policy=_SAVE_WEIGHTFREE)
    def layer_step(h, inputs):
        layer, probes, probe_y = inputs
        first, second = layers_of(jax.random.fold_in(key_w, layer))
        a2 = jax.nn.relu(_gram_probe(first(h), probes[0], precision))
        u2, deficit = second(a2)
        h_new = jax.nn.relu(_gram_probe(u2, probes[1], precision) + h)
        grams = jax.lax.stop_gradient(jnp.stack([matmul(h, h.T), matmul(a2, a2.T)]))
        return _signal_probe(h_new, probe_y), (_moments(signal(h_new)), grams, deficit)

    def loss(probes, probe_y):
        h0 = _signal_probe(jax.nn.relu(jnp.concatenate([y0, -y0], axis=-1)), probe_y[0])
        layers = jnp.arange(1, L + 1)
        h_last, (mom, grams, deficit) = jax.lax.scan(layer_step, h0, (layers, probes, probe_y[1:]))
        mom = jnp.concatenate([_moments(y0)[None], mom])
        deficit = jnp.concatenate([jnp.zeros((1,), dtype), deficit])
        return jnp.sum(g * signal(h_last)), (mom, grams, deficit)

    probes = jnp.zeros((L, 2, B, B), dtype)
    probe_y = jnp.zeros((L + 1,), dtype)
    (gram_d, m2_dy), (mom, grams, deficit) = jax.grad(loss, argnums=(0, 1), has_aux=True)(
        probes, probe_y
    )
    mean, m2, unitvar = mom[:, 0], mom[:, 1], mom[:, 2]
    sq_dw = jnp.mean(jnp.sum(gram_d * grams, axis=(2, 3)), axis=1) / (float(2 * n) ** 2 * B)
    return {
        "mean_z": mean,
        "log_m2_z": jnp.log(m2),
        "log_var_z": jnp.log(jnp.maximum(m2 - mean**2, 0.0)),
        "log_unitvar_z": jnp.log(unitvar),
        "log_m2_dz": jnp.log(m2_dy),
        "log_var_dw": jnp.concatenate([jnp.full((1,), jnp.nan, dtype), jnp.log(sq_dw)]),
        "rank_deficit": deficit,
    }


class _Network:
    """What a block's layers ask of the engine in one sampled network (the ``net`` of
    :meth:`meanfield.layers.Dense.finite`): the product of each Dense, drawn from its own key,
    with the Gram matrices of its input and of its output's cotangent (read by the probe) kept
    for the weight-gradient statistics, and the rank the weight-free layers lost."""

    def __init__(self, linear, n_dense, key_w, layer, probes, log_s, scale, precision):
        self.linear, self.n_dense, self.key_w, self.layer = linear, n_dense, key_w, layer
        self.probes, self.log_s, self.scale, self.precision = probes, log_s, scale, precision
        self.grams: list = []
        self.deficit = jnp.zeros((), log_s.dtype)

    def dense(self, a_hat: jax.Array, centred: bool) -> jax.Array:
        i = len(self.grams)
        # Unique per (layer, position); the same key as the one-layer engine when K = 1.
        key = jax.random.fold_in(self.key_w, (self.layer - 1) * self.n_dense + i + 1)
        gram = jax.lax.stop_gradient(jnp.matmul(a_hat, a_hat.T, precision=self.precision))
        u, rank = self.linear(a_hat, gram, key, i)
        if rank is not None:  # weight-free: eigenvalues cut beyond what the structure implies
            structural = _structural_rank(jax.lax.stop_gradient(a_hat), centred)
            self.deficit = self.deficit + jnp.maximum(structural - rank, 0.0)
        self.grams.append(gram)
        return _gram_probe(u, self.probes[i], self.precision)


def _engine_linear(engine: str, rule, n: int, dtype, precision):
    """The product a Dense asks for, (a_hat, gram, key, position) -> (U, rank or None)."""
    if engine == "weightfree" and rule.law == "gaussian":
        stds = [jnp.sqrt(jnp.asarray(v, dtype)) for v in rule.var_w]
        return lambda a, gram, k, i: _weightfree_linear(a, gram, k, stds[i], precision)
    if engine == "weightfree" and rule.law == "orthogonal":
        gains = [jnp.sqrt(jnp.asarray(v, dtype) * n) for v in rule.var_w]
        return lambda a, gram, k, i: _weightfree_orthogonal(a, gram, k, gains[i], precision)
    if engine == "weightfree":
        raise ValueError(
            f"engine='weightfree' needs Gaussian or orthogonal weights, got {rule.law}"
        )

    def explicit(a, gram, k, i):
        w = inits.branch_weight(k, (n, n), rule, i, dtype)
        return jnp.matmul(a, w, precision=precision), None

    return explicit


def network_statistics(
    block: Block | layers.Layer,
    depth: int,
    width: int,
    batch: int,
    var_w: jax.Array,
    key: jax.Array,
    precision=jax.lax.Precision.HIGHEST,
    init: tuple | None = None,
    engine: str = "explicit",
    input_std: float = 1.0,
    branch_scale: float | None = None,
) -> dict[str, jax.Array]:
    """Per-layer statistics of one sampled network (arrays of length depth + 1).

    ``block`` is a preset or a :mod:`meanfield.layers` tree; each block's layers run their
    finite-width maps on the network's (batch, width) signal. Weights are N(0, var_w), or
    follow :func:`meanfield.inits.branch_init` when ``init`` is a tuple (scheme, c, gain):
    per-Dense variances, law (Gaussian, orthogonal, weight-normalized) and branch scale.
    ``branch_scale`` (static) multiplies every branch output, overriding the scheme's.
    ``engine="weightfree"`` samples what each Dense computes instead
    (:func:`weightfree_linear`; Gaussian or orthogonal weights). Returns ``mean_z`` and
    ``log_<name>`` (natural log) for ``m2_z``, ``var_z``, ``unitvar_z``, ``m2_dz`` and
    ``var_dw``, and ``rank_deficit``: per layer the number of Gram eigenvalues the weight-free
    layers dropped beyond the structural rank of their inputs (0 at l = 0 and for explicit
    weights); with k > 1 Dense layers per block, ``var_dw`` is the mean over the k weights.
    Unbatched; :func:`simulate` vmaps it over networks. The inputs are ``input_std`` times
    standard normal (carried as the initial log-scale, so nothing else changes).
    ``init=("risotto", ...)`` simulates RISOTTO's own network instead
    (:func:`_risotto_statistics`).
    """
    dtype = jnp.result_type(float, var_w)
    if init is not None and init[0] == "risotto":
        return _risotto_statistics(depth, width, batch, key, precision, input_std, dtype, engine)
    tree = layers.as_tree(block)
    n, B, L, K = width, batch, depth, layers.dense_count(tree)
    key_x, key_g, key_w = jax.random.split(key, 3)
    x = standard_normal(key_x, (B, n), dtype)
    g = standard_normal(key_g, (B, n), dtype)
    if init is None:
        rule = inits.var_w_rule(var_w, shortcut=K)
    else:
        scheme, c, gain = init
        acts = layers.dense_activations(tree)
        rule = inits.branch_init(scheme, width=n, depth=L, activations=acts, c=c, gain=gain)
    if branch_scale is not None:
        rule = rule._replace(scale=branch_scale)
    scale = jnp.asarray(rule.scale, dtype)
    linear = _engine_linear(engine, rule, n, dtype, precision)

    def block_output(z_hat, log_s, layer, probes):
        """(block output at the scale of z_hat, the Gram matrices of the k Dense inputs, the
        rank lost). Positively homogeneous layers keep the scale of z_hat; after a BatchNorm
        the signal is scale-free and is brought back to the scale of z_hat where it joins the
        skip (:class:`meanfield.layers.Residual`) or leaves the block."""
        net = _Network(linear, K, key_w, layer, probes, log_s, scale, precision)
        out = tree.finite(layers.Signal(z_hat, True, False), net)
        z_new = out.x
        if not isinstance(tree, layers.Residual):  # plain: the block is the branch, times β
            z_new = scale * out.x if out.relative else scale * out.x * jnp.exp(-log_s)
        return z_new, jnp.stack(net.grams), net.deficit

    # The backward pass recomputes each layer from its input (re-drawing explicit weights
    # instead of storing them); only the weight-free layers' outputs and Gram factors,
    # O(B·n + B²) each, are kept, so their normals are not drawn twice.
    @functools.partial(jax.checkpoint, policy=_SAVE_WEIGHTFREE)
    def layer_step(carry, inputs):
        z_hat, log_s = carry
        layer, probes, gate = inputs
        z_new, gram_a, deficit = block_output(z_hat, log_s, layer, probes)
        rho = jax.lax.stop_gradient(_rms(z_new))
        rho = jnp.where(rho > 0, rho, 1.0)
        z_new = _grad_gate(z_new / rho, gate)
        log_s = log_s + jnp.log(rho)
        return (z_new, log_s), (_moments(z_new), log_s, gram_a, deficit)

    def loss(probes, gates):
        z0 = _grad_gate(x, gates[0])
        log_s0 = jnp.full((), math.log(input_std), dtype)
        layers = jnp.arange(1, L + 1)
        (z_last, _), (mom, log_ss, grams, deficit) = jax.lax.scan(
            layer_step, (z0, log_s0), (layers, probes, gates[1:])
        )
        loss_hat = jnp.sum(g * z_last)
        aux = (
            jnp.concatenate([_moments(x)[None], mom]),
            jnp.concatenate([log_s0[None], log_ss]),
            grams,
            jnp.concatenate([jnp.zeros((1,), dtype), deficit]),
        )
        return loss_hat, aux

    # Only O(L·B²) statistics come out of the backward pass: per layer the gate's
    # (log r, mean square of dE_hat/dz_hat) and per weight the Gram matrix of δ_hat.
    probes = jnp.zeros((L, K, B, B), dtype)
    gates = jnp.zeros((L + 1, 2), dtype)
    grads, (mom, log_s, grams, deficit) = jax.grad(loss, argnums=(0, 1), has_aux=True)(
        probes, gates
    )
    gram_d, gate_ct = grads
    log_r, m2_dz_hat = gate_ct[:, 0], gate_ct[:, 1]
    # Forward statistics of z^l = s_l · z_hat^l.
    mean_hat, m2_hat, unitvar_hat = mom[:, 0], mom[:, 1], mom[:, 2]
    var_hat = jnp.maximum(m2_hat - mean_hat**2, 0.0)
    # Backward: the gate at layer k removed r_k; the cotangent the gate at l received is
    # missing prod_{k>l} r_k, the one at the probe of layer l also r_l. In the normalized
    # network dE/dz^l = (s_L / s_l) dE_hat/dz_hat^l and dE/dW^l = s_L Σ_b δ_hat_b a_hat_b^T.
    tail_excl = jnp.cumsum(log_r[::-1])[::-1] - log_r  # Σ_{k>l} log r_k
    tail_incl = tail_excl + log_r
    log_sL = log_s[-1]
    log_m2_dz = jnp.log(m2_dz_hat) + 2 * (tail_excl + log_sL - log_s)
    # A Python float: the int n² B passes int32 from width 4096 at batch 128 (OverflowError).
    sq_dw = jnp.mean(jnp.sum(gram_d * grams, axis=(2, 3)), axis=1) / (float(n) * n * B)
    log_var_dw = jnp.log(jnp.maximum(sq_dw, 0.0)) + 2 * (tail_incl[1:] + log_sL)
    log_var_dw = jnp.concatenate([jnp.full((1,), jnp.nan, dtype), log_var_dw])
    two_log_s = 2 * log_s
    return {
        "mean_z": mean_hat * jnp.exp(log_s),
        "log_m2_z": jnp.log(m2_hat) + two_log_s,
        "log_var_z": jnp.log(var_hat) + two_log_s,
        "log_unitvar_z": jnp.log(unitvar_hat) + two_log_s,
        "log_m2_dz": log_m2_dz,
        "log_var_dw": log_var_dw,
        "rank_deficit": deficit,
    }


# ------------------------------------------------------------------------------------------
# Many networks


@functools.lru_cache(maxsize=64)
def _chunk_fn(
    block,
    depth,
    width,
    batch,
    precision_name,
    chunk,
    n_devices,
    init=None,
    engine="explicit",
    input_std=1.0,
    branch_scale=None,
):
    precision = PRECISIONS[precision_name]
    one = functools.partial(
        network_statistics,
        block,
        depth,
        width,
        batch,
        precision=precision,
        init=init,
        engine=engine,
        input_std=input_std,
        branch_scale=branch_scale,
    )
    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("networks",))
    sharded = NamedSharding(mesh, PartitionSpec("networks"))
    replicated = NamedSharding(mesh, PartitionSpec())
    fn = jax.jit(
        jax.vmap(one, in_axes=(None, 0)),
        in_shardings=(replicated, sharded),
        out_shardings=sharded,
    )
    return fn, sharded


def _bytes_per_network(
    depth: int,
    width: int,
    batch: int,
    itemsize: int,
    engine: str = "explicit",
    shortcut: int = 1,
) -> int:
    # Stored per network for the backward pass: z_hat per layer (the checkpointed scan's
    # carry), the weight-free layers' outputs u (k per layer; counted for both engines) and k
    # B x B Gram matrices per layer; plus about one more L·B·n of temporaries, and a few n x n
    # weight buffers alive at once inside the layer being recomputed (explicit engine only).
    # XLA's figure is 50-70% of this (benchmarks/memory_montecarlo.py).
    weights = 4 * width**2 if engine == "explicit" else 8 * batch * width
    stored = (2 + shortcut) * (depth + 1) * batch * width + 2 * shortcut * depth * batch**2
    return itemsize * (stored + weights)


def _available_bytes() -> int:
    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001  (backends without memory stats)
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**31


def auto_chunk_size(
    depth: int,
    width: int,
    batch: int,
    networks: int,
    itemsize: int = 4,
    engine: str = "explicit",
    shortcut: int = 1,
) -> int:
    """Networks per chunk: a quarter of the available device memory, at most ``networks``."""
    per = _bytes_per_network(depth, width, batch, itemsize, engine, shortcut)
    return int(max(1, min(networks, (_available_bytes() // 4) // per)))


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB ({int(nbytes):,} bytes)"


def _check_one_network_fits(block, depth, width, batch, itemsize, engine, shortcut) -> None:
    """Raise :class:`NetworkMemoryError` before compiling when one network alone needs more
    than the available device memory (by :func:`_bytes_per_network`'s estimate)."""
    need = _bytes_per_network(depth, width, batch, itemsize, engine, shortcut)
    have = _available_bytes()
    if need <= have:
        return
    if engine == "explicit":
        what = (
            f"its {width} x {width} weight matrices ({_gib(4 * itemsize * width**2)} for the "
            "few alive at once)"
        )
        hint = "engine='weightfree' (Gaussian or orthogonal weights; no n x n matrix) or "
    else:
        what = f"its stored activations (about {2 + shortcut} x (L + 1) x B x n values)"
        hint = ""
    raise NetworkMemoryError(
        f"one network does not fit in memory: {block.name} at width {width}, depth {depth}, "
        f"batch {batch}, engine={engine!r} needs about {_gib(need)} for {what} and the "
        f"backward pass, but {_gib(have)} are available on {jax.devices()[0].device_kind}. "
        f"Use {hint}a smaller width, depth or batch."
    )


def _aggregate(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log mean, log stderr) over axis 0 of per-network values given as logs; NaN-safe."""
    ref = np.max(values, axis=0)
    ref = np.where(np.isfinite(ref), ref, 0.0)
    y = np.exp(values - ref)
    r = values.shape[0]
    mean = np.mean(y, axis=0)
    se = np.std(y, axis=0, ddof=1) / math.sqrt(r) if r > 1 else np.full_like(mean, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(mean) + ref, np.log(se) + ref


# Stands for ln 0 = -inf inside the quantile interpolation (which gives NaN for -inf - -inf);
# results below _LOG_ZERO_FLOOR are mapped back to -inf. Real logs are above -1e4.
_LOG_ZERO = -1e300
_LOG_ZERO_FLOOR = -1e200


def _log_quantiles(values: np.ndarray, qs) -> list[np.ndarray]:
    """Quantiles over axis 0 of natural logs that may be -inf (statistic exactly 0): -inf
    where the interpolation touches a zero network, never NaN from -inf - -inf."""
    safe = np.where(values == -np.inf, _LOG_ZERO, values)
    out = np.quantile(safe, qs, axis=0)
    return [np.where(q < _LOG_ZERO_FLOOR, -np.inf, q) for q in out]


def _spread(values: np.ndarray, logs: bool) -> Spread:
    """Spread over axis 0 (networks) of per-network values, given as natural logs if ``logs``
    (-inf for a statistic exactly 0). See :class:`Spread` for the fields."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if logs:
            undefined = np.all(np.isnan(values), axis=0)
            zero = values == -np.inf
            zero_fraction = np.where(undefined, np.nan, zero.mean(axis=0))
            q05, median, q95 = _log_quantiles(values, [0.05, 0.5, 0.95])
            positive = np.where(zero, np.nan, values)
            count = np.sum(~np.isnan(positive), axis=0)
            mean_ln = np.nansum(positive, axis=0) / np.where(count > 0, count, 1)
            mean_ln = np.where(count > 0, mean_ln, -np.inf)
            dev = np.where(np.isnan(positive), 0.0, positive - mean_ln)
            sd_ln = np.sqrt(np.sum(dev**2, axis=0) / np.where(count > 1, count - 1, 1))
            sd_ln = np.where(count > 1, sd_ln, np.where(count == 0, 0.0, np.nan))
            mean_ln = np.where(undefined, np.nan, mean_ln)
            sd_ln = np.where(undefined, np.nan, sd_ln)
            degenerate = (zero_fraction > 0) & (zero_fraction < 1)
            heavy = (np.nan_to_num(sd_ln) > HEAVY_TAIL_SD_LN) | degenerate
            log10 = [q / _LN10 for q in (median, q05, q95)]
            raw = [np.exp(q) for q in (median, q05, q95)]
        else:
            q05, median, q95 = np.quantile(values, [0.05, 0.5, 0.95], axis=0)
            zero_fraction = np.mean(values == 0, axis=0)
            mean_ln = sd_ln = np.full(values.shape[1:], np.nan)
            log10 = [mean_ln] * 3
            raw = [median, q05, q95]
            degenerate = heavy = np.zeros(values.shape[1:], bool)
    return Spread(*raw, *log10, mean_ln, sd_ln, heavy, zero_fraction, degenerate)


def _heavy_tail_message(block: Block, spread: dict[str, Spread]) -> str | None:
    parts, degenerate = [], []
    for name, s in spread.items():
        tails = s.heavy_tail & ~s.degenerate
        where = np.flatnonzero(tails)
        if where.size:
            parts.append(
                f"{name} at {where.size} layer(s) from l = {where[0]} "
                f"(sd of ln up to {np.nanmax(s.sd_ln[where]):.3g})"
            )
        where = np.flatnonzero(s.degenerate)
        if where.size:
            degenerate.append(
                f"{name} at {where.size} layer(s) from l = {where[0]} (exactly 0 in up to "
                f"{100 * np.max(s.zero_fraction[where]):.3g}% of the networks)"
            )
    if not parts and not degenerate:
        return None
    out = []
    if parts:
        out.append(
            f"heavy tail over networks for {block.name}: " + "; ".join(parts) + f". Above "
            f"sd(ln) = {HEAVY_TAIL_SD_LN:g} the mean is carried by a few networks and its "
            "standard error is not reliable; read Estimate.spread (median, 5-95% band) for the "
            "typical network."
        )
    if degenerate:
        out.append(
            f"statistic exactly zero in some networks but not in others for {block.name}: "
            + "; ".join(degenerate)
            + ". The spread there is an atom at 0 plus the live networks: Spread.zero_fraction "
            "gives the atom, mean_ln and sd_ln describe the networks where it is positive."
        )
    return " ".join(out)


def _rank_deficit_message(block: Block, fraction: np.ndarray, largest: np.ndarray) -> str | None:
    where = np.flatnonzero(fraction > 0)
    if not where.size:
        return None
    return (
        f"weight-free engine, {block.name}: at {where.size} layer(s) from l = {where[0]}, in "
        f"up to {100 * np.max(fraction):.3g}% of the networks, the Gram matrix of a layer's "
        f"inputs had up to {int(np.max(largest))} eigenvalue(s) below the cut-off "
        "λ_max · B · eps that the structure of the inputs does not make zero (nearly parallel "
        "inputs at this precision); the backward pass samples those directions afresh instead "
        "of conditioning on the layer's output. Estimate.rank_deficit gives the fraction per "
        "layer; use float64 (jax_enable_x64) or engine='explicit' there."
    )


def simulate(
    block: Block,
    *,
    key: jax.Array,
    depth: int,
    width: int,
    var_w: float | None = None,
    init: str | None = None,
    c: float = 1.0,
    gain: float = 1.0,
    networks: int,
    batch: int,
    chunk_size: int | None = None,
    precision: str = "highest",
    engine: str = "auto",
    progress: bool = False,
    input_std: float = 1.0,
    warn: bool = True,
    branch_scale: float | None = None,
) -> Estimate:
    """Monte-Carlo estimate of the per-layer statistics of ``networks`` sampled networks.

    Args:
        block: the architecture.
        key: a JAX PRNG key (``jax.random.key(seed)``); network r uses
            ``jax.random.split(key, networks)[r]``, so results do not depend on chunking.
        depth: L, number of blocks. width: n.
        var_w: variance of one weight entry, weights i.i.d. N(0, var_w) (e.g.
            ``meanfield.theory.he_var_w(n)``). Give either ``var_w`` or ``init``.
        init: a scheme of :data:`meanfield.inits.BRANCH_SCHEMES` ("he", "glorot",
            "depth_scaled" with ``c``, "orthogonal" with ``gain``, "zero", "fixup",
            "skipinit", "rezero", "weight_norm"); the k weights of every branch are drawn by
            its rule (:func:`meanfield.inits.branch_init`: per-layer variance, law, and the
            scalar β that multiplies the branch). Or "risotto" with
            ``block=inits.RISOTTO_BLOCK``: RISOTTO's type-C network on 2n looks-linear
            channels (:func:`meanfield.inits.risotto_type_c`), whose statistics are those of
            the signal y it carries (n units) and of dE/dy; ``var_dw`` is over its
            2n x 2n weights. Every block maps y to M_l y (M_l orthogonal), so ``m2_z`` and
            ``m2_dz`` are exactly flat in every network.
        networks: R, sampled networks. batch: B inputs per network (>= 2 with BN, which uses
            their batch statistics).
        chunk_size: networks per compiled call; default from available memory. Rounded up to a
            multiple of the device count.
        precision: "highest" (full float32 matmuls, the default) or "default" (TF32 on NVIDIA
            GPUs; faster, less accurate).
        engine: "explicit" draws every weight matrix; "weightfree" samples each layer's
            output U = A W and, in the backward pass, W^T D from their exact conditional laws
            (:func:`weightfree_linear`), O(nB² + B³) per layer instead of O(n²B) and n²
            normals; "auto" (default) takes weight-free for Gaussian and orthogonal weights
            when 4B <= n (:func:`weightfree_orthogonal` samples Haar weights the same way).
            Both are exact: the same statistics in distribution, not the same numbers.
        progress: print a progress line per chunk to stderr.
        input_std: the inputs are x ~ N(0, input_std² I) (default 1), e.g. to start where
            the stem of a real network starts (:mod:`meanfield.initcheck`).
        warn: issue a :class:`HeavyTailWarning` when some statistic's standard deviation over
            networks of its log exceeds :data:`HEAVY_TAIL_SD_LN` at some layer, or it is
            exactly zero in some networks but not in all; and a :class:`RankDeficitWarning`
            when a weight-free layer lost rank beyond its structure (``Estimate.rank_deficit``).
        branch_scale: β >= 0, the scalar multiplying every branch, z^l = z^{l-1} + β h
            (default: the scheme's, 0 for skipinit and rezero, else 1; SkipInit's small
            variant needs β < 1/sqrt(depth)).

    With ``block.shortcut`` = k > 1 the statistic ``var_dw`` is the mean over the k weights
    of each branch of (1/(n² B)) Σ (dE/dW)².

    Returns:
        :class:`Estimate` with per-layer :class:`Stat` (mean over networks, standard error)
        and, in ``spread``, each statistic's :class:`Spread` over networks.

    Raises:
        NetworkMemoryError: (a ``MemoryError``) before compiling, when one network alone needs
            more memory than is available, with both byte counts.
    """
    tree = layers.as_tree(block)
    shortcut = layers.dense_count(tree)
    depth = arch.static_int("depth", depth)
    width = arch.static_int("width", width)
    networks = arch.static_int("networks", networks)
    batch = arch.static_int("batch", batch)
    if (var_w is None) == (init is None):
        raise ValueError(f"give exactly one of var_w and init, got var_w={var_w!r}, init={init!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    risotto = init == "risotto"
    if risotto:
        if block != inits.RISOTTO_BLOCK or branch_scale is not None:
            raise ValueError(
                "init='risotto' simulates RISOTTO's type-C network (y -> relu(W2 relu(W1 h) + h) "
                f"on 2n looks-linear channels): give block={inits.RISOTTO_BLOCK!r} and no "
                f"branch_scale, got block={block!r}, branch_scale={branch_scale!r}"
            )
        rule = inits.BranchInit("risotto", "orthogonal", (1.0, 1.0), 1.0)
        init_key = ("risotto", 1.0, 1.0)
        var_w = 1.0
    elif init is not None:
        rule = inits.branch_init(
            init,
            width=width,
            depth=depth,
            activations=layers.dense_activations(tree),
            c=c,
            gain=gain,
            branch_scale=branch_scale,
        )
        init_key = (init, float(c), float(gain))
        var_w = float(max(rule.var_w))
    else:
        arch.check_var_w(var_w)
        rule = inits.var_w_rule(var_w, shortcut=shortcut, branch_scale=branch_scale)
        init_key = None
    if branch_scale is not None:
        branch_scale = float(branch_scale)
    inits.check_plain(block, rule)
    sampled = rule.law in ("gaussian", "orthogonal")  # laws the weight-free engine samples
    if engine == "auto":
        engine = "weightfree" if sampled and 4 * batch <= width else "explicit"
    if engine == "weightfree" and not sampled:
        raise ValueError(
            "engine='weightfree' needs Gaussian or orthogonal weights; "
            f"init={init!r} draws {rule.law} ones"
        )
    if engine == "weightfree" and rule.law == "orthogonal" and 2 * batch > width:
        raise ValueError(
            "engine='weightfree' with orthogonal weights needs width >= 2 * batch (room for "
            f"the fresh frame of the backward pass), got width={width}, batch={batch}"
        )
    if layers.has_batchnorm(tree) and batch < 2:
        raise ValueError(
            f"batch must be >= 2 for {block.name} (its BatchNorm uses the batch statistics), "
            f"got {batch}"
        )
    if networks < 2:
        raise ValueError(f"networks must be >= 2 to give a standard error, got {networks}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    arch.check_positive("input_std", input_std)
    input_std = float(input_std)
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError(f"key must be a typed PRNG key from jax.random.key(seed), got {key!r}")

    dtype = jnp.result_type(float)
    n_devices = jax.device_count()
    _check_one_network_fits(
        block,
        depth,
        2 * width if risotto else width,
        batch,
        jnp.dtype(dtype).itemsize,
        engine,
        shortcut,
    )
    if chunk_size is None:
        chunk_size = auto_chunk_size(
            depth,
            2 * width if risotto else width,
            batch,
            networks,
            jnp.dtype(dtype).itemsize,
            engine=engine,
            shortcut=shortcut,
        )
    chunk_size = arch.static_int("chunk_size", chunk_size)
    chunk_size = min(chunk_size, networks)
    chunk_size = -(-chunk_size // n_devices) * n_devices
    fn, sharded = _chunk_fn(
        tree,
        depth,
        width,
        batch,
        precision,
        chunk_size,
        n_devices,
        init_key,
        engine,
        input_std,
        branch_scale,
    )

    start = time.perf_counter()
    keys = jax.random.split(key, networks)
    var_w = jnp.asarray(var_w, dtype)
    parts = []
    n_chunks = -(-networks // chunk_size)
    for i in range(n_chunks):
        chunk = keys[i * chunk_size : (i + 1) * chunk_size]
        real = chunk.shape[0]
        if real < chunk_size:  # pad the last chunk with repeated keys; their results are dropped
            # (cyclically: with networks < chunk_size - real, e.g. 2 networks on 8 devices,
            # keys[:chunk_size - real] alone is too short)
            chunk = jnp.concatenate([chunk, keys[np.arange(chunk_size - real) % networks]])
        out = fn(var_w, jax.device_put(chunk, sharded))
        parts.append({k: np.asarray(v)[:real] for k, v in out.items()})
        if progress:
            done = min((i + 1) * chunk_size, networks)
            elapsed = time.perf_counter() - start
            print(
                f"\r  montecarlo {block.name}: {done}/{networks} networks, {elapsed:.1f} s",
                end="" if i + 1 < n_chunks else "\n",
                file=sys.stderr,
                flush=True,
            )
    per = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    seconds = time.perf_counter() - start

    fields: dict = {}
    overflow = np.zeros(depth + 1, bool)
    mz = per["mean_z"].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf where z itself overflowed
        mz_se = mz.std(0, ddof=1) / math.sqrt(networks)
    fields["mean_z"] = Stat(mz.mean(0).astype(dtype), mz_se.astype(dtype))
    spread = {"mean_z": _spread(mz, logs=False)}
    for name in _LOG_STATS:
        spread[name] = _spread(per[f"log_{name}"].astype(np.float64), logs=True)
        log_mean, log_se = _aggregate(per[f"log_{name}"].astype(np.float64))
        fields[f"log10_{name}"] = Stat(
            (log_mean / _LN10).astype(dtype), (log_se / _LN10).astype(dtype)
        )
        with np.errstate(over="ignore"):
            mean = np.exp(log_mean).astype(dtype)
            se = np.exp(log_se).astype(dtype)
        overflow |= np.isinf(mean) & np.isfinite(log_mean)
        fields[name] = Stat(mean, se)
    deficit = per["rank_deficit"]
    rank_deficit = np.mean(deficit > 0, axis=0)
    rank_deficit_max = np.max(deficit, axis=0).astype(int)
    message = _heavy_tail_message(block, spread) if warn else None
    if message:
        warnings.warn(message, HeavyTailWarning, stacklevel=2)
    message = _rank_deficit_message(block, rank_deficit, rank_deficit_max) if warn else None
    if message:
        warnings.warn(message, RankDeficitWarning, stacklevel=2)
    return Estimate(
        **fields,
        overflow=overflow,
        networks=networks,
        batch=batch,
        seconds=seconds,
        spread=spread,
        rank_deficit=rank_deficit,
        rank_deficit_max=rank_deficit_max,
    )
