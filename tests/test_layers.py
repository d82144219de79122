"""The network language: presets are trees, trees built by hand run in every engine, and the
mean field of a composed tree agrees with Monte-Carlo over sampled networks of that tree."""

import itertools

import jax
import numpy as np
import pytest

import meanfield
from meanfield import layers as ml
from meanfield import recursions
from meanfield.core.architecture import Block
from tests.helpers import assert_close

RELU, ID = ml.Activation("relu"), ml.Activation("identity")

# ResNet-v2's two-layer branch, written by hand: BN, ReLU, Dense, BN, ReLU, Dense.
RESNET_V2 = ml.residual(
    ml.serial(ml.BatchNorm(), RELU, ml.Dense(), ml.BatchNorm(), RELU, ml.Dense())
)
# A residual ReLU block followed by a plain ReLU layer, repeated: no preset has it.
MIX_NONE = ml.serial(ml.residual(ml.serial(ml.Dense(), RELU)), ml.Dense(), RELU)
# A pre-activation residual block with a fixed branch scale, then a plain BN-ReLU-Dense layer.
MIX_BN = ml.serial(
    ml.residual(ml.serial(ml.BatchNorm(), RELU, ml.Dense()), scale=0.5),
    ml.BatchNorm(),
    RELU,
    ml.Dense(),
)


def _presets():
    for act, norm, res, k in itertools.product(
        ("identity", "relu"), ("none", "bn_post", "bn_pre"), (True, False), (1, 2)
    ):
        yield Block(act, norm, res, shortcut=k)
    yield Block("relu", "none", True, shortcut=2, final_activation=False)


def test_preset_trees_have_the_blocks_structure():
    assert ml.block_tree(Block("relu", "bn_pre", shortcut=2)) == RESNET_V2
    assert ml.block_tree(Block("relu", "none", False)) == ml.serial(ml.Dense(), RELU)
    assert ml.block_tree(Block("identity", "bn_post")) == ml.residual(
        ml.serial(ml.BatchNorm(), ml.Dense(), ID)
    )
    for block in _presets():
        tree = ml.block_tree(block)
        assert ml.dense_count(tree) == block.shortcut, block.name
        assert ml.dense_activations(tree) == block.activations(), block.name
        assert ml.has_batchnorm(tree) == (block.norm != "none"), block.name
        assert isinstance(tree, ml.Residual) == block.residual, block.name


@pytest.mark.parametrize("block", list(_presets()), ids=lambda b: b.name)
def test_a_preset_and_its_tree_give_the_same_profile(block):
    kwargs = dict(depth=7, width=64, var_w=1.5 / 64)
    a = recursions.profile(block, **kwargs).as_dict()
    b = recursions.profile(ml.block_tree(block), **kwargs).as_dict()
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


@pytest.mark.parametrize("engine", ["explicit", "weightfree"])
def test_a_preset_and_its_tree_give_the_same_monte_carlo(engine):
    block = Block("relu", "bn_pre", shortcut=2)
    kw = dict(
        key=jax.random.key(5), depth=4, width=32, var_w=2 / 32, networks=4, batch=4, warn=False
    )
    a = meanfield.simulate(block, engine=engine, **kw)
    b = meanfield.simulate(RESNET_V2, engine=engine, **kw)
    for name in recursions.STATISTICS:
        np.testing.assert_array_equal(getattr(a, name).mean, getattr(b, name).mean)


def _z(est, prof, name):
    mean = np.asarray(getattr(est, name).mean, float)
    se = np.asarray(getattr(est, name).stderr, float)
    return float(np.nanmax(np.abs(mean - np.asarray(getattr(prof, name), float)) / se))


# tree -> (width, batch, networks, depth, statistics); finite width and batch are the only
# errors beside the Monte-Carlo one. ResNet-v2's two BNs per block carry BN's O(1/B) batch
# correction (measured 0.5% in m2_dz at B = 1024, 0.1-0.2% at B = 4096); the plain BN layer of
# mix_bn compounds O(1/n) every layer backward (3% at n = 128, 1% at n = 512, as for the plain
# BN presets in tests/test_montecarlo.py), so only its forward is compared at this width.
COMPOSED = {
    "mix_none": (MIX_NONE, 256, 4, 128, 3, ("mean_z", "m2_z", "m2_dz", "var_dw")),
    "resnet_v2": (RESNET_V2, 128, 4096, 8, 3, ("mean_z", "m2_z", "unitvar_z", "m2_dz", "var_dw")),
    "mix_bn": (MIX_BN, 128, 1024, 16, 3, ("mean_z", "m2_z", "unitvar_z")),
}
# The weight-free engine needs 4B <= n to pay off; at B = 4096 it is checked against the
# explicit engine instead (test_both_engines_sample_the_same_resnet_v2).
ENGINES = {
    "mix_none": ("explicit", "weightfree"),
    "resnet_v2": ("explicit",),
    "mix_bn": ("explicit",),
}


@pytest.mark.parametrize(
    "case, engine", [(c, e) for c in COMPOSED for e in ENGINES[c]], ids=lambda x: str(x)
)
def test_a_composed_tree_agrees_with_its_mean_field_and_a_wrong_variance_fails(case, engine):
    tree, width, batch, networks, depth, stats = COMPOSED[case]
    var_w = 1.0 / width
    est = meanfield.simulate(
        tree,
        key=jax.random.key(2024),
        depth=depth,
        width=width,
        var_w=var_w,
        networks=networks,
        batch=batch,
        engine=engine,
        warn=False,  # BN's m2_dz at the input is heavy-tailed at this width; the SE holds
    )
    right = recursions.profile(tree, depth=depth, width=width, var_w=var_w)
    zs = {s: _z(est, right, s) for s in stats}
    assert max(zs.values()) < 4.0, zs
    wrong = recursions.profile(tree, depth=depth, width=width, var_w=1.25 * var_w)
    assert max(_z(est, wrong, s) for s in stats) > 4.0


def test_both_engines_sample_the_same_resnet_v2():
    """Explicit and weight-free weights are two exact samplers of one law: their means agree
    within 4 combined standard errors (at a batch where the weight-free engine pays off)."""
    kw = dict(depth=4, width=256, var_w=2 / 256, networks=64, batch=16, warn=False)
    a = meanfield.simulate(RESNET_V2, key=jax.random.key(1), engine="explicit", **kw)
    b = meanfield.simulate(RESNET_V2, key=jax.random.key(2), engine="weightfree", **kw)
    for name in ("m2_z", "unitvar_z", "m2_dz", "var_dw"):
        x, y = getattr(a, name), getattr(b, name)
        z = np.abs(x.mean - y.mean) / np.hypot(x.stderr, y.stderr)
        assert np.nanmax(z) < 4.0, (name, z)


def test_mix_none_mean_field_by_hand():
    """The residual-then-plain block iterated by hand from the arc-cosine kernel (float64
    Python), against the tree's recursion: m, q, c forward; p backward; no shared code."""
    import math

    alpha, depth = 1.3, 5

    def relu_kernel(q, c):
        rho = min(c / q, 1.0)
        e = math.sqrt(q / (2 * math.pi))
        k = q / (2 * math.pi) * (math.sqrt(1 - rho**2) + rho * (math.pi - math.acos(rho)))
        return e, q / 2, k

    m, q, c = 0.0, 1.0, 0.0
    qs, states = [q], []
    for _ in range(depth):
        states.append((m, q, c))
        e, s, k = relu_kernel(alpha * q, alpha * c)  # residual unit: z + relu(W z)
        q1, c1 = q + s + 2 * e * m, c + k + 2 * e * m  # c: the raw cross moment
        e, s, k = relu_kernel(alpha * q1, alpha * c1)  # plain unit: relu(W z)
        states[-1] += (q1,)
        m, q, c = e, s, k
        qs.append(q)
    # Backward: p_{l-1} = p_l · α/2 (plain unit) · (1 + α/2) (residual unit).
    ps = [1.0]
    for _ in range(depth):
        ps.append(ps[-1] * (alpha / 2) * (1 + alpha / 2))
    ps = ps[::-1]
    prof = recursions.profile(MIX_NONE, depth=depth, width=100, var_w=alpha / 100)
    assert_close(prof.m2_z, qs, rtol=2e-6)
    assert_close(prof.m2_dz, ps, rtol=2e-6)
    # var_dw averages the two weights, each E f'² times the second moment of dE/du at its
    # output times that of its input: (1/2) p_l q1 (plain unit, input z1 = z + relu(W1 z))
    # and (1/2)(α/2 p_l) q (residual unit: dE/dz1 = α/2 p_l through the plain unit).
    dw = [np.nan] + [
        0.5 * (0.5 * ps[l] * states[l - 1][3] + 0.5 * (alpha / 2) * ps[l] * states[l - 1][1])
        for l in range(1, depth + 1)
    ]
    assert_close(prof.var_dw[1:], dw[1:], rtol=2e-6)


@pytest.mark.parametrize(
    "tree, message",
    [
        (
            ml.residual(ml.serial(ml.Dense(), RELU, RELU, ml.Dense())),
            "Activation('relu') has no exact mean field",
        ),
        (
            ml.serial(ml.Dense(), RELU, ml.residual(ml.serial(ml.BatchNorm(), ml.Dense()))),
            "BatchNorm() has no exact mean field",
        ),
    ],
)
def test_a_tree_without_an_exact_mean_field_is_refused_by_name(tree, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        recursions.profile(tree, depth=3, width=16, var_w=1 / 16)
    # Monte-Carlo has no such limit: the same tree samples fine.
    est = meanfield.simulate(
        tree,
        key=jax.random.key(0),
        depth=3,
        width=16,
        var_w=1 / 16,
        networks=2,
        batch=4,
        warn=False,
    )
    assert np.all(np.isfinite(est.m2_z.mean))


def test_a_kinked_activation_of_a_signal_with_a_mean_is_refused():
    """relu of the residual stream is exact for centred inputs (a Gaussian), refused where
    the inputs have a mean (no closed form; quadrature of the kink is off by percent)."""
    tree = ml.residual(ml.serial(RELU, ml.Dense()))
    prof = recursions.profile(tree, depth=3, width=16, var_w=1 / 16)
    assert np.all(np.isfinite(prof.m2_z))
    with pytest.raises(ValueError, match=r"Activation\('relu'\) has no exact mean field here"):
        recursions.profile(tree, depth=3, width=16, var_w=1 / 16, input_m2=1.25, input_mean=0.5)


def test_bad_trees_are_refused():
    with pytest.raises(ValueError, match="Activation.activation must be one of"):
        ml.Activation("gelu2")
    with pytest.raises(ValueError, match="serial takes layers"):
        ml.serial(ml.Dense(), "relu")
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        ml.residual(ml.Dense(), scale=-1.0)
    with pytest.raises(ValueError, match="block must be a meanfield.Block or a meanfield.layers"):
        recursions.profile("relu-none-residual", depth=3, width=16, var_w=1 / 16)


def test_the_conv_model_of_a_tree_has_the_requested_kernel_variances():
    """The trainer's Flax network of the hand-built ResNet-v2 tree: two k x k convolutions and
    two BatchNorms per block, each kernel i.i.d. N(0, c/(k·k·C·L)) (written out by hand), and
    its configuration reads back from a results file."""
    import math

    from meanfield.training import models

    cfg = models.ResNetConfig(
        block=RESNET_V2, depth=6, channels=16, kernel_size=3, init="depth_scaled", c=2.0
    )
    x = jax.random.normal(jax.random.key(7), (2, 8, 8, 3))
    variables = jax.jit(models.ResNet(cfg, unroll=1).init, static_argnames="train")(
        jax.random.key(1), x, train=False
    )
    blocks = variables["params"]["blocks"]
    assert sorted(blocks) == ["BatchNorm_0", "BatchNorm_1", "Conv_0", "Conv_1"]
    total = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(variables["params"]))
    assert total == models.count_params(cfg)
    expected = 2.0 / (3 * 3 * 16 * 6)
    for name in ("Conv_0", "Conv_1"):
        kernel = np.asarray(blocks[name]["kernel"], dtype=np.float64)
        assert kernel.shape == (6, 3, 3, 16, 16)
        sq = kernel.ravel() ** 2
        se = sq.std() / math.sqrt(sq.size)
        assert abs(sq.mean() - expected) < 4 * se, (name, sq.mean(), expected)
        assert abs(sq.mean() - 1.25 * expected) > 4 * se  # a 25% larger variance is rejected
    assert models.ResNetConfig.from_dict(cfg.as_dict()) == cfg
    logits = models.ResNet(cfg).apply(variables, x, train=False)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))


def test_the_jacobian_of_a_tree_is_that_of_its_preset():
    from meanfield.analysis import jacobian

    kw = dict(key=jax.random.key(3), depth=3, width=16, networks=2, batch=4)
    a = jacobian.singular_values("he", block=Block("relu", "bn_pre", shortcut=2), **kw)
    b = jacobian.singular_values("he", block=RESNET_V2, **kw)
    np.testing.assert_array_equal(a, b)
    # A plain/residual mix has its own spectrum: z -> relu(W2 (z + relu(W1 z))) is not
    # near-isometric, so its singular values spread (std of ln σ > 0.1 at depth 3).
    c = jacobian.singular_values("he", block=MIX_NONE, **kw)
    assert c.shape == (2, 16) and np.std(np.log(c)) > 0.1


def test_tree_names_read_back():
    for tree in (RESNET_V2, MIX_NONE, MIX_BN):
        assert ml.from_name(tree.name) == tree
    assert ml.network_from_name("relu-bn_pre-residual-k2") == Block("relu", "bn_pre", shortcut=2)
    with pytest.raises(ValueError, match="cannot read 'Conv'"):
        ml.from_name("res[BatchNorm-Conv]")


def test_profile_and_estimate_share_field_names_and_are_pytrees():
    import dataclasses

    kw = dict(depth=3, width=16, var_w=1 / 16)
    prof = recursions.profile(MIX_NONE, **kw)
    est = meanfield.simulate(MIX_NONE, key=jax.random.key(0), networks=4, batch=4, warn=False, **kw)
    names = {f.name for f in dataclasses.fields(prof)}
    assert names <= {f.name for f in dataclasses.fields(est)}
    # Both map through jax.tree: every statistic of the estimate, mean and standard error.
    doubled = jax.tree.map(lambda x: 2 * x, est)
    assert type(doubled) is type(est) and doubled.networks == est.networks
    np.testing.assert_array_equal(doubled.m2_z.stderr, 2 * est.m2_z.stderr)
    halved = jax.tree.map(lambda x: x / 2, prof)
    np.testing.assert_array_equal(halved.m2_dz, np.asarray(prof.m2_dz) / 2)


def test_the_prediction_check_runs_on_a_tree():
    """initcheck.compare of the conv network of a tree: for the ResNet-v2 tree the same record
    as for its preset, and for a mix that no preset names the tree's own recursion (and no
    closed forms, which are written for presets)."""
    from meanfield.io import results
    from meanfield.training import initcheck, models
    from meanfield.training.train import TrainConfig, Trainer

    def record(block):
        cfg = models.ResNetConfig(block=block, depth=2, channels=4, kernel_size=3)
        trainer = Trainer(
            TrainConfig(model=cfg, seeds=(0, 1, 2), seed_map="vmap"),
            (0.5, 0.5, 0.5),
            (0.25, 0.25, 0.25),
        )
        state = trainer.init_state()
        x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
        variables = {"params": state.params}
        if trainer.has_bn:
            variables["batch_stats"] = state.batch_stats
        m = initcheck.measure(trainer.model, variables, x, np.arange(8) % 10, seed_map="vmap")
        out = initcheck.compare(cfg, m, key=jax.random.key(0), toy_networks=0)
        return cfg, m, results.to_jsonable(out)

    _, _, tree_record = record(RESNET_V2)
    _, _, preset_record = record(Block("relu", "bn_pre", shortcut=2))
    # The same check, up to the configuration's name of the block (a tree name, a preset name).
    assert tree_record["model"]["block"] == RESNET_V2.name
    tree_record["model"]["block"] = preset_record["model"]["block"]
    assert tree_record == preset_record
    cfg, m, mix = record(MIX_NONE)
    assert mix["closed_forms"] == []
    q0 = float(np.mean(np.exp(m["log_m2_z"][:, 0])))
    predicted = np.asarray(mix["statistics"]["m2_z"]["predicted_log10"], float)
    assert np.all(np.isfinite(predicted)) and predicted.shape == (3,)
    assert predicted[0] == pytest.approx(np.log10(q0), rel=1e-6)
