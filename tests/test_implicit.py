"""Stationary points of L + λR, the prediction, the verdict's statistics, and the limiting flow."""

import dataclasses

import numpy as np
import pytest
from scipy.optimize import brentq

import sgdsde as s
from sgdsde import EnsembleResult
from sgdsde.implicit import (
    HessianTraceRegularizer,
    LimitingFlow,
    ProjectionError,
    StationaryPointError,
    TraceLogRegularizer,
    check_convergence,
    limiting_flow,
    predict,
    stationary_point,
)


def uv_toy():
    """f = u·v with one datum x = 1, y = 1: a width-1 linear two-layer net, θ = (w, a) = (u, v)."""
    return s.Problem(s.TwoLayerNetwork(1, 1, "linear"), np.ones((1, 1)), np.ones(1))


def test_stationary_point_uv_toy_closed_forms():
    """¼tr R: L + λ(u²+v²)/4 is stationary at u = v, uv = 1 − λ/2 exactly; tr-log R: the balanced point
    solves a 1-D equation in a² from H's eigenvalues 3a²−1 and 1−a² (solved independently by brentq).
    Both are minima; residual ≤ gtol. [theory: REG-6, REG-2]"""
    toy = uv_toy()
    eta = lam = 0.2
    quarter = stationary_point(toy, HessianTraceRegularizer(), lam, np.array([1.2, 0.9]))
    assert quarter.converged and quarter.kind == "minimum" and quarter.residual <= 1e-9
    np.testing.assert_allclose(quarter.theta, np.sqrt(1 - lam / 2) * np.ones(2), rtol=1e-10)

    def dF(p):  # d/dp of ½(p−1)² + λR(p) along u = v = √p, R = −(1/2η)[log(1−η(3p−1)/2) + log(1−η(1−p)/2)]
        return (p - 1) + lam / (2 * eta) * (
            1.5 * eta / (1 - eta * (3 * p - 1) / 2) - 0.5 * eta / (1 - eta * (1 - p) / 2)
        )

    p_star = brentq(dF, 0.5, 1.0, xtol=1e-15)
    tl = stationary_point(toy, TraceLogRegularizer(eta), lam, np.array([1.2, 0.9]))
    assert tl.converged and tl.kind == "minimum"
    np.testing.assert_allclose(tl.theta, np.sqrt(p_star) * np.ones(2), rtol=1e-10)
    # the tr-log point sits further off the zero-loss set than the ¼ tr one: large-η extra regularization
    assert tl.theta[0] * tl.theta[1] < quarter.theta[0] * quarter.theta[1]
    assert "converged" in str(tl) and "minimum" in tl.table()


def _uv_trace_log_offsets(eta, lam):
    """1 − p at the balanced tr-log point: the root near 1 of the cubic
    $(p-1)AB + \\frac{\\lambda}{4}(3B - A) = 0$, $A = 1 - \\eta(3p-1)/2$, $B = 1 - \\eta(1-p)/2$ (REG-14)."""
    P = np.polynomial.Polynomial
    A, B = P([1 + eta / 2, -1.5 * eta]), P([1 - eta / 2, eta / 2])
    roots = (P([-1.0, 1.0]) * A * B + lam / 4 * (3 * B - A)).roots()
    real = roots[np.abs(roots.imag) < 1e-12].real
    return 1 - real[np.argmin(np.abs(real - 1))]


def test_uv_toy_trace_log_point_closed_form_at_several_eta():
    """The tr-log point of the u·v toy at η = 0.1 … 0.6: our solver agrees with the cubic's root (rtol 1e-9 on θ,
    the solve's gtol); 1 − uv = λ(2 + η)/(4(1 − η)) + O(λ²) (checked on the cubic at λ = 1e-6, where the O(λ)
    relative remainder is below 1e-5), so SGD's first-order offset λ/(2(1 − η)) sits 2/3 of the way from the
    ¼tr offset λ/2 to it, at every η. [theory: REG-14]"""
    toy, lam = uv_toy(), 0.01
    for eta in (0.1, 0.25, 0.4, 0.6):
        tl = stationary_point(toy, TraceLogRegularizer(eta), lam, np.array([1.0, 1.0]))
        assert tl.converged and tl.kind == "minimum"
        p = 1 - _uv_trace_log_offsets(eta, lam)
        np.testing.assert_allclose(tl.theta, np.sqrt(p) * np.ones(2), rtol=1e-9)
        coef = _uv_trace_log_offsets(eta, 1e-6) / 1e-6
        assert coef == pytest.approx((2 + eta) / (4 * (1 - eta)), abs=1e-5)
        assert (1 / (2 * (1 - eta)) - 0.5) / (coef - 0.5) == pytest.approx(2 / 3, abs=1e-4)
    # at η = 0.4 the offsets are 0.5λ (¼tr), 0.833λ (SGD) and 1.0λ (tr-log), not 0.833λ for tr-log
    assert _uv_trace_log_offsets(0.4, 1e-6) / 1e-6 == pytest.approx(1.0, abs=1e-5)


def _uv_sgd_mean_series(order_pairs: int = 2):
    """Coefficients c_1, c_2 of E[uv] = 1 + c_1λ + c_2λ² for balanced label-noise SGD on the u·v toy: the
    stationary moment hierarchy of $\\rho = (uv - 1)/\\sqrt{\\lambda}$ solved order by order in $\\sqrt{\\lambda}$
    (REG-14), symbolically in η."""
    import sympy as sp

    eta, h, rho, xi = sp.symbols("eta h rho xi")
    # one step of p = a², ε = σξ with σ = h/√η (λ = ησ² = h²), ξ = ±1
    step = sp.expand(((1 + h * rho) * (1 + h * (-eta * rho + sp.sqrt(eta) * xi)) ** 2 - 1) / h)
    K = 2 * order_pairs
    polys = {}
    for k in range(1, K + 1):
        even = sum(t for t in sp.Add.make_args(sp.expand(step**k)) if sp.degree(t, xi) % 2 == 0)
        polys[k] = sp.Poly(sp.expand(even.subs(xi, 1)), h, rho)  # E over ξ: odd powers vanish, ξ² = 1
    c = {}
    for n in range(K):
        for k in range(K + 1 - n):
            if k == 0:
                c[(0, n)] = sp.Integer(1 if n == 0 else 0)
                continue
            rhs, diag = 0, 0
            for (j, i), coef in polys[k].terms():
                if j > n:
                    continue
                if j == 0 and i == k:
                    diag += coef
                else:
                    rhs += coef * c[(i, n - j)]
            c[(k, n)] = sp.simplify(rhs / (1 - diag))
    return eta, [c[(1, 2 * m - 1)] for m in range(1, order_pairs + 1)]


def test_uv_toy_sgd_stationary_mean_of_uv_at_several_eta():
    """Balanced label-noise SGD on the u·v toy: (1) the moment expansion gives E[uv] = 1 − λ/(2(1 − η)) +
    c₂(η)λ² exactly in η (sympy, compared with REG-14's closed forms symbolically); (2) simulate_sgd's
    stationary E[uv] (2000 paths, time average over steps 500–3000, SE from per-path time averages) matches
    it at (η, λ) = (0.2, 0.02), (0.4, 0.02), (0.6, 0.005) within 4 SE + |c₂|λ² (the λ³ remainder is below
    |c₂|λ² there: |c₃/c₂|λ ≤ 0.2), and stands ≥ 5 SE from the ¼tr point's uv (1 − λ/2) and from the tr-log
    point's (the cubic's root), so the test tells the three apart. [theory: REG-14]"""
    import sympy as sp

    eta_s, (c1, c2) = _uv_sgd_mean_series()
    assert sp.simplify(c1 + 1 / (2 * (1 - eta_s))) == 0
    c2_closed = (
        eta_s
        * (184 * eta_s**4 - 376 * eta_s**3 + 280 * eta_s**2 - 85 * eta_s + 9)
        / (8 * (1 - eta_s) ** 3 * (2 * eta_s**2 - 2 * eta_s + 1) * (4 * eta_s**2 - 6 * eta_s + 3))
    )
    assert sp.simplify(c2 - c2_closed) == 0
    cases = [(0.2, 0.02), (0.4, 0.02), (0.6, 0.005)]
    etas = sorted({e for e, _ in cases})
    sigmas = sorted({float(np.sqrt(lam / e)) for e, lam in cases})
    sw = s.sweep(
        s.simulate_sgd,
        uv_toy(),
        s.LabelNoise(1.0, 1),
        np.ones(2),
        grid={"lr": etas, "sigma": sigmas},
        n_steps=3000,
        key=5,
        ensemble=s.Ensemble(n_paths=2000, dtype=np.float64),
        record=s.Record(every=10, observables=["theta"], n_saved_paths=2000),
    )
    for eta, lam in cases:
        sigma = float(np.sqrt(lam / eta))
        (r,) = [r for pt, r in zip(sw.points, sw.results, strict=True) if pt == {"lr": eta, "sigma": sigma}]
        uv = np.mean(r.paths[50:, :, 0] * r.paths[50:, :, 1], axis=0)
        mean, se = uv.mean(), uv.std(ddof=1) / np.sqrt(uv.size)
        c2v = float(c2_closed.subs(eta_s, eta))
        target = 1 - lam / (2 * (1 - eta)) + c2v * lam**2
        assert abs(mean - target) <= 4 * se + abs(c2v) * lam**2, (eta, lam, mean, se, target)
        assert abs(mean - (1 - lam / 2)) >= 5 * se, (eta, mean)
        assert abs(mean - (1 - _uv_trace_log_offsets(eta, lam))) >= 5 * se, (eta, mean)


def test_stationary_point_saddle_inertia():
    """Newton from the origin finds the saddle θ = 0 of the toy: ∇²F = [[λ/2, −1], [−1, λ/2]]. [theory: REG-6]"""
    sp = stationary_point(uv_toy(), HessianTraceRegularizer(), 0.2, np.zeros(2), method="newton")
    assert sp.converged and sp.kind == "saddle" and sp.inertia == (1, 1, 0)
    np.testing.assert_allclose(np.sort(sp.hessian_eigenvalues), [0.1 - 1, 0.1 + 1], atol=1e-12)


def test_stationary_point_failures_are_not_predictions():
    """A solve that cannot converge raises (or flags, saying so); bad arguments raise ValueError;
    the tr-log R outside η λ_max < 2 raises naming the bound. [theory: REG-6, REG-1]"""
    toy = uv_toy()
    reg = HessianTraceRegularizer()
    with pytest.raises(StationaryPointError, match="gtol"):
        stationary_point(toy, reg, 0.2, np.array([3.0, 0.1]), method="bfgs", max_steps=1)
    flagged = stationary_point(
        toy, reg, 0.2, np.array([3.0, 0.1]), method="bfgs", max_steps=1, on_failure="flag"
    )
    assert not flagged.converged and "NOT CONVERGED" in flagged.table()
    with pytest.raises(ValueError, match="lam"):
        stationary_point(toy, reg, -0.1, np.ones(2))
    with pytest.raises(ValueError, match="theta_init"):
        stationary_point(toy, reg, 0.1, np.ones(3))
    with pytest.raises(ValueError, match="method"):
        stationary_point(toy, reg, 0.1, np.ones(2), method="sgd")
    with pytest.raises(ValueError, match="regularizer"):
        stationary_point(toy, "trace", 0.1, np.ones(2))
    with pytest.raises(ValueError, match="cg_max_steps"):
        stationary_point(toy, reg, 0.1, np.ones(2), cg_max_steps=0)
    # at u = v = 1, ∇²L = [[1, 1], [1, 1]] has λ_max = 2, so η = 1 is at the edge
    with pytest.raises(ValueError, match="eta must be <"):
        stationary_point(toy, TraceLogRegularizer(1.0), 0.1, np.ones(2))


def test_predict_lists_out_of_domain_regularizer_as_failure():
    """predict: λ = ησ²/B; at η beyond 2/λ_max the tr-log entry is a failure with its reason, and
    asking for it raises instead of returning a number. [theory: REG-5, REG-6]"""
    toy = uv_toy()
    pred = predict(toy, s.LabelNoise(1.0, batch_size=1), 0.1, np.ones(2))
    assert pred.lam == pytest.approx(0.1)
    assert set(pred.points) == {"R_trace_log", "R_quarter_trace"} and pred.primary == "R_trace_log"
    bad = predict(toy, s.LabelNoise(1.0, batch_size=1), 1.0, np.ones(2))
    assert "R_trace_log" in bad.failures and "NO PREDICTION" in bad.table()
    assert bad.primary == "R_quarter_trace"
    with pytest.raises(ValueError, match="no prediction for R_trace_log"):
        bad.point("R_trace_log")
    with pytest.raises(ValueError, match="LabelNoise"):
        predict(toy, s.MinibatchNoise(1), 0.1, np.ones(2))


def fake_result(mean_theta, se_theta, n_paths=100, n_records=11, diverged=0, method="fake"):
    """An EnsembleResult with a constant mean θ and a given per-component standard error."""
    mean = np.broadcast_to(mean_theta, (n_records, len(mean_theta))).copy()
    var = np.broadcast_to(np.asarray(se_theta) ** 2 * n_paths, mean.shape).copy()
    return EnsembleResult(
        method=method,
        steps=np.arange(n_records),
        times=np.arange(n_records, dtype=float),
        mean={"theta": mean, "loss": np.zeros(n_records)},
        var={"theta": var, "loss": np.zeros(n_records)},
        count=np.full(n_records, n_paths),
        n_paths=n_paths,
        diverged=diverged,
        first_divergence_step=3 if diverged else None,
    )


def test_check_convergence_statistics():
    """The verdict: converged iff |avg − θ*| ≤ tol + k·floor, floor = √Σ SE²; the closer-R test uses the
    signed offset from the bisector with SE Σ|u_j| SE_j; divergence and a missing θ give verdicts,
    not numbers. [theory: REG-7]"""
    toy = uv_toy()
    pred = predict(toy, s.LabelNoise(1.0, batch_size=1), 0.2, np.ones(2))
    a = pred.point("R_trace_log").theta
    b = pred.point("R_quarter_trace").theta
    se = np.array([1e-4, 1e-4])
    runs = {
        "at tr-log": fake_result(a, se),
        "at quarter": fake_result(b, se),
        "far": fake_result(a + 0.5, se),
        "diverged": fake_result(a, se, diverged=2),
    }
    rep = check_convergence(toy, runs, pred, tol=0.0, k=3)
    assert rep["at tr-log"].verdict == "converged" and rep["at tr-log"].better_regularizer == "tr-log"
    assert rep["at tr-log"].distance_avg["R_trace_log"].value == pytest.approx(0, abs=1e-15)
    assert rep["at tr-log"].distance_avg["R_trace_log"].floor == pytest.approx(np.sqrt(2) * 1e-4)
    # the toy interpolates: both project onto uv = 1, at distance 0 from each other
    assert rep["at tr-log"].distance_on_manifold["R_trace_log"].value == pytest.approx(0, abs=1e-9)
    assert rep["at quarter"].verdict == "NOT converged" and rep["at quarter"].better_regularizer == "n/a"
    loose = check_convergence(toy, runs, pred, tol=2 * np.linalg.norm(a - b), k=3)
    assert loose["at quarter"].verdict == "converged"
    assert loose["at quarter"].better_regularizer == "quarter-trace"
    assert rep["far"].verdict == "NOT converged"
    assert rep["diverged"].verdict == "DIVERGED" and "diverged" in rep["diverged"].statistic
    # with noise as large as the gap between the two points the comparison must refuse to choose
    noisy = check_convergence(toy, [fake_result(0.5 * (a + b), np.array([0.1, 0.1]))], pred)
    assert noisy.verdicts[0].better_regularizer == "indistinguishable"
    # a run offset from both points by more than their separation gets no R verdict
    offset = check_convergence(toy, [fake_result(a + 3 * np.linalg.norm(a - b), se)], pred)
    assert offset.verdicts[0].better_regularizer == "inconclusive"
    no_theta = fake_result(a, se)
    del no_theta.mean["theta"], no_theta.var["theta"]
    assert check_convergence(toy, no_theta, pred).verdicts[0].verdict == "no theta recorded"
    text = rep.table()
    assert "prediction (R_trace_log)" in text and "DIVERGED" in text and str(rep) == text
    assert rep.to_dict()["verdicts"][0]["verdict"] == "converged"
    with pytest.raises(ValueError, match="window"):
        check_convergence(toy, runs, pred, window=1.5)
    with pytest.raises(ValueError, match="prediction"):
        check_convergence(toy, runs, None)


def test_verdict_says_its_space_and_reports_beta_and_collapse():
    """On β = v⊙v with θ* = (1, 0.3, 0) at λ = 0.01 (threshold κ√λ = 0.01): a run whose coordinate 1 sits at 0
    from record 4 on is reported collapsed (index 1, since t = 4) and its statistic says so; the recorded
    "beta" gives the β distance ‖E[β] − β(θ*)‖ = ‖(0.02, −0.09, 0)‖ exactly, beside a verdict that says it is
    measured in θ with tol = √λ·max(1, ‖θ*‖). regularizer_observables adds "beta" (diagonal networks only) and
    "abs_theta", and refuses a schedule, naming lr. [theory: REG-15]"""
    from sgdsde.implicit import Prediction, StationaryPoint, regularizer_observables

    X = np.array([[1.0, 0.5, -1.0], [0.2, 1.0, 0.3]])
    prob = s.Problem(s.DiagonalLinearNetwork(3, signed=False), X, X @ np.array([1.0, 0.09, 0.0]))
    star = np.array([1.0, 0.3, 0.0])
    point = StationaryPoint(
        star, "R_quarter_trace", 0.01, 0.0, 0.0, 0.0, 0.0, 1e-9, (3, 0, 0), np.ones(3), True, 1
    )
    pred = Prediction(0.01, 0.01, "LabelNoise", {"R_quarter_trace": point}, {})
    run = fake_result(np.array([1.0, 0.0, 0.0]), np.full(3, 1e-4))
    n_rec = len(run.steps)
    abs_theta = np.tile([1.0, 0.3, 0.0], (n_rec, 1))
    abs_theta[4:, 1] = 0.0
    beta = np.tile([1.02, 0.0, 0.0], (n_rec, 1))
    run.mean.update(abs_theta=abs_theta, beta=beta)
    run.var.update(abs_theta=np.zeros_like(abs_theta), beta=np.zeros_like(beta))
    rep = check_convergence(prob, run, pred)
    v = rep.verdicts[0]
    assert v.collapse is not None and list(v.collapse.indices) == [1] and list(v.collapse.since) == [4.0]
    assert "1 coordinates collapsed" in v.statistic
    assert v.distance_beta["R_quarter_trace"].value == pytest.approx(np.hypot(0.02, 0.09), rel=1e-12)
    assert rep.tol == pytest.approx(0.1 * np.linalg.norm(star))
    text = rep.table()
    assert "measured in theta" in text and "sqrt(lambda)*max(1, |theta*|)" in text
    assert "in beta = weights(theta)" in text and "collapse: 1 of the 2 coordinates" in text
    assert rep.to_dict()["measured_in"] == "theta"
    assert "measured in theta" in check_convergence(prob, run, pred, tol=0.5).table()
    obs = regularizer_observables(0.1, problem=prob)
    assert {"beta", "abs_theta", "theta"} <= set(obs)
    np.testing.assert_allclose(obs["beta"](prob, np.array([1.0, -2.0, 0.5])), [1.0, 4.0, 0.25])
    assert "beta" not in regularizer_observables(0.1, problem=uv_toy())
    with pytest.raises(ValueError, match="lr must be one constant step size"):
        regularizer_observables(s.StepDecayLR(0.1, [10], 0.5))


def test_verdict_reports_untested_predictions_single_paths_and_short_runs():
    """A job whose every run diverged gets "PREDICTION UNTESTED" (the prediction's own table says "solved", not
    "ok"); a 1-path run is said to have no standard error; a NOT converged verdict says how many relaxation
    times 1/μ of L + λR the run had (μ the smallest Hessian eigenvalue at θ*, here 10 records × 1/μ = 0.1 ⇒
    100 relaxation times with μ = 10), and "too short to settle" only below 3. [theory: REG-7, REG-15]"""
    from sgdsde.implicit import Prediction, StationaryPoint

    toy = uv_toy()
    star = np.ones(2)
    point = StationaryPoint(
        star, "R_quarter_trace", 0.01, 0.0, 0.0, 0.0, 0.0, 1e-9, (2, 0, 0), np.array([10.0, 20.0]), True, 1
    )
    pred = Prediction(0.01, 0.1, "LabelNoise", {"R_quarter_trace": point}, {})
    assert "solved" in pred.table() and " ok" not in pred.table()
    dead = check_convergence(toy, fake_result(star, np.full(2, 1e-3), diverged=3), pred)
    assert "PREDICTION UNTESTED" in dead.table() and dead.to_dict()["prediction_tested"] is False
    one = check_convergence(toy, fake_result(star + 1.0, np.zeros(2), n_paths=1), pred)
    assert "1 path, no standard error" in one.table() and one.to_dict()["prediction_tested"] is True
    stat = one.verdicts[0].statistic
    assert one.verdicts[0].verdict == "NOT converged" and "= 100 relaxation times 1/mu = 0.1" in stat
    assert "too short" not in stat
    slow = Prediction(
        0.01,
        0.1,
        "LabelNoise",
        {"R_quarter_trace": dataclasses.replace(point, hessian_eigenvalues=np.array([0.1, 1.0]))},
        {},
    )
    short = check_convergence(toy, fake_result(star + 1.0, np.full(2, 1e-3)), slow).verdicts[0].statistic
    assert "= 1 relaxation times" in short and "too short to settle at theta*" in short
    phase = check_convergence(toy, fake_result(star + 1.0, np.full(2, 1e-3)), slow, t_range=(5.0, 10.0))
    assert (
        "= 0.5 relaxation times" in phase.verdicts[0].statistic and "since the phase began" in phase.table()
    )


def test_limiting_flow_uv_toy_closed_form():
    """On Γ = {uv = 1}, u = eˢ: the flow gives sinh 2s(τ) = sinh 2s₀·e^{−cτ} (C5); Heun with projected
    stages is order 2 (error ratio ≈ 4 on halving h), both projections agree, loss stays 0. [theory: REG-8]"""
    toy = uv_toy()
    s0, c = 0.6, 0.7
    th0 = np.array([np.exp(s0), np.exp(-s0)])
    errs = []
    for n in (10, 20):
        fl = limiting_flow(toy, th0, c=c, duration=4.0, n_steps=n)
        u, v = fl.theta[:, 0], fl.theta[:, 1]
        errs.append(np.max(np.abs((u * u - v * v) / 2 - np.sinh(2 * s0) * np.exp(-c * fl.times))))
        assert np.max(fl.loss) < 1e-20
    assert errs[1] < 2e-3 and 3.2 < errs[0] / errs[1] < 5  # order 2: ratio 4 up to O(h) corrections
    gf = limiting_flow(toy, th0, c=c, duration=4.0, n_steps=20, record_every=5, projection="gradient_flow")
    np.testing.assert_allclose(gf.theta[-1], fl.theta[-1], atol=1e-8)
    assert isinstance(gf, LimitingFlow) and gf.sgd_steps(0.1)[-1] == pytest.approx(400)
    assert gf.sde_times(0.1)[-1] == pytest.approx(40)
    # the sharpness tr∇²L = u² + v² = 2cosh 2s decreases along the flow
    assert np.all(np.diff(fl.sharpness) < 0)


def test_limiting_flow_bad_input():
    """No interpolating point near θ₀ → ProjectionError; bad arguments → ValueError. [theory: REG-8]"""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 2))
    over = s.Problem(s.LinearRegression(2), X, rng.normal(size=5))  # n > d: no zero-loss set
    with pytest.raises(ProjectionError, match="interpolating"):
        limiting_flow(over, np.zeros(2), c=1.0, duration=1.0, n_steps=2)
    toy = uv_toy()
    with pytest.raises(ValueError, match="c must"):
        limiting_flow(toy, np.ones(2), c=0.0, duration=1.0, n_steps=2)
    with pytest.raises(ValueError, match="record_every"):
        limiting_flow(toy, np.ones(2), c=1.0, duration=1.0, n_steps=3, record_every=2)
    with pytest.raises(ValueError, match="projection"):
        limiting_flow(toy, np.ones(2), c=1.0, duration=1.0, n_steps=2, projection="orthogonal")


def test_verdict_in_a_time_window_and_per_phase_of_a_step_decay():
    """``predict_phases`` gives one prediction per constant-η phase of StepDecayLR (λ = ησ²/B at each η, the
    tr-log R at that η), with the phases' times on the simulators' clock; ``check_convergence(t_range=…)``
    judges only the records in that window: a run sitting at phase 1's point for t ≤ 5 and at phase 2's
    after is converged in each phase's window against that phase's point, and not against the other.
    [theory: REG-5, REG-7]"""
    toy = uv_toy()
    noise = s.LabelNoise(1.0, batch_size=1)
    schedule = s.StepDecayLR(0.2, (25,), 0.5)
    phases = s.implicit.predict_phases(toy, noise, schedule, 50, np.ones(2))
    assert [(p.start, p.stop) for p in phases] == [(0, 25), (25, 50)]
    assert phases[0].t_range == pytest.approx((0.0, 5.0)) and phases[1].t_range == pytest.approx((5.0, 7.5))
    assert phases[0].prediction.lam == pytest.approx(0.2) and phases[1].prediction.lam == pytest.approx(0.1)
    direct = predict(toy, noise, 0.1, np.ones(2)).point().theta
    np.testing.assert_allclose(phases[1].prediction.point().theta, direct, rtol=1e-9)
    a, b = phases[0].prediction.point().theta, phases[1].prediction.point().theta
    n = 11  # records at t = 0, 0.75, …, 7.5: times 0…4.5 sit at a, 5.25…7.5 at b
    times = np.linspace(0.0, 7.5, n)
    mean = np.where((times <= 5.0)[:, None], a, b)
    run = fake_result(a, np.full(2, 1e-5), n_records=n)
    run.times, run.mean["theta"] = times, mean
    for i, phase in enumerate(phases):
        here = check_convergence(toy, run, phase.prediction, t_range=phase.t_range, tol=0.0)
        assert here.verdicts[0].verdict == "converged", (i, here.table())
        other = check_convergence(toy, run, phases[1 - i].prediction, t_range=phase.t_range, tol=0.0)
        assert other.verdicts[0].verdict == "NOT converged"
    with pytest.raises(ValueError, match="at most one of window and t_range"):
        check_convergence(toy, run, phases[0].prediction, window=0.5, t_range=(0, 1))
    with pytest.raises(ValueError, match="t_range"):
        check_convergence(toy, run, phases[0].prediction, t_range=(3.0, 1.0))
    with pytest.raises(ValueError, match="holds no record"):
        check_convergence(toy, run, phases[0].prediction, t_range=(20.0, 30.0))


def test_verdict_refuses_results_it_cannot_judge():
    """No results, a non-result, θ of another dimension, or a saved configuration naming another model or
    data size: ValueError naming the culprit, before any statistic is computed."""
    toy = uv_toy()
    pred = predict(toy, s.LabelNoise(1.0, batch_size=1), 0.2, np.ones(2))
    a = pred.point().theta
    with pytest.raises(ValueError, match="results is empty"):
        check_convergence(toy, [], pred)
    with pytest.raises(ValueError, match="must be an EnsembleResult"):
        check_convergence(toy, [np.zeros(2)], pred)
    with pytest.raises(ValueError, match="dimension 3"):
        check_convergence(toy, fake_result(np.zeros(3), np.ones(3)), pred)
    other = fake_result(a, np.ones(2))
    other.config = {"n_data": 7, "model": repr(toy.model)}
    with pytest.raises(ValueError, match="n = 7"):
        check_convergence(toy, other, pred)
    other.config = {"n_data": 1, "model": "LinearRegression(dim=2)"}
    with pytest.raises(ValueError, match="model"):
        check_convergence(toy, other, pred)
    ok = fake_result(a, np.full(2, 1e-6))
    ok.config = {"n_data": 1, "model": repr(toy.model)}
    assert check_convergence(toy, ok, pred, tol=0.0).verdicts[0].verdict == "converged"


def test_lambda_from_any_noise_that_defines_it_or_given():
    """predict and label_noise_lasso take λ from the noise model itself (LabelNoise, FullGradientLabelNoise:
    ησ²/B) or an explicit lam; a noise without λ and no lam names both. [theory: REG-5]"""
    toy = uv_toy()
    full = s.FullGradientLabelNoise(1.0, 1)
    assert predict(toy, full, 0.2, np.ones(2)).lam == pytest.approx(0.2)
    assert predict(toy, s.MinibatchNoise(1), 0.2, np.ones(2), lam=0.05).lam == pytest.approx(0.05)
    with pytest.raises(ValueError, match="lam="):
        predict(toy, s.MinibatchNoise(1), 0.2, np.ones(2))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 4))
    diag = s.Problem(s.DiagonalLinearNetwork(4), X, X @ np.r_[1.0, 0, 0, 0])
    by_noise = s.implicit.label_noise_lasso(diag, s.FullGradientLabelNoise(1.0, 2), 0.1)
    given = s.implicit.label_noise_lasso(diag, None, 0.1, lam=0.05)
    np.testing.assert_allclose(by_noise.beta, given.beta, atol=1e-9)
