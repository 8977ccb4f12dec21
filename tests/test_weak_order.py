"""Weak orders: of the SMEs against exact SGD moments, and of the SDE solvers against exact SDE moments.

Solver orders are measured without Monte Carlo: on a linear SDE $dX = AX\\,dt + \\sum_j B_jX\\,dW^j$ every
scheme here is linear in X, so one step is $Y^+ = R(\\Delta W, V)Y$ and the scheme's exact first and second
moments follow from $E R$ and $E[R\\otimes R]$ over the discrete increments (exact enumeration) or Gaussian
ones (Gauss–Hermite, exact for these polynomial degrees).
"""

import itertools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import sgdsde
from sgdsde import FunctionSDE, PlatenWeak2, simulate_sde
from sgdsde._sde.fixed import _GivenIncrement  # internal: feeds a solver chosen increments
from sgdsde._sde.solvers import WeakIncrement  # internal: the weak scheme's random input
from sgdsde.analysis import fit_order, sde_moments, sgd_moments

# A linear SDE with two non-commuting noise matrices (general, non-commutative noise), d = m = 2.
A = np.array([[-1.0, 0.4], [-0.3, -0.8]])
B = np.array([[[0.3, 0.2], [-0.1, 0.25]], [[0.1, -0.3], [0.35, 0.05]]])
X0 = np.array([1.0, -0.5])
T = 1.0


def linear_sde():
    Aj, Bj = jnp.asarray(A), jnp.asarray(B)
    return FunctionSDE(lambda th, eta: Aj @ th, lambda th: jnp.stack([Bj[0] @ th, Bj[1] @ th], axis=1))


def exact_linear_moments(t):
    """E X_t = e^{At}x₀ and vec E[X_t X_tᵀ] = exp(t(A⊗I + I⊗A + Σ_j B_j⊗B_j)) vec(x₀x₀ᵀ)."""
    eye = np.eye(2)
    L = np.kron(A, eye) + np.kron(eye, A) + sum(np.kron(b, b) for b in B)
    return scipy.linalg.expm(A * t) @ X0, scipy.linalg.expm(L * t) @ np.outer(X0, X0).ravel()


def _grid(values, probs, m):
    pts = np.array(list(itertools.product(values, repeat=m)))
    w = np.prod(np.array(list(itertools.product(probs, repeat=m))), axis=1)
    return pts, w


def enumerate_controls(kind, h):
    """(controls as a batched pytree, weights) of one step's random input: exact quadrature."""
    if kind == "gaussian":
        x, w = np.polynomial.hermite_e.hermegauss(4)  # exact for polynomials of degree <= 7 in N(0, 1)
        pts, wt = _grid(np.sqrt(h) * x, w / w.sum(), 2)
        return jnp.asarray(pts), wt
    if kind == "two_point":
        pts, wt = _grid(np.sqrt(h) * np.array([-1.0, 1.0]), [0.5, 0.5], 2)
        return jnp.asarray(pts), wt
    pts, wt = _grid(np.sqrt(3 * h) * np.array([-1.0, 0.0, 1.0]), [1 / 6, 2 / 3, 1 / 6], 2)
    dW, V, W = [], [], []
    for s in (-1.0, 1.0):
        v = np.array([[0.0, s * h], [-s * h, 0.0]])
        dW.append(pts), V.append(np.broadcast_to(v, (len(pts), 2, 2))), W.append(0.5 * wt)
    return WeakIncrement(jnp.asarray(np.concatenate(dW)), jnp.asarray(np.concatenate(V))), np.concatenate(W)


def scheme_moments(solver, kind, h, stratonovich=False):
    """The scheme's exact E Y_T and vec E[Y_T Y_Tᵀ] after T/h steps."""
    sde = linear_sde()
    drift = (lambda y, e: sde.drift(y, e) + sde.stratonovich_correction(y, e)) if stratonovich else sde.drift

    def step(y, ctrl):
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, a: drift(y, a)),
            diffrax.ControlTerm(lambda t, y, a: sde.diffusion(y, a), _GivenIncrement(ctrl)),
        )
        return solver.step(terms, 0.0, h, y, 1.0, solver.init(terms, 0.0, h, y, 1.0), False)[0]

    ctrls, w = enumerate_controls(kind, h)
    R = jax.jit(jax.vmap(lambda c: jax.vmap(lambda e: step(e, c), out_axes=1)(jnp.eye(2))))(ctrls)
    R = np.asarray(R)
    ER = np.einsum("c,cij->ij", w, R)
    ERR = np.einsum("c,cij,ckl->ikjl", w, R, R).reshape(4, 4)
    n = round(T / h)
    return np.linalg.matrix_power(ER, n) @ X0, np.linalg.matrix_power(ERR, n) @ np.outer(X0, X0).ravel()


def measured_order(solver, kind, hs, stratonovich=False):
    m_exact, s_exact = exact_linear_moments(T)
    errs = []
    for h in hs:
        m, s = scheme_moments(solver, kind, h, stratonovich)
        errs.append(max(np.max(np.abs(m - m_exact)), np.max(np.abs(s - s_exact))))
    return fit_order(hs, errs), errs


HS = 2.0 ** -np.arange(3, 8)


@pytest.mark.parametrize("kind", ["gaussian", "two_point"])
def test_euler_weak_order_one_general_noise(kind):
    """Euler (Gaussian or two-point increments) is weak order 1 on a general-noise Itô SDE. [theory: SDE-5]"""
    fit, _ = measured_order(diffrax.Euler(), kind, HS)
    # exact moments, no Monte Carlo: the band is the fit's own 95% band; 0.1 allows pre-asymptotic curvature
    assert 0.9 < fit.order < 1.1, str(fit)


def test_platen_weak2_is_weak_order_two_general_noise():
    """PlatenWeak2 is weak order 2 on a general-noise (non-commutative) Itô SDE. [theory: SDE-6]"""
    fit, errs = measured_order(PlatenWeak2(), "weak2", HS)
    assert 1.85 < fit.order < 2.15, str(fit)
    euler, errs_e = measured_order(diffrax.Euler(), "gaussian", HS)
    assert errs[-1] < 0.1 * errs_e[-1]


def test_heun_with_correction_converges_to_ito():
    """Heun (Stratonovich) plus the drift correction −½Σ_j(∂b_j)b_j converges to the Itô moments at order 1;
    without it, it converges to a different SDE. [theory: SDE-4]"""
    # Heun's error constant is small and components cancel near h = 2⁻⁵: fit on the asymptotic range
    hs = 2.0 ** -np.arange(6, 11)
    fit, errs = measured_order(diffrax.Heun(), "gaussian", hs, stratonovich=True)
    assert 0.9 < fit.order < 1.1, str(fit)
    m_exact, s_exact = exact_linear_moments(T)
    m, s = scheme_moments(diffrax.Heun(), "gaussian", hs[-1], stratonovich=False)
    assert max(np.max(np.abs(m - m_exact)), np.max(np.abs(s - s_exact))) > 100 * errs[-1]


def test_simulate_sde_platen_matches_its_exact_scheme_moments():
    """simulate_sde wires PlatenWeak2's increments right: its ensemble mean matches the scheme's exact
    expectation (enumerated) within 4 standard errors. [theory: SDE-6]"""
    h = 0.25
    m_scheme, s_scheme = scheme_moments(PlatenWeak2(), "weak2", h)
    res = simulate_sde(
        linear_sde(),
        None,
        X0,
        lr=1.0,
        n_steps=1,
        solver=PlatenWeak2(),
        key=0,
        ensemble=sgdsde.Ensemble(n_paths=200_000, dtype=np.float64),
        record=sgdsde.Record(observables=("theta",)),
        stepping=sgdsde.Fixed(substeps=round(1 / h)),
    )
    mean, se = res.final("theta")
    assert np.all(np.abs(mean - m_scheme) < 4 * se), (mean, m_scheme, se)
    res_e = simulate_sde(
        linear_sde(),
        None,
        X0,
        lr=1.0,
        n_steps=1,
        key=1,
        ensemble=sgdsde.Ensemble(n_paths=200_000, dtype=np.float64),
        record=sgdsde.Record(observables=("theta",)),
        stepping=sgdsde.Fixed(substeps=round(1 / h)),
        increments=sgdsde.TwoPoint(),
    )
    m_two, _ = scheme_moments(diffrax.Euler(), "two_point", h)
    mean, se = res_e.final("theta")
    assert np.all(np.abs(mean - m_two) < 4 * se), (mean, m_two, se)


# --- SMEs against exact SGD on the Li–Tai–E quadratic (minibatch-noise.md §1(e), §9.4) ------------------


def lte_errors(order, etas, lam=2.0, x0=1.0, t_end=1.0):
    """max over k ≤ T/η of |E g(x_k) − E g(X_{kη})| for g = x and g = x², exact on both sides."""
    H, C = np.array([[lam]]), np.array([[lam**2]])
    out = {"x": [], "x2": [], "x_final": [], "x2_final": []}
    for eta in etas:
        n = round(t_end / eta)
        # the max over k is taken on 64 records of [0, T] (enough to locate it for these smooth curves)
        sgd = sgd_moments(H, [0.0], C, [x0], lr=eta, n_steps=n, record_every=max(1, n // 64))
        sde = sde_moments(H, [0.0], C, [x0], lr=eta, times=sgd.times, order=order)
        out["x"].append(np.max(np.abs(sgd.mean - sde.mean)))
        out["x_final"].append(abs(sgd.mean[-1, 0] - sde.mean[-1, 0]))
        m2 = lambda mo: mo.cov[:, 0, 0] + mo.mean[:, 0] ** 2
        out["x2"].append(np.max(np.abs(m2(sgd) - m2(sde))))
        out["x2_final"].append(abs(m2(sgd)[-1] - m2(sde)[-1]))
    return out


ETAS = 2.0 ** -np.arange(9, 14)


def test_sme1_weak_order_one_on_li_tai_e_quadratic():
    """SME-1 is a weak order-1 approximation of SGD: slopes ≈ 1 for g = x and g = x² on η = 2⁻⁹…2⁻¹³.
    [theory: SDE-1, QOU-1, QOU-2]"""
    errs = lte_errors(1, ETAS)
    for g in ("x", "x2"):
        fit = fit_order(ETAS, errs[g])
        # exact values; the §9.4 fit gave 1.001 (x) and 0.974 (x²) on 2⁻⁷…2⁻¹³
        assert 0.95 < fit.order < 1.05 and fit.lower > 0.9, (g, str(fit))
    assert abs(errs["x_final"][0] - 5.3e-4) < 0.01 * 5.3e-4  # §9.4: 5.3e-4 at η = 2⁻⁹, t = T


def test_sme2_weak_order_two_on_li_tai_e_quadratic():
    """SME-2 is weak order 2: slopes ≈ 2 for g = x and g = x², error 1.4e-6 at η = 2⁻⁹ (§9.4).
    [theory: SDE-2]"""
    errs = lte_errors(2, ETAS)
    for g in ("x", "x2"):
        fit = fit_order(ETAS, errs[g])
        assert 1.95 < fit.order < 2.05, (g, str(fit))
    assert abs(errs["x_final"][0] - 1.4e-6) < 0.05 * 1.4e-6


def test_cancellation_pitfall_at_large_eta():
    """At t = T and η = 2⁻⁴…2⁻⁶ the mean² and variance errors of SME-1 nearly cancel for g = x² (§9.4), so a
    fit there is far from order 1; g = x and the max over k ≤ T/η are immune. [theory: SDE-1]"""
    big = 2.0 ** -np.arange(4, 7)
    errs = lte_errors(1, big)
    assert fit_order(big, errs["x2_final"]).order < 0  # the error grows as η shrinks: a sign change
    assert fit_order(big, errs["x_final"]).order > 0.9
    assert fit_order(big, errs["x2"]).order > 0.8


def test_sme_orders_multidimensional_quadratic():
    """d = 4, random SPD H and noise C: SME-1 order 1, SME-2 order 2 for E θ, E‖θ‖² and E L.
    [theory: SDE-1, SDE-2]"""
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    H = Q @ np.diag([0.5, 1.0, 1.5, 2.0]) @ Q.T
    G = rng.normal(size=(4, 4))
    C = G @ G.T / 4
    ts, x0 = rng.normal(size=4), rng.normal(size=4) + 1.0
    etas = 2.0 ** -np.arange(8, 12)
    for order in (1, 2):
        errs = {"theta": [], "sq_norm": [], "loss": []}
        for eta in etas:
            sgd = sgd_moments(H, ts, C, x0, lr=eta, n_steps=round(1 / eta), record_every=round(1 / eta) // 8)
            sde = sde_moments(H, ts, C, x0, lr=eta, times=sgd.times, order=order)
            a, b = sgd.expectations(H, ts), sde.expectations(H, ts)
            for g in errs:
                errs[g].append(np.max(np.abs(a[g] - b[g])))
        for g, e in errs.items():
            fit = fit_order(etas, e)
            assert abs(fit.order - order) < 0.08, (order, g, str(fit))


# --- a nonlinear model by Monte Carlo --------------------------------------------------------------------


@pytest.mark.parametrize("noise_name", ["label", "minibatch"])
def test_sme1_weak_order_one_diagonal_network_monte_carlo(noise_name):
    """SME-1 is weak order 1 for SGD on the diagonal network u⊙u − v⊙v with label noise (full batch, ±σ) and
    with minibatch noise (B = 1): max over records of |E θ_SGD − E Θ_SDE| fitted over η = 0.1, 0.05, 0.025 at
    T = 1. The SDE is integrated by PlatenWeak2 with dt = η/4 (its O(dt²) error is below the O(η) one).
    Records every 2 steps at every η, the max taken over those at t = 0.2, 0.4, …, 1 (the same numbers as
    records every n/5 steps: recording draws nothing), so the three η share one compiled program per method.
    [theory: SDE-1]"""
    import sgdsde
    from sgdsde.analysis import WeakError, weak_error

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 2))
    problem = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(2), X, X @ np.array([1.0, -0.5]))
    noise = sgdsde.LabelNoise(0.5) if noise_name == "label" else sgdsde.MinibatchNoise(1)
    th0 = np.array([0.3, 1.2, 0.9, 0.2])  # away from the minimum: the drift's O(η) error dominates
    etas = np.array([0.1, 0.05, 0.025])
    errs, ses = [], []
    for i, eta in enumerate(etas):
        n = round(1.0 / eta)
        kw = dict(
            lr=eta,
            n_steps=n,
            ensemble=sgdsde.Ensemble(n_paths=10_000, dtype=np.float64),
            record=sgdsde.Record(every=2, observables=("theta",)),
        )
        sgd = sgdsde.simulate_sgd(problem, noise, th0, key=10 + i, **kw)
        sde = simulate_sde(
            problem, noise, th0, key=100 + i, solver=PlatenWeak2(), **kw, stepping=sgdsde.Fixed(substeps=4)
        )
        w = weak_error(sgd, sde)
        at = np.asarray(sgd.steps) % (n // 5) == 0  # t = 0, 0.2, …, 1 (the first is skipped by max_error)
        assert at.sum() == 6
        w = WeakError(w.times[at], {"theta": w.error["theta"][at]}, {"theta": w.stderr["theta"][at]})
        e, se = w.max_error("theta")
        errs.append(e), ses.append(se)
    fit = fit_order(etas, errs, ses)
    # errors are 20-40 standard errors (10,000 paths each); the band is ±0.15 around 1
    assert abs(fit.order - 1) < 0.15, (str(fit), errs, ses)
    assert errs[-1] > 8 * ses[-1]
