"""The Hessian of the loss of a residual network at the zero initialization (Li et al. 2016,
"Demystifying ResNet"): its spectrum, its condition number and how they depend on depth and on
the shortcut depth k, the number of weight layers per residual branch.

The network: width d (input = output = d), L residual units

    x_l = x_{l-1} + W_{l,k} σ(W_{l,k-1} ⋯ σ(W_{l,1} x_{l-1})),    f(x) = x_L,

with σ the identity ("linear") or tanh (σ(0) = 0, σ'(0) = 1), and the squared loss
E ||y - f(x)||² averaged over a data set of N pairs. At W = 0, f is the identity, and with
C = E[x (y - x)ᵀ] (d x d):

* k = 1: the gradient -2Cᵀ per unit is not zero; the Hessian couples every pair of units
  (second-order part E||(Σ_l W_l) x||² - 2 Σ_{m>l} tr(W_m W_l C)), and its condition number
  grows with L.
* k = 2: a saddle (zero gradient). Cross-unit terms are of fourth order, so the Hessian is
  block diagonal with L equal blocks [[0, Kᵀ], [K, 0]], K: W_1 -> -2 (W_1 C)ᵀ; its eigenvalues
  are ±2 σ_j(C), each d times per unit (:func:`shortcut2_spectrum`), and the condition number
  is σ_max(C)/σ_min(C) at every depth.
* k >= 3: gradient and Hessian vanish identically (every term has degree >= 3): a higher-order
  saddle.

How it is computed. :func:`hessian_at_zero` forms the P x P matrix (P = L·k·d² parameters)
from Hessian-vector products on unit vectors in float64 (blocks of columns, so memory stays
bounded; the same numbers as ``jax.hessian``) and diagonalizes it with
``numpy.linalg.eigvalsh``; it refuses P > :data:`MAX_EXACT_PARAMS` = 4096 (a 128 MiB matrix).
Beyond that :func:`lanczos_spectrum`
uses Hessian-vector products (forward-over-reverse autodiff; no P x P matrix) and Lanczos with
full reorthogonalization: the extreme eigenvalues from H, and the smallest |λ| from the
smallest eigenvalue of H² (exact once the iteration count reaches the number of distinct
eigenvalues, e.g. d for k = 2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from meanfield.core import architecture as arch

__all__ = [
    "ACTIVATIONS",
    "MAX_EXACT_PARAMS",
    "Spectrum",
    "check_key",
    "data_correlation",
    "hessian_at_zero",
    "lanczos_ritz_values",
    "lanczos_spectrum",
    "loss",
    "principal_component_data",
    "shortcut2_spectrum",
    "spectrum",
    "whitened_data",
]

ACTIVATIONS = ("linear", "tanh")
MAX_EXACT_PARAMS = 4096
# Memory for one block of Hessian columns (exact method).
_CHUNK_BYTES = 2**28
# |λ| below this fraction of max|λ| counts as zero (float64 rounding of the products above).
_ZERO = 1e-10


def check_key(key) -> jax.Array:
    """``key`` if it is one typed PRNG key (``jax.random.key(seed)``), else ValueError (the
    message of :func:`meanfield.montecarlo.simulate`)."""
    typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not (typed and key.shape == ()):
        raise ValueError(f"key must be a typed PRNG key from jax.random.key(seed), got {key!r}")
    return key


def _check(depth: int, shortcut: int, activation: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    arch.static_int("depth", depth)
    arch.static_int("shortcut", shortcut)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(
            f"x and y must both be (N, d) arrays of the same shape, got {x.shape} and {y.shape}"
        )
    return x, y


def loss(params: jax.Array, x: jax.Array, y: jax.Array, activation: str = "linear") -> jax.Array:
    """Mean over the N rows of ||y - f(x)||², params of shape (L, k, d, d) (row-vector
    convention: a layer maps h to h Wᵀ)."""
    act = (lambda u: u) if activation == "linear" else jnp.tanh

    def unit(h, w):  # w: (k, d, d)
        branch = h @ w[0].T
        for j in range(1, w.shape[0]):
            branch = act(branch) @ w[j].T
        return h + branch, None

    out, _ = jax.lax.scan(unit, x, params)
    return jnp.mean(jnp.sum((y - out) ** 2, axis=1))


class Spectrum(NamedTuple):
    """Eigenvalues of the Hessian at zero and what they say."""

    eigenvalues: np.ndarray  # ascending (exact), or the Ritz values (Lanczos)
    max_abs: float  # spectral norm max|λ|
    min_abs: float  # smallest |λ| (0 when H is singular)
    condition: float  # max|λ| / min|λ|; inf when singular, nan when H = 0
    zero_fraction: float  # fraction of |λ| <= 1e-10 max|λ| (exact only; nan for Lanczos)
    gradient_norm: float  # ||∇ loss|| at zero: 0 means a saddle
    parameters: int  # P = L·k·d²
    method: str  # "exact" or "lanczos"


def _summary(eig, grad_norm, p, method, zero_fraction=math.nan) -> Spectrum:
    eig = np.asarray(eig, np.float64)
    a = np.abs(eig)
    top = float(a.max()) if a.size else 0.0
    if top == 0.0:
        return Spectrum(eig, 0.0, 0.0, math.nan, 1.0, grad_norm, p, method)
    bottom = float(a.min())
    if bottom <= _ZERO * top:
        bottom = 0.0
    cond = top / bottom if bottom > 0 else math.inf
    return Spectrum(eig, top, bottom, cond, zero_fraction, grad_norm, p, method)


def hessian_at_zero(x, y, *, depth: int, shortcut: int, activation: str = "linear") -> Spectrum:
    """Exact spectrum of the Hessian of :func:`loss` at W = 0 (float64, ``jax.hessian``)."""
    x, y = _check(depth, shortcut, activation, x, y)
    d = x.shape[1]
    p = depth * shortcut * d * d
    if p > MAX_EXACT_PARAMS:
        raise ValueError(
            f"depth·shortcut·d² = {p} parameters is above MAX_EXACT_PARAMS = {MAX_EXACT_PARAMS} "
            "for the exact Hessian; use lanczos_spectrum"
        )
    with jax.enable_x64(True):
        zero = jnp.zeros((p,), jnp.float64)
        shape = (depth, shortcut, d, d)
        xs, ys = jnp.asarray(x), jnp.asarray(y)

        def flat(w):
            return loss(w.reshape(shape), xs, ys, activation)

        grad = np.asarray(jax.grad(flat)(zero))
        # Column blocks of H as Hessian-vector products on unit vectors (the same numbers as
        # jax.hessian, whose all-at-once vmap would hold P copies of the activations).
        hvps = jax.jit(jax.vmap(lambda v: jax.jvp(jax.grad(flat), (zero,), (v,))[1]))
        per_column = 8 * x.shape[0] * d * depth * (shortcut + 2)
        chunk = int(max(1, min(p, _CHUNK_BYTES // per_column)))
        h = np.empty((p, p))
        for start in range(0, p, chunk):
            stop = min(start + chunk, p)
            basis = jnp.zeros((chunk, p), jnp.float64)
            basis = basis.at[jnp.arange(stop - start), jnp.arange(start, stop)].set(1.0)
            h[:, start:stop] = np.asarray(hvps(basis))[: stop - start].T
    eig = np.linalg.eigvalsh(0.5 * (h + h.T))
    top = np.abs(eig).max()
    zero_fraction = float(np.mean(np.abs(eig) <= _ZERO * top)) if top > 0 else 1.0
    return _summary(eig, float(np.linalg.norm(grad)), p, "exact", zero_fraction)


def lanczos_ritz_values(matvec, p: int, steps: int, *, key: jax.Array) -> np.ndarray:
    """Ritz values of a symmetric operator on R^p after ``steps`` Lanczos steps with full
    reorthogonalization (float64, NumPy loop around a jitted matvec), from the start vector
    ``normal(key, (p,))`` (call inside ``jax.enable_x64(True)`` for a float64 start)."""
    check_key(key)
    q = np.array(jax.random.normal(key, (p,), jnp.float64))
    q /= np.linalg.norm(q)
    basis, alphas, betas = [q], [], []
    for i in range(steps):
        w = np.array(matvec(jnp.asarray(basis[-1])))
        alpha = float(w @ basis[-1])
        alphas.append(alpha)
        qs = np.stack(basis)
        w = w - qs.T @ (qs @ w)  # full reorthogonalization (twice is enough)
        w = w - qs.T @ (qs @ w)
        beta = float(np.linalg.norm(w))
        if i == steps - 1 or beta <= 1e-12 * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        basis.append(w / beta)
    t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    return np.linalg.eigvalsh(t)


def lanczos_spectrum(
    x,
    y,
    *,
    depth: int,
    shortcut: int,
    activation: str = "linear",
    steps: int = 80,
    key: jax.Array,
) -> Spectrum:
    """Extreme eigenvalues and condition number of the Hessian at zero from Hessian-vector
    products, without forming it: ``steps`` Lanczos steps on H give its Ritz values (the
    largest |λ| converges first) and as many on H² give the smallest |λ|. ``eigenvalues``
    holds the Ritz values of H. Memory O(steps·P). ``key`` (typed, ``jax.random.key``) is
    split into the two Lanczos starts; once converged the result does not depend on it."""
    check_key(key)
    x, y = _check(depth, shortcut, activation, x, y)
    steps = arch.static_int("steps", steps)
    d = x.shape[1]
    p = depth * shortcut * d * d
    with jax.enable_x64(True):
        shape = (depth, shortcut, d, d)
        xs, ys = jnp.asarray(x), jnp.asarray(y)

        def flat(w):
            return loss(w.reshape(shape), xs, ys, activation)

        zero = jnp.zeros((p,), jnp.float64)
        grad_norm = float(jnp.linalg.norm(jax.grad(flat)(zero)))
        hvp = jax.jit(lambda v: jax.jvp(jax.grad(flat), (zero,), (v,))[1])
        steps = min(steps, p)
        key_h, key_h2 = jax.random.split(key)
        ritz = lanczos_ritz_values(hvp, p, steps, key=key_h)
        ritz2 = lanczos_ritz_values(lambda v: hvp(hvp(v)), p, steps, key=key_h2)
    spec = _summary(ritz, grad_norm, p, "lanczos")
    if spec.max_abs == 0.0:
        return spec
    smallest = math.sqrt(max(float(ritz2.min()), 0.0))
    if smallest <= _ZERO * spec.max_abs:
        smallest = 0.0
    cond = spec.max_abs / smallest if smallest > 0 else math.inf
    return spec._replace(min_abs=smallest, condition=cond)


def data_correlation(x, y) -> np.ndarray:
    """C = E[x (y - x)ᵀ] over the rows of x and y (d x d)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return x.T @ (y - x) / x.shape[0]


def shortcut2_spectrum(x, y, depth: int) -> np.ndarray:
    """Closed form for k = 2 (any σ with σ(0) = 0, σ'(0) = 1): the Hessian at zero has
    eigenvalues ±2 σ_j(C), each d times per unit and L units; ascending."""
    arch.static_int("depth", depth)
    c = data_correlation(x, y)
    s = np.linalg.svd(c, compute_uv=False)
    d = c.shape[0]
    one = np.concatenate([-2 * s, 2 * s])
    return np.sort(np.repeat(one, d * depth))


def whitened_data(d: int, n: int, *, seed: int = 0, noise: float = 0.1) -> tuple:
    """Synthetic whitened data: x with exact sample covariance I (N rows, d columns), and
    y = x Mᵀ + noise·ε with M a fixed Gaussian matrix of variance 1/d."""
    d = arch.static_int("d", d)
    n = arch.static_int("n", n)
    if n <= d:
        raise ValueError(f"n must be > d to whiten, got n={n}, d={d}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x -= x.mean(0)
    cov = x.T @ x / n
    lam, vec = np.linalg.eigh(cov)
    x = x @ vec @ np.diag(lam**-0.5) @ vec.T
    m = rng.standard_normal((d, d)) / math.sqrt(d)
    y = x @ m.T + noise * rng.standard_normal((n, d))
    return x, y


def spectrum(
    x,
    y,
    *,
    depth: int,
    shortcut: int,
    activation: str = "linear",
    steps: int = 80,
    key: jax.Array | None = None,
) -> Spectrum:
    """:func:`hessian_at_zero` when P <= MAX_EXACT_PARAMS, else :func:`lanczos_spectrum` with
    ``key`` (a typed key; required there, unused by the exact method)."""
    p = depth * shortcut * np.shape(x)[1] ** 2
    if p <= MAX_EXACT_PARAMS:
        return hessian_at_zero(x, y, depth=depth, shortcut=shortcut, activation=activation)
    if key is None:
        raise ValueError(
            f"key is required above MAX_EXACT_PARAMS = {MAX_EXACT_PARAMS} parameters (got {p}): "
            "the Lanczos starts are drawn from it; pass key=jax.random.key(seed)"
        )
    return lanczos_spectrum(
        x, y, depth=depth, shortcut=shortcut, activation=activation, steps=steps, key=key
    )


def principal_component_data(images, labels, d: int) -> tuple[np.ndarray, np.ndarray]:
    """A d-dimensional regression problem from a real image set: x = the d leading principal
    components of the flattened images, whitened (sample covariance I); y = the centred
    one-hot class label (first d classes' columns; d must be >= the number of classes).
    For CIFAR-10 with d = 10, C = E[x (y - x)ᵀ] is the least-squares map from 10 principal
    components to the 10 classes, minus the identity."""
    d = arch.static_int("d", d)
    images = np.asarray(images, np.float64).reshape(len(images), -1)
    labels = np.asarray(labels)
    classes = int(labels.max()) + 1
    if d < classes:
        raise ValueError(f"d must be >= the number of classes ({classes}), got {d}")
    if len(images) <= d:
        raise ValueError(f"need more than d = {d} images, got {len(images)}")
    centred = images - images.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    x = centred @ vt[:d].T
    x = x / x.std(0)  # principal components are uncorrelated: this whitens exactly
    y = np.zeros((len(labels), d))
    y[np.arange(len(labels)), labels] = 1.0
    return x, y - y.mean(0)
