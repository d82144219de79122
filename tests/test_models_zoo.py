"""The companion inits in the Flax ResNet: the realized parameters equal each rule, the network
equals a plain-JAX implementation of the same blocks, and Arpit et al.'s (1 + 1/B) growth holds
in the conv network at init."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield import Block
from meanfield.training import initcheck, models
from meanfield.training.models import ResNet, ResNetConfig
from meanfield.training.train import TrainConfig, Trainer

# 8x8 images for everything but the Monte-Carlo growth test (32x32 there): parameters, rules
# and the equality with the reference do not depend on the image size (convolutions with
# circular padding, then global pooling), and the eager tests run a quarter of the positions.
X = jax.random.normal(jax.random.key(7), (4, 8, 8, 3))
LINEAR_LAST = Block("relu", "none", True, shortcut=2, final_activation=False)


def _init(cfg, key=1):
    return ResNet(cfg).init(jax.random.key(key), X, train=False)


@pytest.mark.parametrize(
    "block, init, branch_scale",
    [
        (LINEAR_LAST, "fixup", None),
        (Block("relu", "none", True, shortcut=3), "fixup", None),
        (Block("relu", "none"), "skipinit", None),
        (Block("relu", "none"), "skipinit", 0.05),
        (Block("relu", "bn_pre", True, shortcut=2), "rezero", None),
        (LINEAR_LAST, "weight_norm", None),
        (Block("relu", "bn_post", True, shortcut=3), "he", None),
        (Block("relu", "none"), "depth_scaled", 0.5),
    ],
)
def test_parameter_count_matches_the_tree(block, init, branch_scale):
    cfg = ResNetConfig(
        block=block, depth=5, channels=4, kernel_size=3, init=init, branch_scale=branch_scale
    )
    shapes = jax.eval_shape(lambda: _init(cfg))
    total = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes["params"]))
    assert total == models.count_params(cfg)
    assert ResNetConfig.from_dict(cfg.as_dict()) == cfg


def test_fixup_parameters_follow_the_rule():
    cfg = ResNetConfig(block=LINEAR_LAST, depth=16, channels=16, kernel_size=8, init="fixup")
    p = _init(cfg)["params"]
    w1 = np.asarray(p["blocks"]["Conv_0"]["kernel"], np.float64)
    rule = 2.0 / 1024 / 16  # He at fan-in 8·8·16, times L^(-1/(2m-2))² = 1/16
    assert abs(w1.var() / rule - 1) < 4 * math.sqrt(2 / w1.size)
    assert abs(w1.var() / (2.0 / 1024 / 4) - 1) > 10 * math.sqrt(2 / w1.size)  # L^(-1/2)
    np.testing.assert_array_equal(np.asarray(p["blocks"]["Conv_1"]["kernel"]), 0.0)
    np.testing.assert_array_equal(np.asarray(p["head"]["kernel"]), 0.0)
    np.testing.assert_array_equal(np.asarray(p["blocks"]["multiplier"]), 1.0)
    for name in ("bias_in_0", "bias_act_0", "bias_in_1", "bias_out"):
        np.testing.assert_array_equal(np.asarray(p["blocks"][name]), 0.0)


@pytest.mark.parametrize(
    "init, scale, expected",
    [("skipinit", None, 0.0), ("rezero", None, 0.0), ("skipinit", 0.05, 0.05), ("he", 0.3, 0.3)],
)
def test_branch_scale_parameter_starts_at_the_rule(init, scale, expected):
    cfg = ResNetConfig(depth=4, channels=4, kernel_size=3, init=init, branch_scale=scale)
    p = _init(cfg)["params"]
    np.testing.assert_array_equal(np.asarray(p["blocks"]["branch_scale"]), np.float32(expected))
    # SkipInit's α = 0 makes every block the identity: the logits come from the stem alone.
    if expected == 0.0:
        ident = dataclasses.replace(cfg, depth=1)
        q = _init(ident)["params"]
        q["stem"], q["head"] = p["stem"], p["head"]
        a = ResNet(cfg).apply({"params": p}, X, train=False)
        b = ResNet(ident).apply({"params": q}, X, train=False)
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_config_rejects_bad_branch_scales():
    with pytest.raises(ValueError, match=r"branch_scale must be < 1/sqrt\(depth\)"):
        ResNetConfig(depth=100, init="skipinit", branch_scale=0.1)
    with pytest.raises(ValueError, match="branch_scale must be None for rezero"):
        ResNetConfig(init="rezero", branch_scale=0.1)
    with pytest.raises(ValueError, match="branch_scale must be a finite number >= 0"):
        ResNetConfig(init="he", branch_scale=-0.5)


def test_weight_norm_gains_are_exact():
    cfg = ResNetConfig(block=LINEAR_LAST, depth=8, channels=4, kernel_size=3, init="weight_norm")
    p = _init(cfg)["params"]["blocks"]
    # g = sqrt(γ fan_in/fan_out) with fan-in and fan-out both counting the 3·3 taps: sqrt(γ).
    np.testing.assert_allclose(p["WeightNorm_0"]["Conv_0/kernel/scale"], math.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(
        p["WeightNorm_1"]["Conv_1/kernel/scale"], math.sqrt(1 / 8), rtol=1e-6
    )


def _conv(z, w):
    k = w.shape[0]
    z = jnp.pad(z, ((0, 0), ((k - 1) // 2, k // 2), ((k - 1) // 2, k // 2), (0, 0)), "wrap")
    dn = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(
        z, w, (1, 1), "VALID", dimension_numbers=dn, precision="highest"
    )


def _reference(cfg, p, x):
    """z + s·(W_2 * (relu(W_1 * (z + b_1) + b_2) + b_3)) + b_4 (Fixup) or the weight-normalized
    z + W_2 * relu(W_1 * z), written out directly."""
    z = _conv(x, p["stem"]["kernel"])
    b = p["blocks"]
    for l in range(cfg.depth):
        ws = [b[f"Conv_{i}"]["kernel"][l] for i in range(2)]
        if cfg.init == "weight_norm":
            ws = [
                w
                * b[f"WeightNorm_{i}"][f"Conv_{i}/kernel/scale"][l][None, None, None]
                / jnp.sqrt(jnp.sum(w**2, axis=(0, 1, 2), keepdims=True))
                for i, w in enumerate(ws)
            ]
            h = _conv(jax.nn.relu(_conv(z, ws[0])), ws[1])
        else:
            # Fixup's CIFAR block, its scalar biases and multiplier moved off 0 and 1 by the test.
            h = jax.nn.relu(_conv(z + b["bias_in_0"][l], ws[0]) + b["bias_act_0"][l])
            h = b["multiplier"][l] * _conv(h + b["bias_in_1"][l], ws[1]) + b["bias_out"][l]
        z = z + h
    return z.mean(axis=(1, 2)) @ p["head"]["kernel"] + p["head"]["bias"][None]


@pytest.mark.parametrize("init", ["fixup", "weight_norm"])
def test_network_equals_an_independent_implementation(init):
    cfg = ResNetConfig(block=LINEAR_LAST, depth=3, channels=4, kernel_size=4, init=init)
    p = _init(cfg, key=2)["params"]
    # Move every parameter off its initial value, so that all of them are exercised.
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    p = jax.tree_util.tree_unflatten(
        tree, [v + 0.1 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys, strict=True)]
    )
    with jax.default_matmul_precision("highest"):
        got = ResNet(cfg).apply({"params": p}, X, train=False)
        want = _reference(cfg, p, X)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)


def test_weight_norm_conv_network_grows_by_one_plus_one_over_b():
    # E|z^l|² = (1 + 1/B)^l |z^0|² exactly in expectation for the conv network too (circular
    # padding: every output position sees a full window; the signs of W make E relu(u)² =
    # E u²/2): measured over 64 networks against the recursion of the same config.
    L = 4
    cfg = ResNetConfig(block=LINEAR_LAST, depth=L, channels=4, kernel_size=4, init="weight_norm")
    config = TrainConfig(model=cfg, seeds=tuple(range(64)), seed_map="vmap")
    trainer = Trainer(config, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    state = trainer.init_state()
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    m = initcheck.measure(
        trainer.model, {"params": state.params}, x, np.arange(8) % 10, seed_map="vmap"
    )
    ratio = np.exp(m["log_m2_z"] - m["log_m2_z"][:, :1])
    mean, se = ratio.mean(0)[1:], ratio.std(0, ddof=1)[1:] / 8
    start = {"m2_z": 1.0, "mean_z": 0.0, "unitvar_z": 1.0}
    predicted = np.asarray(initcheck.predict(cfg, start).m2_z)[1:]
    np.testing.assert_allclose(predicted, (1 + 1 / L) ** np.arange(1, L + 1), rtol=1e-10)
    assert np.all(np.abs(mean - predicted) < 4 * se), (mean, predicted, se)
    assert np.abs(mean[-1] - (1 + 2 / L) ** L) > 4 * se[-1]  # γ = 2/B for W_2 is rejected


def test_risotto_kernels_are_delta_looks_linear_and_the_network_is_an_isometry():
    c, k = 4, 4
    cfg = ResNetConfig(
        block=models.RISOTTO_BLOCK, depth=6, channels=c, kernel_size=k, init="risotto"
    )
    v = _init(cfg, key=5)
    blocks = v["params"]["blocks"]
    eye = np.eye(c)
    ll = np.block([[eye, -eye], [-eye, eye]])
    for l in range(cfg.depth):
        w1 = np.asarray(blocks["Conv_0"]["kernel"][l], np.float64)
        w2 = np.asarray(blocks["Conv_1"]["kernel"][l], np.float64)
        centre = (k - 1) // 2
        for w in (w1, w2):  # delta kernels: only the tap aligned with the output is non-zero
            off = w.copy()
            off[centre, centre] = 0.0
            assert np.all(off == 0.0)
        np.testing.assert_array_equal(w1[centre, centre], ll.T)
        # W2 (column-vector convention) = [[M - I, -M], [-M, M - I]], stored transposed.
        m = w2[centre, centre].T[:c, :c] + eye
        np.testing.assert_allclose(m.T @ m, eye, atol=1e-5)
        np.testing.assert_allclose(w2[centre, centre].T[:c, c:], -m, atol=1e-6)
    # Every block maps y to M y pixel by pixel, so |h^l|² = |y|² is the same at every layer.
    _, stats = ResNet(cfg).apply(v, X, train=False, taps=jnp.zeros(cfg.depth + 1))
    m2 = np.exp(np.asarray(stats["log_m2_z"], np.float64))
    np.testing.assert_allclose(m2, np.full(cfg.depth + 1, m2[0]), rtol=1e-5)
    with pytest.raises(ValueError, match="init='risotto' is RISOTTO's type-C block"):
        ResNetConfig(block=Block("relu", "none"), init="risotto")
    shapes = jax.eval_shape(lambda: _init(cfg))
    total = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes["params"]))
    assert total == models.count_params(cfg)


def test_orthogonal_kernels_have_orthonormal_columns():
    cfg = ResNetConfig(depth=3, channels=4, kernel_size=3, init="orthogonal")
    kernel = np.asarray(_init(cfg)["params"]["blocks"]["Conv_0"]["kernel"], np.float64)
    for w in kernel:  # each block: (3, 3, 4, 4) -> 36 x 4 with orthonormal columns
        flat = w.reshape(-1, 4)
        np.testing.assert_allclose(flat.T @ flat, np.eye(4), atol=1e-5)
    assert cfg.var_w * cfg.fan_in == pytest.approx(1.0)  # α = 1, what the recursion takes
