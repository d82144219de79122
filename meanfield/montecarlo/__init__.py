"""Monte-Carlo over sampled finite-width networks: forward and backward, with standard errors.

:func:`simulate` draws R independent networks of a :class:`~meanfield.core.architecture.Block`,
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
  weights, the weight-free draws) comes from :func:`meanfield.core.sampling.standard_normal`:
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

The package: :mod:`~meanfield.montecarlo.runner` (:func:`simulate`, the chunked, sharded runs),
:mod:`~meanfield.montecarlo.grid` (:func:`simulate_grid`: a grid of configurations as one
program),
:mod:`~meanfield.montecarlo.network` (one network of a block tree, :func:`network_statistics`),
:mod:`~meanfield.montecarlo.risotto` (RISOTTO's network), :mod:`~meanfield.montecarlo.weightfree`
(the weight-free layers), :mod:`~meanfield.montecarlo.probes` (the custom-VJP probes),
:mod:`~meanfield.montecarlo.estimates` (the result types, the reduction over networks, the
warnings) and :mod:`~meanfield.montecarlo.memory` (the memory estimate and chunk size).
"""

from meanfield.montecarlo.estimates import (
    HEAVY_TAIL_SD_LN,
    Estimate,
    HeavyTailWarning,
    RankDeficitWarning,
    Spread,
    Stat,
)
from meanfield.montecarlo.grid import simulate_grid
from meanfield.montecarlo.memory import NetworkMemoryError
from meanfield.montecarlo.memory import auto_chunk_size as auto_chunk_size
from meanfield.montecarlo.network import network_statistics
from meanfield.montecarlo.runner import ENGINES, PRECISIONS, simulate
from meanfield.montecarlo.weightfree import weightfree_linear, weightfree_orthogonal

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
    "simulate_grid",
    "weightfree_linear",
    "weightfree_orthogonal",
]
