"""Curvature observables at size (Sharpness, HutchinsonTrace, Accuracy, grad_norm) against the dense
references: eigvalsh of Problem.hessian, its trace, Problem.gauss_newton (theory/curvature.md)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LOSSES

import sgdsde as sd
from sgdsde._observables import BUILTIN


def _evaluate(problem, theta, *fns):
    """(f(problem, θ) for f in fns) under one jit: one compile per test instead of eager dispatch."""
    return eqx.filter_jit(lambda pr, th: tuple(f(pr, th) for f in fns))(problem, theta)


def _net_problem(loss_name: str, n: int = 6, p: int = 3, width: int = 3, seed: int = 0):
    loss, K, labels = LOSSES[loss_name]
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = np.asarray(labels)[rng.integers(0, len(labels), n)]
    net = sd.TwoLayerNetwork(p, width, "tanh", n_outputs=K)
    problem = sd.Problem(net, X, y, loss=loss)
    theta = jnp.asarray(rng.normal(size=net.n_params))
    return problem, theta


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_lanczos_and_hutchinson_are_exact_against_dense_references(loss_name):
    """Every registered loss on a two-layer tanh net at a random θ (Hessian indefinite): Lanczos with iters = d
    spans the whole space, so its top Ritz value is λ_max (CURV-1); each Hutchinson term is the probe's exact
    quadratic form zᵀ∇²Lz and zᵀGz against the dense matrices, and the means of P = 200 probes are within 4
    standard errors √(2(‖M‖_F² − Σ M_ii²)/P) of the traces (CURV-3; the probes are fixed by the key, so this is
    a deterministic check whose tolerance comes from the estimator's variance). Tolerance of the exact checks:
    float64 rounding in d ≤ 18 reorthogonalized steps. Accuracy and grad_norm against numpy on the same outputs.
    [theory: CURV-1, CURV-3]"""
    problem, theta = _net_problem(loss_name)
    d, P = problem.n_params, 200
    hut_h = sd.HutchinsonTrace(P, key=4)
    hut_g = sd.HutchinsonTrace(P, matrix="gauss_newton", key=4)
    H, G, tr_g, f, g, lam, qh, qg, acc, gn = (
        np.asarray(v)
        for v in _evaluate(
            problem,
            theta,
            lambda pr, th: pr.hessian(th),
            lambda pr, th: pr.gauss_newton(th),
            lambda pr, th: pr.trace_gauss_newton(th),
            lambda pr, th: pr.outputs(th),
            lambda pr, th: pr.grad(th),
            sd.Sharpness(iters=d, key=3),
            hut_h.quadratic_forms,
            hut_g.quadratic_forms,
            sd.Accuracy(),
            BUILTIN["grad_norm"],
        )
    )
    eig = np.linalg.eigvalsh(H)
    assert eig[0] < 0 < eig[-1]  # an indefinite Hessian: the top of the spectrum, not the largest modulus
    scale = np.abs(eig).max()
    np.testing.assert_allclose(lam, eig[-1], rtol=0, atol=1e-10 * scale)
    Z = np.asarray(hut_h.probe_vectors(d, jnp.float64))
    assert Z.shape == (P, d) and set(np.unique(Z)) == {-1.0, 1.0}
    np.testing.assert_allclose(qh, np.einsum("pi,ij,pj->p", Z, H, Z), rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(qg, np.einsum("pi,ij,pj->p", Z, G, Z), rtol=1e-10, atol=1e-12)
    for name, M, q in (("hessian", H, qh), ("gauss_newton", G, qg)):
        se = np.sqrt(2 * (np.sum(M * M) - np.sum(np.diag(M) ** 2)) / P)
        assert abs(q.mean() - np.trace(M)) < 4 * se, (name, q.mean(), np.trace(M), se)
    assert np.trace(G) == pytest.approx(float(tr_g), rel=1e-12)
    y = np.asarray(problem.y)
    if LOSSES[loss_name][1] > 1:
        assert float(acc) == pytest.approx(np.mean(f.argmax(1) == y), rel=1e-12)
    elif loss_name == "logistic":
        assert float(acc) == pytest.approx(np.mean(np.where(f >= 0, 1, -1) == y), rel=1e-12)
    assert float(gn) == pytest.approx(np.linalg.norm(g), rel=1e-12)


def test_lanczos_survives_breakdown_and_bounds_lambda_max_from_below():
    """∇²L = Q diag(1, 0.95 … 0.42, 0 × 14) Qᵀ (d = 30, 17 distinct eigenvalues): k steps give Ritz values that
    increase with k, stay below λ_max (Courant–Fischer) and meet the Kaniel–Paige bound
    (λ₁ − λ_d)(tan φ₀/T_{k−1}(1 + 2γ))²; with k = d the Krylov space closes after 17 steps, Lanczos restarts
    in the orthogonal complement and still returns λ_max. [theory: CURV-1]"""
    rng = np.random.default_rng(1)
    spectrum = np.r_[1.0, np.linspace(0.95, 0.42, 15), np.zeros(14)]
    Q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    quad = sd.quadratic_problem(Q @ np.diag(spectrum) @ Q.T, np.zeros(30))
    steps = (3, 8, 30)
    ritz = [float(r) for r in _evaluate(quad, jnp.zeros(30), *(sd.Sharpness(k, key=6) for k in steps))]
    c = Q.T @ np.asarray(sd.Sharpness(2, key=6).start_vector(30, jnp.float64))
    tan_phi = np.sqrt(np.sum(c[1:] ** 2)) / abs(c[0])
    gamma = (spectrum[0] - spectrum[1]) / (spectrum[1] - spectrum[-1])
    assert ritz[0] < ritz[1] <= 1.0 + 1e-12
    for k, r in zip(steps[:2], ritz, strict=False):
        bound = (spectrum[0] - spectrum[-1]) * (tan_phi / np.cosh((k - 1) * np.arccosh(1 + 2 * gamma))) ** 2
        assert 1.0 - r <= bound * (1 + 1e-9), (k, r, bound)
    assert ritz[2] == pytest.approx(1.0, rel=1e-12, abs=0)  # float64 rounding, after the restart


def test_power_iteration_is_the_rayleigh_quotient_and_meets_the_gap_bound():
    """∇²L = diag(4, 2, 1, 0.5, 0.25, 0) (gap λ₂/λ₁ = 1/2): Sharpness(iters, method="power") equals the Rayleigh
    quotient of H^{iters−1}v₀ in closed form (float64 rounding), and its error is within
    (λ₁ − λ_d) tan²φ₀ (λ₂/λ₁)^{2k} with φ₀ the start vector's angle to the top eigenvector. Hutchinson on this
    diagonal ∇²L is exact with one probe (Rademacher z_i² = 1). [theory: CURV-2, CURV-3]"""
    lam = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.0])
    problem = sd.quadratic_problem(np.diag(lam), np.zeros(6))
    obs = [sd.Sharpness(iters, method="power", key=5) for iters in (3, 8, 16)]
    c = np.asarray(obs[0].start_vector(6, jnp.float64))
    tan2 = np.sum(c[1:] ** 2) / c[0] ** 2
    *rhos, est = _evaluate(problem, jnp.zeros(6), *obs, sd.HutchinsonTrace(1, key=9))
    for o, rho in zip(obs, rhos, strict=True):
        k = o.iters - 1
        w = c**2 * lam ** (2 * k)
        np.testing.assert_allclose(float(rho), np.sum(w * lam) / np.sum(w), rtol=1e-12)
        bound = (lam[0] - lam[-1]) * tan2 * (lam[1] / lam[0]) ** (2 * k)
        assert 0 <= lam[0] - float(rho) <= bound * (1 + 1e-9) + 1e-13
    assert float(est) == pytest.approx(lam.sum(), rel=1e-12)


@pytest.fixture(scope="module")
def recorded_run():
    # a logistic-loss linear model: θ-dependent Hessian and Gauss–Newton matrix at the smallest compile cost
    rng = np.random.default_rng(6)
    problem = sd.Problem(
        sd.LinearRegression(3),
        rng.normal(size=(10, 3)),
        np.where(np.arange(10) % 3, 1.0, -1.0),
        loss=sd.LogisticLoss(),
    )
    theta0 = jnp.asarray(rng.normal(size=(4, 3)))
    observables = (
        sd.Sharpness(3, key=1),
        sd.HutchinsonTrace(3, matrix="gauss_newton", key=2),
        sd.Accuracy(rng.normal(size=(7, 3)), np.where(np.arange(7) % 2, 1, -1), name="val_accuracy"),
    )
    res = sd.simulate_sgd(
        problem,
        sd.MinibatchNoise(3),
        theta0,
        lr=0.2,
        n_steps=4,
        key=0,
        ensemble=sd.Ensemble(n_paths=4),
        record=sd.Record(every=4, observables=observables, n_saved_paths=4),
    )
    return problem, observables, res


def test_recorded_per_path_equals_the_function_at_the_recorded_theta(recorded_run):
    """A short SGD run recording the new observables (Lanczos, Hutchinson on G, accuracy on given data): each record's mean and variance over the 4 paths are
    those of the observable applied to the saved θ of that record (the same key, so the same probes and start
    vector). Tolerance: float64 rounding between the engine's vmapped evaluation and this one. [theory: CURV-4]"""
    problem, observables, res = recorded_run
    thetas = jnp.asarray(res.paths).reshape(-1, problem.n_params)  # (records × paths, d)
    R, N = res.paths.shape[:2]
    assert R == 2 and N == 4
    fns = [BUILTIN[o] if isinstance(o, str) else o for o in observables]
    names = [o if isinstance(o, str) else o.name for o in observables]
    values = eqx.filter_jit(jax.vmap(lambda t: tuple(fn(problem, t) for fn in fns)))(thetas)
    for name, v in zip(names, values, strict=True):
        vals = np.asarray(v).reshape(R, N)
        assert np.ptp(vals) > 0, name  # the paths differ: the check compares per-path values
        np.testing.assert_allclose(res.mean[name], vals.mean(1), rtol=1e-10, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(res.var[name], vals.var(1, ddof=1), rtol=1e-8, atol=1e-12, err_msg=name)
    assert sorted(res.observables) == sorted(["sharpness", "trace_gauss_newton_hutchinson", "val_accuracy"])


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="iters"):
        sd.Sharpness(0)
    with pytest.raises(ValueError, match="method"):
        sd.Sharpness(5, method="arnoldi")
    with pytest.raises(ValueError, match="probes"):
        sd.HutchinsonTrace(0)
    with pytest.raises(ValueError, match="matrix"):
        sd.HutchinsonTrace(4, matrix="fisher")
    with pytest.raises(ValueError, match="key"):
        sd.HutchinsonTrace(4, key="seed")
    with pytest.raises(ValueError, match="both X and y"):
        sd.Accuracy(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="y must have shape"):
        sd.Accuracy(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="integer labels"):
        sd.Accuracy(np.zeros((3, 2)), np.array([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="appear twice"):
        sd.Record(observables=("loss", sd.Sharpness(), sd.Sharpness(3)))
    problem, theta = _net_problem("cross_entropy")
    # wrong columns or classes: refused by name before the run compiles (simulate's observable check)
    for acc, match in (
        (sd.Accuracy(np.zeros((2, 5)), [0, 1]), "columns"),
        (sd.Accuracy(np.zeros((2, 3)), [0, 3]), "classes"),
    ):
        with pytest.raises(ValueError, match=match):
            sd.simulate_sgd(
                problem, None, theta, lr=0.1, n_steps=1, key=0, record=sd.Record(observables=("loss", acc))
            )
