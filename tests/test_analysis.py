"""sgdsde.analysis: exact quadratic moments (SGD and SME; constant and affine noise), stationary covariances,
weak_error and fit_order."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import sgdsde
from sgdsde import PlatenWeak2, simulate_sde
from sgdsde.analysis import (
    AffineNoise,
    fit_order,
    quadratic_form,
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


def test_sde_moments_singular_hessian():
    """With a singular H, P(t) equals the quadrature ∫ e^{−Hs}ηCe^{−Hs}ds, and on the null space the variance is
    exactly ηC₂₂t even at t = 60 (a Van Loan block exponential returned 1.1e7 there: e^{+Mt} cancellation).
    [theory: QOU-2]"""
    H, C = np.diag([1.0, 0.0]), np.array([[0.5, 0.1], [0.1, 0.3]])
    eta, t = 0.2, 2.0
    mo = sde_moments(H, np.zeros(2), C, np.ones(2), lr=eta, times=[t, 60.0])
    f = lambda s: np.diag(np.exp(-np.diag(H) * s)) @ (eta * C) @ np.diag(np.exp(-np.diag(H) * s))
    np.testing.assert_allclose(mo.cov[0], scipy.integrate.quad_vec(f, 0, t, epsabs=1e-13)[0], atol=1e-11)
    # at t = 60: P₁₁ = ηC₁₁/2, P₁₂ = ηC₁₂(1 − e^{−60}), P₂₂ = ηC₂₂·60 (rounding only: 1e-12 relative)
    np.testing.assert_allclose(mo.cov[1], [[0.05, 0.02], [0.02, 3.6]], rtol=1e-12)


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
        ensemble=sgdsde.Ensemble(n_paths=20_000, dtype=np.float64),
        record=sgdsde.Record(every=10, observables=("theta", "sq_norm", "loss")),
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
    kw = dict(
        lr=eta,
        n_steps=50,
        key=11,
        ensemble=sgdsde.Ensemble(n_paths=10_000, dtype=np.float64),
        record=sgdsde.Record(observables=outer),
    )
    noise = sgdsde.LabelNoise(sigma)
    for solver, substeps, S in ((None, 1, S_disc), (PlatenWeak2(), 4, S_sde)):
        res = simulate_sde(
            problem, noise, np.zeros(d), solver=solver, **kw, stepping=sgdsde.Fixed(substeps=substeps)
        )
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


# --- affine noise (linear models): exact moments of minibatch / label / multiplicative-noise SGD and its SME ---


def tiny_regression():
    """d = 2, n = 3, labels not interpolated (L* > 0), so the minibatch noise does not vanish at θ*."""
    rng = np.random.default_rng(20)
    X, y = 1.5 * rng.normal(size=(3, 2)), rng.normal(size=3)
    return sgdsde.Problem(sgdsde.LinearRegression(2), X, y)


def regression(seed=3, n=8, d=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ np.linspace(1.0, -0.5, d) + 0.3 * rng.normal(size=n)
    return sgdsde.Problem(sgdsde.LinearRegression(d), X, y)


def enumerate_sgd(problem, noise, outcomes, probs, theta0, lrs):
    """E θ and Cov θ after len(lrs) SGD steps, by weighting every sequence of draws (no Monte Carlo): each step
    applies the noise's own ``gradient`` (what simulate_sgd runs) to every atom and every outcome."""
    grads = jax.jit(jax.vmap(jax.vmap(lambda th, dr: noise.gradient(problem, th, dr), (None, 0)), (0, None)))
    atoms, w = np.asarray(theta0, np.float64)[None], np.ones(1)
    for eta in lrs:
        g = np.asarray(grads(jnp.asarray(atoms), outcomes))
        atoms = (atoms[:, None, :] - eta * g).reshape(-1, atoms.shape[1])
        w = (w[:, None] * probs[None, :]).ravel()
    m = w @ atoms
    return m, np.einsum("k,ki,kj->ij", w, atoms - m, atoms - m)


def test_affine_sgd_moments_exact_by_enumeration():
    """The affine recursion is exact for real minibatch SGD, not just Gaussian noise: on linear regression (d = 2,
    n = 3) E θ and Cov θ after 3 steps of a schedule, enumerated over every batch sequence (and label sign /
    Bernoulli weight), equal sgd_moments with AffineNoise.from_noise to 1e-12 (float64 rounding of O(1) values:
    measured ≤ 4e-16). [theory: QOU-4]"""
    problem = tiny_regression()
    H, ts, _ = quadratic_form(problem)
    lrs = np.array([0.4, 0.25, 0.3])
    theta0 = np.array([1.0, -0.5])
    n = 3
    wr2 = jnp.array(list(itertools.product(range(n), repeat=2)), jnp.int32)
    wor2 = jnp.array(list(itertools.combinations(range(n), 2)), jnp.int32)
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=2)))
    sigma, p = 0.7, 2 / 3
    bits = np.array(list(itertools.product([0.0, 1.0], repeat=n)))
    cases = [
        (sgdsde.MinibatchNoise(1), jnp.arange(n, dtype=jnp.int32)[:, None], np.full(n, 1 / n)),
        (sgdsde.MinibatchNoise(2), wr2, np.full(n * n, 1 / n**2)),
        (sgdsde.MinibatchNoise(2, "without_replacement"), wor2, np.full(3, 1 / 3)),
        (  # label noise ±σ on a uniform 2-subset: 3 subsets × 4 sign pairs
            sgdsde.LabelNoise(sigma, batch_size=2),
            (jnp.repeat(wor2, 4, axis=0), jnp.asarray(np.tile(sigma * signs, (3, 1)))),
            np.full(12, 1 / 12),
        ),
        (  # Wu et al.'s Bernoulli(p)/p weights, p = b/n: all 2³ weight vectors
            sgdsde.MultiplicativeNoise(2, "bernoulli"),
            jnp.asarray(bits / p),
            np.prod(np.where(bits == 1, p, 1 - p), axis=1),
        ),
    ]
    for noise, outcomes, probs in cases:
        m, V = enumerate_sgd(problem, noise, outcomes, probs, theta0, lrs)
        exact = sgd_moments(H, ts, AffineNoise.from_noise(problem, noise), theta0, lr=lrs, n_steps=3)
        np.testing.assert_allclose(exact.mean[-1], m, rtol=0, atol=1e-12, err_msg=repr(noise))
        np.testing.assert_allclose(exact.cov[-1], V, rtol=0, atol=1e-12, err_msg=repr(noise))
        assert np.min(np.linalg.eigvalsh(V)) > 1e-3, "the noise must matter for the check to mean anything"


def moment_observables(theta_star):
    """θ, ‖θ‖², L and the second moment about θ* (its Monte Carlo s.e. is that of the covariance, not of ‖m‖²)."""
    ts = jnp.asarray(theta_star)
    return {
        "theta": lambda p, th: th,
        "sq_norm": lambda p, th: jnp.sum(th * th),
        "loss": lambda p, th: p.loss(th),
        "dev": lambda p, th: (th - ts)[:, None] * (th - ts)[None, :],
    }


def exact_observables(mo, H, ts, min_loss=0.0):
    ex = mo.expectations(H, ts, min_loss)
    e = mo.mean - ts[None]
    ex["dev"] = mo.cov + e[:, :, None] * e[:, None, :]
    return ex


def max_z(res, times, exact, names):
    err = weak_error(res, (times, exact), names)
    return {n: float(np.max(np.abs(err.error[n][1:]) / err.stderr[n][1:])) for n in names}


def test_affine_sgd_moments_match_simulated_minibatch_sgd():
    """simulate_sgd with MinibatchNoise (B = 2, with replacement) on linear regression (d = 3, n = 8) under a
    cosine schedule: E θ, E‖θ‖², E L and E (θ−θ*)(θ−θ*)ᵀ match the affine recursion within 5 Monte Carlo
    standard errors (4000 paths; 4 records × 15 numbers: 5 s.e. keeps the false-alarm rate < 1e-4; measured
    max z = 2.1). The check has power: the without-replacement moments (covariance × 6/7) are rejected.
    [theory: QOU-4]"""
    problem = regression()
    H, ts, min_loss = quadratic_form(problem)
    noise = sgdsde.MinibatchNoise(2)
    lr = sgdsde.CosineLR(0.25, 40, 0.05)
    kw = dict(lr=lr, n_steps=40, record_every=10)
    res = sgdsde.simulate_sgd(
        problem,
        noise,
        np.zeros(3),
        key=5,
        lr=lr,
        n_steps=40,
        ensemble=sgdsde.Ensemble(n_paths=4000, dtype=np.float64),
        record=sgdsde.Record(every=10, observables=moment_observables(ts)),
    )
    exact = sgd_moments(H, ts, AffineNoise.from_noise(problem, noise), np.zeros(3), **kw)
    names = ("theta", "sq_norm", "loss", "dev")
    z = max_z(res, exact.times, exact_observables(exact, H, ts, min_loss), names)
    assert max(z.values()) < 5, z
    wor = AffineNoise.from_noise(problem, sgdsde.MinibatchNoise(2, "without_replacement"))
    other = sgd_moments(H, ts, wor, np.zeros(3), **kw)
    assert max_z(res, other.times, exact_observables(other, H, ts), ["dev"])["dev"] > 5


def euler_moments(H, ts, noise, theta0, *, lr, dt, T, record_every=None):
    """Exact moments of Euler–Maruyama with step dt on de = −He dt + √η A(θ)dW: SGD with lr = dt and noise
    factor √(η/dt)·A (one Euler step is θ − dt∇L + √(η dt)A(θ)Z)."""
    s = np.sqrt(lr / dt)
    steps = int(round(T / dt))
    return sgd_moments(
        H,
        ts,
        AffineNoise(s * noise.P, s * noise.q),
        theta0,
        lr=dt,
        n_steps=steps,
        record_every=record_every or steps,
    )


def test_affine_sde_moments_are_the_euler_limit():
    """Deterministic check of the (m, S) ODE: Euler's exact moments (the SGD recursion with lr = dt) converge
    to sde_moments at weak order 1 in dt, for SME-1 and SME-2 with label noise on a minibatch (Σ affine and
    θ-dependent): fitted slope within 0.05 of 1 over dt = η/8 … η/64 (measured 1.022, 1.026). [theory: QOU-5]"""
    problem = regression()
    H, ts, _ = quadratic_form(problem)
    noise = AffineNoise.from_noise(problem, sgdsde.LabelNoise(0.5, batch_size=2, sampling="with_replacement"))
    eta, T, theta0 = 0.2, 2.0, np.array([0.5, 0.5, -1.0])
    dts = eta / 2.0 ** np.arange(3, 7)
    for order in (1, 2):
        M = sgdsde.analysis.sme_drift_matrix(H, eta, order)
        ex = sde_moments(H, ts, noise, theta0, lr=eta, times=[T], order=order)
        errs = []
        for dt in dts:
            eu = euler_moments(M, ts, noise, theta0, lr=eta, dt=dt, T=T)
            errs.append(max(np.max(np.abs(eu.mean[-1] - ex.mean[0])), np.max(np.abs(eu.cov[-1] - ex.cov[0]))))
        fit = fit_order(dts, errs)
        assert abs(fit.order - 1) < 0.05, (order, errs, str(fit))


def test_affine_sde_moments_match_simulated_sde():
    """simulate_sde (Euler, dt = η/4) with MinibatchNoise (B = 2) on linear regression: E θ, E‖θ‖² and
    E (θ−θ*)(θ−θ*)ᵀ match Euler's exact moments within 5 standard errors, and the affine sde_moments within
    5 s.e. plus Euler's O(dt) weak bias, taken exactly as |Euler − SDE| from the two exact references (at most
    9.6e-3 for θ, 2.4e-2 for ‖θ‖², 4.9e-3 for the second moment: ≤ 2.2% of the values). Measured max z against
    Euler: 1.8; against the SDE without the bias term it would be 4.5 (‖θ‖²). [theory: QOU-5]"""
    problem = regression()
    H, ts, _ = quadratic_form(problem)
    noise = sgdsde.MinibatchNoise(2)
    an = AffineNoise.from_noise(problem, noise)
    eta, n_steps, theta0 = 0.2, 20, np.zeros(3)
    res = simulate_sde(
        problem,
        noise,
        theta0,
        lr=eta,
        n_steps=n_steps,
        key=9,
        ensemble=sgdsde.Ensemble(n_paths=4000, dtype=np.float64),
        record=sgdsde.Record(every=5, observables=moment_observables(ts)),
        stepping=sgdsde.Fixed(substeps=4),
    )
    exact = sde_moments(H, ts, an, theta0, lr=eta, times=res.times)
    euler = euler_moments(H, ts, an, theta0, lr=eta, dt=eta / 4, T=n_steps * eta, record_every=20)
    np.testing.assert_allclose(euler.times, res.times, rtol=1e-12)
    names = ("theta", "sq_norm", "dev")
    z = max_z(res, res.times, exact_observables(euler, H, ts), names)
    assert max(z.values()) < 5, z
    ex, eu = exact_observables(exact, H, ts), exact_observables(euler, H, ts)
    for name in names:
        mean, se = res.mean[name][1:], res.stderr(name)[1:]
        bias = np.abs(eu[name][1:] - ex[name][1:])
        assert np.all(np.abs(mean - ex[name][1:]) < 5 * se + bias), name
        assert np.max(bias) < 0.05 * np.max(np.abs(ex[name])), "dt = η/4 must already be close to the limit"


def test_affine_constant_case_equals_constant_noise_functions():
    """AffineNoise.constant(C) (P = 0) gives the constant-noise results to 1e-12: SGD recursion, the SDE's
    (m, S) generator against the eigenbasis closed form (regular and singular H, up to t = 60), and the
    Kronecker stationary solves against scipy's Lyapunov solvers. [theory: QOU-4, QOU-5]"""
    H, C = spd(3, 7), spd(3, 8, 0.1, 1.0)
    ts, th0 = np.array([0.5, -1.0, 0.2]), np.ones(3)
    an = AffineNoise.constant(C)
    a = sgd_moments(H, ts, C, th0, lr=0.3, n_steps=30, record_every=10)
    b = sgd_moments(H, ts, an, th0, lr=0.3, n_steps=30, record_every=10)
    np.testing.assert_allclose(b.mean, a.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.cov, a.cov, rtol=0, atol=1e-12)
    for Hc in (H, np.diag([1.0, 0.5, 0.0])):
        for order in (1, 2):
            a = sde_moments(Hc, ts, C, th0, lr=0.2, times=[0.0, 0.7, 5.0, 60.0], order=order)
            b = sde_moments(Hc, ts, an, th0, lr=0.2, times=[0.0, 0.7, 5.0, 60.0], order=order)
            np.testing.assert_allclose(b.mean, a.mean, rtol=0, atol=1e-12)
            # the null-space variance reaches ηC₃₃·60 ≈ 3: 1e-12 relative
            np.testing.assert_allclose(b.cov, a.cov, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        stationary_covariance_sgd(H, an, lr=0.3), stationary_covariance_sgd(H, C, lr=0.3), atol=1e-12
    )
    np.testing.assert_allclose(
        stationary_covariance_sde(H, an, lr=0.3, order=2),
        stationary_covariance_sde(H, C, lr=0.3, order=2),
        atol=1e-12,
    )


def test_affine_stationary_covariances_solve_their_fixed_points():
    """With minibatch + label noise (Σ(θ) affine) the stationary covariances satisfy
    V = FVFᵀ + η²EΣ (SGD) and MV + VM = ηEΣ (SME-1, SME-2), EΣ = A(θ*)A(θ*)ᵀ + Σ_j P_jVP_jᵀ, to 1e-13, and
    are the long-run limits of sgd_moments / sde_moments (3000 steps, t = 600: contraction to 1e-12).
    [theory: QOU-4, QOU-5]"""
    problem = regression()
    H, ts, _ = quadratic_form(problem)
    an = AffineNoise.from_noise(problem, sgdsde.LabelNoise(0.4, batch_size=3, sampling="with_replacement"))
    eta = 0.3
    V = stationary_covariance_sgd(H, an, lr=eta, theta_star=ts)
    F = np.eye(3) - eta * H
    np.testing.assert_allclose(V, F @ V @ F.T + eta**2 * an.expected_covariance(ts, V), rtol=0, atol=1e-13)
    long = sgd_moments(H, ts, an, np.zeros(3), lr=eta, n_steps=3000, record_every=3000)
    np.testing.assert_allclose(long.cov[-1], V, rtol=0, atol=1e-12)
    np.testing.assert_allclose(long.mean[-1], ts, rtol=0, atol=1e-12)
    for order in (1, 2):
        M = sgdsde.analysis.sme_drift_matrix(H, eta, order)
        W = stationary_covariance_sde(H, an, lr=eta, order=order, theta_star=ts)
        np.testing.assert_allclose(M @ W + W @ M, eta * an.expected_covariance(ts, W), rtol=0, atol=1e-13)
        np.testing.assert_allclose(
            sde_moments(H, ts, an, np.zeros(3), lr=eta, times=[600.0], order=order).cov[0], W, atol=1e-12
        )
    # the θ-dependence matters: the noise at θ* alone (P dropped) gives a different stationary covariance
    frozen = AffineNoise.constant(an.covariance(ts))
    assert np.max(np.abs(stationary_covariance_sgd(H, frozen, lr=eta) - V)) > 1e-3 * np.max(np.abs(V))


def test_affine_stationary_refuses_unstable_second_moment():
    """Multiplicative noise (B = 1) makes SGD's second moment blow up at η λ_max = 1 < 2, where the mean is
    stable: stationary_covariance_sgd says so with the radius; the SME's generator is unstable there too,
    while at η λ_max = 0.2 both exist; across a sweep of η the refusals agree with the eigenvalues.
    [theory: QOU-4, QOU-5]"""
    problem = regression()
    H, ts, _ = quadratic_form(problem)
    an = AffineNoise.from_noise(problem, sgdsde.MultiplicativeNoise(1, "gaussian_fisher"))
    lam = np.linalg.eigvalsh(H)[-1]
    stationary_covariance_sgd(H, an, lr=0.2 / lam, theta_star=ts)
    stationary_covariance_sde(H, an, lr=0.2 / lam, theta_star=ts)
    with pytest.raises(ValueError, match="no stationary second moment.*spectral radius"):
        stationary_covariance_sgd(H, an, lr=1.0 / lam, theta_star=ts)
    with pytest.raises(ValueError, match="no stationary second moment.*spectral abscissa"):
        stationary_covariance_sde(H, an, lr=1.0 / lam, theta_star=ts)
    # the solvers decide stability by a positive-definite solution (positive-map Lyapunov theorem); over a
    # sweep of η that must agree with the eigenvalues: ρ(FF + η²K) < 1 (SGD), α(−M⊕M + ηK) < 0 (SME-1)
    K = an.shift(ts).kron()
    for x in np.linspace(0.05, 1.5, 30):
        eta = x / lam
        F = np.eye(3) - eta * H
        rho = np.max(np.abs(np.linalg.eigvals(np.kron(F, F) + eta**2 * K)))
        alpha = np.max(np.linalg.eigvals(-np.kron(H, np.eye(3)) - np.kron(np.eye(3), H) + eta * K).real)
        assert abs(rho - 1) > 1e-3 and abs(alpha) > 1e-3, "the grid must not sit on the boundary"
        for fn, unstable in ((stationary_covariance_sgd, rho > 1), (stationary_covariance_sde, alpha > 0)):
            try:
                fn(H, an, lr=eta, theta_star=ts)
                assert not unstable, (fn.__name__, x)
            except ValueError:
                assert unstable, (fn.__name__, x)
    # the mean alone would converge: ρ(I − ηH) < 1 — and the exact second moment does grow
    assert np.max(np.abs(np.linalg.eigvalsh(np.eye(3) - H / lam))) < 1
    grow = sgd_moments(H, ts, an, np.zeros(3), lr=1.0 / lam, n_steps=200, record_every=100)
    assert np.trace(grow.cov[-1]) > 10 * np.trace(grow.cov[1])
    with pytest.raises(FloatingPointError, match="overflowed"):  # never returned as inf
        sgd_moments(H, ts, an, np.zeros(3), lr=1.9 / lam, n_steps=2000, record_every=100)


def test_affine_noise_and_quadratic_form_refuse_bad_input():
    """Bad shapes, non-affine noise (a diagonal linear network), shuffled epochs and non-quadratic losses raise
    ValueError naming the argument; quadratic_form recovers quadratic_problem's H and θ*."""
    with pytest.raises(ValueError, match="P must have shape"):
        AffineNoise(np.zeros((2, 3, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="q must"):
        AffineNoise(np.zeros((2, 1, 2)), np.zeros(2))
    problem = regression()
    with pytest.raises(ValueError, match="noise carries sampler state"):
        AffineNoise.from_noise(problem, sgdsde.MinibatchNoise(2, "shuffle"))
    with pytest.raises(ValueError, match="noise must"):
        AffineNoise.from_noise(problem, np.eye(3))
    with pytest.raises(ValueError, match="batch_size"):
        AffineNoise.from_noise(problem, sgdsde.MinibatchNoise(9))
    dln = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(3), problem.X, problem.y)
    with pytest.raises(ValueError, match="noise's covariance factor is not affine"):
        AffineNoise.from_noise(dln, sgdsde.MinibatchNoise(2))
    with pytest.raises(ValueError, match="problem's loss is not quadratic"):
        quadratic_form(dln)
    H, ts, _ = quadratic_form(problem)
    an = AffineNoise.from_noise(problem, sgdsde.MinibatchNoise(2))
    with pytest.raises(ValueError, match="noise_cov must act on d=2"):
        sgd_moments(np.eye(2), np.zeros(2), an, np.zeros(2), lr=0.1, n_steps=2)
    with pytest.raises(ValueError, match="theta_star is required"):
        stationary_covariance_sgd(H, an, lr=0.1)
    with pytest.raises(ValueError, match="theta_star must"):
        stationary_covariance_sde(H, an, lr=0.1, theta_star=np.zeros(2))
    Hq, tq = spd(3, 9), np.array([1.0, 2.0, -1.0])
    form = quadratic_form(sgdsde.quadratic_problem(Hq, tq))
    np.testing.assert_allclose(form.hessian, Hq, atol=1e-12)
    np.testing.assert_allclose(form.theta_star, tq, atol=1e-10)
    assert abs(form.min_loss) < 1e-20


def test_sde_moments_on_sgd_clock_under_a_schedule():
    """sde_moments(n_steps=…): a constant lr reproduces the closed forms at t_k (1e-12); under a step-decay
    schedule, with θ-dependent affine noise, the step-by-step composed flow equals an independent numerical
    integration (scipy solve_ivp, rtol 1e-11) of dm/dt = −M e, dS/dt = −MV − VMᵀ + η_k EΣ(θ) on each
    [t_k, t_{k+1}] (to 1e-8); and the gap SGD − SME-1 under a cosine schedule shrinks at order 1 in η.
    [theory: QOU-6]"""
    import scipy.integrate

    problem = regression()
    H, ts, _ = quadratic_form(problem)
    noise = AffineNoise.from_noise(problem, sgdsde.MinibatchNoise(2, "with_replacement"))
    th0 = np.array([0.5, 0.5, -1.0])
    C = spd(3, 4, 0.1, 0.5)
    for cov in (C, noise):
        a = sde_moments(H, ts, cov, th0, lr=0.05, n_steps=40, record_every=10)
        b = sde_moments(H, ts, cov, th0, lr=0.05, times=a.times)
        np.testing.assert_allclose(a.mean, b.mean, atol=1e-12)
        np.testing.assert_allclose(a.cov, b.cov, atol=1e-12)
        assert list(a.steps) == [0, 10, 20, 30, 40]

    lr = sgdsde.StepDecayLR(0.1, (5, 12), 0.3)
    etas = [lr(k) for k in range(20)]
    mo = sde_moments(H, ts, noise, th0, lr=lr, n_steps=20, record_every=4)

    def rhs(t, y, eta):
        e, V = y[:3], y[3:].reshape(3, 3)  # e = E θ − θ*, V = Cov θ
        dV = -H @ V - V @ H + eta * noise.expected_covariance(ts + e, V)
        return np.concatenate([-H @ e, dV.ravel()])

    y = np.concatenate([th0 - ts, np.zeros(9)])
    for k, eta in enumerate(etas):
        y = scipy.integrate.solve_ivp(rhs, (0, eta), y, args=(eta,), rtol=1e-11, atol=1e-13).y[:, -1]
        if (k + 1) % 4 == 0:
            np.testing.assert_allclose(mo.mean[(k + 1) // 4], ts + y[:3], atol=1e-8)
            np.testing.assert_allclose(mo.cov[(k + 1) // 4], y[3:].reshape(3, 3), atol=1e-8)

    errs, scales = [], 2.0 ** -np.arange(4, 8)
    for eta0 in scales:
        n = int(round(1.0 / eta0))  # to T ≈ 0.6 (the cosine's mean lr is 0.6 η₀)
        sched = sgdsde.CosineLR(eta0, n, 0.2 * eta0)
        sg = sgd_moments(H, ts, noise, th0, lr=sched, n_steps=n, record_every=n)
        sm = sde_moments(H, ts, noise, th0, lr=sched, n_steps=n, record_every=n)
        errs.append(abs(sg.expectations(H, ts)["sq_norm"][-1] - sm.expectations(H, ts)["sq_norm"][-1]))
    fit = fit_order(scales, errs)
    # exact references on both sides: the slope is deterministic; 0.1 allows the O(η²) term at η₀ = 1/16
    assert abs(fit.order - 1) < 0.1, (errs, str(fit))
