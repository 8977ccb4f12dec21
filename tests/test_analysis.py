"""sgdsde.analysis: exact quadratic moments (SGD and SME), stationary covariances, weak_error and
fit_order."""

import numpy as np
import pytest
import scipy.integrate

import sgdsde
from sgdsde._sde import PlatenWeak2, simulate_sde
from sgdsde.analysis import (
    fit_order,
    sde_moments,
    sgd_moments,
    stationary_covariance_sde,
    stationary_covariance_sgd,
    weak_error,
)


def spd(d, seed, lo=0.5, hi=2.0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return Q @ np.diag(np.linspace(lo, hi, d)) @ Q.T


def test_sde_moments_singular_hessian_van_loan():
    """With a singular H the Van Loan branch gives the same P(t) as quadrature (variance grows like ηCt on
    the null space). [theory: QOU-2]"""
    H, C = np.diag([1.0, 0.0]), np.array([[0.5, 0.1], [0.1, 0.3]])
    eta, t = 0.2, 2.0
    mo = sde_moments(H, np.zeros(2), C, np.ones(2), lr=eta, times=[t])
    f = lambda s: np.diag(np.exp(-np.diag(H) * s)) @ (eta * C) @ np.diag(np.exp(-np.diag(H) * s))
    np.testing.assert_allclose(mo.cov[0], scipy.integrate.quad_vec(f, 0, t, epsabs=1e-13)[0], atol=1e-11)


def test_sde_moments_solve_their_odes():
    """Van Loan's P(t) equals the quadrature ∫ e^{−Ms}ηCe^{−Ms}ds and tends to the continuous Lyapunov
    solution;
    the mean is e^{−Mt}e₀. [theory: QOU-2]"""
    H, C = spd(3, 0), spd(3, 1, 0.1, 1.0)
    eta, t = 0.1, 1.3
    mo = sde_moments(H, np.zeros(3), C, np.ones(3), lr=eta, times=[t, 60.0])
    lam, Q = np.linalg.eigh(H)
    f = lambda s: (Q * np.exp(-lam * s)) @ Q.T @ (eta * C) @ (Q * np.exp(-lam * s)) @ Q.T
    quad = scipy.integrate.quad_vec(f, 0, t, epsabs=1e-13)[0]
    np.testing.assert_allclose(mo.cov[0], quad, atol=1e-11)
    np.testing.assert_allclose(mo.mean[0], (Q * np.exp(-lam * t)) @ Q.T @ np.ones(3), atol=1e-12)
    np.testing.assert_allclose(mo.cov[1], stationary_covariance_sde(H, C, lr=eta), atol=1e-12)


def test_sgd_moments_match_simulated_sgd():
    """The discrete Lyapunov recursion gives Gaussian-noise SGD's mean and E‖θ‖² (within 4 Monte Carlo
    standard
    errors), also under a schedule. [theory: QOU-1]"""
    H, C = spd(3, 2), spd(3, 3, 0.2, 1.0)
    ts = np.array([1.0, -1.0, 0.5])
    problem = sgdsde.quadratic_problem(H, ts)
    lr = sgdsde.CosineLR(0.3, 40, 0.05)
    res = sgdsde.simulate_sgd(
        problem,
        sgdsde.GaussianNoise(C),
        np.zeros(3),
        lr=lr,
        n_steps=40,
        key=0,
        n_paths=20_000,
        record_every=10,
        observables=("theta", "sq_norm", "loss"),
        dtype=np.float64,
    )
    exact = sgd_moments(H, ts, C, np.zeros(3), lr=lr, n_steps=40, record_every=10)
    np.testing.assert_allclose(res.times, exact.times)
    ex = exact.expectations(H, ts)
    for name in ("theta", "sq_norm", "loss"):
        err = weak_error(res, (exact.times, ex), [name])
        assert np.all(np.abs(err.error[name]) <= 4 * err.stderr[name] + 1e-12), name


def test_stationary_gap_is_order_eta_squared():
    """‖S_SGD − S_SME1‖ = O(η²) (§9.5 values for η = 0.1…0.0125 are 7.0e-3…1.07e-4 for one random d = 4 case),
    and the 1-D §9.4 values 0.1111 / 0.1000 / 0.0909 (SGD / SME-1 / SME-2). [theory: QOU-3]"""
    H, C = spd(4, 4), spd(4, 5, 0.2, 1.5)
    etas = np.array([0.1, 0.05, 0.025, 0.0125])
    gaps = [
        np.max(np.abs(stationary_covariance_sgd(H, C, lr=e) - stationary_covariance_sde(H, C, lr=e)))
        for e in etas
    ]
    fit = fit_order(etas, gaps)
    assert abs(fit.order - 2) < 0.1, str(fit)
    for e in etas:  # the exact identity HS + SH − ηHSH = ηC (symmetric H)
        S = stationary_covariance_sgd(H, C, lr=e)
        np.testing.assert_allclose(H @ S + S @ H - e * H @ S @ H, e * C, atol=1e-13)
    one = [np.array([[2.0]]), np.array([[4.0]])]
    assert np.isclose(stationary_covariance_sgd(*one, lr=0.1)[0, 0], 0.1 / 0.9)
    assert np.isclose(stationary_covariance_sde(*one, lr=0.1)[0, 0], 0.1)
    assert np.isclose(stationary_covariance_sde(*one, lr=0.1, order=2)[0, 0], 0.2 / 2.2)


def test_label_noise_stationary_covariance_c1():
    """Label noise on a linear model (full batch, C = (σ²/n)H): SGD's stationary covariance is
    (ησ²/n)(2I − ηH)⁻¹, SME-1's (ησ²/(2n))I; Euler with dt = η reaches the first (it is SGD with Gaussian
    noise),
    a weak order-2 solver with dt = η/4 the second (label-noise.md C1). [theory: QOU-3, SDE-4]"""
    n, d, sigma, eta = 12, 4, 0.7, 0.2
    Q = np.linalg.qr(np.random.default_rng(6).normal(size=(d, d)))[0]
    lam = np.array([1.0, 1.8, 2.5, 3.2])  # η λ_max = 0.64 as in C1: a 24% finite-η gap
    X = np.concatenate([np.sqrt(n) * np.sqrt(lam)[:, None] * Q.T, np.zeros((n - d, d))])  # XᵀX/n = H
    problem = sgdsde.Problem(sgdsde.LinearRegression(d), X, np.zeros(n))
    H = np.asarray(problem.hessian(np.zeros(d)))
    C = sigma**2 / n * H
    S_disc = stationary_covariance_sgd(H, C, lr=eta)
    np.testing.assert_allclose(
        S_disc, eta * sigma**2 / n * np.linalg.inv(2 * np.eye(d) - eta * H), atol=1e-14
    )
    S_sde = stationary_covariance_sde(H, C, lr=eta)
    np.testing.assert_allclose(S_sde, eta * sigma**2 / (2 * n) * np.eye(d), atol=1e-14)
    outer = {"outer": lambda p, th: th[:, None] * th[None, :]}
    # start at θ* = 0: the covariance relaxes as (1 − ηλ_min)^{2k} = 0.8^{2k}, < 1e-9 after 50 steps
    kw = dict(lr=eta, n_steps=50, key=11, n_paths=10_000, observables=outer, dtype=np.float64)
    noise = sgdsde.LabelNoise(sigma)
    for solver, substeps, S in ((None, 1, S_disc), (PlatenWeak2(), 4, S_sde)):
        res = simulate_sde(problem, noise, np.zeros(d), solver=solver, substeps=substeps, **kw)
        mean, se = res.final("outer")
        # 4.5 s.e. over 16 entries, plus the weak-2 scheme's O(dt²) bias (dt = 0.05: ~1e-3 relative)
        assert np.all(np.abs(mean - S) < 4.5 * se + 1e-3 * np.max(S)), (mean, S)
    assert np.max(np.abs(S_disc - S_sde)) > 0.2 * np.max(S_sde)


def test_fit_order_band_and_errors():
    """fit_order recovers a known slope with a band that contains it, and refuses bad input."""
    h = 2.0 ** -np.arange(2, 8)
    rng = np.random.default_rng(0)
    e = 0.3 * h**1.5 * np.exp(0.02 * rng.normal(size=h.size))
    fit = fit_order(h, e)
    assert fit.lower < 1.5 < fit.upper and fit.upper - fit.lower < 0.1
    se = 0.05 * e
    fit_w = fit_order(h, e, se)
    assert fit_w.lower < 1.5 < fit_w.upper
    with pytest.raises(ValueError, match="errors"):
        fit_order(h, np.zeros_like(h))
    with pytest.raises(ValueError, match="length"):
        fit_order(h[:2], e[:2])


def test_weak_error_refuses_mismatched_grids():
    """weak_error needs both results on the same clock and common observables."""
    H = np.eye(2)
    a = sgd_moments(H, np.zeros(2), H, np.ones(2), lr=0.1, n_steps=10, record_every=5)
    b = sgd_moments(H, np.zeros(2), H, np.ones(2), lr=0.2, n_steps=10, record_every=5)
    with pytest.raises(ValueError, match="time grid"):
        weak_error((a.times, a.expectations(H, np.zeros(2))), (b.times, b.expectations(H, np.zeros(2))))
    with pytest.raises(ValueError, match="observables"):
        weak_error((a.times, {"x": a.mean}), (a.times, {"y": a.mean}))
