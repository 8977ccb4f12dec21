"""SVAG: coefficients, the clock, and O(1/l) convergence of the stationary variance to the SDE's (§9.3)."""

import numpy as np
import pytest

import sgdsde
from sgdsde import simulate_svag
from sgdsde._sde import svag_coefficients  # internal: SVAG's (a, c) weights, checked against the paper
from sgdsde.analysis import fit_order, stationary_covariance_sde, stationary_covariance_sgd

TABLE = {1: 1.000, 2: 0.667, 4: 0.571, 8: 0.533, 16: 0.516, 64: 0.504}  # §9.3, η = 0.5, λ = 2


def test_svag_coefficients_and_exact_stationary_variances():
    """a + c = 1, a² + c² = l; SVAG's stationary variance ηλ/(2 − ηλ/l) (the discrete Lyapunov solution with
    step
    η/l and covariance lΣ) reproduces §9.3's table and tends to the SDE's ηλ/2 = 0.5 at O(1/l).
    [theory: SDE-7, QOU-3]"""
    for lv in (1, 2, 4, 16):
        a, c = svag_coefficients(lv)
        assert np.isclose(a + c, 1) and np.isclose(a * a + c * c, lv)
    eta, H, C = 0.5, np.array([[2.0]]), np.array([[4.0]])
    var = {lv: stationary_covariance_sgd(H, lv * C, lr=eta / lv)[0, 0] for lv in TABLE}
    for lv, v in TABLE.items():
        assert abs(var[lv] - v) < 5e-4 and np.isclose(var[lv], eta * 2 / (2 - eta * 2 / lv))
    sde = stationary_covariance_sde(H, C, lr=eta)[0, 0]
    ls = np.array([4, 8, 16, 64])  # asymptotic range: the gap is ηλ·(ηλ/l)/(2(2 − ηλ/l))
    fit = fit_order(1 / ls, [var[lv] - sde for lv in ls])
    assert abs(fit.order - 1) < 0.05, str(fit)


def test_simulated_svag_stationary_variance():
    """Simulated SVAG (Gaussian gradient noise N(0, λ²) on ½λx²) reaches ηλ/(2 − ηλ/l) for l = 1, 4, 16 within
    4 standard errors, on SGD's clock. [theory: SDE-7]"""
    eta, lam = 0.5, 2.0
    problem = sgdsde.quadratic_problem(np.array([[lam]]), np.zeros(1))
    noise = sgdsde.GaussianNoise(np.array([[lam**2]]))
    for lv in (1, 4, 16):
        # 12 SGD steps: the variance relaxes like (1 − 1/l)^{2 l k} ≤ e^{−24} of its start, negligible
        res = simulate_svag(
            problem,
            noise,
            np.zeros(1),
            lr=eta,
            l=lv,
            n_steps=12,
            key=lv,
            ensemble=sgdsde.Ensemble(n_paths=20_000, dtype=np.float64),
            record=sgdsde.Record(every=4, observables=("sq_norm",)),
        )
        np.testing.assert_allclose(res.times, eta * np.arange(0, 13, 4))
        np.testing.assert_array_equal(res.steps, [0, 4, 8, 12])
        mean, se = res.final("sq_norm")
        assert abs(mean - TABLE[lv]) < 4 * se + 5e-4, (lv, mean, se)


def test_svag_bad_input():
    """l must be an integer >= 1."""
    problem = sgdsde.quadratic_problem(np.eye(1), np.zeros(1))
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="l must"):
            simulate_svag(problem, None, np.zeros(1), lr=0.1, l=bad, n_steps=2, key=0)


def test_svag_exact_moments():
    """``svag_moments`` is SGD's exact recursion with step η/l taken l times and covariance l·Σ: l = 1 is
    ``sgd_moments`` exactly; its long-run variance is the discrete Lyapunov value ηλ/(2 − ηλ/l) (§9.3's
    table); with θ-dependent (affine) noise — minibatch SGD on linear regression — it matches simulated
    SVAG's mean and E‖θ‖² within 4 standard errors at every record. [theory: SDE-7, QOU-1]"""
    from sgdsde.analysis import AffineNoise, quadratic_form, sgd_moments, svag_moments

    eta, H, C = 0.5, np.array([[2.0]]), np.array([[4.0]])
    one = svag_moments(H, np.zeros(1), C, np.ones(1), lr=eta, l=1, n_steps=6)
    sgd = sgd_moments(H, np.zeros(1), C, np.ones(1), lr=eta, n_steps=6)
    np.testing.assert_array_equal(one.cov, sgd.cov)
    np.testing.assert_array_equal(one.steps, sgd.steps)
    for lv in (2, 4, 16):
        # 60 SGD steps: the variance relaxes like (1 − 1/l)^{2·60·l} ≤ e^{−120}: at its fixed point to rounding
        mo = svag_moments(H, np.zeros(1), C, np.zeros(1), lr=eta, l=lv, n_steps=60, record_every=20)
        np.testing.assert_array_equal(mo.steps, [0, 20, 40, 60])
        np.testing.assert_allclose(mo.times, eta * mo.steps)
        assert abs(mo.cov[-1, 0, 0] - TABLE[lv]) < 5e-4
        np.testing.assert_allclose(mo.cov[-1, 0, 0], eta * 2 / (2 - eta * 2 / lv), rtol=1e-12)
    with pytest.raises(ValueError, match="l must be"):
        svag_moments(H, np.zeros(1), C, np.zeros(1), lr=eta, l=0, n_steps=2)

    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 2))
    problem = sgdsde.Problem(
        sgdsde.LinearRegression(2), X, X @ np.array([1.0, -0.5]) + 0.3 * rng.normal(size=6)
    )
    noise = sgdsde.MinibatchNoise(2, "with_replacement")
    q = quadratic_form(problem)
    affine = AffineNoise.from_noise(problem, noise)
    th0 = np.array([1.5, 1.0])
    lv, n_steps = 4, 12
    exact = svag_moments(q.hessian, q.theta_star, affine, th0, lr=0.1, l=lv, n_steps=n_steps, record_every=4)
    res = simulate_svag(
        problem,
        noise,
        th0,
        lr=0.1,
        l=lv,
        n_steps=n_steps,
        key=5,
        ensemble=sgdsde.Ensemble(n_paths=20_000, dtype=np.float64),
        record=sgdsde.Record(every=4, observables={"theta": lambda p, t: t, "sq_norm": lambda p, t: t @ t}),
    )
    np.testing.assert_array_equal(res.steps, exact.steps)
    se = res.stderr("theta")
    assert np.all(np.abs(res.mean["theta"] - exact.mean) <= 4 * se + 1e-12)
    want = np.einsum("rii->r", exact.cov) + np.sum(exact.mean**2, axis=1)
    assert np.all(np.abs(res.mean["sq_norm"] - want) <= 4 * res.stderr("sq_norm") + 1e-12)
