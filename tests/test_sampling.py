"""The engines' normal sampler: JAX's own threefry normals (original counter layout) bit for
bit, from a hash that XLA fuses; the fallbacks; and the law, checked independently of JAX."""

import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from meanfield.core import sampling

SHAPES = [(), (1,), (3,), (7, 5), (2, 3, 5), (8, 4096), (1001,)]


def _jax_original(key, shape, dtype=jnp.float32):
    """jax.random.normal with JAX's original (non-partitionable) threefry counter layout."""
    with jax.threefry_partitionable(False):
        return jax.random.normal(key, shape, dtype)


def test_hash_equals_jax_threefry_2x32():
    k = jnp.array([0x13198A2E, 0x03707344], jnp.uint32)
    x = jax.random.bits(jax.random.key(0), (2, 1000), jnp.uint32)
    ours = jnp.concatenate(sampling.threefry_2x32(k[0], k[1], x[0], x[1]))
    ref = jax.extend.random.threefry_2x32(k, x.ravel())
    assert np.array_equal(np.asarray(ours), np.asarray(ref))


def test_hash_matches_the_published_known_answer():
    # Random123's kat_vectors, threefry2x32_20: key = counter = (0, 0) and all ones.
    y = sampling.threefry_2x32(*(jnp.zeros((1,), jnp.uint32),) * 4)
    assert [int(v[0]) for v in y] == [0x6B200159, 0x99BA4EFE]
    ones = jnp.full((1,), 0xFFFFFFFF, jnp.uint32)
    y = sampling.threefry_2x32(ones, ones, ones, ones)
    assert [int(v[0]) for v in y] == [0x1CB996FC, 0xBB002BE7]
    pi = [jnp.array([v], jnp.uint32) for v in (0x13198A2E, 0x03707344, 0x243F6A88, 0x85A308D3)]
    assert [int(v[0]) for v in sampling.threefry_2x32(*pi)] == [0xC4923A9C, 0x483DF7A0]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("seed", [0, 12345])
def test_equals_jax_normal_bit_for_bit(shape, seed):
    key = jax.random.fold_in(jax.random.key(seed), 3)
    ref = np.asarray(_jax_original(key, shape))
    eager = np.asarray(sampling.standard_normal(key, shape))
    jitted = np.asarray(jax.jit(lambda k: sampling.standard_normal(k, shape))(key))
    assert eager.shape == ref.shape == shape and eager.dtype == np.float32
    assert np.array_equal(eager, ref) and np.array_equal(jitted, ref)


@pytest.mark.parametrize("shape", [(), (3,), (7, 5), (8, 256)], ids=str)
def test_equals_jax_normal_in_float64(shape, x64):
    key = jax.random.key(5)
    ref = np.asarray(_jax_original(key, shape, jnp.float64))
    ours = sampling.standard_normal(key, shape, jnp.float64)
    jitted = jax.jit(lambda k: sampling.standard_normal(k, shape, jnp.float64))(key)
    assert ours.dtype == jnp.float64 and np.array_equal(np.asarray(ours), ref)
    assert np.array_equal(np.asarray(jitted), ref)
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k: sampling.standard_normal(k, shape, jnp.float64))(keys)
    ref = np.stack([_jax_original(k, shape, jnp.float64) for k in keys])
    assert np.array_equal(np.asarray(batched), ref)


def test_vmapped_over_keys_equals_one_key_at_a_time():
    keys = jax.random.split(jax.random.key(1), 6)
    ours = jax.jit(jax.vmap(lambda k: sampling.standard_normal(jax.random.fold_in(k, 2), (4, 9))))
    ref = np.stack([_jax_original(jax.random.fold_in(k, 2), (4, 9)) for k in keys])
    assert np.array_equal(np.asarray(ours(keys)), ref)


@pytest.mark.parametrize(
    "key, dtype",
    [
        (jax.random.key(0, impl="rbg"), jnp.float32),
        (jax.random.key(0, impl="unsafe_rbg"), jnp.float32),
        (jax.random.key(0), jnp.bfloat16),
        (jax.random.key(0), jnp.float16),
    ],
    ids=["rbg", "unsafe_rbg", "bfloat16", "float16"],
)
def test_other_keys_and_dtypes_fall_back_to_jax_random_normal(key, dtype):
    ours = sampling.standard_normal(key, (5, 7), dtype)
    assert ours.dtype == dtype
    assert np.array_equal(np.asarray(ours), np.asarray(_jax_original(key, (5, 7), dtype)))


def test_a_legacy_key_gives_the_numbers_of_its_typed_key():
    legacy = sampling.standard_normal(jax.random.PRNGKey(4), (6, 3))
    typed = sampling.standard_normal(jax.random.key(4), (6, 3))
    assert np.array_equal(np.asarray(legacy), np.asarray(typed))


def test_dtype_is_canonicalized_as_jax_does():
    # Without x64, float and float64 mean float32 (not 64-bit arithmetic on 32-bit words).
    key = jax.random.key(8)
    ref = np.asarray(_jax_original(key, (4, 5), jnp.float32))
    for dtype in (float, jnp.float64, "float64"):
        ours = sampling.standard_normal(key, (4, 5), dtype)
        assert ours.dtype == jnp.float32 and np.array_equal(np.asarray(ours), ref)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0)], ids=str)
def test_empty_shapes(shape):
    assert sampling.standard_normal(jax.random.key(0), shape).shape == shape


def test_the_hash_is_traced_as_plain_integer_ops():
    """What makes the sampler fast: its program holds no random_bits (which XLA:CPU lowers to
    JAX's rolled threefry loop), where jax.random.normal's does."""
    key = jax.random.key(0)
    ours = str(jax.make_jaxpr(lambda k: sampling.standard_normal(k, (8, 16)))(key))
    ref = str(jax.make_jaxpr(lambda k: jax.random.normal(k, (8, 16)))(key))
    assert "random_bits" in ref
    assert "random_bits" not in ours and "threefry" not in ours


def test_the_law_is_standard_normal():
    """Independent of JAX: first four moments within 4 standard errors, a KS test, and no
    correlation between the two outputs of each hash (elements i and i + size/2) or between
    neighbours."""
    size = 2**20
    x = np.asarray(sampling.standard_normal(jax.random.key(2), (size,)), np.float64)
    se = 1 / math.sqrt(size)
    assert abs(x.mean()) < 4 * se
    assert abs(x.var() - 1) < 4 * math.sqrt(2) * se
    assert abs(scipy.stats.skew(x)) < 4 * math.sqrt(6) * se
    assert abs(scipy.stats.kurtosis(x)) < 4 * math.sqrt(24) * se
    assert scipy.stats.kstest(x, "norm").pvalue > 1e-3
    half = size // 2
    assert abs(np.corrcoef(x[:half], x[half:])[0, 1]) < 4 * math.sqrt(2) * se
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 4 * se


def test_distinct_keys_give_independent_draws():
    a = np.asarray(sampling.standard_normal(jax.random.key(3), (2**16,)))
    b = np.asarray(sampling.standard_normal(jax.random.fold_in(jax.random.key(3), 1), (2**16,)))
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / math.sqrt(2**16)
