"""The prediction check: measured statistics of the conv network against exact expectations.

For linear blocks with circular padding, E over the block kernels of the second moment of z^l
given z^0 is exact at any width (each output position sees a full k x k window, and
E|W * z|² = k·k·C·Var[w] |z|²): the mean over sampled networks must match it within a few
standard errors, and the same test must reject a wrong prediction and zero padding."""

import json

import jax
import numpy as np
import pytest

from meanfield import Block, initcheck, results
from meanfield.models import ResNetConfig
from meanfield.train import TrainConfig, Trainer

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


def test_compare_writes_measured_predicted_and_toy_montecarlo(linear):
    cfg, m = linear
    record = initcheck.compare(cfg, m, toy_networks=16, toy_batch=8)
    json.dumps(results.to_jsonable(record), allow_nan=False)  # storable as it is
    s = record["statistics"]
    start = record["start"]["m2_z"]
    assert s["m2_z"]["predicted_log10"][0] == pytest.approx(np.log10(start), rel=1e-6)
    assert s["m2_z"]["toy_log10"][0] == pytest.approx(np.log10(start), abs=0.1)
    for name in ("m2_dz", "var_dw"):  # relative to layer L
        assert s[name]["predicted_log10"][-1] == pytest.approx(0.0, abs=1e-9)
        assert s[name]["log10_of_mean"][-1] == pytest.approx(0.0, abs=1e-9)
    assert len(s["m2_z"]["per_seed_log10"]) == NETWORKS
    assert record["summary"]["m2_z"]["layer"] == cfg.depth
    assert record["toy"] == {"width": cfg.channels, "networks": 16, "batch": 8}
    assert {f["source"] for f in record["closed_forms"]} == {"paper"}
