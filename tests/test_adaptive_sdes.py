"""Malladi et al.'s RMSprop and Adam SDEs: their coefficients against the paper's formulas written out by hand
(through the clock map ds = η dt), one-step moment matching with the discrete optimizers computed exactly,
the discrete and SDE ensembles against each other, and the square-root scaling rule against the linear one."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgdsde as sd
from sgdsde._sde.adaptive_sdes import AdamSDE, RMSpropSDE
from sgdsde._sde.optimizer_sdes import optimizer_sde
from sgdsde.analysis import fit_order, linear_scaling, sqrt_scaling

# -- a tiny problem with minibatch noise ---------------------------------------------------------------------


def tiny_problem(dtype=np.float64, n=5, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ np.array([0.5, -1.0]) + 2.0 * rng.standard_normal(n)
    return sd.Problem(sd.LinearRegression(d), X, y, dtype=dtype), X, y


def by_hand_sigma(X, y, theta, B):
    """Minibatch noise with replacement, written out: per-example gradients g_i = x_i(x_iᵀθ − y_i), ∇L their
    mean, Σ = (1/(nB)) Σ_i (g_i − ∇L)(g_i − ∇L)ᵀ (theory/noise.md, NOISE-1)."""
    G = X * (X @ theta - y)[:, None]  # (n, d)
    grad = G.mean(0)
    C = G - grad
    return grad, C.T @ C / (X.shape[0] * B)


# optax's Adam raises its float β to an int32 step count, refused under the suite's strict dtype promotion (a
# bug of sgdsde.Adam under strict promotion, reported); standard promotion around the optimizer's own calls
def standard_promotion():
    return jax.numpy_dtype_promotion("standard")


TOL = {np.float32: 2e-5, np.float64: 1e-12}  # rounding of a few dozen flops in each dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsprop_sde_coefficients_are_the_papers(dtype):
    """At a point, the engine-clock drift and diffusion of RMSpropSDE are η × and √η × Malladi et al.'s RMSprop
    SDE in their time s = kη²: dθ = −P⁻¹(∇L ds + σ₀Σ₁^{1/2}dW), du = c(diag Σ₁ − u)ds, P = σ₀ diag(u)^{1/2} + ε₀,
    with σ₀ = ση, ε₀ = εη, c = (1−β)/η², u = v/σ², Σ₁ = Σ/σ² for any scale σ (it drops out); its
    Itô→Stratonovich correction is finite at v = 0 and equals the formula. [theory: ASDE-1] [theory: ASDE-3]"""
    problem, X, y = tiny_problem(dtype)
    B, eta, beta, eps = 2, 0.05, 0.99, 0.3
    sde = RMSpropSDE(problem, sd.MinibatchNoise(batch_size=B), beta, eps)
    theta, v = np.array([0.3, -0.2]), np.array([1.7, 0.4])
    yy = jnp.asarray(np.concatenate([theta, v]), dtype)
    drift = np.asarray(sde.drift(yy, jnp.asarray(eta, dtype)), np.float64)
    diff = np.asarray(sde.diffusion(yy, jnp.asarray(eta, dtype)), np.float64)

    grad, Sigma = by_hand_sigma(X, y, theta, B)
    for sigma in (1.0, 7.3):  # the paper's noise scale: any choice gives the same engine-clock SDE
        s0, e0, c = sigma * eta, eps * eta, (1 - beta) / eta**2
        u, S1 = v / sigma**2, Sigma / sigma**2
        P = s0 * np.sqrt(u) + e0
        b_theta, b_u = -grad / P, c * (np.diag(S1) - u)  # their drift, per unit of s
        cov_theta = s0**2 * S1 / np.outer(P, P)  # their diffusion's covariance, per unit of s
        tol = TOL[dtype]
        np.testing.assert_allclose(drift[:2], eta * b_theta, rtol=tol)  # ds = η dt: drift × η
        np.testing.assert_allclose(drift[2:], sigma**2 * eta * b_u, rtol=tol)  # v = σ²u
        np.testing.assert_allclose((diff @ diff.T)[:2, :2], eta * cov_theta, rtol=tol)  # covariance × η
        np.testing.assert_allclose(diff[2:], 0.0, atol=0)  # v has no noise
    assert sde.state_dim(2) == 4 and sde.noise_type == "general"
    np.testing.assert_array_equal(np.asarray(sde.init_state(jnp.asarray(theta, dtype)))[2:], 0.0)
    # the Itô→Stratonovich correction −(η/2)Σⱼ(∂σⱼ)σⱼ, σⱼ = (Aⱼ/D, 0): by hand, also at v = 0 (optax's start,
    # where √v has no derivative; v has no noise, so its derivative must not enter)
    n = X.shape[0]
    G = X * (X @ theta - y)[:, None]
    A = (G - G.mean(0)).T / np.sqrt(n * B)  # (d, n) columns (g_j − ∇L)/√(nB)
    dA = np.einsum("ja,jb->jab", X, X) - X.T @ X / n  # ∂(g_j − ∇L)/∂θ per column j
    for vv in (v, np.array([0.0, 0.4])):
        D = np.sqrt(vv) + eps
        by_hand = -(eta / 2) * np.einsum("jab,bj->a", dA / np.sqrt(n * B), A / D[:, None]) / D
        yv = jnp.asarray(np.concatenate([theta, vv]), dtype)
        corr = np.asarray(sde.stratonovich_correction(yv, jnp.asarray(eta, dtype)), np.float64)
        np.testing.assert_allclose(corr[:2], by_hand, rtol=50 * TOL[dtype], atol=1e-30)
        np.testing.assert_array_equal(corr[2:], 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_sde_coefficients_are_the_papers(dtype):
    """AdamSDE against Malladi et al.'s Adam SDE written out: dθ = −(√γ₂/γ₁)P⁻¹m ds, dm = c₁(∇L − m)ds +
    σ₀c₁Σ₁^{1/2}dW, du = c₂(diag Σ₁ − u)ds, P = σ₀ diag(u)^{1/2} + ε₀√γ₂, γᵢ = 1 − e^{−cᵢs}; the state's γᵢ
    follow dγᵢ = cᵢ(1 − γᵢ)ds, and one Euler step of the engine maps 1 − βᵢᵏ to 1 − βᵢᵏ⁺¹ (optax's bias
    corrections); AdamW's decay adds −wθ; before the first step θ's drift is 0. [theory: ASDE-2] [theory: ASDE-3]"""
    problem, X, y = tiny_problem(dtype)
    B, eta, b1, b2, eps, w = 2, 0.05, 0.9, 0.99, 0.3, 0.2
    tol = TOL[dtype]
    theta, m, v = np.array([0.3, -0.2]), np.array([0.5, 1.1]), np.array([1.7, 0.4])
    k = 7
    g1, g2 = 1 - b1**k, 1 - b2**k
    yy = jnp.asarray(np.concatenate([theta, m, v, [g1, g2]]), dtype)
    eta_ = jnp.asarray(eta, dtype)
    grad, Sigma = by_hand_sigma(X, y, theta, B)
    for wd in (0.0, w):
        sde = AdamSDE(problem, sd.MinibatchNoise(batch_size=B), b1, b2, eps, wd)
        drift = np.asarray(sde.drift(yy, eta_), np.float64)
        diff = np.asarray(sde.diffusion(yy, eta_), np.float64)
        sigma = 4.1  # the paper's noise scale (drops out)
        s0, e0 = sigma * eta, eps * eta
        c1, c2 = (1 - b1) / eta**2, (1 - b2) / eta**2
        u, S1 = v / sigma**2, Sigma / sigma**2
        P = s0 * np.sqrt(u) + e0 * np.sqrt(g2)
        b_theta = -(np.sqrt(g2) / g1) * m / P
        np.testing.assert_allclose(drift[:2], eta * b_theta - wd * theta, rtol=tol)
        np.testing.assert_allclose(drift[2:4], eta * c1 * (grad - m), rtol=tol)
        np.testing.assert_allclose(drift[4:6], sigma**2 * eta * c2 * (np.diag(S1) - u), rtol=tol)
        np.testing.assert_allclose(drift[6:], eta * np.array([c1 * (1 - g1), c2 * (1 - g2)]), rtol=tol)
        cov = diff @ diff.T
        np.testing.assert_allclose(cov[2:4, 2:4], eta * s0**2 * c1**2 * S1, rtol=tol)
        np.testing.assert_allclose(np.delete(np.delete(cov, [2, 3], 0), [2, 3], 1), 0.0, atol=0)
        # one Euler step of the bias corrections is optax's 1 − β^{k+1}
        np.testing.assert_allclose(
            np.asarray(yy[6:]) + eta * drift[6:], [1 - b1 ** (k + 1), 1 - b2 ** (k + 1)], rtol=tol
        )
    y0 = sde.init_state(jnp.asarray(theta, dtype))
    b0 = np.asarray(sde.drift(y0, eta_))
    assert np.all(np.isfinite(b0)) and np.all(b0[:2] == -w * theta.astype(dtype))
    assert sde.state_dim(2) == 8 and sde.noise_type == "commutative"
    np.testing.assert_array_equal(np.asarray(sde.stratonovich_correction(yy, eta_)), 0.0)


# -- one step: the discrete optimizers' exact moments against the SDE's ---------------------------------------


def malladi_problem(eta, sigma0=1.0, n=6, d=2, seed=3):
    """Linear regression whose per-example noise has scale σ = σ₀/η (their scaling) and skewed residuals e
    orthogonal to X's columns (so ∇L = H(θ − θ*) stays O(1) while the noise grows)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    e = rng.exponential(size=n)
    e -= X @ np.linalg.lstsq(X, e, rcond=None)[0]
    e /= np.sqrt(np.mean(e**2))
    return sd.Problem(sd.LinearRegression(d), X, X @ np.array([0.5, -1.0]) + (sigma0 / eta) * e)


def _replace(state, cls, **fields):
    is_leaf = lambda s: isinstance(s, cls)
    return jax.tree.map(lambda s: s._replace(**fields) if is_leaf(s) else s, state, is_leaf=is_leaf)


def discrete_increments(problem, optimizer, theta, state, eta):
    """The n equally likely one-step outcomes (B = 1 with replacement) of the discrete optimizer: Δθ and its
    new state."""
    G = problem.loss_gradients(theta)
    with standard_promotion():
        out = [optimizer.update(G[:, i], state, theta) for i in range(G.shape[1])]
    return np.array([eta * np.asarray(u) for u, _ in out]), [s for _, s in out]


def moment_errors(dx, b, cov, eta):
    """|discrete − SDE| of E[Δx] and E[ΔxΔxᵀ] per component, the SDE's Euler step from the same state having
    mean ηb and second moment η²bbᵀ + η·(its diffusion covariance)."""
    mean = eta * b
    second = np.outer(mean, mean) + eta * cov
    return np.abs(dx.mean(0) - mean), np.abs((dx[:, :, None] * dx[:, None]).mean(0) - second)


ETAS = [1 / 320, 1 / 640, 1 / 1280, 1 / 2560]  # the asymptotic range: at η ≥ 1/80 some terms still cancel


def test_rmsprop_one_step_moments_match_to_third_order():
    """One step of RMSprop (optax's, B = 1 from minibatch noise of scale σ₀/η, β = 1 − cη², ε = ε₀/η) from a
    state (θ, v = σ²u), its n outcomes enumerated exactly, against one Euler step of RMSpropSDE: in the
    variables (θ, u) every first and second moment differs by O(η³) (fitted order ≥ 2.8 over η = 1/320..1/2560),
    one step being time η² of their clock, so the weak error over a fixed time is O(η) (their Theorem);
    the moments of u alone and of θθ differ by O(η⁴). [theory: ASDE-1, ASDE-5]"""
    c, eps0, theta, u = 1.0, 0.5, jnp.array([1.0, 0.5]), np.array([0.8, 1.3])
    errs = []
    for eta in ETAS:
        sigma = 1.0 / eta
        problem = malladi_problem(eta)
        opt = sd.RMSprop(beta=1 - c * eta**2, eps=eps0 / eta)
        v = sigma**2 * u
        state = _replace(opt.init(theta), optax.ScaleByRmsState, nu=jnp.asarray(v))
        dth, states = discrete_increments(problem, opt, theta, state, eta)
        nu = np.array([[s.nu for s in jax.tree.leaves(st, is_leaf=_rms) if _rms(s)][0] for st in states])
        du = (nu - v) / sigma**2
        sde = RMSpropSDE(problem, sd.MinibatchNoise(batch_size=1), opt.beta, opt.eps)
        y = jnp.concatenate([theta, jnp.asarray(v)])
        b = np.asarray(sde.drift(y, eta))
        F = np.asarray(sde.factor(y))
        scale = np.concatenate([np.ones(2), np.full(2, 1 / sigma**2)])  # (θ, v) → (θ, u)
        b, F = b * scale, F * scale[:, None]
        cov = eta * F @ F.T  # s(η)² = η
        e1, e2 = moment_errors(np.concatenate([dth, du], axis=1), b, cov, eta)
        errs.append(np.concatenate([e1, e2.ravel()]))
    errs = np.array(errs)
    orders = [fit_order(ETAS, errs[:, j]).order for j in range(errs.shape[1])]
    assert min(orders) > 2.8, orders  # local O(η³): global weak order 1 in η
    # u's mean (index 2, 3) and θθ (4, 5, 8, 9) are O(η⁴): the skewness enters only θ's mean and θu
    assert min(orders[j] for j in (2, 3, 4, 5, 8, 9)) > 3.6, orders
    # the O(η³) terms are real (the weak error is of order 1, not 2): θ's mean has order < 3.3
    assert max(orders[0], orders[1]) < 3.3, orders


def _rms(s):
    return isinstance(s, optax.ScaleByRmsState)


def _adam(s):
    return isinstance(s, optax.ScaleByAdamState)


def test_adam_one_step_moments_match_to_third_order():
    """One step of Adam(W) (optax's, at its step k with bias corrections 1 − βᵢ^{k+1}) from (θ, m, v = σ²u),
    enumerated exactly, against one Euler step of AdamSDE from (θ, m, v, 1 − β₁ᵏ, 1 − β₂ᵏ), in the
    variables (θ, m, u) at their time s = kη² = 1/2: all first and second moments differ by O(η³) at most
    (fitted order ≥ 2.8), and those of m alone agree exactly (to rounding). [theory: ASDE-2, ASDE-5]"""
    c1, c2, eps0, w = 10.0, 1.0, 0.5, 0.1
    theta, m, u = jnp.array([1.0, 0.5]), jnp.array([0.3, -0.6]), np.array([0.8, 1.3])
    errs, m_err = [], []
    for eta in ETAS:
        sigma = 1.0 / eta
        problem = malladi_problem(eta)
        b1, b2 = 1 - c1 * eta**2, 1 - c2 * eta**2
        opt = sd.Adam(b1=b1, b2=b2, eps=eps0 / eta, weight_decay=w)
        k = round(0.5 / eta**2)
        v = sigma**2 * u
        state = _replace(
            opt.init(theta), optax.ScaleByAdamState, count=jnp.asarray(k, jnp.int32), mu=m, nu=jnp.asarray(v)
        )
        dth, states = discrete_increments(problem, opt, theta, state, eta)
        new = [[s for s in jax.tree.leaves(st, is_leaf=_adam) if _adam(s)][0] for st in states]
        dm = np.array([np.asarray(s.mu) for s in new]) - np.asarray(m)
        du = (np.array([np.asarray(s.nu) for s in new]) - v) / sigma**2
        sde = AdamSDE(problem, sd.MinibatchNoise(batch_size=1), opt.b1, opt.b2, opt.eps, opt.weight_decay)
        y = jnp.concatenate([theta, m, jnp.asarray(v), jnp.asarray([1 - b1**k, 1 - b2**k])])
        b = np.asarray(sde.drift(y, eta))[:6]
        F = np.asarray(sde.factor(y))[:6] * float(sde.noise_scale(jnp.asarray(eta)))
        scale = np.concatenate([np.ones(4), np.full(2, 1 / sigma**2)])  # (θ, m, v) → (θ, m, u)
        b, F = b * scale, F * scale[:, None]
        e1, e2 = moment_errors(np.concatenate([dth, dm, du], axis=1), b, F @ F.T, eta)
        errs.append(np.concatenate([e1, e2.ravel()]))
        m_err.append(max(e1[2:4].max(), e2[2:4, 2:4].max()) / (eta * np.abs(b[2:4]).max()))
    errs = np.array(errs)
    orders = [fit_order(ETAS, np.maximum(errs[:, j], 1e-300)).order for j in range(errs.shape[1])]
    exact_m = [j for j in range(errs.shape[1]) if j in (2, 3) or (j >= 6 and divmod(j - 6, 6) in _MM)]
    assert min(o for j, o in enumerate(orders) if j not in exact_m) > 2.8, orders
    assert max(m_err) < 1e-9, m_err  # m's mean and covariance: the same formulas (float64 rounding)


_MM = {(2, 2), (2, 3), (3, 2), (3, 3)}


# -- the square-root scaling rule -----------------------------------------------------------------------------


def test_sqrt_scaling_helper_values_and_refusals():
    """The rule's arithmetic (η√κ, 1 − κ(1 − β), ε/√κ, n/κ, AdamW's w√κ) and the linear rule's; bad κ, batch,
    steps and optimizers are refused by name. [theory: ASDE-4]"""
    run = sqrt_scaling(sd.Adam(0.9, 0.999, 1e-8, 0.01), 1e-3, 4, 4, n_steps=1000)
    assert run.batch_size == 16 and run.n_steps == 250 and math.isclose(run.lr, 2e-3)
    opt = run.optimizer
    assert isinstance(opt, sd.Adam)
    np.testing.assert_allclose(
        [float(opt.b1), float(opt.b2), float(opt.eps), float(opt.weight_decay)],
        [0.6, 0.996, 5e-9, 0.02],
        rtol=1e-6,  # the hyperparameters are float32 leaves without x64 (here x64: float64)
    )
    r = sqrt_scaling(sd.RMSprop(0.99, 0.1), 0.01, 8, 0.5, n_steps=100)
    assert r.batch_size == 4 and r.n_steps == 200 and math.isclose(r.lr, 0.01 / math.sqrt(2))
    assert isinstance(r.optimizer, sd.RMSprop)
    np.testing.assert_allclose([float(r.optimizer.beta), float(r.optimizer.eps)], [0.995, 0.1 * math.sqrt(2)])
    lin = linear_scaling(sd.Adam(), 1e-3, 4, 4, n_steps=1000)
    assert lin.batch_size == 16 and lin.n_steps == 250 and math.isclose(lin.lr, 4e-3)
    assert linear_scaling(None, 0.1, 2, 3).optimizer is None
    with pytest.raises(ValueError, match="kappa"):
        sqrt_scaling(sd.Adam(b1=0.9), 1e-3, 4, 20)  # 1 − 20·0.1 < 0
    with pytest.raises(ValueError, match="kappa"):
        sqrt_scaling(sd.Adam(), 1e-3, 4, 1.3)  # 5.2 is no batch size
    with pytest.raises(ValueError, match="n_steps"):
        sqrt_scaling(sd.Adam(), 1e-3, 4, 4, n_steps=1001)
    with pytest.raises(ValueError, match="optimizer"):
        sqrt_scaling(sd.Momentum(0.9), 1e-3, 4, 4)
    with pytest.raises(ValueError, match="optimizer"):
        sqrt_scaling(None, 1e-3, 4, 4)
    with pytest.raises(ValueError, match="kappa"):
        sqrt_scaling(sd.Adam(), 1e-3, 4, -2)
    with pytest.raises(ValueError, match="batch_size"):
        linear_scaling(sd.Adam(), 1e-3, 0, 2)
    with pytest.raises(ValueError, match="optimizer"):
        linear_scaling("adam", 1e-3, 4, 2)


def rule_problem():
    """Linear regression, n = 64, d = 2, residual noise of std 40: per-example gradients vary far more than
    their mean near θ₀ (the regime of the SDE, σ²Σ₁ ≫ |∇L|² even at B = 16)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 2))
    y = X @ np.array([1.0, -1.0]) + 40.0 * rng.standard_normal(64)
    theta0 = np.linalg.lstsq(X, y, rcond=None)[0] + np.array([1.5, 1.0])
    return sd.Problem(sd.LinearRegression(2), X, y), theta0


def final_stats(problem, theta0, run, n_paths, key):
    """(mean, standard error) of θ and of the loss at the last step of an ensemble of ``run``."""
    with standard_promotion():
        r = sd.simulate(
            sd.SGD(sd.MinibatchNoise(batch_size=run.batch_size), optimizer=run.optimizer),
            problem,
            theta0,
            lr=run.lr,
            n_steps=run.n_steps,
            key=key,
            ensemble=sd.Ensemble(n_paths),
            record=sd.Record(observables=["loss", "theta"]),
        )
    return {name: r.final(name) for name in ("theta", "loss")}


def z_scores(a, b):
    """z = (mean₁ − mean₂)/√(se₁² + se₂²) per statistic (independent ensembles)."""
    return {k: np.atleast_1d((a[k][0] - b[k][0]) / np.sqrt(a[k][1] ** 2 + b[k][1] ** 2)) for k in a}


@pytest.mark.parametrize(("which", "kappas"), [("adam", (2, 4))])
def test_sqrt_scaling_rule_keeps_statistics_linear_rule_does_not(which, kappas):
    """Adam (β₁ = 0.9, β₂ = 0.999) / RMSprop (β = 0.999), ε = 1e-8, at B = 4, η = 0.01, 1000 steps against
    B = 4κ under the square-root rule (η√κ, 1 − κ(1 − β), ε/√κ, 1000/κ steps): E θ (2 components) and E L
    at the end agree within Monte Carlo error (|z| < 4, 2048 paths each: 3 z's per κ, |z| ≥ 4 has probability
    2e-4 under the rule; measured max |z| 2.9 at κ = 2, 0.9 at κ = 4); under the linear rule (κη, same β,
    1000/κ steps) they do not (max |z| > 10; measured 22 at κ = 2, 36 at κ = 4). z from independent
    ensembles; RMSprop and κ = 8 in scripts/adaptive_sdes.py. [theory: ASDE-4]"""
    problem, theta0 = rule_problem()
    opt = sd.Adam(0.9, 0.999, 1e-8) if which == "adam" else sd.RMSprop(0.999, 1e-8)
    base = sd.analysis.ScaledRun(opt, 0.01, 4, 1000)
    ref = final_stats(problem, theta0, base, 2048, 0)
    for kappa in kappas:
        sq = sqrt_scaling(opt, base.lr, base.batch_size, kappa, base.n_steps)
        lin = linear_scaling(opt, base.lr, base.batch_size, kappa, base.n_steps)
        z_sq = z_scores(ref, final_stats(problem, theta0, sq, 2048, kappa))
        z_lin = z_scores(ref, final_stats(problem, theta0, lin, 2048, 10 + kappa))
        sq_max = max(np.abs(v).max() for v in z_sq.values())
        lin_max = max(np.abs(v).max() for v in z_lin.values())
        print(f"{which} kappa={kappa} sqrt: {z_sq} linear: {z_lin}")
        assert sq_max < 4, (kappa, z_sq)
        assert lin_max > 10, (kappa, z_lin)


# -- the SDEs on the engine ------------------------------------------------------------------------------------


def gaussian_1d(eta, h=1.0, sigma0=1.0):
    """L = ½hθ² with Gaussian gradient noise of variance (σ₀/η)² (their scaling, Σ₁ = 1)."""
    problem = sd.quadratic_problem(np.array([[h]]), np.zeros(1))
    return problem, sd.GaussianNoise(np.array([[(sigma0 / eta) ** 2]]))


def test_engine_run_follows_their_time():
    """RMSprop's SDE run by the engine (Euler, one step of time η per SGD step) on L = ½hθ² with Gaussian
    noise of scale σ₀/η, 1 − β = cη², ε = ε₀/η: (a) its ensemble's E θ and E θ² at engine time t match the
    exact moments of that Euler recursion (v deterministic: v_{k+1} = v_k + (1 − β)(σ² − v_k)) within 4
    standard errors; (b) those match the moments of their SDE in their time at s = ηt = kη² (u = 1 − e^{−cs},
    P = σ₀√u + ε₀, dE θ/ds = −(h/P)E θ, dE θ²/ds = −2(h/P)E θ² + σ₀²/P², integrated by scipy to 1e-10)
    to the Euler error O(η²) (bound 2η², measured 0.51η²). [theory: ASDE-3]"""
    from scipy.integrate import solve_ivp

    eta, h, c, s0, e0, n = 0.05, 1.0, 1.0, 1.0, 0.5, 400
    problem, noise = gaussian_1d(eta, h, s0)
    opt = sd.RMSprop(beta=1 - c * eta**2, eps=e0 / eta)
    r = sd.simulate(
        sd.SDE(noise, optimizer=opt),
        problem,
        np.ones(1),
        lr=eta,
        n_steps=n,
        key=3,
        ensemble=sd.Ensemble(4096),
        record=sd.Record(every=100, observables={"th": lambda p, t: t[0], "th2": lambda p, t: t[0] ** 2}),
    )
    np.testing.assert_allclose(r.times, eta * r.steps)  # the engine's clock: t = kη
    # (a) the exact moments of the Euler recursion
    sigma, beta, eps = s0 / eta, 1 - c * eta**2, e0 / eta
    mu, m2, v, euler = 1.0, 1.0, 0.0, {0: (1.0, 1.0)}
    for k in range(n):
        D = np.sqrt(v) + eps
        a = 1 - eta * h / D
        mu, m2, v = a * mu, a * a * m2 + (eta * sigma / D) ** 2, v + (1 - beta) * (sigma**2 - v)
        euler[k + 1] = (mu, m2)
    ex = np.array([euler[int(k)] for k in r.steps])
    for j, name in enumerate(("th", "th2")):
        z = (r.mean[name] - ex[:, j]) / np.maximum(r.stderr(name), 1e-300)
        assert np.all(np.abs(z[1:]) < 4), (name, z)

    # (b) their SDE's moments at s = η t
    def rhs(s, y):
        P = s0 * np.sqrt(1 - np.exp(-c * s)) + e0
        return [-(h / P) * y[0], -2 * (h / P) * y[1] + s0**2 / P**2]

    s_grid = eta * r.times
    sol = solve_ivp(rhs, (0, s_grid[-1]), [1.0, 1.0], t_eval=s_grid, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ex.T, sol.y, rtol=0, atol=2 * eta**2)


@pytest.mark.parametrize("which", ["rmsprop", "adam"])
def test_discrete_and_sde_ensembles_agree(which):
    """Discrete RMSprop/Adam (sd.SGD with Gaussian noise of scale σ₀/η, their scaling: 1 − β = cη² (c₁ = 10,
    c₂ = 1 for Adam), ε = ε₀/η) against their SDE (sd.SDE(noise, optimizer=...)) on L = ½θ² at η = 0.1 up to
    their time 1 (100 steps): E θ and E L agree within Monte Carlo error (|z| < 4, 4096 paths each,
    independent ensembles; measured z = −1.0 (RMSprop), +0.6 (Adam) for E θ). With symmetric noise the weak
    error is O(η²) (ASDE-5: 0.009 ± 0.001 for RMSprop at η = 0.1 with 400,000 paths, against a standard
    error of 0.014 here). [theory: ASDE-5]"""
    eta = 0.1
    problem, noise = gaussian_1d(eta)
    if which == "rmsprop":
        opt = sd.RMSprop(beta=1 - eta**2, eps=0.5 / eta)
    else:
        opt = sd.Adam(b1=1 - 10 * eta**2, b2=1 - eta**2, eps=0.5 / eta)
    kw = dict(
        lr=eta, n_steps=100, ensemble=sd.Ensemble(4096), record=sd.Record(observables=["theta", "loss"])
    )
    with standard_promotion():
        disc = sd.simulate(sd.SGD(noise, optimizer=opt), problem, np.ones(1), key=1, **kw)
        cont = sd.simulate(sd.SDE(noise, optimizer=opt), problem, np.ones(1), key=2, **kw)
    w = sd.analysis.weak_error(disc, cont, ["theta", "loss"])
    for name in ("theta", "loss"):
        e, se = w.final(name)
        assert np.all(np.abs(e) < 4 * se), (name, e, se)
    # the SDE moved: E θ fell from 1 by many standard errors (the comparison is not of two constants)
    m, se = cont.final("theta")
    assert 1 - m[0] > 10 * se[0], (m, se)


def test_sde_refusals():
    """An SDE is built only for an optimizer that has one (Optax refused by name, never SGD's SDE), of order 1;
    bad β, ε and problems are refused naming the argument. [theory: ASDE-6]"""
    problem, noise = gaussian_1d(0.1)
    run = dict(lr=0.1, n_steps=2, key=0, ensemble=sd.Ensemble(4))
    with pytest.raises(ValueError, match="optimizer.*Optax"):
        sd.simulate(sd.SDE(noise, optimizer=sd.Optax(optax.adam(1.0))), problem, np.ones(1), **run)
    for opt in (sd.RMSprop(), sd.Adam()):
        with pytest.raises(ValueError, match="order"):
            sd.simulate(sd.SDE(noise, optimizer=opt, order=2), problem, np.ones(1), **run)
    with pytest.raises(ValueError, match="beta"):
        RMSpropSDE(problem, noise, beta=1.0)
    with pytest.raises(ValueError, match="eps"):
        AdamSDE(problem, noise, eps=0.0)
    with pytest.raises(ValueError, match="b2"):
        AdamSDE(problem, noise, b2=-0.1)
    with pytest.raises(ValueError, match="problem"):
        RMSpropSDE("not a problem", noise)


@pytest.mark.parametrize(
    ("make", "leaf"),
    [(lambda b: sd.RMSprop(b, 0.5), "optimizer.beta"), (lambda b: sd.Adam(0.9, b, 0.5), "optimizer.b2")],
    ids=["rmsprop", "adam"],
)
def test_sweep_over_the_optimizers_decay_is_one_program_equal_to_single_runs(make, leaf):
    """sweep(SDE(noise, optimizer=...), grid={leaf: ...}) traces the decay into the SDE (no concrete check on a
    tracer) and each point equals its single run bit for bit."""
    problem, X, y = tiny_problem(n=16)
    noise = sd.MinibatchNoise(batch_size=2)
    kw = dict(lr=0.05, n_steps=20, key=0, ensemble=sd.Ensemble(32))
    res = sd.sweep(sd.SDE(noise, optimizer=make(0.99)), problem, np.zeros(2), grid={leaf: [0.9, 0.99]}, **kw)
    for beta, r in zip((0.9, 0.99), res.results, strict=True):
        one = sd.simulate(sd.SDE(noise, optimizer=make(beta)), problem, np.zeros(2), **kw)
        np.testing.assert_array_equal(r.mean["loss"], one.mean["loss"])
    assert res.results[0].mean["loss"][-1] != res.results[1].mean["loss"][-1]


# -- warm starts: given initial moments, in the optimizers and their SDEs ------------------------------------


def test_warm_start_state_update_description_and_maps():
    """``Adam(m0=..., v0=...)`` starts from (m₀, v₀) without bias correction (its first update is
    m₁/(√v₁ + ε) + wθ by hand) and its SDE from (θ₀, m₀, v₀, 1, 1); ``RMSprop(v0=...)`` and its SDE from v₀. The
    record (checkpoint fingerprint) holds the start when given and is the cold text otherwise; SVAG maps v₀ →
    l·v₀ and the square-root rule v₀ → v₀/κ (the second moment scales as σ²), m₀ kept. [theory: ASDE-8]"""
    problem, _, _ = tiny_problem()
    noise = sd.MinibatchNoise(batch_size=2)
    theta, g = jnp.array([0.3, -0.2]), jnp.array([0.5, -1.5])
    m0, v0 = np.array([0.1, -0.4]), np.array([2.0, 0.5])
    b1, b2, eps, w = 0.8, 0.9, 0.1, 0.05
    adam = sd.Adam(b1, b2, eps, w, m0=m0, v0=v0)
    with standard_promotion():
        u, state = adam.update(g, adam.init(theta), theta)
    m, v = b1 * m0 + (1 - b1) * np.asarray(g), b2 * v0 + (1 - b2) * np.asarray(g) ** 2
    np.testing.assert_allclose(u, -(m / (np.sqrt(v) + eps) + w * np.asarray(theta)), rtol=1e-14)
    (s,) = [s for s in jax.tree.leaves(state, is_leaf=_adam) if _adam(s)]
    np.testing.assert_allclose(s.mu, m, rtol=1e-15)
    np.testing.assert_allclose(s.nu, v, rtol=1e-15)
    # v0 alone: m₀ = 0
    with standard_promotion():
        (s0,) = [s for s in jax.tree.leaves(sd.Adam(v0=v0).init(theta), is_leaf=_adam) if _adam(s)]
    np.testing.assert_array_equal(s0.mu, 0.0)
    np.testing.assert_array_equal(s0.nu, v0)
    rms = sd.RMSprop(b2, eps, v0=v0)
    (r,) = [s for s in jax.tree.leaves(rms.init(theta), is_leaf=_rms) if _rms(s)]
    np.testing.assert_array_equal(r.nu, v0)
    # the SDEs start where the optimizers do
    y = np.asarray(optimizer_sde(problem, noise, adam, None).init_state(theta))
    np.testing.assert_array_equal(y, np.concatenate([theta, m0, v0, [1.0, 1.0]]))
    sde = AdamSDE(problem, noise, b1, b2, eps, w, m0, v0)
    b = np.asarray(sde.drift(jnp.asarray(y), 0.05))
    np.testing.assert_allclose(b[:2], -(m0 / (np.sqrt(v0) + eps) + w * np.asarray(theta)), rtol=1e-14)
    np.testing.assert_array_equal(b[6:], 0.0)  # the corrections stay off
    y = np.asarray(RMSpropSDE(problem, noise, b2, eps, v0).init_state(theta))
    np.testing.assert_array_equal(y, np.concatenate([theta, v0]))
    # the record: cold runs record what they did before m0/v0 existed; warm ones their start
    assert "m0" not in sd.Adam().description(2) and "v0" not in sd.RMSprop().description(2)
    assert "v0=" in rms.description(2) and "m0=" in adam.description(2) and "v0=" in adam.description(2)
    assert sd.Adam(v0=v0).description(2) != sd.Adam(v0=2 * v0).description(2)
    # SVAG and the square-root rule carry the start over
    from sgdsde._sde.svag import svag_optimizer

    for opt in (adam, rms):
        mapped, _ = svag_optimizer(opt, 4)
        np.testing.assert_allclose(mapped.v0, 4 * v0)
        scaled = sqrt_scaling(opt, 0.01, 4, 2).optimizer
        np.testing.assert_allclose(scaled.v0, v0 / 2)
    np.testing.assert_array_equal(svag_optimizer(adam, 4)[0].m0, m0)
    np.testing.assert_array_equal(sqrt_scaling(adam, 0.01, 4, 2).optimizer.m0, m0)


def test_warm_start_refusals():
    """Bad initial moments are refused naming m0 or v0 (not 1-D, not finite, v0 ≤ 0, m0 without v0, a length
    other than d at the run or in the SDE). (A checkpoint of a run with another v₀ is refused because the
    record differs: test_warm_start_state_update_description_and_maps; the resume check compares records,
    tests/test_optimizers.py.) [theory: ASDE-8]"""
    problem, _, _ = tiny_problem()
    noise = sd.MinibatchNoise(batch_size=2)
    for bad in ([1.0, 0.0], [1.0, -1.0], [1.0, np.nan], [[1.0, 1.0]], "ab", [1.0, np.inf], True):
        with pytest.raises(ValueError, match="v0"):
            sd.Adam(v0=bad)
        with pytest.raises(ValueError, match="v0"):
            sd.RMSprop(v0=bad)
    with pytest.raises(ValueError, match="m0"):
        sd.Adam(m0=[0.0, np.nan], v0=[1.0, 1.0])
    with pytest.raises(ValueError, match="v0"):
        sd.Adam(m0=[0.0, 1.0])
    with pytest.raises(ValueError, match="m0"):
        sd.Adam(m0=[0.0, 1.0, 2.0], v0=[1.0, 1.0])
    with pytest.raises(ValueError, match="v0"):
        AdamSDE(problem, noise, v0=np.ones(3))
    with pytest.raises(ValueError, match="v0"):
        RMSpropSDE(problem, noise, v0=np.ones(3))
    run = dict(lr=0.05, n_steps=4, key=0, ensemble=sd.Ensemble(4))
    for method in (sd.SGD, sd.SDE):
        with pytest.raises(ValueError, match="v0"):
            sd.simulate(method(noise, optimizer=sd.RMSprop(v0=np.ones(3))), problem, np.zeros(2), **run)


# -- the weak order from the cold and the warm start, with a control variate -----------------------------------

_Z8 = np.array([-1.0] * 7 + [7.0])
_Z8 = (_Z8 - _Z8.mean()) / _Z8.std()  # ASDE-5's skewed residuals (skewness 2.27)


def _adam_weak_errors(etas, n_paths, key):
    """{start: [(E θ_T(discrete Adam) − E θ_T(AdamSDE), standard error, E[θ_T − θ_lin,T]) per η]} for the cold
    and the warm start,
    at their time 1 (1/η² steps) on ASDE-5's problem (L = ½θ², B = 1 draws of the gradient θ − σz, σ = 1/η,
    c₁ = 10, c₂ = 1, ε₀ = 0.5, θ₀ = 1), in one compiled program (one scan per run).

    The SDE's mean is exact: with v and γ deterministic its drift is linear in (θ, m), so E y follows the
    Euler recursion of the drift (no Monte Carlo). The discrete mean uses a control variate: each path also
    runs the same recursion driven by the same draws with v̂ replaced by its deterministic value (σ²
    bias-corrected, or the warm v₀ relaxing to σ²), a linear recursion whose mean (the same recursion without
    the noise) is computed exactly; the Monte Carlo estimates only E[θ − θ_lin], whose variance is ~500
    times smaller than θ's."""
    runs = []
    for start in ("cold", "warm"):
        for eta in etas:
            sigma, K = 1 / eta, round(1 / eta**2)
            b1, b2, eps = 1 - 10 * eta**2, 1 - eta**2, 0.5 / eta
            warm = start == "warm"
            m0, v0 = (1.0, sigma**2 + 1.0) if warm else (0.0, 0.0)
            opt = sd.Adam(b1, b2, eps, **({"m0": [m0], "v0": [v0]} if warm else {}))
            problem = sd.Problem(sd.LinearRegression(1), np.ones((8, 1)), _Z8 * sigma)
            sde = optimizer_sde(problem, sd.MinibatchNoise(batch_size=1), opt, None)
            kk = np.arange(1, K + 1)
            v_det = v0 * b2**kk + sigma**2 * (1 - b2**kk)
            gamma1 = np.ones(K) if warm else 1 - b1**kk
            den = np.sqrt(v_det if warm else v_det / (1 - b2**kk)) + eps
            runs.append((start, eta, b1, m0, opt, sde, K, jnp.asarray(gamma1), jnp.asarray(den)))

    def one(run, key):
        _, eta, b1, m0, opt, sde, K, gamma1, den = run
        zs = jnp.asarray(-_Z8 * sigma_of(eta))
        th = jnp.ones((n_paths, 1))
        with standard_promotion():
            state = jax.vmap(opt.init)(th)

        def step(c, x):
            th, s, tl, ml, y, mt, mm = c
            kk, g1, d = x
            g = zs[jax.random.randint(kk, (n_paths,), 0, 8)][:, None]
            with standard_promotion():
                u, s = jax.vmap(opt.update)(th + g, s, th)
            ml = b1 * ml + (1 - b1) * (tl + g)
            mm = b1 * mm + (1 - b1) * mt  # the companion's exact mean
            return (th + eta * u, s, tl - eta * (ml / g1) / d, ml, y + eta * sde.drift(y, eta),
                    mt - eta * (mm / g1) / d, mm), None  # fmt: skip

        init = (th, state, th, jnp.full((n_paths, 1), m0), sde.init_state(jnp.ones(1)), 1.0, m0)
        c = jax.lax.scan(step, init, (jax.random.split(key, K), gamma1, den))[0]
        diff = (c[0] - c[2])[:, 0]
        return jnp.mean(diff), jnp.std(diff) / np.sqrt(n_paths), c[5] - c[4][0]

    keys = jax.random.split(jax.random.key(key), len(runs))
    res = jax.jit(lambda keys: [one(r, k) for r, k in zip(runs, keys, strict=True)])(keys)
    out: dict[str, list[tuple[float, float, float]]] = {"cold": [], "warm": []}
    for r, (d, se, lin) in zip(runs, res, strict=True):
        out[r[0]].append((float(d) + float(lin), float(se), float(d)))
    return out


def sigma_of(eta):
    return 1 / eta


def _leading_warm_up_term(eta, start):
    """ASDE-8's prediction: the per-step bias ηκ₃S_kσ₀²/(2(σ₀+ε₀)²) of discrete Adam's θ-step, propagated to
    s = 1 by the SDE's linear mean recursion of (θ, m)."""
    K, b1, b2, s0, e0 = round(1 / eta**2), 1 - 10 * eta**2, 1 - eta**2, 1.0, 0.5
    k3 = float(np.mean((-_Z8) ** 3))  # the gradient noise is −σz
    k = np.arange(K)
    overlap = (1 - b1) * (1 - b2) * (1 - (b1 * b2) ** (k + 1)) / (1 - b1 * b2)
    g1 = np.zeros(K + 1) if start == "cold" else np.ones(K + 1)
    if start == "cold":
        overlap /= (1 - b1 ** (k + 1)) * (1 - b2 ** (k + 1))
        g1 = 1 - b1 ** np.arange(K + 1)
    w, response = np.array([1.0, 0.0]), np.zeros(K + 1)
    response[K] = 1.0
    for j in range(K - 1, -1, -1):  # response[j] = ∂θ_K/∂θ_j
        a = 0.0 if g1[j] == 0 else eta**2 / (g1[j] * (s0 + e0))
        w = w @ np.array([[1.0, -a], [1 - b1, b1]])
        response[j] = w[0]
    return float(np.sum(eta * k3 * overlap * s0**2 / (2 * (s0 + e0) ** 2) * response[1:]))


def _warm_first_order(eta):
    """ASDE-9's two warm-start terms of E θ_K − E θ_lin,K at finite η: discrete warm Adam's θ-step has the extra
    mean −ηf'(V)Cov(m, v), f(v) = 1/(√v + ε), V the companion's deterministic v; Cov(x, v), x = (θ, m), of the
    linear companion x_{k+1} = A_k x_k + b_kσζ_k, v_{k+1} = β₂v_k + (1 − β₂)(θ_k + σζ_k)² follows
    W_{k+1} = β₂A_kW_k + (1 − β₂)b_kσ³κ₃ (its κ₃ part); "overlap" is its same-sample part
    (1 − β₁)(1 − β₂)σ³κ₃ Σ (β₁β₂)^j (ASDE-8's first term), "response" the rest (θ's response to a past draw,
    which v saw through κ₃). Both carried to step K by the companion's mean recursion A_k."""
    sigma, K = 1 / eta, round(1 / eta**2)
    b1, b2, eps = 1 - 10 * eta**2, 1 - eta**2, 0.5 / eta
    k3 = float(np.mean((-_Z8) ** 3))
    V, W, W1 = sigma**2 + 1.0, np.zeros(2), 0.0
    d1, d2 = np.zeros(2), np.zeros(2)
    for _ in range(K):
        V = b2 * V + (1 - b2) * sigma**2
        a = eta / (np.sqrt(V) + eps)
        A = np.array([[1 - a * (1 - b1), -a * b1], [1 - b1, b1]])
        W = b2 * A @ W + (1 - b2) * (1 - b1) * np.array([-a, 1.0]) * sigma**3 * k3
        W1 = b2 * b1 * W1 + (1 - b2) * (1 - b1) * sigma**3 * k3
        f1 = -1 / (2 * np.sqrt(V) * (np.sqrt(V) + eps) ** 2)
        d1 = A @ d1 + np.array([-eta * f1 * W1, 0.0])
        d2 = A @ d2 + np.array([-eta * f1 * (W[1] - W1), 0.0])
    return float(d1[0]), float(d2[0])


def test_adam_weak_order_is_one_from_a_warm_start_and_eta_log_from_the_cold_start():
    """Discrete Adam against AdamSDE on ASDE-5's problem in their scaling, at η = 0.1, 0.05, 0.025 (exact SDE
    mean, control-variate discrete mean, 4000 paths; standard errors < 2.5% of the errors):
    - warm start (m₀ = θ₀, v₀ = σ² + θ₀², no correction): fitted order ≥ 0.85 and both local slopes ≥ 0.75
      (measured 0.93, slopes 0.91, 0.95; over seeds 1-3 0.91-0.93, slopes 0.83-0.95, 0.93-1.00): order 1 up
      to the O(η²) terms, which on this range keep it below 1 (the slope is 0.96, 1.00 at η = 0.0125,
      0.00625; ASDE-8);
    - cold start (optax's m₀ = v₀ = 0, bias-corrected): order below the warm one by > 0.1 (measured 0.74) and
      the error within 12% of ASDE-8's warm-up term at η ≤ 0.05 (measured 6%, 7%), which is ∝ η ln(1/η)
      asymptotically; the warm error ≥ 5× smaller (measured 7.6×, 8.5×);
    - the warm error's Monte Carlo part is ASDE-9's two O(η) terms (overlap + response) at η = 0.05, 0.025.
    [theory: ASDE-8] [theory: ASDE-5] [theory: ASDE-9]"""
    etas = [0.1, 0.05, 0.025]
    out = _adam_weak_errors(etas, 4000, 0)
    for s in out:
        for eta, (e, se, _) in zip(etas, out[s], strict=True):
            assert e < 0 and se < 0.025 * abs(e), (s, eta, e, se)  # sign: κ₃ < 0 for the gradient noise
    err = {s: np.array([abs(e) for e, _, _ in out[s]]) for s in out}
    ses = {s: np.array([se for _, se, _ in out[s]]) for s in out}
    warm, cold = fit_order(etas, err["warm"], ses["warm"]), fit_order(etas, err["cold"], ses["cold"])
    slopes = np.log(err["warm"][:-1] / err["warm"][1:]) / np.log(2)
    print(f"warm {err['warm']} {warm}; cold {err['cold']} {cold}; warm slopes {slopes}")
    # pre-asymptotic on this range (the O(η²) terms: local slopes 0.90, 0.93 at 10⁴ paths, 1.00 only at
    # η ≈ 0.006, where the script's band over η ≤ 0.05 is 0.962 [0.917, 1.007]; ASDE-8), and a 3-point band is
    # either residual-dominated or tighter than that curvature: so the fitted order ≥ 0.85 (its standard
    # error here ≈ 0.02) and each local slope ≥ 0.75 (0.83-1.00 over seeds 0-3, standard error ≈ 0.03)
    assert warm.order >= 0.85 and np.all(slopes >= 0.75), (warm, slopes)
    assert cold.order < warm.order - 0.1, (cold, warm)
    for i, eta in enumerate(etas[1:], start=1):
        pred = _leading_warm_up_term(eta, "cold")
        assert abs(-err["cold"][i] - pred) < 0.12 * abs(pred), (eta, err["cold"][i], pred)
    assert np.all(err["cold"][1:] > 5 * err["warm"][1:])
    # the warm error's two O(η) terms (ASDE-9): the Monte Carlo part E[θ − θ_lin] is their sum within 4 standard
    # errors plus 2% (the O(η²) rest: E v − V, Var v, the 2σ²E θ part of Cov(m, v), computed by the script's
    # warm_first_order, is 1.9% and 0.9% of it at η = 0.05, 0.025; measured here 2.6 and 1.7 standard errors
    # from the sum, 1.0 and 0.95 with the rest), and the first term alone is off by the second (+17%: measured 20
    # and 19 standard errors; asserted > 10)
    for eta, (_, se, d) in list(zip(etas, out["warm"], strict=True))[1:]:
        overlap, response = _warm_first_order(eta)
        assert abs(d - (overlap + response)) < 4 * se + 0.02 * abs(overlap + response), (
            eta,
            d,
            overlap,
            response,
        )
        assert abs(d - overlap) > 10 * se, (eta, d, overlap, se)
