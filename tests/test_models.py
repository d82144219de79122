"""The Flax ResNet: parameter structure, the realized initialization, and an independent
plain-JAX implementation of the same network that its outputs, statistics and taps must equal."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield import Block
from meanfield.training import models
from meanfield.training.models import ResNet, ResNetConfig

# 8x8 images: the network is convolutional with global pooling, so nothing tested here depends
# on the 32x32 of CIFAR-10 (parameters, the realized init, equality with the reference), and a
# quarter of the positions keeps these eager (op-by-op) tests cheap. The shift test uses 16x16.
X = jax.random.normal(jax.random.key(7), (4, 8, 8, 3))


def test_parameter_structure_of_the_papers_network():
    # Stem 8·8·3·16 = 3072; each block one 8x8 conv 16 -> 16 without bias, 8·8·16·16 = 16384,
    # plus BN's scale and offset (2·16 = 32) when there is BN; head 16·10 + 10 = 170.
    # 100 blocks: 3072 + 1,638,400 + 170 = 1,641,642 without BN, + 3200 with.
    for norm, expected in (("none", 1_641_642), ("bn_post", 1_644_842), ("bn_pre", 1_644_842)):
        cfg = ResNetConfig(block=Block("relu", norm))
        shapes = jax.eval_shape(lambda cfg=cfg: ResNet(cfg).init(jax.random.key(0), X, train=False))
        params = shapes["params"]
        assert params["stem"]["kernel"].shape == (8, 8, 3, 16)
        assert params["blocks"]["Conv_0"]["kernel"].shape == (100, 8, 8, 16, 16)
        assert params["head"]["kernel"].shape == (16, 10)
        total = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(params))
        assert total == expected == models.count_params(cfg)
        assert ("batch_stats" in shapes) == (norm != "none")


def _moments(a):
    a = np.asarray(a, dtype=np.float64).ravel()
    return a.size, a.mean(), a.var(), np.mean(a**4) / np.mean(a**2) ** 2


@pytest.mark.parametrize("init", ["he", "depth_scaled"])
def test_realized_kernels_have_the_requested_variance_and_are_not_truncated(init):
    cfg = ResNetConfig(init=init)  # the paper's network: n = 8·8·16, L = 100
    # A rolled scan over the blocks draws the same parameters as the unrolled one (the
    # trainer's init relies on it, tests/test_train.py) and compiles once, not 100 times.
    params = jax.jit(ResNet(cfg, unroll=1).init, static_argnames="train")(
        jax.random.key(1), X[:1, :1, :1], train=False
    )["params"]
    expected = {"he": 2 / 1024, "depth_scaled": 1 / (1024 * 100)}[init]  # written out by hand
    n, mean, var, kurt = _moments(params["blocks"]["Conv_0"]["kernel"])
    # Sampling errors of N(0, v) draws: mean sqrt(v/N), variance v sqrt(2/N), kurtosis
    # sqrt(24/N). A truncated normal (Flax's default initializers) has kurtosis < 3.
    assert abs(mean) < 4 * math.sqrt(expected / n)
    assert abs(var / expected - 1) < 4 * math.sqrt(2 / n)
    assert abs(kurt - 3) < 4 * math.sqrt(24 / n)
    n, _, var, _ = _moments(params["stem"]["kernel"])
    assert abs(var / (2 / 192) - 1) < 4 * math.sqrt(2 / n)  # He, fan-in 8·8·3


def _bn(z, p, eps=1e-5):
    mean = z.mean(axis=(0, 1, 2), keepdims=True)
    var = z.var(axis=(0, 1, 2), keepdims=True)
    return (z - mean) / jnp.sqrt(var + eps) * p["scale"][None, None, None] + p["bias"][
        None, None, None
    ]


def _conv(z, w, padding):
    if padding == "circular":
        k = w.shape[0]
        z = jnp.pad(z, ((0, 0), ((k - 1) // 2, k // 2), ((k - 1) // 2, k // 2), (0, 0)), "wrap")
        pad = "VALID"
    else:
        pad = "SAME"
    dn = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(
        z, w, (1, 1), pad, dimension_numbers=dn, precision="highest"
    )


def _reference(cfg, params, x, probes):
    """The network written out directly: z^0 = stem(x), then the blocks of the paper's Fig. 1a,
    1b and 4, global average pooling and the head; probes are added to every z^l."""
    f = jax.nn.relu if cfg.block.activation == "relu" else (lambda u: u)
    z = _conv(x, params["stem"]["kernel"], cfg.padding) + probes[0]
    m2 = [jnp.mean(z**2)]
    for l in range(cfg.depth):
        w = params["blocks"]["Conv_0"]["kernel"][l]
        bn = {k: v[l] for k, v in params["blocks"].get("BatchNorm_0", {}).items()}
        if cfg.block.norm == "none":
            h = f(_conv(z, w, cfg.padding))
        elif cfg.block.norm == "bn_post":
            h = f(_conv(_bn(z, bn), w, cfg.padding))
        else:
            h = _conv(f(_bn(z, bn)), w, cfg.padding)
        z = (z + h if cfg.block.residual else h) + probes[l + 1]
        m2.append(jnp.mean(z**2))
    logits = z.mean(axis=(1, 2)) @ params["head"]["kernel"] + params["head"]["bias"][None]
    return logits, jnp.stack(m2)


@pytest.mark.parametrize(
    "block",
    [
        Block("relu", "none"),
        Block("relu", "bn_post"),
        Block("relu", "bn_pre"),
        Block("identity", "bn_post", residual=False),
    ],
    ids=lambda b: b.name,
)
@pytest.mark.parametrize("padding", ["circular", "same"])
def test_network_equals_an_independent_implementation(block, padding):
    cfg = ResNetConfig(block=block, depth=3, channels=4, kernel_size=4, padding=padding)
    model = ResNet(cfg)
    variables = model.init(jax.random.key(2), X, train=False)
    params = variables["params"]
    # Non-trivial BN scale and offset, so that they are exercised.
    if "BatchNorm_0" in params["blocks"]:
        bn = params["blocks"]["BatchNorm_0"]
        bn["scale"] = 1 + 0.3 * jax.random.normal(jax.random.key(3), bn["scale"].shape)
        bn["bias"] = 0.2 * jax.random.normal(jax.random.key(4), bn["bias"].shape)
    y = jnp.array([0, 3, 5, 9])

    def loss_model(taps):
        (logits, stats), _ = model.apply(
            {**variables, "params": params}, X, train=True, taps=taps, mutable=["batch_stats"]
        )
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y]), (logits, stats)

    def loss_ref(probes):
        logits, m2 = _reference(cfg, params, X, probes)
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y]), (logits, m2)

    with jax.default_matmul_precision("highest"):
        g_taps, (logits, stats) = jax.grad(loss_model, has_aux=True)(jnp.zeros(cfg.depth + 1))
        probes = jnp.zeros((cfg.depth + 1, *X.shape[:3], cfg.channels))
        g_probes, (logits_ref, m2_ref) = jax.grad(loss_ref, has_aux=True)(probes)
    np.testing.assert_allclose(logits, logits_ref, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(stats["log_m2_z"]), m2_ref, rtol=2e-5)
    # The taps' cotangents are the per-layer log of the mean of (dE/dz^l)².
    m2_dz = jnp.mean(jnp.square(g_probes), axis=(1, 2, 3, 4))
    np.testing.assert_allclose(np.exp(g_taps), m2_dz, rtol=1e-4)


def test_log_mean_square_does_not_overflow():
    x = jnp.array([[3e30, -4e30], [0.0, 1e-30]], jnp.float32)  # x² overflows float32
    expected = np.log(np.mean(np.asarray(x, np.float64) ** 2))
    np.testing.assert_allclose(models.log_mean_square(x), expected, rtol=1e-6)
    rows = np.log(np.mean(np.asarray(x, np.float64) ** 2, axis=1))
    np.testing.assert_allclose(models.log_mean_square(x, axis=1), rows, rtol=1e-6)


def test_circular_padding_makes_the_network_shift_invariant():
    x = jax.random.normal(jax.random.key(7), (4, 16, 16, 3))  # 8x8 kernels: a larger image
    x_shift = jnp.roll(x, (5, -3), axis=(1, 2))
    for padding, invariant in (("circular", True), ("same", False)):
        cfg = ResNetConfig(depth=2, channels=4, kernel_size=8, padding=padding)
        model = ResNet(cfg)
        variables = model.init(jax.random.key(0), x, train=False)
        a = model.apply(variables, x, train=False)
        b = model.apply(variables, x_shift, train=False)
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5) == invariant


def test_mixed_precision_stays_close_to_float32():
    cfg = ResNetConfig(block=Block("relu", "bn_post"), depth=3, channels=4, kernel_size=3)
    variables = ResNet(cfg).init(jax.random.key(0), X, train=False)
    a = ResNet(cfg).apply(variables, X, train=False)
    b = ResNet(cfg, dtype=jnp.bfloat16).apply(variables, X, train=False)
    assert b.dtype == jnp.float32  # logits and the residual stream stay float32
    np.testing.assert_allclose(b, a, rtol=0.05, atol=0.05)  # bfloat16 keeps 8 bits


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("depth", 0, "depth must be a Python integer >= 1, got 0"),
        ("init", "lsuv", "init must be one of .* got 'lsuv'"),
        ("padding", "reflect", "padding must be one of .* got 'reflect'"),
        ("c", -1.0, "c must be a finite number > 0, got -1.0"),
        ("block", "relu", "block must be a meanfield.Block or a meanfield.layers tree, got 'relu'"),
    ],
)
def test_config_rejects_bad_values_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ResNetConfig(), **{field: value})


def test_config_round_trips_through_a_dict():
    cfg = ResNetConfig(block=Block("identity", "bn_pre", residual=False), depth=7, init="zero")
    assert ResNetConfig.from_dict(cfg.as_dict()) == cfg


def test_map_seeds_unrolled_equals_vmap():
    def fn(w, x):
        return jnp.tanh(x @ w), jnp.sum(w)

    w = jax.random.normal(jax.random.key(0), (3, 5, 2))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    a = models.map_seeds(fn, (0, None), "vmap")(w, x)
    b = models.map_seeds(fn, (0, None), "unroll")(w, x)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6)
    assert a[0].shape == (3, 4, 2)
