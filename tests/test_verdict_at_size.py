"""The L + λR verdict at size (issue 24): above ``MAX_DENSE_PARAMS`` parameters the stationary point, its
classification, the regularizers and the zero-loss projection never form a d × d (or d × n) array. Each
matrix-free piece is held to the dense path on a small FunctionModel with the switch forced, and the traced
programs are searched for d²-sized intermediates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
import scipy.optimize
from helpers import LOSSES
from test_function_model import _max_intermediate  # the d·n-intermediate search of FMOD-2/3, reused

import sgdsde as sd
from sgdsde import _problem  # internal: the size switch, lowered to force the matrix-free path
from sgdsde._curvature import lanczos, minres, steihaug_cg
from sgdsde.implicit import (
    HessianTraceRegularizer,
    OutputGradientNormRegularizer,
    TraceLogRegularizer,
    _stationary,
    stationary_point,
)
from sgdsde.implicit._flow import project_to_zero_loss
from sgdsde.implicit._stationary import (
    _derivatives,
    _derivatives_matrix_free,
    _newton_krylov,
    _solvers,
    objective_function,
    objective_hvp,
)
from sgdsde.implicit._verdict import _project_matrix_free, project_matrix_free


def _net(p, width, K=1, seed=0):
    rng = np.random.default_rng(seed)
    a_shape = (width,) if K == 1 else (width, K)
    params = {
        "W": jnp.asarray(rng.normal(size=(width, p)) / np.sqrt(p)),
        "a": jnp.asarray(rng.normal(size=a_shape) / np.sqrt(width)),
    }
    return sd.FunctionModel(lambda q, x: jnp.tanh(q["W"] @ x) @ q["a"], params, p)


def _teacher_problem():
    """A tanh net f = aᵀtanh(Wx) (p = 10, width 5: d = 55) on n = 100 > d examples labelled by itself at θ_T:
    L = 0 at θ_T with λ_min(G) ≈ 4.5e-5, so for λ = 1e-5 L + λR has a minimum ≈ 0.08 from θ_T, where Newton
    starts and converges."""
    rng = np.random.default_rng(0)
    params = {
        "W": jnp.asarray(rng.normal(size=(5, 10))),
        "a": jnp.asarray(rng.choice([-1.0, 1.0], size=5) * (1 + rng.uniform(size=5))),
    }
    model = sd.FunctionModel(lambda q, x: jnp.tanh(q["W"] @ x) @ q["a"], params, 10)
    X = rng.normal(size=(100, 10)) / np.sqrt(10)
    theta_t = model.init()
    return sd.Problem(model, X, np.asarray(model.outputs(theta_t, jnp.asarray(X)))), theta_t


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_regularizers_matrix_free_equal_dense(loss):
    """R and ∇R by the chunked matrix-free forms equal the dense ones (jax.hessian's trace, the d × n gradient
    matrix) for each loss: ¼tr∇²L from d second directional derivatives, Σ‖∇f_i‖² from per-example gradients.
    Both are exact sums in another order: agreement to 1e-10 relatively (rounding of ~d terms of size ≤ |R|)
    [theory: CURV-5]."""
    loss_fn, K, labels = LOSSES[loss]
    model = _net(3, 5, K, seed=2)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 3))
    y = rng.choice(np.asarray(labels), size=7)
    problem = sd.Problem(model, X, y, loss=loss_fn)
    theta = model.init() + 0.1 * jnp.asarray(rng.normal(size=model.n_params))
    regs = [HessianTraceRegularizer(), OutputGradientNormRegularizer()]

    @jax.jit
    def both(th):
        dense = [jax.value_and_grad(lambda t, r=r: r.value(problem, t))(th) for r in regs]
        free = [jax.value_and_grad(lambda t, r=r: r.matrix_free_value(problem, t))(th) for r in regs]
        return dense, free

    dense, free = both(theta)
    for reg, (v, g), (vf, gf) in zip(regs, dense, free, strict=True):
        np.testing.assert_allclose(vf, v, rtol=1e-10, err_msg=reg.name)
        np.testing.assert_allclose(gf, g, rtol=0, atol=1e-10 * float(jnp.max(jnp.abs(g))), err_msg=reg.name)


@pytest.fixture(scope="module")
def dense_points():
    """The teacher problem's minimum of L + λΣ‖∇f_i‖² (λ = 1e-5/(4n)) and a saddle problem's saddle at 0, each by
    the dense Newton (method="newton"), shared by the matrix-free tests that are held to them."""
    problem, theta_t = _teacher_problem()
    reg = OutputGradientNormRegularizer()
    # Σ‖∇f_i‖² ≈ 4n·¼tr∇²L near Γ (REG-3): λ/(4n) for the pull of ¼tr∇²L at λ = 1e-5
    lam = 1e-5 / (4 * problem.n_data)
    saddle_problem = sd.Problem(
        problem.model, problem.X, np.tanh(problem.X[:, 0])
    )  # same shapes: one compile
    near_zero = 0.1 * np.random.default_rng(1).normal(size=problem.n_params)
    dense = stationary_point(problem, reg, lam, theta_t, method="newton")
    dense_saddle = stationary_point(saddle_problem, reg, 3e-4, near_zero, method="newton")
    return problem, theta_t, lam, saddle_problem, near_zero, dense, dense_saddle


def test_stationary_point_matrix_free_equals_dense(monkeypatch, dense_points):
    """The stationary point of L + λΣ‖∇f_i‖² by the matrix-free Newton–MINRES (HVPs of L + λR) equals the dense
    Newton's to 1e-8 (both end at ‖∇F‖ ≤ 1e-12, so each θ is within ‖∇F‖/λ_min ≤ 1e-12/5e-5 of the exact point),
    both call it a minimum, and d Lanczos steps on HVPs (exact up to rounding, CURV-1) give the dense λ_min and
    λ_max to 1e-8 relatively, within their residual bounds. A saddle: θ = 0 is a stationary point of it with
    negative curvature (the first derivatives of f = aᵀtanh(Wx) vanish there; −‖(1/n)Σ y_i x_i‖ couples a and W,
    and at λ = 3e-4 λR's curvature leaves ∇²F indefinite with |eigenvalues| ≥ 0.08); from 0.1·N(0, I) both
    Newtons (method="newton", a root finder: MINRES on the indefinite ∇²F) land on it, within
    2·1e-12/min|e| + rounding of each other, and the matrix-free path calls it a saddle with the dense λ_min.
    (¼ tr∇²L enters the same solver through its R and ∇R, held to the dense ones above; its dense Newton
    compiles 4th derivatives, too slow for the suite.) [theory: CURV-5, CURV-6, CURV-1]"""
    problem, theta_t, lam, saddle_problem, near_zero, dense, dense_saddle = dense_points
    reg = OutputGradientNormRegularizer()
    d = problem.n_params
    monkeypatch.setattr(_problem, "MAX_DENSE_PARAMS", 0)
    free = stationary_point(problem, reg, lam, theta_t, method="newton", lanczos_iters=d)
    free_saddle = stationary_point(saddle_problem, reg, 3e-4, near_zero, method="newton", lanczos_iters=d)
    assert free.matrix_free and not dense.matrix_free
    assert dense.kind == free.kind == "minimum" and max(dense.residual, free.residual) <= 1e-12
    np.testing.assert_allclose(free.theta, dense.theta, rtol=0, atol=1e-8)
    e, ritz, err = dense.hessian_eigenvalues, free.hessian_eigenvalues, free.eigenvalue_errors
    assert err is not None and len(ritz) == d
    np.testing.assert_allclose(ritz[[0, -1]], e[[0, -1]], rtol=1e-8)
    monkeypatch.setattr(
        _problem, "MAX_DENSE_PARAMS", 512
    )  # the dense eigenvalues at the free θ (cached program)
    e_here = np.asarray(_derivatives(problem, reg, jnp.asarray(lam), jnp.asarray(free.theta))[1])
    monkeypatch.setattr(_problem, "MAX_DENSE_PARAMS", 0)
    assert np.all(np.abs(ritz[[0, -1]] - e_here[[0, -1]]) <= err[[0, -1]] + 1e-12 * e[-1])
    assert free.objective == pytest.approx(dense.objective, rel=1e-12)
    assert "lambda_min (Lanczos)" in free.table()
    assert dense_saddle.kind == free_saddle.kind == "saddle"
    assert max(dense_saddle.residual, free_saddle.residual) <= 1e-12
    e = dense_saddle.hessian_eigenvalues
    assert e[0] < -0.08
    bound = 2e-12 / np.min(np.abs(e)) + 1e-14  # ‖θ − θ*‖ ≤ ‖∇F‖/min|e| for each, plus rounding
    np.testing.assert_allclose(free_saddle.theta, dense_saddle.theta, rtol=0, atol=bound)
    np.testing.assert_allclose(free_saddle.hessian_eigenvalues[[0, -1]], e[[0, -1]], rtol=1e-9)


def test_minres_solves_indefinite_and_singular_systems():
    """MINRES on a symmetric indefinite H (eigenvalues of both signs) reaches ‖b − Hx‖ ≤ 1e-12 with the dense
    solve's x; on a singular consistent system (b ∈ range H) it returns the minimum-norm solution (its iterates
    stay in K(H, b) ⊂ range H); on an inconsistent one it stops by the least-squares test with the least-squares
    residual (b's part in the null space); the reported residual is the true one [theory: CURV-6]."""
    rng = np.random.default_rng(7)
    U, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    e = np.r_[np.zeros(10), rng.normal(size=30)]
    mats = {"indefinite": (U * (e + np.where(e >= 0, 0.1, -0.1))) @ U.T, "singular": (U * e) @ U.T}
    solve = jax.jit(lambda H, b: minres(lambda v: H @ v, b, 1e-12, 200))
    b = rng.normal(size=40)
    H = mats["indefinite"]
    assert np.linalg.eigvalsh(H)[0] < 0 < np.linalg.eigvalsh(H)[-1]
    x, res, k = solve(jnp.asarray(H), jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(H, b), rtol=0, atol=1e-10)
    assert res <= 1e-12 and np.linalg.norm(H @ np.asarray(x) - b) <= 1e-11 and 0 < k <= 40
    H = mats["singular"]
    consistent = H @ rng.normal(size=40)
    x, res, _ = solve(jnp.asarray(H), jnp.asarray(consistent))
    np.testing.assert_allclose(np.asarray(x), np.linalg.pinv(H) @ consistent, rtol=0, atol=1e-10)
    x, res, k = solve(jnp.asarray(H), jnp.asarray(consistent + U[:, 0]))  # ‖null part‖ = 1
    assert k < 200 and abs(float(res) - 1) < 1e-8
    assert abs(np.linalg.norm(H @ np.asarray(x) - consistent - U[:, 0]) - 1) < 1e-8


def test_trust_region_newton_lands_on_the_dense_minimum_and_leaves_the_saddle(monkeypatch, dense_points):
    """``stationary_point(method="bfgs+newton")`` with the size switch forced is the trust-region Newton–CG from
    θ_init (Steihaug's CG on HVPs of L + λΣ‖∇f_i‖², the matrix-free R; no L-BFGS). From the teacher
    θ_T + 10⁻²·N(0, I) it ends within ‖∇F‖/λ_min + rounding of the dense Newton's minimum; from 0.1·N(0, I), where
    the root finders (dense Newton, Newton–MINRES) land on the saddle at 0, it follows negative curvature down to
    a minimum instead: the dense Newton polishing its end is there at once (≤ 1e-10 away: its end has
    ‖∇F‖ ≤ 1e-12, λ_min ≥ 2e-3) with all dense eigenvalues positive, F is below the saddle's, and d Lanczos steps
    call it a minimum [theory: CURV-7, CURV-5]."""
    problem, theta_t, lam, saddle_problem, near_zero, dense, dense_saddle = dense_points
    reg = OutputGradientNormRegularizer()
    d = problem.n_params
    start = theta_t + 1e-2 * np.random.default_rng(2).normal(size=d)
    monkeypatch.setattr(_problem, "MAX_DENSE_PARAMS", 0)
    free = stationary_point(problem, reg, lam, start, method="bfgs+newton", lanczos_iters=d, gtol=1e-12)
    assert free.matrix_free and free.kind == "minimum" and free.residual <= 1e-12
    assert "descent_steps" not in _stationary.STATS and 0 < _stationary.STATS["newton_steps"] < 2000
    # ‖θ − θ*‖ ≤ ‖∇F‖/λ_min for each (λ_min ≈ 5e-5), plus the dense point's own ≤ 1e-12 residual
    np.testing.assert_allclose(
        free.theta, dense.theta, rtol=0, atol=2e-12 / dense.hessian_eigenvalues[0] + 1e-12
    )
    free = stationary_point(
        saddle_problem, reg, 3e-4, near_zero, method="bfgs+newton", lanczos_iters=d, gtol=1e-12
    )
    assert free.matrix_free and free.kind == "minimum" and free.residual <= 1e-12
    monkeypatch.setattr(_problem, "MAX_DENSE_PARAMS", 512)
    polish = stationary_point(saddle_problem, reg, 3e-4, free.theta, method="newton")
    assert polish.kind == "minimum" and polish.hessian_eigenvalues[0] > 2e-3
    np.testing.assert_allclose(free.theta, polish.theta, rtol=0, atol=1e-10)
    assert polish.objective < dense_saddle.objective - 0.03  # 0.0139 against the saddle's 0.0500


def _model_decrease(H, g, p):
    return -(g @ p + 0.5 * p @ H @ p)


def _exact_trust_region_decrease(H, g, radius):
    """The global minimum of m(p) = gᵀp + ½pᵀHp on ‖p‖ ≤ Δ (Moré–Sorensen: p = −(H + μI)⁻¹g with μ ≥ max(0, −λ_min)
    and ‖p‖ = Δ unless μ = 0; g is generic here, so not the "hard case"), by the eigendecomposition."""
    e, Q = np.linalg.eigh(H)
    gh = Q.T @ g
    norm = lambda mu: np.linalg.norm(gh / (e + mu))  # noqa: E731
    if e[0] > 0 and norm(0.0) <= radius:
        mu = 0.0
    else:
        lo = max(0.0, -e[0]) + 1e-14
        hi = lo + np.linalg.norm(g) / radius + 1.0
        mu = scipy.optimize.brentq(lambda m: norm(m) - radius, lo, hi, xtol=1e-15, rtol=1e-15)
    return _model_decrease(H, g, -Q @ (gh / (e + mu)))


def test_steihaug_cg_against_dense_trust_region_solutions():
    """Steihaug–Toint CG on dense 40 × 40 systems (CURV-7): (a) H ≻ 0 with 8 distinct eigenvalues and a large radius:
    it is CG, so it ends at the Newton step −H⁻¹g (to 1e-10: rounding of a condition number ≤ 20) inside the ball
    within 8 products (the Krylov space of 8 distinct eigenvalues is invariant); (b) the same H with a radius below
    the Cauchy step's length: the first iterate leaves the ball, so p = −Δg/‖g‖ exactly, one product; (c) a radius
    between: p on the boundary; (d) H indefinite (both signs) and a large radius: negative curvature is met and
    followed to the boundary (not the saddle-seeking −H⁻¹g); (e) gᵀHg < 0: the first direction −g has negative
    curvature, p = −Δg/‖g‖. In every case the reported model decrease is the dense gᵀp + ½pᵀHp's negative (to
    1e-12 relatively: rounding) and it lies between the Cauchy point's decrease and the exact trust-region
    minimum's (Moré–Sorensen by eigh), Steihaug's guarantee [theory: CURV-7]."""
    rng = np.random.default_rng(11)
    U, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    spd = (U * np.repeat(np.linspace(1.0, 20.0, 8), 5)) @ U.T
    indefinite = (U * np.r_[-np.geomspace(0.1, 3.0, 10), np.geomspace(0.05, 5.0, 30)]) @ U.T
    g = rng.normal(size=40)
    e0 = U[:, 0]  # the most negative direction of `indefinite`: gᵀHg = −3 ‖e0‖² + small
    solve = jax.jit(lambda H, g, radius: steihaug_cg(lambda v: H @ v, g, radius, 1e-12, 200))
    cases = {
        "newton": (spd, g, 100.0),
        "first step clipped": (spd, g, 1e-3),
        "boundary": (spd, g, 0.3 * np.linalg.norm(np.linalg.solve(spd, g))),
        "negative curvature": (indefinite, g, 100.0),
        "negative first direction": (indefinite, e0 + 0.01 * g, 2.0),
    }
    for name, (H, gv, radius) in cases.items():
        p, dec, its, hit = solve(jnp.asarray(H), jnp.asarray(gv), radius)
        p, dec, its, hit = np.asarray(p), float(dec), int(its), bool(hit)
        np.testing.assert_allclose(dec, _model_decrease(H, gv, p), rtol=1e-12, err_msg=name)
        curv = gv @ H @ gv
        gn = np.linalg.norm(gv)
        tau = 1.0 if curv <= 0 else min(1.0, gn**3 / (radius * curv))
        cauchy = _model_decrease(H, gv, -tau * radius * gv / gn)
        assert cauchy * (1 - 1e-12) <= dec <= _exact_trust_region_decrease(H, gv, radius) * (1 + 1e-12), name
        if name == "newton":
            assert not hit and its <= 8
            np.testing.assert_allclose(p, -np.linalg.solve(H, gv), rtol=0, atol=1e-10)
        else:
            assert hit and abs(np.linalg.norm(p) - radius) <= 1e-12 * radius, name
        if name in ("first step clipped", "negative first direction"):
            assert its == 1
            np.testing.assert_allclose(p, -radius * gv / gn, rtol=0, atol=1e-14 * radius, err_msg=name)
    assert np.linalg.eigvalsh(indefinite)[0] < 0 and e0 @ indefinite @ e0 < 0


def test_lanczos_residual_bounds_and_interlacing():
    """With fewer steps than d, the smallest Ritz value is ≥ λ_min and the largest ≤ λ_max (interlacing), and an
    eigenvalue lies within each Ritz value's residual bound |β_k s_ki| (here the extreme ones, which the nearest
    eigenvalues are) [theory: CURV-5]."""
    rng = np.random.default_rng(6)
    A = rng.normal(size=(60, 60))
    H = jnp.asarray((A + A.T) / 2)
    e = np.linalg.eigvalsh(np.asarray(H))
    ritz, err = jax.jit(lambda v: lanczos(lambda u: H @ u, v, 20, jax.random.key(1)))(jnp.ones(60))
    ritz, err = np.asarray(ritz), np.asarray(err)
    eps = 1e-12 * np.max(np.abs(e))  # rounding
    assert e[0] - eps <= ritz[0] and ritz[-1] <= e[-1] + eps
    nearest = np.min(np.abs(ritz[:, None] - e[None, :]), axis=1)
    assert np.all(nearest <= err + eps)
    assert err[0] < 1 and err[-1] < 1  # 20 steps: the ends have started to converge (spread ≈ 22)


def test_projection_matrix_free_equals_dense():
    """The verdict's projection onto Γ = {f_i = y_i} by CG on JJᵀ (VJP then JVP) lands where the dense
    minimum-norm Gauss–Newton projection does (the same iteration; CG solves each n × n system to 1e-13):
    agreement to 1e-10 [theory: CURV-5]."""
    model = _net(4, 10)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 4))
    problem = sd.Problem(model, X, np.tanh(X[:, 0]))
    dense = project_to_zero_loss(problem, model.init())
    free = project_matrix_free(problem, model.init())
    assert dense is not None and free is not None
    np.testing.assert_allclose(free, dense, rtol=0, atol=1e-10)


def test_no_d_squared_intermediate():
    """The traced programs of the matrix-free verdict hold nothing of d·n entries (here n < d, so nothing of d²):
    ∇F, v ↦ ∇²F v, the Lanczos classification with L and R, and the zero-loss projection, for both
    regularizers; the whole Newton–MINRES and L-BFGS solves hold nothing of d² entries (MINRES keeps seven
    d-vectors). The dense path's program does (an eigvalsh of d × d), so the search can fail
    [theory: CURV-5, CURV-6, FMOD-2]."""
    model = _net(60, 4)  # d = 244: a chunk of 32 directions' activations (32·width·n, a few copies) < d·n, d²
    n = 40
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 60))
    problem = sd.Problem(model, X, np.tanh(X[:, 0]))
    d = model.n_params
    assert n < d
    theta = jax.ShapeDtypeStruct((d,), jnp.float64)
    lam = jnp.asarray(1e-3)
    descent, _ = _solvers(True, 1e-12, 1e-14)
    for reg in (HessianTraceRegularizer(), OutputGradientNormRegularizer()):
        programs = {
            "grad F": jax.grad(objective_function(problem, reg, lam, True)),
            "HVP of F": lambda th, reg=reg: objective_hvp(problem, reg, lam, th)(th),
            "Lanczos, L, R": lambda th, reg=reg: _derivatives_matrix_free(problem, reg, lam, th, 8),
            "projection": lambda th: _project_matrix_free(problem, th, 1e-10, 3),
        }
        for what, fn in programs.items():
            assert _max_intermediate(jax.make_jaxpr(fn)(theta).jaxpr) < d * n, f"{reg.name}: {what}"
        args = (problem, reg, lam, True)
        solves = {
            "Newton-MINRES": lambda th, a=args: _newton_krylov(th, a, jnp.asarray(1e-9), 5)[0],
            "L-BFGS": lambda th, a=args: (
                optx.minimise(
                    lambda t, a: objective_function(*a)(t), descent, th, a, max_steps=5, throw=False
                ).value
            ),
        }
        for what, fn in solves.items():
            assert _max_intermediate(jax.make_jaxpr(fn)(theta).jaxpr) < d * d, f"{reg.name}: {what}"
        dense = jax.make_jaxpr(lambda th, reg=reg: _derivatives(problem, reg, lam, th))(theta)
        assert _max_intermediate(dense.jaxpr) >= d * d


def test_trace_log_refused_at_size(monkeypatch):
    """The tr-log regularizer needs every eigenvalue of ∇²L: above the size limit its domain check, its value,
    its observables and a stationary-point solve raise a ValueError naming it and the limit, and ``predict`` lists
    it among the failures instead of forming d × d [theory: CURV-5]."""
    monkeypatch.setattr(_problem, "MAX_DENSE_PARAMS", 0)  # every d counts as "at size"
    problem, theta_t = _teacher_problem()
    reg = TraceLogRegularizer(0.1)
    match = r"R_trace_log .* refused at d = 55 > MAX_DENSE_PARAMS = 0"
    with pytest.raises(ValueError, match=match):
        reg.check_domain(problem, theta_t)
    with pytest.raises(ValueError, match=match):
        reg.value(problem, theta_t)
    with pytest.raises(ValueError, match=match):
        reg.matrix_free_value(problem, theta_t)
    for observable in (reg.observable(), reg.domain_observable()):
        with pytest.raises(ValueError, match=match):
            observable(problem, theta_t)
    with pytest.raises(ValueError, match=match):
        stationary_point(problem, reg, 1e-3, theta_t)
    pred = sd.implicit.predict(problem, sd.LabelNoise(0.1), 0.1, theta_t, regularizers=[reg], method="newton")
    assert not pred.points and "MAX_DENSE_PARAMS" in pred.failures["R_trace_log"]


def test_regularizer_observables_leave_out_r_at_size(monkeypatch):
    """``regularizer_observables(lr, problem=…)`` records both R (and tr-log's domain) below the size limit and
    neither above it (tr-log has no matrix-free form; ¼tr∇²L would cost d HVPs per record and path), so a run
    recorded for the verdict at size forms no d × d matrix [theory: CURV-5]."""
    from sgdsde.implicit._prediction import DOMAIN_KEY

    problem, _ = _teacher_problem()
    small = sd.implicit.regularizer_observables(0.1, problem=problem)
    monkeypatch.setattr(_problem, "MAX_DENSE_PARAMS", 0)
    large = sd.implicit.regularizer_observables(0.1, problem=problem)
    assert {"R_trace_log", "R_quarter_trace"} <= set(small)
    assert "theta" in large and set(small) - set(large) == {"R_trace_log", "R_quarter_trace", DOMAIN_KEY}
