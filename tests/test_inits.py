"""Initialization schemes: realized variances against their rules (within a few standard errors,
with a planted wrong rule that the same band must reject), Haar orthogonality, Flax use,
jit/vmap, and validation.

The rules below are written out from the papers, not read from meanfield.inits or its output.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield import inits
from meanfield import theory as t
from tests.helpers import assert_close

K = 4.0  # standard errors allowed between a realized statistic and its rule

# (shape, fan_in, fan_out) written out by hand: a dense n x n weight and the paper's 8x8
# convolution with 16 channels (fan-in 8·8·16 = 1024, fan-out 16).
SHAPES = [((512, 512), 512, 512), ((8, 8, 16, 16), 1024, 16)]

DEPTH, C = 100, 2.0  # depth_scaled at the paper's L = 100, with c != 1 so that c matters
VAR = 0.3  # the variance given to inits.normal


def _sample(scheme, key, shape):
    if scheme == "he":
        return inits.he_normal(key, shape)
    if scheme == "glorot":
        return inits.glorot_normal(key, shape)
    if scheme == "depth_scaled":
        return inits.depth_scaled(key, shape, depth=DEPTH, c=C)
    return inits.normal(key, shape, VAR)


# scheme -> (rule, a planted wrong rule that the K-SE band must reject), both from (fan_in,
# fan_out). The wrong rules are the mistakes one would plausibly make.
RULES = {
    "he": (lambda fi, fo: 2 / fi, lambda fi, fo: 1 / fi),  # He's factor 2 dropped
    "glorot": (lambda fi, fo: 2 / (fi + fo), lambda fi, fo: 1 / (fi + fo)),  # factor 2 dropped
    "depth_scaled": (
        lambda fi, fo: C / (fi * DEPTH),
        lambda fi, fo: 1 / (fi * DEPTH),  # c ignored
    ),
    "normal": (lambda fi, fo: VAR, lambda fi, fo: math.sqrt(VAR)),  # var_w used as the std
}


def _moments(w):
    """Sample variance and mean with their standard errors, for i.i.d. Gaussian entries."""
    w = np.asarray(w, np.float64).ravel()
    n = w.size
    var = w.var(ddof=1)
    return var, var * math.sqrt(2 / n), w.mean(), math.sqrt(var / n)


@pytest.mark.parametrize("shape, fan_in, fan_out", SHAPES, ids=["dense", "conv"])
@pytest.mark.parametrize("scheme", list(RULES))
def test_realized_variance_matches_rule_and_rejects_a_planted_wrong_rule(
    scheme, shape, fan_in, fan_out
):
    assert math.prod(shape[:-1]) == fan_in and shape[-1] == fan_out
    seed = list(RULES).index(scheme) * 10 + len(shape)
    w = _sample(scheme, jax.random.key(seed), shape)
    assert w.shape == shape and w.dtype == jnp.float32
    var, se_var, mean, se_mean = _moments(w)
    rule, wrong = RULES[scheme]
    expected = rule(fan_in, fan_out)
    assert abs(var - expected) < K * se_var, (var, expected, se_var)
    assert abs(mean) < K * se_mean, (mean, se_mean)
    # The same band rejects the planted mistake, so the check above has teeth.
    assert abs(var - wrong(fan_in, fan_out)) > 5 * K * se_var
    if len(shape) > 2 and scheme != "normal":
        # Conv: a fan-in of C_in alone (the receptive field forgotten) is rejected too.
        assert abs(var - rule(shape[-2], fan_out)) > 5 * K * se_var


@pytest.mark.parametrize("gain", [1.0, 2.0])
@pytest.mark.parametrize("n", [64, 512])
def test_orthogonal_is_orthogonal_with_variance_gain2_over_n(n, gain):
    w = inits.orthogonal(jax.random.key(n), (n, n), gain=gain)
    assert w.shape == (n, n) and w.dtype == jnp.float32
    w64 = np.asarray(w, np.float64)  # products in float64 on the host: no TF32 on GPUs
    np.testing.assert_allclose(w64.T @ w64, gain**2 * np.eye(n), rtol=0, atol=1e-5)
    np.testing.assert_allclose(w64 @ w64.T, gain**2 * np.eye(n), rtol=0, atol=1e-5)
    var, se_var, mean, se_mean = _moments(w)
    assert abs(var - gain**2 / n) < K * se_var
    assert abs(mean) < K * se_mean
    if gain != 1.0:  # a variance of gain/n (gain where gain² belongs) is rejected
        assert abs(var - gain / n) > 5 * K * se_var


def test_orthogonal_is_haar_its_diagonal_is_unbiased_unlike_plain_qr():
    # For a Haar orthogonal matrix every entry has mean 0. The Q of a plain Householder QR of
    # a Gaussian matrix does not: LAPACK makes Q_11 = -|G_11|/||G_1|| < 0, and the other
    # diagonal entries are biased too. Compute both from the same keys.
    n, draws = 8, 4000
    keys = jax.random.split(jax.random.key(7), draws)
    w = jax.vmap(lambda k: inits.orthogonal(k, (n, n)))(keys)
    q = jax.vmap(lambda k: jnp.linalg.qr(jax.random.normal(k, (n, n)))[0])(keys)

    def mean_diag_and_se(a):
        # Per draw, the mean of the diagonal (trace / n); across draws these are independent.
        per_draw = np.asarray(jnp.diagonal(a, axis1=1, axis2=2), np.float64).mean(axis=1)
        return per_draw.mean(), per_draw.std(ddof=1) / math.sqrt(draws)

    m, se = mean_diag_and_se(w)
    assert abs(m) < K * se, (m, se)
    m_plain, se_plain = mean_diag_and_se(q)
    assert abs(m_plain) > 5 * K * se_plain, (m_plain, se_plain)  # the test would catch it
    # And per position: the first diagonal entry alone, the most biased one for plain QR.
    w11 = np.asarray(w[:, 0, 0], np.float64)
    assert abs(w11.mean()) < K * w11.std(ddof=1) / math.sqrt(draws)
    q11 = np.asarray(q[:, 0, 0], np.float64)
    assert abs(q11.mean()) > 5 * K * q11.std(ddof=1) / math.sqrt(draws)


def test_zero_is_exactly_zero_in_the_requested_dtype():
    w = inits.zero(jax.random.key(0), (8, 8, 16, 16))
    assert w.shape == (8, 8, 16, 16) and w.dtype == jnp.float32
    assert not np.any(np.asarray(w))
    assert inits.zero(jax.random.key(1), (3, 5), jnp.bfloat16).dtype == jnp.bfloat16


def test_var_w_follows_the_rules_and_the_theory_functions(x64):
    n_in, n_out, L, c, g = 1024, 16, 100, 2.0, 1.5
    cases = [
        (inits.var_w("he", fan_in=n_in), 2 / n_in, t.he_var_w(n_in)),
        (
            inits.var_w("glorot", fan_in=n_in, fan_out=n_out),
            2 / (n_in + n_out),
            t.glorot_var_w(n_in, n_out),
        ),
        (inits.var_w("glorot", fan_in=n_in), 1 / n_in, t.glorot_var_w(n_in)),  # square
        (
            inits.var_w("depth_scaled", fan_in=n_in, depth=L, c=c),
            c / (n_in * L),
            t.depth_scaled_var_w(n_in, L, c),
        ),
        (inits.var_w("depth_scaled", fan_in=n_in, depth=L), 1 / (n_in * L), None),  # c = 1
        (inits.var_w("orthogonal", fan_in=n_in, gain=g), g**2 / n_in, None),
        (inits.var_w("zero", fan_in=n_in), 0.0, None),
    ]
    for got, rule, theory_value in cases:
        assert float(got) == pytest.approx(rule, rel=1e-14)
        if theory_value is not None:
            assert float(got) == float(theory_value)
    # Arrays broadcast, like the theory functions.
    widths = np.array([16.0, 256.0])
    assert_close(inits.var_w("he", fan_in=widths), 2 / widths, rtol=1e-14)
    assert_close(inits.var_w("zero", fan_in=widths), [0.0, 0.0], rtol=0)


@pytest.mark.parametrize(
    "scheme, kwargs",
    [
        ("he", {}),
        ("glorot", {}),
        ("depth_scaled", dict(depth=50, c=0.5)),
        ("orthogonal", dict(gain=2.0)),
    ],
)
def test_var_w_is_the_realized_variance_of_the_sampler_from_get(scheme, kwargs):
    shape = (256, 256)
    w = inits.get(scheme, **kwargs)(jax.random.key(3), shape)
    var, se_var, _, _ = _moments(w)
    expected = float(inits.var_w(scheme, fan_in=256, fan_out=256, **kwargs))
    assert abs(var - expected) < K * se_var
    assert abs(var - 2 * expected) > 5 * K * se_var  # the band is narrow enough to matter


def test_get_gives_flax_kernel_inits_for_dense_and_conv():
    key = jax.random.key(0)
    x_dense = jnp.ones((4, 64))
    x_conv = jnp.ones((2, 8, 8, 16))  # NHWC with 16 channels
    for scheme, kw in [("he", {}), ("glorot", {}), ("depth_scaled", dict(depth=100)), ("zero", {})]:
        init = inits.get(scheme, **kw)
        dense = nn.Dense(32, kernel_init=init).init(key, x_dense)["params"]["kernel"]
        conv = nn.Conv(16, (8, 8), kernel_init=init).init(key, x_conv)["params"]["kernel"]
        assert dense.shape == (64, 32) and dense.dtype == jnp.float32
        assert conv.shape == (8, 8, 16, 16) and conv.dtype == jnp.float32
        # Flax's fan-in is ours: the realized conv variance follows fan_in = 8·8·16.
        var, se_var, _, _ = _moments(conv)
        expected = float(inits.var_w(scheme, fan_in=1024, fan_out=16, **kw))
        assert abs(var - expected) < K * se_var + (1e-30 if scheme == "zero" else 0.0)
    square = nn.Dense(64, kernel_init=inits.get("orthogonal", gain=2.0)).init(key, x_dense)
    w = np.asarray(square["params"]["kernel"], np.float64)
    np.testing.assert_allclose(w.T @ w, 4.0 * np.eye(64), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="square"):
        nn.Dense(32, kernel_init=inits.get("orthogonal")).init(key, x_dense)


SAMPLERS = {
    "he": inits.get("he"),
    "glorot": inits.get("glorot"),
    "depth_scaled": inits.get("depth_scaled", depth=10, c=0.5),
    "orthogonal": inits.get("orthogonal", gain=1.5),
    "zero": inits.get("zero"),
    "normal": lambda key, shape, dtype=jnp.float32: inits.normal(key, shape, 0.25, dtype),
}


@pytest.mark.parametrize("scheme", list(SAMPLERS))
def test_jit_and_vmap_over_keys(scheme):
    init = SAMPLERS[scheme]
    shape = (16, 16)
    keys = jax.random.split(jax.random.key(11), 3)
    eager = np.stack([np.asarray(init(k, shape)) for k in keys])
    jitted = jax.jit(init, static_argnums=(1, 2))
    assert_close(jitted(keys[0], shape, jnp.float32), eager[0], rtol=1e-5, atol=1e-6)
    mapped = jax.vmap(lambda k: init(k, shape))(keys)
    assert mapped.shape == (3, *shape)
    assert_close(mapped, eager, rtol=1e-5, atol=1e-6)
    # Same key -> same draw; different keys -> different draws (except the zero init).
    np.testing.assert_array_equal(np.asarray(init(keys[0], shape)), eager[0])
    if scheme != "zero":
        assert not np.allclose(eager[0], eager[1])
    else:
        assert not np.any(eager)


def test_normal_takes_a_vmapped_var_w_and_dtypes_do_not_promote(x64):
    key = jax.random.key(5)
    v = jnp.array([0.5, 2.0])  # float64 under x64
    ws = jax.vmap(lambda var: inits.normal(key, (128, 128), var))(v)
    assert ws.dtype == jnp.float32  # the float64 variance does not promote the draw
    # The same key and a 4x variance give exactly 2x the draw.
    assert_close(ws[1], 2.0 * np.asarray(ws[0]), rtol=1e-6)
    assert inits.he_normal(key, (8, 8), jnp.float64).dtype == jnp.float64
    assert inits.orthogonal(key, (8, 8), dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_fan_in_out_follows_the_flax_convention():
    assert inits.fan_in_out((512, 256)) == (512, 256)
    assert inits.fan_in_out((8, 8, 16, 32)) == (8 * 8 * 16, 32)
    assert inits.fan_in_out([3, 5, 7]) == (15, 7)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: inits.var_w("kaiming", fan_in=4), r"scheme .*'he', 'glorot'.*'kaiming'"),
        (lambda: inits.get("kaiming"), r"scheme .*'depth_scaled'.*'kaiming'"),
        (lambda: inits.var_w("depth_scaled", fan_in=4), r"depth .*depth_scaled"),
        (lambda: inits.get("depth_scaled"), r"depth .*depth_scaled"),
        (lambda: inits.get("depth_scaled", depth=0), r"depth must be an integer >= 1, got 0"),
        (lambda: inits.get("depth_scaled", depth=10, c=-1.0), r"c must be .*> 0, got -1.0"),
        (lambda: inits.get("orthogonal", gain=0.0), r"gain must be .*> 0, got 0.0"),
        (
            lambda: inits.var_w("orthogonal", fan_in=4, fan_out=8),
            r"fan_out must equal fan_in for orthogonal",
        ),
        (lambda: inits.var_w("he", fan_in=0), r"fan_in must be a finite number >= 1, got 0"),
        (lambda: inits.orthogonal(jax.random.key(0), (4, 8)), r"shape .*square.*\(4, 8\)"),
        (lambda: inits.orthogonal(jax.random.key(0), (2, 4, 4)), r"shape .*square.*\(2, 4, 4\)"),
        (lambda: inits.get("orthogonal")(jax.random.key(0), (4, 8)), r"shape .*orthogonal"),
        (lambda: inits.he_normal(jax.random.key(0), (5,)), r"shape .*2 dimensions.*\(5,\)"),
        (lambda: inits.glorot_normal(jax.random.key(0), (5,)), r"shape .*2 dimensions"),
        (lambda: inits.depth_scaled(jax.random.key(0), (5,), depth=3), r"shape .*2 dimensions"),
        (lambda: inits.fan_in_out(()), r"shape .*2 dimensions"),
        (lambda: inits.fan_in_out((0, 5)), r"shape .*>= 1.*\(0, 5\)"),
        (lambda: inits.fan_in_out((4, 2.5)), r"shape .*integers"),
        (lambda: inits.normal(jax.random.key(0), (4, 4), -1.0), r"var_w .*> 0, got -1.0"),
        (lambda: inits.normal(jax.random.key(0), (4, 4), jnp.ones(4)), r"var_w must be a scalar"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_schemes_are_all_served_by_var_w_and_get():
    assert set(inits.SCHEMES) == {"he", "glorot", "depth_scaled", "orthogonal", "zero"}
    for scheme in inits.SCHEMES:
        kw = dict(depth=10) if scheme == "depth_scaled" else {}
        assert callable(inits.get(scheme, **kw))
        assert np.isfinite(float(inits.var_w(scheme, fan_in=64, **kw)))
