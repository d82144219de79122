"""Standard normal draws for the Monte-Carlo engines: JAX's threefry normals, lowered for speed.

The simulator spends much of its time drawing normals: the explicit engine n² per layer and
network, the weight-free one 2nB (docs/performance.md). :func:`standard_normal` returns
**the same numbers as** ``jax.random.normal(key, shape, dtype)`` under
``jax_threefry_partitionable=False`` (JAX's original counter layout), bit for bit, so its law
is JAX's; only how the threefry-2x32 hash is compiled differs:

* XLA:CPU receives JAX's threefry as a rolled loop of five four-round steps
  (``jax._src.random.threefry2x32``), which writes the whole 2 x 32-bit state to memory
  between steps; here the 20 rounds are plain ``lax`` integer ops that XLA fuses into one
  pass (2.7-3.2x the normals per second on a 2-core CPU, docs/performance.md);
* the original counter layout hashes one counter pair for every two 32-bit words, where the
  partitionable one (JAX's default) hashes a pair per word and XORs the halves.

On GPUs JAX already lowers the hash unrolled, so there only the layout should differ (not
measured yet). Keys of another implementation (``rbg``, ``unsafe_rbg``), legacy ``uint32``
keys, draws of 2³² - 1 words or more and dtypes other than float32 and float64 fall back to
``jax.random.normal`` itself, in the original layout too, so the numbers never depend on
which path a draw takes.

Each draw must still get its own key (``fold_in`` or ``split``), as with ``jax.random``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["standard_normal", "threefry_2x32", "threefry_bits"]

# Threefry-2x32 rotation constants (Salmon et al. 2011, Table 4; the constants JAX uses).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
# JAX's original layout hashes one key's uint32 counters up to this count; from there on it
# splits the key into blocks (``divmod(words, 2**32 - 1)``), which the fallback leaves to it.
_MAX_WORDS = int(np.iinfo(np.uint32).max)


def threefry_2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array):
    """The threefry-2x32 hash (20 rounds) of the counter pairs (x1, x2) under key (k1, k2),
    all uint32, written out round by round so that XLA fuses it into one elementwise pass.
    Equal to ``jax.extend.random.threefry_2x32((k1, k2), concatenate([x1, x2]))`` split in
    halves."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = lax.shift_left(x2, np.uint32(r)) | lax.shift_right_logical(x2, np.uint32(32 - r))
            x2 = x1 ^ x2
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def threefry_bits(key_data: jax.Array, words: int) -> jax.Array:
    """``words`` uint32 random words from a threefry key's data (uint32[2]), in JAX's original
    layout: counters 0..words-1 (padded to even), split in halves, hashed as pairs, the two
    outputs concatenated."""
    half = -(-words // 2)
    count = lax.iota(np.uint32, 2 * half)
    if 2 * half != words:  # the padded counter is 0, as in JAX
        count = jnp.where(count == words, np.uint32(0), count)
    y1, y2 = threefry_2x32(key_data[0], key_data[1], count[:half], count[half:])
    return jnp.concatenate([y1, y2])[:words]


def _fast_path(key: jax.Array, size: int, dtype) -> bool:
    typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    return (
        typed
        and key.shape == ()
        and jax.random.key_impl(key) == "threefry2x32"
        and dtype in (jnp.float32, jnp.float64)
        and size * dtype.itemsize // 4 < _MAX_WORDS
    )


def standard_normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """I.i.d. N(0, 1) entries of ``shape``: ``jax.random.normal(key, shape, dtype)`` under
    ``jax_threefry_partitionable=False``, bit for bit, from a hash that XLA compiles into one
    fused pass (module docstring).

    ``key`` is one typed key (``jax.random.key``; vmap over keys for many). ``dtype`` is
    canonicalized as JAX does (float64 means float32 unless x64 is enabled). Other keys, float
    dtypes other than float32/float64 and draws of 2³² - 1 words or more are passed on to
    ``jax.random.normal`` under the same original layout.

    The transform is JAX's: 23 (52) random mantissa bits give u uniform on [-1, 1) clipped
    to the next float above -1, and x = √2 erf⁻¹(u).
    """
    shape = tuple(int(d) for d in shape)
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    size = math.prod(shape)
    if not _fast_path(key, size, dtype):
        with jax.threefry_partitionable(False):
            return jax.random.normal(key, shape, dtype)
    data = jax.random.key_data(key)
    if dtype == jnp.float64:
        hi, lo = jnp.split(threefry_bits(data, 2 * size).astype(jnp.uint64), 2)
        bits, uint, nmant = lax.shift_left(hi, np.uint64(32)) | lo, np.uint64, 52
    else:
        bits, uint, nmant = threefry_bits(data, size), np.uint32, 23
    one = np.array(1.0, dtype).view(uint)
    mantissa = lax.shift_right_logical(bits, uint(8 * dtype.itemsize - nmant)) | one
    floats = lax.bitcast_convert_type(mantissa, dtype) - jnp.array(1.0, dtype)
    low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    minval, maxval = jnp.array(low, dtype), jnp.array(1.0, dtype)
    u = lax.max(minval, floats * (maxval - minval) + minval)
    return (np.array(np.sqrt(2), dtype) * lax.erf_inv(u)).reshape(shape)
