"""Gaussian expectations against direct numerical integration (independent of the formulas)."""

import math

import numpy as np
import pytest

from meanfield.core import gaussian
from tests.helpers import assert_close

_U = np.linspace(0.0, 14.0, 280_001)  # relu(u) is 0 for u < 0; the tail past 14 sd is < 1e-40
_PHI = np.exp(-0.5 * _U**2) / math.sqrt(2 * math.pi)


def _simpson(y, x=_U):
    h = x[1] - x[0]
    return h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())


def _normal_cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _relu_cross_numeric(rho):
    # E[relu(s) relu(s')] = ∫_0^∞ s φ(s) E[relu(ρs + √(1-ρ²) ε)] ds, inner term in closed form.
    sd = math.sqrt(1 - rho**2)
    mu = rho * _U
    inner = mu * _normal_cdf(mu / sd) + sd * np.exp(-0.5 * (mu / sd) ** 2) / math.sqrt(2 * math.pi)
    return _simpson(_U * _PHI * inner)


def test_activation_moments_match_integrals():
    m = gaussian.activation_moments("relu")
    assert m.e1 == pytest.approx(_simpson(_U * _PHI), rel=1e-10)
    assert m.e2 == pytest.approx(_simpson(_U**2 * _PHI), rel=1e-10)
    assert m.a == pytest.approx(_simpson(_PHI), rel=1e-10)  # P(s > 0)
    assert m.b == pytest.approx(m.e2 - m.e1**2, rel=1e-14)
    assert gaussian.activation_moments("identity") == (0.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        gaussian.activation_moments("tanh")


@pytest.mark.parametrize("rho", [-0.9, -0.3, 0.0, 0.4, 0.8, 0.95])
def test_arc_cosine_kernel_matches_integral(rho, x64):
    v = 2.5
    assert float(gaussian.relu_cross_moment(v, rho)) == pytest.approx(
        v * _relu_cross_numeric(rho), rel=1e-8
    )
    assert float(gaussian.relu_mean(v)) == pytest.approx(math.sqrt(v) * _simpson(_U * _PHI))


def test_kernel_gap_keeps_relative_precision_near_rho_one():
    # float32 stable form against the float64 direct difference (exact enough for δ >= 1e-8).
    delta = np.logspace(-8, np.log10(2.0), 60)
    rho = 1.0 - delta
    theta = np.arccos(rho)
    direct64 = 0.5 - (np.sqrt(1 - rho**2) + rho * (np.pi - theta)) / (2 * np.pi)
    stable32 = np.asarray(gaussian.relu_kernel_gap(np.float32(1.0), delta.astype(np.float32)))
    assert stable32.dtype == np.float32
    assert_close(stable32, direct64, rtol=2e-5)
    ratio = np.asarray(gaussian.relu_kernel_gap_ratio(np.float32(1.0), delta.astype(np.float32)))
    assert_close(ratio, direct64 / delta, rtol=2e-5)
    # The limit δ -> 0: gap/δ -> v/2 (Var relu(u) shrinks like the correlation gap).
    assert float(gaussian.relu_kernel_gap_ratio(3.0, 0.0)) == pytest.approx(1.5)
