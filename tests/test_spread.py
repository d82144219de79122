"""The spread over networks: Monte-Carlo's median, band and log moments against the exact
finite-width laws of meanfield.theory, the heavy-tail flag and its warning."""

import math
import warnings

import jax
import numpy as np
import pytest

from meanfield import montecarlo
from meanfield import theory as t
from meanfield.core.architecture import Block
from meanfield.theory import finite_width

NETWORKS = 2000
DEPTH = 10
WIDTH = 32
# Blocks with an exact law of the spread, and a weight variance for each (α = 1, He for ReLU).
EXACT = {
    "identity-none-residual": 1.0 / WIDTH,
    "identity-none-plain": 1.0 / WIDTH,
    "relu-none-plain": 2.0 / WIDTH,
}


@pytest.fixture(scope="module")
def single_input_estimates():
    """One Monte-Carlo run per block with B = 1, so m2_z^l = |z^l|²/n of one input."""
    out = {}
    for i, name in enumerate(EXACT):
        out[name] = montecarlo.simulate(
            Block.from_name(name),
            key=jax.random.key(100 + i),
            depth=DEPTH,
            width=WIDTH,
            var_w=EXACT[name],
            networks=NETWORKS,
            batch=1,
            warn=False,
        )
    return out


def _log_moment_zscores(spread: montecarlo.Spread, law: t.LogSpread) -> tuple[float, float]:
    """Largest |z| over layers of the sample mean and sample sd of ln m2_z against the law.

    Standard errors from the law: sd/sqrt(R) for the mean and sd/sqrt(2(R - 1)) for the sd
    (ln m2_z is a sum of independent terms, close to normal)."""
    r = NETWORKS
    z_mean = (spread.mean_ln - law.mean) / (law.sd / math.sqrt(r))
    z_sd = (spread.sd_ln - law.sd) / (law.sd / math.sqrt(2 * (r - 1)))
    return float(np.max(np.abs(z_mean))), float(np.max(np.abs(z_sd)))


@pytest.mark.parametrize("name", list(EXACT))
def test_log_moments_match_the_exact_law(single_input_estimates, name):
    est = single_input_estimates[name]
    law = t.finite_width_log_m2_spread(Block.from_name(name), DEPTH, WIDTH, EXACT[name])
    z_mean, z_sd = _log_moment_zscores(est.spread["m2_z"], law)
    assert z_mean < 4.0 and z_sd < 4.0, (z_mean, z_sd)
    # The spread grows with depth (sqrt(L/n)), as the law says.
    assert law.sd[-1] > 1.5 * law.sd[1]


@pytest.mark.parametrize(
    "name, planted",
    [
        # Noncentrality of the residual factor doubled (Poisson mean n/α instead of n/2α).
        (
            "identity-none-residual",
            lambda real, n, a: real("identity-none-residual", n, a / 2),
        ),
        # Variance per layer halved (a missing factor 2 in Var ln χ²).
        (
            "identity-none-plain",
            lambda real, n, a: (lambda m, v: (m, v / 2))(*real("identity-none-plain", n, a)),
        ),
        # Every unit active (χ²_n instead of the Binomial(n, 1/2) mixture), rescaled to α/2.
        ("relu-none-plain", lambda real, n, a: real("identity-none-plain", n, a / 2)),
    ],
)
def test_a_wrong_law_is_rejected(single_input_estimates, monkeypatch, name, planted):
    real = finite_width.log_factor_moments

    def patched(block_name, n, alpha):
        return planted(real, n, alpha) if block_name == name else real(block_name, n, alpha)

    monkeypatch.setattr(finite_width, "log_factor_moments", patched)
    law = t.finite_width_log_m2_spread(Block.from_name(name), DEPTH, WIDTH, EXACT[name])
    assert max(_log_moment_zscores(single_input_estimates[name].spread["m2_z"], law)) > 6.0


@pytest.mark.parametrize("name", list(EXACT))
def test_median_and_band_follow_the_log_normal_law(single_input_estimates, name):
    # ln m2_z^l is a sum of l + 1 independent terms: its quantiles are close to the normal
    # ones, mean ± 1.645 sd. Sample-quantile error at p = 0.05 is about 0.05 sd at R = 2000.
    spread = single_input_estimates[name].spread["m2_z"]
    law = t.finite_width_log_m2_spread(Block.from_name(name), DEPTH, WIDTH, EXACT[name])
    ln10 = math.log(10.0)
    for field, z in (("log10_median", 0.0), ("log10_q05", -1.645), ("log10_q95", 1.645)):
        got = getattr(spread, field) * ln10
        assert np.all(np.abs(got - (law.mean + z * law.sd)) < 0.25 * law.sd), field
    np.testing.assert_allclose(np.log(spread.median), spread.log10_median * ln10, rtol=1e-6)
    assert np.all(spread.q05 < spread.median) and np.all(spread.median < spread.q95)


def _sd_zscores(sd_mc, sd, mean) -> np.ndarray:
    """(sample sd - sd) over its standard error sd·sqrt((κ - 1)/(4R)), with the kurtosis κ of
    a log-normal of the same relative spread (σ² = ln(1 + (sd/mean)²))."""
    s2 = np.log1p((sd / mean) ** 2)
    kurtosis = np.exp(4 * s2) + 2 * np.exp(3 * s2) + 3 * np.exp(2 * s2) - 3
    return (sd_mc - sd) / (sd * np.sqrt((kurtosis - 1) / (4 * NETWORKS)))


@pytest.mark.parametrize("name", list(EXACT))
def test_standard_deviation_of_the_second_moment(single_input_estimates, name):
    # The sample sd over networks is stderr * sqrt(R); checked on the first layers, where the
    # relative spread is below 0.7 and the sample sd is still a usable estimator.
    est = single_input_estimates[name]
    layers = np.arange(3)
    sd_mc = np.asarray(est.m2_z.stderr[:3], np.float64) * math.sqrt(NETWORKS)
    sd = np.asarray(t.finite_width_m2_sd(Block.from_name(name), layers, WIDTH, EXACT[name]))
    mean = np.asarray(est.m2_z.mean[:3], np.float64)
    assert np.all(sd / mean < 0.7)
    z = _sd_zscores(sd_mc, sd, mean)
    assert np.max(np.abs(z)) < 4.0, z


def test_standard_deviation_with_a_central_factor_is_rejected(single_input_estimates):
    # The identity residual factor is noncentral: Var X = 2α(α+2)/n. The central guess 2α²/n
    # (α = 1: a third of it) must fail the check above.
    alpha, n = 1.0, WIDTH
    layers = np.arange(1, 4)
    wrong = np.sqrt(
        (1 + 2 / n) * ((1 + alpha) ** 2 + 2 * alpha**2 / n) ** layers - (1 + alpha) ** (2 * layers)
    )
    est = single_input_estimates["identity-none-residual"]
    sd_mc = np.asarray(est.m2_z.stderr[1:4], np.float64) * math.sqrt(NETWORKS)
    mean = np.asarray(est.m2_z.mean[1:4], np.float64)
    assert np.max(np.abs(_sd_zscores(sd_mc, wrong, mean))) > 6.0


def test_m2_sd_closed_form_small_spread_limit():
    # While small, the relative variance adds up per factor: 2/n for the input and
    # 2α(α+2)/(n(1+α)²) per identity residual layer.
    n, alpha, l = 10_000, 1.0, 5
    sd = float(t.finite_width_m2_sd(Block("identity", "none", True), l, n, alpha / n))
    rel2 = (sd / (1 + alpha) ** l) ** 2
    first_order = 2 / n + l * 2 * alpha * (alpha + 2) / (n * (1 + alpha) ** 2)
    assert abs(rel2 / first_order - 1) < 1e-2


def test_blocks_without_an_exact_law_are_refused():
    with pytest.raises(ValueError, match="block must be one of .*got 'relu-none-residual'"):
        t.finite_width_log_m2_spread(Block("relu", "none", True), 3, 8, 0.1)
    with pytest.raises(ValueError, match="got 'identity-bn_post-residual'"):
        t.finite_width_m2_sd(Block("identity", "bn_post", True), 3, 8, 0.1)
    with pytest.raises(ValueError, match="var_w must be a finite number > 0"):
        t.finite_width_log_m2_spread(Block("identity", "none", True), 3, 8, -1.0)


def test_heavy_tail_is_flagged_where_the_law_passes_one_and_warned():
    # n = 16, α = 1: sd of ln m2_z crosses 1 near l = 8 (the law), so the deep layers are
    # flagged and the shallow ones are not.
    block, n, depth = Block("identity", "none", True), 16, 20
    with pytest.warns(montecarlo.HeavyTailWarning, match="identity-none-residual: m2_z at"):
        est = montecarlo.simulate(
            block, key=jax.random.key(3), depth=depth, width=n, var_w=1 / n, networks=1000, batch=1
        )
    law = t.finite_width_log_m2_spread(block, depth, n, 1 / n)
    flagged = est.spread["m2_z"].heavy_tail
    assert np.all(flagged[law.sd > 1.15]) and not np.any(flagged[law.sd < 0.85])
    np.testing.assert_array_equal(est.heavy_tails()["m2_z"], np.flatnonzero(flagged))
    # warn=False: no warning, the same flags.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = montecarlo.simulate(
            block,
            key=jax.random.key(3),
            depth=depth,
            width=n,
            var_w=1 / n,
            networks=1000,
            batch=1,
            warn=False,
        )
    np.testing.assert_array_equal(quiet.spread["m2_z"].heavy_tail, flagged)


def test_wide_networks_are_not_heavy_tailed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = montecarlo.simulate(
            Block("relu", "bn_pre", True),
            key=jax.random.key(4),
            depth=10,
            width=256,
            var_w=1 / 256,
            networks=64,
            batch=8,
        )
    assert not est.heavy_tails()
    sd = est.spread["m2_z"].sd_ln
    assert np.all(sd[1:] < 0.2), sd  # relative spread ~ sqrt(L/(nB)) at width 256


def test_mean_z_spread_has_quantiles_but_no_logs(single_input_estimates):
    s = single_input_estimates["identity-none-residual"].spread["mean_z"]
    assert np.all(s.q05 < s.median) and np.all(s.median < s.q95)
    assert np.all(np.isnan(s.sd_ln)) and not np.any(s.heavy_tail)
    # mean_z of one input is (1/n) Σ_j z_j: symmetric about 0 for the identity network.
    assert np.all(np.abs(s.q05 + s.q95) < 0.2 * (s.q95 - s.q05))


def test_exactly_zero_networks_are_counted_not_nan():
    # Per layer (columns) the natural logs over 6 networks: a layer where every network is 0
    # (a gradient an init makes exactly zero), one where some are (a dead ReLU layer in some
    # networks), an ordinary one, and one undefined everywhere (var_dw at l = 0).
    ninf, nan = -np.inf, np.nan
    logs = np.array(
        [
            [ninf, ninf, 0.1, nan],
            [ninf, 0.5, -0.2, nan],
            [ninf, 0.7, 0.3, nan],
            [ninf, ninf, 0.0, nan],
            [ninf, 0.6, 0.2, nan],
            [ninf, 0.4, -0.1, nan],
        ]
    )
    s = montecarlo.estimates.spread_over_networks(logs, logs=True)
    np.testing.assert_allclose(s.zero_fraction[:3], [1.0, 2 / 6, 0.0])
    assert np.isnan(s.zero_fraction[3])
    np.testing.assert_array_equal(s.degenerate, [False, True, False, False])
    np.testing.assert_array_equal(s.heavy_tail, [False, True, False, False])
    # All zero: no spread, the typical network is 0.
    assert s.mean_ln[0] == -np.inf and s.sd_ln[0] == 0.0 and s.median[0] == 0.0
    # Some zero: the log moments are those of the positive networks; the band reaches 0.
    np.testing.assert_allclose(s.mean_ln[1], 0.55)
    np.testing.assert_allclose(s.sd_ln[1], np.std([0.5, 0.7, 0.6, 0.4], ddof=1))
    assert s.q05[1] == 0.0 and s.log10_q05[1] == -np.inf and s.q95[1] > 0
    np.testing.assert_allclose(
        s.log10_median[1], np.median([ninf, ninf, 0.4, 0.5, 0.6, 0.7]) / math.log(10)
    )
    # None zero: as before.
    np.testing.assert_allclose(s.sd_ln[2], np.std(logs[:, 2], ddof=1))
    for field in (
        "median",
        "q05",
        "q95",
        "log10_median",
        "log10_q05",
        "log10_q95",
        "mean_ln",
        "sd_ln",
    ):
        values = getattr(s, field)
        assert not np.any(np.isnan(values[:3])), field
        assert np.isnan(values[3]), field


def test_dead_relu_layers_are_flagged_with_the_fraction_of_dead_networks():
    # Plain ReLU, one input, n = 4: given z^{l-1} != 0 the n units of W z^{l-1} are independent
    # symmetric, so the layer dies (z^l = 0, and every layer above) with probability 2^-n, and
    # P(z^l = 0) = 1 - (1 - 2^-n)^l. The input gradient vanishes wherever z^L does.
    n, depth, networks = 4, DEPTH, 400
    with pytest.warns(
        montecarlo.HeavyTailWarning, match="m2_z at 10 layer\\(s\\) from l = 1 \\(exactly 0"
    ):
        est = montecarlo.simulate(
            Block("relu", "none", False),
            key=jax.random.key(11),
            depth=depth,
            width=n,
            var_w=2.0 / n,
            networks=networks,
            batch=1,
        )
    layers = np.arange(depth + 1)
    dead = 1 - (1 - 2.0**-n) ** layers
    se = np.sqrt(dead[-1] * (1 - dead[-1]) / networks)
    s = est.spread["m2_z"]
    assert np.max(np.abs(s.zero_fraction - dead)) < 4 * se, s.zero_fraction
    assert np.max(np.abs(s.zero_fraction - (1 - (1 - 2.0 ** -(n + 1)) ** layers))) > 4 * se
    np.testing.assert_array_equal(s.degenerate, s.zero_fraction > 0)
    assert np.all(s.heavy_tail[1:]) and np.all(s.degenerate[1:])
    assert np.all(np.isfinite(s.mean_ln)) and np.all(np.isfinite(s.sd_ln))
    assert not np.any(np.isnan(s.median)) and not np.any(np.isnan(s.log10_q05))
    assert np.all(s.log10_q05[dead > 0.05 + 4 * se] == -np.inf)
    g = est.spread["m2_dz"]
    assert np.max(np.abs(g.zero_fraction[:-1] - s.zero_fraction[-1])) == 0
    assert g.zero_fraction[-1] == 0 and not g.degenerate[-1]
    np.testing.assert_array_equal(est.heavy_tails()["m2_z"], layers[1:])
    # The raw mean averages the dead networks in as zeros, not as NaN.
    assert np.all(np.isfinite(est.m2_z.mean)) and np.all(est.m2_z.mean > 0)
    assert not est.rank_deficit.any()  # a zero input is structural, not a lost rank
