"""The prediction check: measured statistics of the conv network against exact expectations.

For linear blocks with circular padding, E over the block kernels of the second moment of z^l
given z^0 is exact at any width (each output position sees a full k x k window, and
E|W * z|² = k·k·C·Var[w] |z|²): the mean over sampled networks must match it within a few
standard errors, and the same test must reject a wrong prediction and zero padding. With
k = 2 weights per branch, var_dw is the mean over both kernels, as the recursion defines it."""

import json

import jax
import numpy as np
import optax
import pytest

import meanfield
from meanfield import Block, montecarlo
from meanfield.io import results
from meanfield.training import initcheck
from meanfield.training.models import ResNetConfig
from meanfield.training.train import TrainConfig, Trainer

NETWORKS = 64


def _measured(model_config, networks=NETWORKS, batch=8):
    config = TrainConfig(model=model_config, seeds=tuple(range(networks)), seed_map="vmap")
    trainer = Trainer(config, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    state = trainer.init_state()
    x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
    y = np.arange(batch) % 10
    variables = {"params": state.params}
    if trainer.has_bn:
        variables["batch_stats"] = state.batch_stats
    return initcheck.measure(trainer.model, variables, x, y, seed_map="vmap")


def _z_scores(ratio_KxL, expected_L):
    mean = ratio_KxL.mean(axis=0)
    se = ratio_KxL.std(axis=0, ddof=1) / np.sqrt(ratio_KxL.shape[0])
    return (mean - expected_L) / se


@pytest.fixture(scope="module")
def linear():
    cfg = ResNetConfig(block=Block("identity", "none"), depth=3, channels=4, kernel_size=8)
    return cfg, _measured(cfg)


def test_linear_forward_growth_is_exact_in_expectation(linear):
    cfg, m = linear
    alpha = cfg.fan_in * cfg.var_w  # He: 2
    ratio = np.exp(m["log_m2_z"] - m["log_m2_z"][:, :1])
    layers = np.arange(cfg.depth + 1)
    z = _z_scores(ratio[:, 1:], (1 + alpha) ** layers[1:])
    assert np.all(np.abs(z) < 4), z
    # The paper's ReLU-style base (1 + α/2) or a missing factor must be rejected.
    z_wrong = _z_scores(ratio[:, 1:], (1 + alpha / 2) ** layers[1:])
    assert np.abs(z_wrong[-1]) > 4, z_wrong


def test_zero_padding_loses_the_border_and_fails_the_exact_growth():
    cfg = ResNetConfig(
        block=Block("identity", "none"), depth=3, channels=4, kernel_size=8, padding="same"
    )
    m = _measured(cfg)
    ratio = np.exp(m["log_m2_z"][:, -1] - m["log_m2_z"][:, 0])
    z = _z_scores(ratio[:, None], np.array([(1 + cfg.fan_in * cfg.var_w) ** cfg.depth]))
    assert z[0] < -4, z  # an 8x8 window on 32x32 keeps ~88% of its inputs on average


def test_identity_bn_forward_matches_the_recursion_from_the_measured_start():
    cfg = ResNetConfig(block=Block("identity", "bn_post"), depth=4, channels=4, kernel_size=8)
    m = _measured(cfg)
    q = np.exp(m["log_m2_z"])
    start = {"m2_z": q[:, 0].mean(), "mean_z": m["mean_z"][:, 0].mean(), "unitvar_z": 1e-3}
    predicted = initcheck.predict(cfg, start).m2_z  # q_0 + l·α, from the measured q_0
    # Per network, q_l - q_0 has expectation l·α exactly (BN's output has unit second moment
    # per channel up to ε = 1e-5): compare the increments, free of the spread of q_0.
    z = _z_scores(q[:, 1:] - q[:, :1], predicted[1:] - predicted[0])
    assert np.all(np.abs(z) < 4), z
    z_wrong = _z_scores(q[:, 1:] - q[:, :1], 0.5 * (predicted[1:] - predicted[0]))
    assert np.abs(z_wrong[-1]) > 4, z_wrong


def test_compare_summarizes_the_measurements_and_predicts_the_linear_growth(linear):
    cfg, m = linear
    record = initcheck.compare(cfg, m, key=jax.random.key(0), toy_networks=0)
    json.dumps(results.to_jsonable(record), allow_nan=False)  # storable as it is
    s = record["statistics"]
    # The recursion from the measured q_0 with the conv's fan-in k·k·C: q_l = q_0 (1 + α)^l
    # (a fan-in of C, or Var[w] of another init, gives another slope).
    alpha = cfg.fan_in * cfg.var_w
    q0 = np.mean(np.exp(m["log_m2_z"][:, 0]))
    layers = np.arange(cfg.depth + 1)
    np.testing.assert_allclose(
        s["m2_z"]["predicted_log10"], np.log10(q0) + layers * np.log10(1 + alpha), rtol=1e-9
    )
    # The measured summaries, recomputed here from the per-network natural logs.
    log10_q = m["log_m2_z"] / np.log(10)
    np.testing.assert_allclose(
        s["m2_z"]["log10_of_mean"], np.log10(np.mean(10**log10_q, axis=0)), rtol=1e-9
    )
    np.testing.assert_allclose(s["m2_z"]["mean_log10"], log10_q.mean(0), rtol=1e-9)
    se = log10_q.std(0, ddof=1) / np.sqrt(NETWORKS)
    np.testing.assert_allclose(s["m2_z"]["stderr_log10"], se, rtol=1e-9)
    rel = (m["log_m2_dz"] - m["log_m2_dz"][:, -1:]) / np.log(10)
    np.testing.assert_allclose(s["m2_dz"]["per_seed_log10"], rel, rtol=1e-9, atol=1e-12)
    # The summary reads layer L forward and layer 1 backward.
    assert record["summary"]["m2_z"]["predicted_log10"] == s["m2_z"]["predicted_log10"][-1]
    assert record["summary"]["m2_dz"]["measured_log10_of_mean"] == s["m2_dz"]["log10_of_mean"][1]
    assert record["toy"] is None and "toy_log10" not in s["m2_z"]
    assert {f["source"] for f in record["closed_forms"]} == {"paper"}
    # Gradients reach every block here: no statistic carries a note.
    assert all(s[name]["note"] is None for name in s)
    assert all(row["note"] is None for row in record["summary"].values())


def test_toy_montecarlo_runs_the_dense_network_of_the_same_alpha(linear):
    cfg, _ = linear
    start = {"m2_z": 1.7, "mean_z": 0.0, "unitvar_z": 1.7}
    key = jax.random.key(5)
    est = initcheck.toy_montecarlo(cfg, start, key=key, batch=8, networks=64)
    # Dense linear blocks at width C with n·Var[w] = α of the conv: E q_L = q_0 (1 + α)^L
    # exactly, at any width; a fan-in mix-up (Var[w] of the conv at width C) gives ~q_0.
    alpha = cfg.fan_in * cfg.var_w
    mean, se = float(est.m2_z.mean[-1]), float(est.m2_z.stderr[-1])
    assert abs(mean - 1.7 * (1 + alpha) ** cfg.depth) < 4 * se, (mean, se)
    assert abs(mean - 1.7 * (1 + alpha / 2) ** cfg.depth) > 4 * se, (mean, se)
    # The key decides the draw: compare passes its key on (the same numbers), another differs.
    record = initcheck.compare(
        cfg, _measured_small(cfg, 1.7), toy_networks=64, toy_batch=8, key=key
    )
    toy = np.asarray(record["statistics"]["m2_z"]["toy_log10"])
    np.testing.assert_array_equal(toy, np.asarray(est.log10_m2_z.mean, np.float64))
    other = initcheck.toy_montecarlo(
        cfg, start, key=jax.random.fold_in(key, 1), batch=8, networks=64
    )
    assert not np.array_equal(np.asarray(other.m2_z.mean), np.asarray(est.m2_z.mean))
    assert record["toy"] == {"width": cfg.channels, "networks": 64, "batch": 8}
    with pytest.raises(ValueError, match="typed PRNG key"):
        initcheck.toy_montecarlo(cfg, start, key=0, batch=8, networks=4)


def _measured_small(cfg, m2_start):
    """Two networks' statistics (plain arrays) whose z^0 has second moment ``m2_start``."""
    rng = np.random.default_rng(0)
    shape = (2, cfg.depth + 1)
    log_m2 = rng.normal(0, 0.1, shape)
    log_m2[:, 0] = np.log(m2_start)
    return {
        "mean_z": np.zeros(shape),
        "log_m2_z": log_m2,
        "log_unitvar_z": log_m2,
        "log_m2_dz": rng.normal(0, 0.1, shape),
        "log_var_dw": np.concatenate(
            [np.full((2, 1), np.nan), rng.normal(0, 0.1, shape)[:, 1:]], 1
        ),
    }


# Fixup on its own block z + W_2 relu(W_1 z): W_2 = 0, so the gradient of W_1 is exactly zero
# and var_dw, the mean over both kernels, is carried by W_2's.
FIXUP_K2 = ResNetConfig(
    block=Block("relu", "none", True, shortcut=2, final_activation=False),
    depth=3,
    channels=4,
    kernel_size=3,
    init="fixup",
)


@pytest.fixture(scope="module")
def fixup_k2():
    """The Fixup networks at init (zero head) and with a random head, measured on one batch
    (one compiled measurement: the same model and shapes)."""
    config = TrainConfig(model=FIXUP_K2, seeds=tuple(range(NETWORKS)), seed_map="vmap")
    trainer = Trainer(config, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    at_init = trainer.init_state().params
    # Fixup also starts the head at zero, so no gradient reaches a block at init; a random
    # head (as after the first step, which trains the head only) lets the gradients through.
    head = at_init["head"]["kernel"]
    head = jax.random.normal(jax.random.key(1), head.shape, head.dtype)
    params = {**at_init, "head": {**at_init["head"], "kernel": head}}
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    y = np.arange(8) % 10
    m = initcheck.measure(trainer.model, {"params": params}, x, y, seed_map="vmap")
    m_init = initcheck.measure(trainer.model, {"params": at_init}, x, y, seed_map="vmap")
    return trainer.model, params, x, y, m, m_init


def test_var_dw_is_the_mean_over_the_branch_kernels(fixup_k2):
    model, params, x, y, m, _ = fixup_k2

    def loss(p):  # the training loss, with jax.grad on the model itself (no taps)
        logits = model.apply({"params": p}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.jit(jax.vmap(jax.grad(loss)))(params)["blocks"]
    # (K, L) mean over each kernel's entries of (dE/dW)², then the mean over the two kernels.
    per_kernel = [
        np.mean(np.asarray(grads[f"Conv_{i}"]["kernel"], np.float64) ** 2, axis=(2, 3, 4, 5))
        for i in range(2)
    ]
    assert np.all(per_kernel[0] == 0.0) and np.all(per_kernel[1] > 0.0)  # W_2 = 0 at init
    expected = (per_kernel[0] + per_kernel[1]) / 2
    assert np.all(np.isnan(m["log_var_dw"][:, 0]))
    np.testing.assert_allclose(np.exp(m["log_var_dw"][:, 1:]), expected, rtol=1e-5)


def test_fixup_var_dw_agrees_with_the_recursion(fixup_k2):
    *_, m, _ = fixup_k2
    record = initcheck.compare(FIXUP_K2, m, key=jax.random.key(0), toy_networks=0)
    s = record["statistics"]["var_dw"]
    assert s["note"] is None  # a random head lets the gradients through: a real comparison
    # With W_2 = 0 every block passes z^0 forward and dE/dz^L backward unchanged, and the W_1
    # are i.i.d. over blocks: var_dw^l / var_dw^L is 1 in law, the recursion's flat profile.
    predicted = np.asarray(s["predicted_log10"], np.float64)
    np.testing.assert_allclose(predicted[1:], 0.0, atol=1e-9)
    mean = np.asarray(s["mean_log10"], np.float64)[1:-1]  # layer L is 0 by construction
    se = np.asarray(s["stderr_log10"], np.float64)[1:-1]
    assert np.all(np.isfinite(mean)) and np.all(se > 0), (mean, se)
    assert np.all(np.abs(mean - predicted[1:-1]) < 4 * se), (mean, se)
    # A prediction off by a factor 2 per layer must be rejected.
    assert np.all(np.abs(mean - predicted[1:-1] - np.log10(2)) > 4 * se), (mean, se)


def _numbers(row):
    """The measured summaries of one statistic (or summary row) as one float array."""
    fields = ("log10_of_mean", "mean_log10", "stderr_log10", "median_log10", "per_seed_log10")
    fields += ("measured_log10_of_mean", "measured_mean_log10")
    return np.concatenate([np.ravel(np.asarray(row[f], float)) for f in fields if f in row])


def test_fixup_at_init_marks_the_backward_rows_with_their_reason(fixup_k2):
    # Fixup's zero head: every gradient is exactly zero, so the backward rows relative to
    # layer L are undefined. They must say why instead of presenting NaN as a result.
    *_, m_init = fixup_k2
    assert np.all(np.isneginf(m_init["log_m2_dz"]))
    assert np.all(np.isneginf(m_init["log_var_dw"][:, 1:]))
    record = initcheck.compare(FIXUP_K2, m_init, key=jax.random.key(0), toy_networks=8)
    json.dumps(results.to_jsonable(record), allow_nan=False)  # storable, the note included
    for table in (record["statistics"], record["summary"]):
        for name in ("m2_dz", "var_dw"):
            assert table[name]["note"] == initcheck.NO_GRADIENT, (name, table[name]["note"])
            assert np.all(np.isnan(_numbers(table[name])))
        # The forward rows are compared as before: defined, finite, no note.
        for name in ("m2_z", "unitvar_z"):
            assert table[name]["note"] is None
            assert np.all(np.isfinite(_numbers(table[name])))
    # Whatever is NaN in the record is explained by a note.
    for table in (record["statistics"], record["summary"]):
        for name, row in table.items():
            assert row["note"] is not None or not np.any(np.isnan(_numbers(row))), name
    # The predictions stay numbers (the recursion's loss reaches the blocks whatever the head).
    assert np.all(np.isfinite(record["statistics"]["m2_dz"]["predicted_log10"]))
    assert np.isfinite(record["summary"]["m2_dz"]["predicted_log10"])


def test_compare_requires_a_key(linear):
    cfg, m = linear
    with pytest.raises(TypeError, match="key"):
        initcheck.compare(cfg, m, toy_networks=0)
    with pytest.raises(TypeError):
        initcheck.compare(cfg, m, None, toy_networks=0)  # keyword-only


def test_simulate_is_exported_beside_profile():
    # toy_montecarlo runs the Monte-Carlo engine, also reachable as meanfield.simulate.
    assert meanfield.simulate is montecarlo.simulate
    assert meanfield.profile is meanfield.recursions.profile
    assert {"simulate", "profile"} <= set(meanfield.__all__)
