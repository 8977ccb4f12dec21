"""First passage under resetting: the closed forms against independent numerics (the renewal formula with the
inverse-Gaussian density integrated by quadrature, the moments of that density, a brute-force minimum)."""

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq

from sgdsde.analysis import fpt_moments, mfpt_with_resetting, optimal_resetting_rate, peclet


def fpt_density(t, v, D, L):
    """Inverse-Gaussian first-passage density of dX = −v dt + √(2D) dW from L to 0."""
    return L / math.sqrt(4 * math.pi * D * t**3) * math.exp(-((L - v * t) ** 2) / (4 * D * t))


def renewal_mfpt(v, D, L, r):
    """T(r) = (1 − Q̃(r)) / (r Q̃(r)), Q̃(r) = E e^{−rτ} by quadrature of the density (the renewal argument for
    resetting to the start; independent of the closed form's algebra)."""
    q = quad(
        lambda t: math.exp(-r * t) * fpt_density(t, v, D, L), 0, np.inf, limit=400, epsabs=0, epsrel=1e-12
    )[0]
    return (1 - q) / (r * q)


@pytest.mark.parametrize(
    "v, D, L", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5), (0.3, 1.0, 2.0), (0.0, 1.0, 1.0), (-0.5, 1.0, 1.0)]
)
@pytest.mark.parametrize("r", [0.05, 0.5, 3.0])
def test_mfpt_closed_form_matches_the_renewal_integral(v, D, L, r):
    """T(r) closed form = renewal formula with Q̃ by quadrature (relative 1e-8: quadrature tolerance), for
    drift towards (v > 0), none (v = 0) and away from the target (v < 0, finite only with resetting).
    [theory: RESET-1]"""
    assert mfpt_with_resetting(v, D, L, r) == pytest.approx(renewal_mfpt(v, D, L, r), rel=1e-8)


def test_no_resetting_limit_and_peclet_criterion():
    """T(0) = L/v, T(r) → L/v as r → 0, the inverse-Gaussian moments give CV² = 1/Pe (quadrature), and the
    slope T'(0) = (L/v²)(L/2 − D/v) is negative exactly when Pe < 1: small-rate resetting helps iff Pe < 1.
    [theory: RESET-1, RESET-2]"""
    for v, D, L in [(1.0, 1.0, 1.0), (1.0, 0.2, 1.0), (0.5, 1.0, 3.0), (2.0, 1.0, 0.5)]:
        assert mfpt_with_resetting(v, D, L) == L / v
        mean, var = fpt_moments(v, D, L)
        m1, m2 = (
            quad(lambda t, k=k, a=(v, D, L): t**k * fpt_density(t, *a), 0, np.inf, epsrel=1e-12, limit=400)[0]
            for k in (1, 2)
        )
        assert mean == pytest.approx(m1, rel=1e-8) and var == pytest.approx(m2 - m1**2, rel=1e-7)
        assert var / mean**2 == pytest.approx(1 / peclet(v, D, L), rel=1e-12)
        h = 1e-6 * D / L**2
        slope = (mfpt_with_resetting(v, D, L, h) - L / v) / h
        assert slope == pytest.approx((L / v**2) * (L / 2 - D / v), rel=1e-3, abs=1e-9)
        assert (slope < 0) == (peclet(v, D, L) < 1)


@pytest.mark.parametrize(
    "v, D, L", [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0), (0.0, 1.0, 1.0), (1.0, 0.25, 1.0), (3.0, 1.0, 1.0)]
)
def test_optimal_rate(v, D, L):
    """r* minimises T over a dense log grid (to its spacing); r* > 0 with T(r*) < T(0) iff Pe < 1, else r* = 0.
    For v = 0 the known optimum is ρ* = r*L²/D = z² with z ≈ 1.5936 solving z/2 = 1 − e^{−z}.
    [theory: RESET-3]"""
    opt = optimal_resetting_rate(v, D, L)
    grid = np.exp(np.linspace(np.log(1e-6), np.log(1e2), 4001)) * D / L**2
    T = np.array([mfpt_with_resetting(v, D, L, r) for r in grid])
    if v > 0 and peclet(v, D, L) >= 1:
        assert opt.rate == 0.0 and opt.mfpt == L / v
        assert np.all(T >= L / v * (1 - 1e-12))
    else:
        assert opt.rate > 0 and opt.mfpt < opt.mfpt_without
        assert opt.mfpt <= T.min() * (1 + 1e-9)
        i = int(np.argmin(T))
        assert grid[max(i - 1, 0)] <= opt.rate * (1 + 1e-6) and opt.rate <= grid[
            min(i + 1, len(grid) - 1)
        ] * (1 + 1e-6)
    if v == 0:
        z = brentq(lambda z: z / 2 - 1 + math.exp(-z), 0.5, 3.0)
        assert z == pytest.approx(1.5936, abs=1e-4)
        assert opt.rate * L**2 / D == pytest.approx(z**2, rel=1e-6)


def test_resetting_bad_input():
    for call, match in [
        (lambda: mfpt_with_resetting(1.0, 0.0, 1.0), "D must be finite and > 0"),
        (lambda: mfpt_with_resetting(1.0, 1.0, -1.0), "L must be finite and > 0"),
        (lambda: mfpt_with_resetting(1.0, 1.0, 1.0, -0.1), "r must be finite and >= 0"),
        (lambda: mfpt_with_resetting(float("nan"), 1.0, 1.0), "v must be finite"),
        (lambda: fpt_moments(-1.0, 1.0, 1.0), "v must be > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
    assert mfpt_with_resetting(-1.0, 1.0, 1.0) == math.inf
