"""The SDE state beyond θ (init_state / theta_of / with_theta), the optimizer registry of ``SDE(optimizer=)``,
and Li–Tai–E's momentum SME checked exactly on quadratics (theory/momentum-sde.md)."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg as sl

import sgdsde as sd
from sgdsde._sde import FunctionSDE, SDEStepper
from sgdsde._sde.base import autodiff_correction


def _langevin(gamma=1.0, sigma=0.5):
    """Underdamped Langevin in (θ, v) ∈ R², θ the first coordinate: dθ = v dt, dv = (−θ − γv) dt + σ dW."""
    drift = lambda y, eta: jnp.stack([y[1], -y[0] - gamma * y[1]])
    factor = lambda y: jnp.array([[0.0], [sigma]], y.dtype)
    return FunctionSDE(drift, factor, noise_type="additive", theta_dim=1, state_dim=2)


def test_function_sde_state_beyond_theta_records_theta_only():
    """A FunctionSDE in (θ, v) runs on the engine: saved paths and observables are θ's (d = 1), the state
    has p = 2 and its exact mean from (θ₀, 0) (a damped oscillator, no noise in the mean) is matched by
    Euler to O(dt). [theory: MSDE-1]"""
    sde = _langevin()
    assert sde.state_dim(1) == 2 and sde.check_shapes(1, jnp.float64) == 1
    res = sd.simulate(
        sd.SDE(stepping=sd.Fixed(substeps=4)),
        sde,
        np.array([1.0]),
        lr=0.01,
        n_steps=200,
        key=0,
        ensemble=sd.Ensemble(n_paths=256, dtype=np.float64),
        record=sd.Record(every=200, observables={"theta": lambda p, t: t[0]}, n_saved_paths=4),
    )
    assert res.paths.shape[-1] == 1
    # exact mean of θ at t = 2: e^{Ft}(1, 0), F = [[0, 1], [−1, −γ]]
    F = np.array([[0.0, 1.0], [-1.0, -1.0]])
    exact = (jax.scipy.linalg.expm(jnp.asarray(F * 2.0)) @ jnp.array([1.0, 0.0]))[0]
    se = float(np.sqrt(res.var["theta"][-1] / res.n_paths))
    # Monte Carlo: 5 standard errors; Euler's weak bias O(dt) with dt = 0.0025 is ~1e-3, below 5 se (~0.01)
    assert abs(float(res.mean["theta"][-1]) - float(exact)) < 5 * se + 2e-3


def test_function_sde_with_theta_and_restart_keep_or_reset_the_rest():
    """with_theta replaces θ and keeps v; restart sets y = init_state(θ) on the masked paths only, in both
    layouts of the stepper. [theory: MSDE-1]"""
    sde = _langevin()
    y = jnp.array([0.3, -2.0])
    np.testing.assert_array_equal(sde.with_theta(y, jnp.array([5.0])), jnp.array([5.0, -2.0]))
    for paths_last in (True, False):
        st = SDEStepper(sde, diffrax.Euler(), 3, 1, "brownian", False, 1, paths_last)
        carry = st.init(None, jnp.array([[1.0], [2.0], [3.0]]))
        carry = st.with_theta((carry[0] + 7.0, carry[1]), jnp.array([[1.0], [2.0], [3.0]]))  # v = 7
        np.testing.assert_array_equal(st.theta(carry), [[1.0], [2.0], [3.0]])
        out = st.restart(carry, jnp.array([True, False, True]))
        y = out[0].T if paths_last else out[0]
        np.testing.assert_array_equal(y, [[1.0, 0.0], [2.0, 7.0], [3.0, 0.0]])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(theta_dim=1, state_dim=2, init_state=lambda t: t), "init_state"),
        (dict(theta_dim=2, state_dim=1), "theta_dim and state_dim"),
        (dict(theta_dim=1), "theta_dim and state_dim"),
        (dict(init_state=lambda t: t), "init_state"),
        (dict(theta_dim=2, state_dim=3), "theta_dim=2"),
    ],
)
def test_function_sde_state_shapes_mismatch_raise(kw, match):
    """An init_state whose shape is not (p,), inconsistent or half-given dimensions, and a θ₀ of another
    dimension than theta_dim → ValueError naming them. [theory: MSDE-1]"""
    drift = lambda y, eta: -y
    factor = lambda y: jnp.eye(y.shape[0], dtype=y.dtype)
    with pytest.raises(ValueError, match=match):
        sde = FunctionSDE(drift, factor, **kw)
        sd.simulate(sd.SDE(), sde, np.array([1.0]), lr=0.1, n_steps=2, key=0)


# --- the momentum SME (Li-Tai-E) ------------------------------------------------------------------------------

from sgdsde.analysis import (  # noqa: E402
    fit_order,
    momentum_sgd_moments,
    momentum_sgd_stationary_cov,
    momentum_sme_matrices,
    momentum_sme_moments,
    momentum_sme_stationary_cov,
    stationary_covariance_sgd,
)


def _quadratic(d=2, seed=0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    H = Q @ np.diag(np.linspace(1.0, 2.0, d)) @ Q.T
    G = rng.normal(size=(d, d))
    C = G @ G.T / d + 0.2 * np.eye(d)  # does not commute with H
    return H, C, rng.normal(size=d)


def test_momentum_sme_one_step_moments_are_the_discrete_step():
    """Over one step of time η the SME's drift and diffusion give the discrete step's increments of m,
    ∇L − (1−β)m with covariance Σ, and θ's −ηm; the noise has zero θ-rows and no m-dependence, so it is
    declared additive (constant A) or commutative, and the Itô→Stratonovich correction (zero) equals the
    autodiff one; the analysis module's F, f₀ are this SME's drift. [theory: MSDE-2, MSDE-3]"""
    H, C, ts = _quadratic()
    problem = sd.quadratic_problem(H, ts, dtype=np.float64)
    beta, eta = 0.7, 0.03
    sme = sd.MomentumSME(problem, sd.GaussianNoise(covariance=C), beta)
    rng = np.random.default_rng(3)
    th, m = rng.normal(size=2), rng.normal(size=2)
    y = jnp.asarray(np.concatenate([th, m]))
    b = np.asarray(sme.drift(y, eta)) * eta
    np.testing.assert_allclose(b[:2], -eta * m, rtol=1e-12)
    np.testing.assert_allclose(b[2:], H @ (th - ts) - (1 - beta) * m, rtol=1e-10, atol=1e-12)
    wd = sd.MomentumSME(problem, sd.GaussianNoise(covariance=C), beta, weight_decay=0.1)
    np.testing.assert_allclose(  # weight decay w adds wθ to the gradient, as Momentum(weight_decay=w) does
        np.asarray(wd.drift(y, eta))[2:] * eta,
        H @ (th - ts) + 0.1 * th - (1 - beta) * m,
        rtol=1e-10,
        atol=1e-12,
    )
    D = np.asarray(sme.diffusion(y, eta))
    np.testing.assert_allclose(
        D @ D.T * eta, np.block([[np.zeros((2, 2)), np.zeros((2, 2))], [np.zeros((2, 2)), C]]), atol=1e-12
    )
    assert sme.noise_type == "additive"
    F, f0, Q = momentum_sme_matrices(H, C, eta, beta)  # the analysis module's matrices are this SME's
    np.testing.assert_allclose(np.asarray(sme.drift(y, eta)), F @ np.asarray(y) + f0 @ ts, rtol=1e-10)
    # θ-dependent noise (label noise on a linear model): commutative, correction zero, as autodiff says
    rng = np.random.default_rng(4)
    X = rng.normal(size=(6, 2))
    lin = sd.Problem(sd.LinearRegression(2), X, X @ np.ones(2) + 0.1 * rng.normal(size=6), dtype=np.float64)
    sme2 = sd.MomentumSME(lin, sd.MinibatchNoise(batch_size=2), beta)
    assert sme2.noise_type == "commutative"
    auto = autodiff_correction(sme2.factor, "general", y, sme2.noise_scale(eta) ** 2)
    np.testing.assert_allclose(auto, 0.0, atol=1e-12)
    np.testing.assert_array_equal(sme2.stratonovich_correction(y, eta), jnp.zeros(4))
    # a Stratonovich solver runs it (the declaration is verified at θ₀ before running)
    res = sd.simulate(
        sd.SDE(sd.MinibatchNoise(batch_size=2), optimizer=sd.Momentum(beta), solver=diffrax.Heun()),
        lin,
        np.zeros(2),
        lr=eta,
        n_steps=5,
        key=0,
        ensemble=sd.Ensemble(n_paths=4),
    )
    assert res.config["optimizer"].startswith("Momentum") and res.diverged == 0


def _euler_moments(F, f, Q, dt, n, mu0):
    """Exact moments of Euler–Maruyama on the linear SDE dz = (Fz + f)dt + G dW, GGᵀ = Q."""
    A = np.eye(F.shape[0]) + dt * F
    mu, S = mu0, np.zeros_like(F)
    for _ in range(n):
        mu, S = A @ mu + dt * f, A @ S @ A.T + dt * Q
    return mu, S


def test_momentum_sme_simulated_matches_its_exact_moments():
    """SDE(noise, optimizer=Momentum(β)) by Euler (64 substeps) matches the SME's exact mean and covariance of
    θ at t = 2 within 4 Monte Carlo standard errors (2000 paths); Euler's own bias, computed exactly, is below
    half a standard error (0.27 se at most), so the comparison is with the SME itself. [theory: MSDE-3]"""
    H, C, ts = _quadratic()
    problem = sd.quadratic_problem(H, ts, dtype=np.float64)
    beta, eta, n, k, N = 0.8, 0.05, 40, 64, 2000
    th0 = np.zeros(2)
    res = sd.simulate(
        sd.SDE(sd.GaussianNoise(covariance=C), optimizer=sd.Momentum(beta), stepping=sd.Fixed(substeps=k)),
        problem,
        th0,
        lr=eta,
        n_steps=n,
        key=11,
        ensemble=sd.Ensemble(n_paths=N, dtype=np.float64),
        record=sd.Record(every=n, n_saved_paths=N),
    )
    theta = np.asarray(res.paths[-1])
    mu, S = momentum_sme_moments(H, C, ts, th0, eta, beta, n)
    mu, S = mu[:2], S[:2, :2]
    se_mean = np.sqrt(np.diag(S) / N)
    se_cov = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / N)  # Gaussian sample covariance
    F, f0, Q = momentum_sme_matrices(H, C, eta, beta)
    mu_e, S_e = _euler_moments(F, f0 @ ts, Q, eta / k, n * k, np.zeros(4))
    assert np.all(np.abs(mu_e[:2] - mu) < 0.5 * se_mean)
    assert np.all(np.abs(S_e[:2, :2] - S) < 0.5 * se_cov)
    assert np.all(np.abs(theta.mean(0) - mu) < 4 * se_mean)
    assert np.all(np.abs(np.cov(theta.T) - S) < 4 * se_cov)


def _theta_errors(H, C, ts, th0, eta, beta, n):
    md, Sd = momentum_sgd_moments(H, C, ts, th0, eta, beta, n)
    mc, Sc = momentum_sme_moments(H, C, ts, th0, eta, beta, n)
    d = len(ts)
    return np.abs(md[:d] - mc[:d]).max(), np.abs(Sd[:d, :d] - Sc[:d, :d]).max()


def test_momentum_sme_weak_order_exact_both_scalings():
    """Weak error of the SME against momentum SGD, exact (no Monte Carlo): in Li–Tai–E's scaling
    (β = 1 − γ√η, time s = k√η fixed) the mean of θ is off by O(√η) (order 1 in h = √η); at fixed β on SGD's
    clock (t = kη fixed) the mean is off by O(η) and the covariance by O(η²) (relative O(η)).
    [theory: MSDE-4]"""
    H, C, ts = _quadratic()
    th0 = np.zeros(2)
    gamma, s_end = 2.0, 2.0
    hs = np.array([0.1, 0.05, 0.025, 0.0125])
    e = [_theta_errors(H, C, ts, th0, h * h, 1 - gamma * h, round(s_end / h))[0] for h in hs]
    fit = fit_order(hs, e)
    assert 0.9 < fit.order < 1.1, fit  # measured 0.97 (order 1 in h)
    etas = np.array([0.04, 0.02, 0.01, 0.005])
    errs = np.array([_theta_errors(H, C, ts, th0, eta, 0.5, round(2.0 / eta)) for eta in etas])
    fit_mean, fit_cov = fit_order(etas, errs[:, 0]), fit_order(etas, errs[:, 1])
    assert 0.9 < fit_mean.order < 1.2, fit_mean  # measured 1.06
    assert 1.85 < fit_cov.order < 2.15, fit_cov  # measured 2.0


def test_nesterov_sme_is_heavy_ball_sme_and_weak_order_one_exact():
    """SDE(optimizer=Momentum(β, nesterov=True)) builds heavy ball's MomentumSME (equal as a PyTree), and it is
    a weak order-1 approximation of discrete Nesterov, exactly (no Monte Carlo): at fixed β the error of Eθ is
    O(η) and of Cov θ O(η²), as for heavy ball; in Li–Tai–E's scaling O(h), while Nesterov and heavy ball
    themselves differ at O(h): the same order. [theory: MSDE-7]"""
    from sgdsde._sde.optimizer_sdes import optimizer_sde

    H, C, ts = _quadratic()
    problem = sd.quadratic_problem(H, ts)
    noise = sd.GaussianNoise(covariance=C)
    nag = optimizer_sde(problem, noise, sd.Momentum(0.7, nesterov=True, weight_decay=0.1), None)
    assert eqx.tree_equal(nag, optimizer_sde(problem, noise, sd.Momentum(0.7, weight_decay=0.1), None))
    th0 = np.zeros(2)

    def errors(eta, beta, n):
        md, Sd = momentum_sgd_moments(H, C, ts, th0, eta, beta, n, nesterov=True)
        mh, _ = momentum_sgd_moments(H, C, ts, th0, eta, beta, n)
        mc, Sc = momentum_sme_moments(H, C, ts, th0, eta, beta, n)
        return (
            np.abs(md[:2] - mc[:2]).max(),
            np.abs(Sd[:2, :2] - Sc[:2, :2]).max(),
            np.abs(md[:2] - mh[:2]).max(),
        )

    etas = np.array([0.04, 0.02, 0.01, 0.005])
    e = np.array([errors(eta, 0.5, round(2.0 / eta)) for eta in etas])
    assert 0.95 < fit_order(etas, e[:, 0]).order < 1.15  # measured 1.06
    assert 1.9 < fit_order(etas, e[:, 1]).order < 2.1  # measured 2.03
    hs = np.array([0.1, 0.05, 0.025, 0.0125])
    e = np.array([errors(h * h, 1 - 2.0 * h, round(2.0 / h)) for h in hs])
    assert 0.85 < fit_order(hs, e[:, 0]).order < 1.05  # measured 0.94: order 1 in h
    assert np.all(
        e[:, 2] > 0.2 * e[:, 0]
    )  # Nesterov − heavy ball: the SME error's own order (0.24–0.32 of it)


def test_stationary_covariances_differ_at_order_eta_with_the_derived_leading_term():
    """1-D closed forms: discrete Var θ = ηc(1+β)/(λ(1−β)(2(1+β)−ηλ)), SME ηc/(2λ(1−β)) (relative gap
    ηλ/(2(1+β)−ηλ)); in d = 3 with C not commuting with H the gap divided by η² tends to Δ,
    HΔ + ΔH = (H²P̂ + P̂H² − 2βHP̂H)/(2(1−β²)), HP̂ + P̂H = C/(1−β), the mismatch shrinking linearly;
    the momentum's stationary variance differs at O(1): ratio 2/(1+β). [theory: MSDE-5]"""
    lam, c = 2.0, 0.5
    for beta in (0.0, 0.5, 0.9):
        for eta in (0.1, 0.01):
            Sd = momentum_sgd_stationary_cov([[lam]], [[c]], eta, beta)
            Sc = momentum_sme_stationary_cov([[lam]], [[c]], eta, beta)
            disc = eta * c * (1 + beta) / (lam * (1 - beta) * (2 * (1 + beta) - eta * lam))
            np.testing.assert_allclose(Sd[0, 0], disc, rtol=1e-10)
            np.testing.assert_allclose(Sc[0, 0], eta * c / (2 * lam * (1 - beta)), rtol=1e-10)
        Sd = momentum_sgd_stationary_cov([[lam]], [[c]], 1e-5, beta)
        Sc = momentum_sme_stationary_cov([[lam]], [[c]], 1e-5, beta)
        np.testing.assert_allclose(Sd[1, 1] / Sc[1, 1], 2 / (1 + beta), rtol=1e-4)  # O(η) from the limit
    H, C, _ = _quadratic(3, seed=1)
    beta = 0.5
    P = sl.solve_continuous_lyapunov(H, C / (1 - beta))
    Delta = sl.solve_continuous_lyapunov(
        H, (H @ H @ P + P @ H @ H - 2 * beta * H @ P @ H) / (2 * (1 - beta**2))
    )
    etas = np.array([0.02, 0.01, 0.005, 0.0025])
    gap, mismatch = [], []
    for eta in etas:
        Sd = momentum_sgd_stationary_cov(H, C, eta, beta)[:3, :3]
        Sc = momentum_sme_stationary_cov(H, C, eta, beta)[:3, :3]
        gap.append(np.abs(Sd - Sc).max() / np.abs(Sc).max())
        mismatch.append(np.abs((Sd - Sc) / eta**2 - Delta).max() / np.abs(Delta).max())
    assert 0.95 < fit_order(etas, gap).order < 1.05  # relative gap O(η)
    assert 0.9 < fit_order(etas, mismatch).order < 1.1  # the leading term is Δη², next O(η³)


def test_long_time_equivalence_with_sgd_at_eta_over_one_minus_beta():
    """Momentum SGD's stationary covariance of θ tends to plain SGD's at lr η/(1−β) as η → 0 (β fixed),
    with the 1-D relative gap −2βηλ/((1−β)(2(1+β)−ηλ)) exactly; it breaks where SGD at η/(1−β) has no
    stationary law (ηλ ≥ 2(1−β)) while momentum SGD keeps one until ηλ = 2(1+β). [theory: MSDE-6]"""
    lam, c, beta = 1.0, 1.0, 0.9
    for eta in (1e-3, 1e-2, 0.1, 0.19):
        mom = momentum_sgd_stationary_cov([[lam]], [[c]], eta, beta)[0, 0]
        sgd = stationary_covariance_sgd([[lam]], [[c]], lr=eta / (1 - beta))[0, 0]
        want = -2 * beta * eta * lam / ((1 - beta) * (2 * (1 + beta) - eta * lam))
        np.testing.assert_allclose(mom / sgd - 1, want, rtol=1e-8)
    with pytest.raises(ValueError):
        stationary_covariance_sgd([[lam]], [[c]], lr=0.21 / (1 - beta))  # ηλ/(1−β) = 2.1 > 2: past SGD's edge
    assert momentum_sgd_stationary_cov([[lam]], [[c]], 3.7, beta)[0, 0] > 0  # still stable: 3.7 < 2(1+β)
    with pytest.raises(ValueError, match="lr"):
        momentum_sgd_stationary_cov([[lam]], [[c]], 3.9, beta)  # past 2(1 + β) = 3.8
    H, C, _ = _quadratic(3, seed=2)
    etas = np.array([0.008, 0.004, 0.002, 0.001])
    rel = [
        np.abs(
            momentum_sgd_stationary_cov(H, C, eta, beta)[:3, :3]
            - stationary_covariance_sgd(H, C, lr=eta / (1 - beta))
        ).max()
        / np.abs(stationary_covariance_sgd(H, C, lr=eta / (1 - beta))).max()
        for eta in etas
    ]
    assert 0.95 < fit_order(etas, rel).order < 1.05


class _NoSDE(sd.Momentum):
    """A user's optimizer (a subclass of Momentum is another type: no SDE registered for it)."""


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: sd.SDE(sd.GaussianNoise(covariance=np.eye(2)), optimizer=sd.Optax(optax.adam(1.0))),
            "optimizer: no SDE",
        ),
        (
            lambda: sd.SDE(sd.GaussianNoise(covariance=np.eye(2)), optimizer=optax.sgd(1.0, momentum=0.9)),
            "optimizer: no SDE",
        ),
        (lambda: sd.SDE(optimizer=_NoSDE(0.9)), "optimizer: no SDE"),
        (lambda: sd.SDE(optimizer="momentum"), "optimizer must be"),
    ],
)
def test_optimizer_without_sde_refused_by_name(make, match):
    """An optimizer without a known SDE (an optax transformation, a user's class) is refused when the method
    is built, naming it: never simulated as SGD's SDE. [theory: MSDE-2]"""
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "method, problem_is_sde, match",
    [
        (sd.SDE(order=2, optimizer=sd.Momentum(0.9)), False, "order"),
        (sd.SDE(optimizer=sd.Momentum(0.9)), True, "optimizer=None"),
        (sd.SDE(optimizer=sd.Momentum(0.9)), "fp", "bridge_variance= .* or bridge=False"),
    ],
)
def test_momentum_sde_refusals_at_run(method, problem_is_sde, match):
    """Order 2 (the momentum SME is of order 1), an optimizer beside an
    AbstractSDE given as the problem, and the first-passage bridge test (its rate needs the diffusion at θ,
    which a state beyond θ does not give) → ValueError naming the argument. [theory: MSDE-1, MSDE-2]"""
    H, C, ts = _quadratic()
    problem = _langevin() if problem_is_sde is True else sd.quadratic_problem(H, ts)
    events = (sd.FirstPassage(observable="loss", threshold=0.1),) if problem_is_sde == "fp" else ()
    with pytest.raises(ValueError, match=match):
        sd.simulate(
            method,
            problem,
            np.zeros(1 if problem_is_sde is True else 2),
            lr=0.1,
            n_steps=2,
            key=0,
            events=events,
        )


def test_resetting_with_optimizer_restarts_the_sme_momentum():
    """Resetting(optimizer=True) under the momentum SME zeroes m on reset paths (restart: y ← init_state(θ));
    without it m is kept: from θ₀ = θ* without noise (m stays 0 unless moved) vs from a displaced θ₀ the two
    runs differ, and the stepper's restart zeroes exactly the masked paths. [theory: MSDE-1]"""
    H, C, ts = _quadratic()
    problem = sd.quadratic_problem(H, ts, dtype=np.float64)
    kw = dict(lr=0.05, n_steps=60, key=3, ensemble=sd.Ensemble(n_paths=64, dtype=np.float64))
    method = sd.SDE(sd.GaussianNoise(covariance=C), optimizer=sd.Momentum(0.9))
    with_opt = sd.simulate(method, problem, ts + 1.0, events=(sd.Resetting(2.0, optimizer=True),), **kw)
    theta_only = sd.simulate(method, problem, ts + 1.0, events=(sd.Resetting(2.0),), **kw)
    assert with_opt.resets.counts.sum() > 0
    np.testing.assert_array_equal(with_opt.resets.counts, theta_only.resets.counts)  # same coins
    assert not np.allclose(with_opt.mean["loss"], theta_only.mean["loss"])
    sme = sd.MomentumSME(problem, sd.GaussianNoise(covariance=C), 0.9)
    st = SDEStepper(sme, diffrax.Euler(), 2, 1, "brownian", False, 2, True)
    y = jnp.arange(8.0).reshape(4, 2)  # paths last: rows θ₁, θ₂, m₁, m₂
    out = st.restart((y, 0.0), jnp.array([False, True]))[0]
    np.testing.assert_array_equal(out, [[0.0, 1.0], [2.0, 3.0], [4.0, 0.0], [6.0, 0.0]])


def test_momentum_sme_on_the_symbolic_back_end_equals_autodiff_and_prints_latex():
    """The momentum SME on a Problem whose derivatives sympy derived (``SymbolicDerivatives``, the back end of
    ``derive_sme``, which builds it with ``optimizer=Momentum(β)``) has the autodiff SME's drift and diffusion at random states (float64 rounding), and its
    LaTeX carries the (θ, m) system, the vanishing Stratonovich correction and the derived model lines.
    [theory: MSDE-2]"""
    from helpers import check_latex

    import sgdsde.symbolic as sy

    data = sd.sparse_regression(jax.random.key(0), 12, 4, 2)
    problem = sd.Problem(sd.DiagonalLinearNetwork(4, 0.7), data.X, data.y, dtype=np.float64)
    noise = sd.LabelNoise(1.0, 4)
    derived = problem.with_derivatives(sy.SymbolicDerivatives(problem.model, loss=problem.loss_fn))
    num, sym = sd.MomentumSME(problem, noise, 0.9), sd.MomentumSME(derived, noise, 0.9)
    assert derived.is_symbolic
    rng = np.random.default_rng(5)
    for _ in range(3):
        y = jnp.asarray(rng.normal(size=16))
        np.testing.assert_allclose(sym.drift(y, 0.01), num.drift(y, 0.01), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(sym.factor(y), num.factor(y), rtol=1e-10, atol=1e-12)
    via = sy.derive_sme(problem, noise, optimizer=sd.Momentum(0.9))  # the public spelling of the same SME
    assert isinstance(via, sd.MomentumSME) and via.problem.is_symbolic
    np.testing.assert_array_equal(via.drift(y, 0.01), sym.drift(y, 0.01))
    tex = sym.latex()
    check_latex(tex, "momentum sme")
    assert r"dm_t = \frac{1}{\eta}" in tex and "no correction" in tex and "numeric (autodiff)" not in tex


def test_sweep_over_beta_runs_the_momentum_sme_as_one_program():
    """``sweep(SDE(noise, optimizer=Momentum(β)), grid={"optimizer.beta": …})`` varies β as a traced leaf of
    the momentum SME: each point equals its single run bit for bit. [theory: MSDE-2]"""
    H, C, ts = _quadratic()
    problem = sd.quadratic_problem(H, ts, dtype=np.float64)
    noise = sd.GaussianNoise(covariance=C)
    kw = dict(lr=0.05, n_steps=20, key=0, ensemble=sd.Ensemble(n_paths=8, dtype=np.float64))
    swept = sd.sweep(
        sd.SDE(noise, optimizer=sd.Momentum(0.8)),
        problem,
        np.zeros(2),
        grid={"optimizer.beta": [0.5, 0.8]},
        **kw,
    )
    for beta, res in zip((0.5, 0.8), swept.results, strict=True):
        one = sd.simulate(sd.SDE(noise, optimizer=sd.Momentum(beta)), problem, np.zeros(2), **kw)
        np.testing.assert_array_equal(res.mean["loss"], one.mean["loss"])


def test_momentum_sme_checkpoint_resumes_bit_for_bit_and_refuses_another_beta(tmp_path, monkeypatch):
    """The SME's state (θ, m) is the engine's carry: a run interrupted inside its second chunk resumes from the
    checkpoint to the uninterrupted numbers bit for bit (the momentum is restored, not restarted), and a
    checkpoint of another β is refused (the optimizer is in the run's record). [theory: MSDE-1]"""
    from sgdsde import _progress

    H, C, ts = _quadratic()
    problem = sd.quadratic_problem(H, ts, dtype=np.float64)

    def run(prefix, beta=0.8, **output):
        return sd.simulate(
            sd.SDE(sd.GaussianNoise(covariance=C), optimizer=sd.Momentum(beta)),
            problem,
            np.zeros(2),
            lr=0.05,
            n_steps=40,
            key=3,
            ensemble=sd.Ensemble(n_paths=6, chunk_size=3, dtype=np.float64),
            record=sd.Record(every=5, n_saved_paths=6),
            output=sd.Output(save_to=str(prefix), checkpoint_every=2, **output),
        )

    reference = run(tmp_path / "ref")
    original, calls = _progress.Progress.update, {"n": 0}

    def update(self, done):
        calls["n"] += 1
        if calls["n"] == 5:  # inside chunk 1, after chunk 0 finished
            raise KeyboardInterrupt
        original(self, done)

    monkeypatch.setattr(_progress.Progress, "update", update)
    with pytest.warns(UserWarning, match="interrupted; returning the 3 finished paths"):
        partial = run(tmp_path / "run", progress=True)
    monkeypatch.setattr(_progress.Progress, "update", original)
    assert partial is not None and not partial.complete
    resumed = run(tmp_path / "run", resume=True)
    np.testing.assert_array_equal(resumed.paths, reference.paths)
    np.testing.assert_array_equal(resumed.mean["loss"], reference.mean["loss"])
    with pytest.raises(ValueError, match="another run"):
        run(tmp_path / "run", beta=0.5, resume=True)


def test_momentum_sme_paths_first_layout_above_the_paths_last_size():
    """d = 70 (state p = 140 > 128: paths on the first axis) without noise: Euler's θ equals the exact
    Euler recursion of the heavy-ball ODE (a linear map) to rounding, as in the paths-last layout (d = 2).
    [theory: MSDE-1]"""
    for d in (2, 70):
        H = np.diag(np.linspace(0.5, 2.0, d))
        ts = np.linspace(-1.0, 1.0, d)
        problem = sd.quadratic_problem(H, ts, dtype=np.float64)
        res = sd.simulate(
            sd.SDE(optimizer=sd.Momentum(0.7), stepping=sd.Fixed(substeps=2)),
            problem,
            np.zeros(d),
            lr=0.05,
            n_steps=10,
            key=0,
            ensemble=sd.Ensemble(n_paths=3, dtype=np.float64),
            record=sd.Record(every=10, n_saved_paths=3),
        )
        F, f0, Q = momentum_sme_matrices(H, np.zeros((d, d)), 0.05, 0.7)
        mu, _ = _euler_moments(F, f0 @ ts, Q, 0.025, 20, np.zeros(2 * d))
        np.testing.assert_allclose(
            np.asarray(res.paths[-1]), np.broadcast_to(mu[:d], (3, d)), rtol=1e-12, atol=1e-12
        )


def test_the_sde_records_the_optimizer_state_as_the_discrete_run_does():
    """An optimizer's SDE records the same names of its state beyond θ as the discrete optimizer: the momentum
    SME's E‖m‖² at T against its exact moments (tr S_mm + ‖μ_m‖², within 4.5 standard errors from the
    recorded variance: a mean over 2,000 paths), the discrete run recording it under the same name.
    [theory: MSDE-2]"""
    H, C, ts = _quadratic()
    problem = sd.quadratic_problem(H, ts, dtype=np.float64)
    noise = sd.GaussianNoise(covariance=C)
    kw = dict(lr=0.05, n_steps=40, key=4, ensemble=sd.Ensemble(n_paths=2000), record=sd.Record(every=40))
    sde = sd.simulate(
        sd.SDE(noise, optimizer=sd.Momentum(0.8), stepping=sd.Fixed(substeps=8)), problem, np.zeros(2), **kw
    )
    sgd = sd.simulate(sd.SGD(noise, optimizer=sd.Momentum(0.8)), problem, np.zeros(2), **kw)
    assert "momentum_sq_norm" in sde.mean and "momentum_sq_norm" in sgd.mean
    mu, S = sd.analysis.momentum_sme_moments(H, C, ts, np.zeros(2), 0.05, 0.8, 40)
    exact = np.trace(S[2:, 2:]) + mu[2:] @ mu[2:]
    se = np.sqrt(sde.var["momentum_sq_norm"][-1] / 2000)
    # 4.5 s.e.: the Monte Carlo error; Euler's O(dt) bias at dt = η/8 is far below it (measured 1.4 s.e. in all)
    assert abs(sde.mean["momentum_sq_norm"][-1] - exact) < 4.5 * se
