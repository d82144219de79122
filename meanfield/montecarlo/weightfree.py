"""The weight-free engine: what a Dense layer computes, sampled without its n x n weights.

:func:`weightfree_linear` (Gaussian weights) and :func:`weightfree_orthogonal` (Haar-orthogonal
ones) sample U = A W from its law given the layer's inputs A, and in the backward pass W^T D from
the law of W given U (docs/theory.md §7): exact, and O(nB² + B³) per layer instead of O(n²B).
Every factor of a Gram matrix used here is a function of that matrix alone (symmetric square
roots, the pseudo-inverse), never of the eigenvectors ``eigh`` happens to return. Also the rank
bookkeeping (:func:`structural_rank`, the numerical rank each layer returns) behind
``Estimate.rank_deficit``, and :data:`SAVE_WEIGHTFREE`, the checkpoint policy that keeps these
layers' outputs and Gram factors for the backward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from meanfield.core.sampling import standard_normal

# The checkpoint policy of the scans over layers: keep the weight-free layers' outputs and
# Gram factors (named "weightfree" below), recompute everything else.
SAVE_WEIGHTFREE = jax.checkpoint_policies.save_only_these_names("weightfree")


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


def structural_rank(a: jax.Array, centred: bool) -> jax.Array:
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
    return weightfree_linear_with_gram(a, gram, key, std, precision)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def weightfree_linear_with_gram(a, gram, key, std, precision):
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


weightfree_linear_with_gram.defvjp(_weightfree_fwd, _weightfree_bwd)


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
    return weightfree_orthogonal_with_gram(a, gram, key, gain, precision)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def weightfree_orthogonal_with_gram(a, gram, key, gain, precision):
    """:func:`weightfree_orthogonal` given ``gram`` = A A^T; returns (U, the numerical rank
    of ``gram``), as :func:`weightfree_linear_with_gram`."""
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


weightfree_orthogonal_with_gram.defvjp(_weightfree_orthogonal_fwd, _weightfree_orthogonal_bwd)
