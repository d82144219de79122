"""The FFT path of circular convolutions equals flax.linen.Conv(padding="CIRCULAR"): outputs,
gradients, parameters and initialization, in the layer and in the paper's network."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meanfield import Block
from meanfield.training import fftconv
from meanfield.training.fftconv import CircularConv, circular_conv_fft
from meanfield.training.models import ResNet, ResNetConfig

# Float32 rounding of a sum of k·k·C products and of two transforms of H·W points: the
# largest difference measured is ~1e-6 of the output's scale; an error in the method (a
# shift, a missing conjugate) is of order 1.
RTOL = 2e-5


def _close(got, want, rtol=RTOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.max(np.abs(want))
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


def _both(features, kernel_size, bias=False, **kw):
    direct = nn.Conv(features, kernel_size, padding="CIRCULAR", use_bias=bias, **kw)
    fft = CircularConv(features, kernel_size, padding="CIRCULAR", use_bias=bias, method="fft", **kw)
    return direct, fft


def _check_equal(shape, features, kernel_size, bias=False, seed=0):
    """Outputs and the gradients (input, kernel, bias) of Σ r·sin(y), both paths."""
    kx, kp, kr, kb = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(kx, shape)
    direct, fft = _both(features, kernel_size, bias)
    params = direct.init(kp, x)
    if bias:  # a non-zero bias, so that its gradient and its broadcast are tested
        params = {"params": {**params["params"], "bias": jax.random.normal(kb, (features,))}}
    y_direct = direct.apply(params, x)
    y_fft = fft.apply(params, x)
    assert y_fft.shape == y_direct.shape and y_fft.dtype == y_direct.dtype
    _close(y_fft, y_direct)
    r = jax.random.normal(kr, y_direct.shape)

    def loss(module):
        return lambda p, x: jnp.sum(r * jnp.sin(module.apply(p, x)))

    g_direct = jax.grad(loss(direct), argnums=(0, 1))(params, x)
    g_fft = jax.grad(loss(fft), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(g_fft), jax.tree.leaves(g_direct), strict=True):
        _close(a, b)


@pytest.mark.parametrize(
    "shape, features, kernel_size, bias",
    [
        ((2, 32, 32, 16), 16, (8, 8), False),  # the paper's block convolution
        ((2, 32, 32, 3), 16, (8, 8), False),  # the paper's stem
        ((3, 8, 8, 3), 4, (3, 3), True),
        ((2, 7, 9, 2), 5, (4, 3), True),  # odd, non-square image; even x odd kernel
        ((2, 5, 6, 2), 3, (7, 8), False),  # kernel larger than the image: wraps around
        ((2, 6, 6, 3), 3, (1, 1), False),
        ((2, 1, 8, 2), 2, (3, 3), False),  # one row
    ],
)
def test_equals_flax_circular_conv(shape, features, kernel_size, bias):
    _check_equal(shape, features, kernel_size, bias)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    c=st.integers(1, 5),
    o=st.integers(1, 5),
    k1=st.integers(1, 9),
    k2=st.integers(1, 9),
    bias=st.booleans(),
)
def test_equals_flax_circular_conv_any_shape(b, h, w, c, o, k1, k2, bias):
    _check_equal((b, h, w, c), o, (k1, k2), bias, seed=h * 13 + w)


def test_batch_dimensions_as_flax():
    """Several leading batch axes, and none, are handled as nn.Conv handles them."""
    _check_equal((2, 3, 6, 6, 2), 3, (3, 3))
    _check_equal((6, 6, 2), 3, (3, 3))


def test_same_parameters_and_initialization():
    x = jnp.zeros((1, 8, 8, 3))
    direct, fft = _both(4, (5, 5), bias=True)
    a, b = direct.init(jax.random.key(3), x), fft.init(jax.random.key(3), x)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)


def test_a_wrong_alignment_is_detected():
    """The comparison can fail: the FFT of a kernel shifted by one tap (padding k//2 before
    instead of (k-1)//2) is far from nn.Conv."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    kernel = jax.random.normal(jax.random.key(1), (4, 4, 3, 2))
    want = nn.Conv(2, (4, 4), padding="CIRCULAR", use_bias=False).apply(
        {"params": {"kernel": kernel}}, x
    )
    _close(circular_conv_fft(x, kernel), want)
    shifted = jnp.roll(circular_conv_fft(x, kernel), 1, axis=1)
    with pytest.raises(AssertionError):
        _close(shifted, want)


def test_bfloat16_computes_in_float32_and_returns_bfloat16():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    direct, fft = _both(4, (3, 3), dtype=jnp.bfloat16)
    params = direct.init(jax.random.key(1), x)
    y = fft.apply(params, x)
    assert y.dtype == jnp.bfloat16
    exact = CircularConv(4, (3, 3), padding="CIRCULAR", use_bias=False, method="fft")
    _close(y, exact.apply(params, x.astype(jnp.bfloat16)), rtol=1e-2)


def test_methods_and_errors():
    x = jnp.ones((1, 8, 8, 2))
    with pytest.raises(ValueError, match="method must be one of"):
        CircularConv(2, (3, 3), padding="CIRCULAR", method="fast").init(jax.random.key(0), x)
    for kw, what in [
        (dict(padding="SAME"), "padding"),
        (dict(padding="CIRCULAR", strides=2), "strides"),
        (dict(padding="CIRCULAR", kernel_dilation=2), "kernel_dilation"),
        (dict(padding="CIRCULAR", feature_group_count=2), "feature_group_count"),
    ]:
        with pytest.raises(ValueError, match=f"method='fft'.*{what}"):
            CircularConv(2, (3, 3), method="fft", **kw).init(jax.random.key(0), x)
    # Zero padding, strides and 1-D convolutions keep nn.Conv's own path under "auto":
    # exactly nn.Conv.
    x1 = jnp.ones((1, 8, 2))
    params = nn.Conv(2, 3, padding="CIRCULAR").init(jax.random.key(0), x1)
    np.testing.assert_array_equal(
        CircularConv(2, 3, padding="CIRCULAR").apply(params, x1),
        nn.Conv(2, 3, padding="CIRCULAR").apply(params, x1),
    )
    for kw in (dict(padding="SAME"), dict(padding="CIRCULAR", strides=2)):
        params = nn.Conv(2, (3, 3), **kw).init(jax.random.key(0), x)
        np.testing.assert_array_equal(
            CircularConv(2, (3, 3), method="auto", **kw).apply(params, x),
            nn.Conv(2, (3, 3), **kw).apply(params, x),
        )


def test_the_rule():
    assert fftconv.fft_is_faster("cpu", (8, 8), 16)
    assert fftconv.fft_is_faster("cpu", (3, 3), 64)
    assert not fftconv.fft_is_faster("cpu", (3, 3), 16)
    assert not fftconv.fft_is_faster("cpu", (1, 1), 64)
    assert not fftconv.fft_is_faster("gpu", (8, 8), 16)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["none", "bn_post"])
def test_resnet_fft_equals_direct(norm):
    """The paper's network (3 blocks of 8x8 convolutions, 4 channels), forward with its
    per-layer statistics and backward with the taps' gradients, both ways."""
    cfg = ResNetConfig(block=Block("relu", norm), depth=3, channels=4, kernel_size=8)
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    y = jnp.arange(4) % 10
    taps = jnp.zeros(cfg.depth + 1)
    models = {m: ResNet(cfg, conv=m) for m in ("direct", "fft")}
    variables = models["direct"].init(jax.random.key(1), x, train=False)
    v_fft = models["fft"].init(jax.random.key(1), x, train=False)
    for u, v in zip(jax.tree.leaves(variables), jax.tree.leaves(v_fft), strict=True):
        np.testing.assert_array_equal(u, v)

    def loss(params, taps, model):
        (logits, stats), _ = model.apply(
            {**variables, "params": params}, x, train=True, taps=taps, mutable=["batch_stats"]
        )
        ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y])
        return ce, stats

    out = {}
    for m, model in models.items():
        (ce, stats), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            variables["params"], taps, model
        )
        out[m] = (ce, stats, grads)
    _close(out["fft"][0], out["direct"][0])
    for k in out["direct"][1]:
        _close(out["fft"][1][k], out["direct"][1][k])
    for a, b in zip(jax.tree.leaves(out["fft"][2]), jax.tree.leaves(out["direct"][2]), strict=True):
        _close(a, b)


def test_resnet_rejects_an_unknown_method():
    cfg = ResNetConfig(depth=1, channels=2, kernel_size=3)
    with pytest.raises(ValueError, match="conv must be one of"):
        ResNet(cfg, conv="winograd").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
