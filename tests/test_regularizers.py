"""Numeric regularizers: Damian's tr-log R, ¼ tr∇²L, Blanc's Σ‖∇fᵢ‖², and λ = ησ²/B."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import sgdsde as s
from sgdsde.implicit import (
    HessianTraceRegularizer,
    OutputGradientNormRegularizer,
    TraceLogRegularizer,
    effective_lambda,
)


def linear_problem(seed, n=12, d=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return s.Problem(s.LinearRegression(d), X, X @ rng.normal(size=d) + 0.1 * rng.normal(size=n))


def two_layer_problem(seed=0, n=6, p=2, m=3, activation="tanh"):
    rng = np.random.default_rng(seed)
    return s.Problem(s.TwoLayerNetwork(p, m, activation), rng.normal(size=(n, p)), rng.normal(size=n))


@settings(max_examples=6)
@given(st.integers(0, 10_000), st.floats(0.01, 0.25))
def test_trace_log_matches_eigenvalue_formula(seed, eta):
    """R = −(1/2η) Σ log(1 − η h/2) over the eigenvalues of H = XᵀX/n, float64 to rounding. [theory: REG-1]"""
    prob = linear_problem(seed)
    H = np.asarray(prob.X.T @ prob.X) / prob.n_data
    h = np.linalg.eigvalsh(H)
    if eta * h.max() >= 2:
        eta = 1.0 / h.max()
    expected = -np.sum(np.log(1 - eta * h / 2)) / (2 * eta)
    got = TraceLogRegularizer(eta)(prob, np.zeros(4))
    assert got == pytest.approx(expected, rel=1e-12)
    # −log(1 − x) ≥ x for x < 1, eigenvalue by eigenvalue: tr-log R ≥ ¼ tr H
    assert got >= HessianTraceRegularizer()(prob, np.zeros(4)) - 1e-12


def test_trace_log_series_and_small_eta_limit():
    """R = Σ h/4 + ηh²/16 + η²h³/48 + O(η³): the remainder after three terms shrinks like η³. [theory: REG-2]"""
    prob = linear_problem(1)
    h = np.linalg.eigvalsh(np.asarray(prob.X.T @ prob.X) / prob.n_data)
    quarter = HessianTraceRegularizer()(prob, np.zeros(4))
    assert quarter == pytest.approx(np.sum(h) / 4, rel=1e-12)
    rem = []
    for eta in (0.02, 0.01):
        series = np.sum(h / 4 + eta * h**2 / 16 + eta**2 * h**3 / 48)
        rem.append(TraceLogRegularizer(eta)(prob, np.zeros(4)) - series)
    # next term η³Σh⁴/128 > 0; halving η divides it by 8 (band 7–9 allows the η⁴ term)
    assert rem[0] > 0 and 7 < rem[0] / rem[1] < 9


def test_trace_log_gradient_identity():
    """∇R = ½ ∇³L[(2I − η∇²L)⁻¹], checked against central differences of R on a two-layer net. [theory: REG-1]"""
    prob = two_layer_problem()
    th = prob.model.init(jax.random.key(3))
    eta = 0.1
    reg = TraceLogRegularizer(eta)
    g = np.asarray(jax.jit(lambda t: reg.grad(prob, t))(th))
    H = jax.jit(lambda t: prob.hessian(t))(th)
    M = jnp.linalg.inv(2 * jnp.eye(th.size) - eta * H)
    third = jax.jit(jax.jacfwd(lambda t: prob.hessian(t)))(th)  # (d, d, d): ∂_k H_ij
    identity = 0.5 * np.einsum("ijk,ij->k", np.asarray(third), np.asarray(M))
    np.testing.assert_allclose(g, identity, rtol=1e-10, atol=1e-12)
    # central differences: error O(ε²)·|∂³R| ~ 1e-10 at ε = 1e-5
    eps = 1e-5
    value = jax.jit(jax.vmap(lambda t: reg.value(prob, t)))
    steps = eps * jnp.eye(th.size)
    fd = (value(th[None, :] + steps) - value(th[None, :] - steps)) / (2 * eps)
    np.testing.assert_allclose(g, np.asarray(fd), atol=1e-8)
    # second derivatives go through the custom JVP too (the Newton solve needs them)
    hr = jax.jit(jax.hessian(lambda t: reg.value(prob, t)))(th)
    assert np.all(np.isfinite(np.asarray(hr))) and np.allclose(hr, hr.T, atol=1e-10)


def test_trace_log_gradient_at_repeated_eigenvalues():
    """At a Hessian with a repeated eigenvalue (here 0, many times) the gradient stays finite. [theory: REG-1]"""
    model = s.DiagonalLinearNetwork(5, signed=True)
    X = np.eye(5)[:2]
    prob = s.Problem(model, X, np.array([1.0, -1.0]))
    th = jnp.concatenate([jnp.ones(5), jnp.zeros(5)])
    g = jax.jit(lambda t: TraceLogRegularizer(0.1).grad(prob, t))(th)
    assert np.all(np.isfinite(np.asarray(g)))


def test_trace_log_domain_error_and_nan_when_traced():
    """η λ_max ≥ 2 → ValueError naming the bound; traced code returns NaN, never a number. [theory: REG-1]"""
    prob = linear_problem(2)
    h_max = float(np.linalg.eigvalsh(np.asarray(prob.X.T @ prob.X) / prob.n_data).max())
    reg = TraceLogRegularizer(2.0 / h_max * 1.01)
    with pytest.raises(ValueError, match="eta must be <"):
        reg(prob, np.zeros(4))
    assert np.isnan(float(jax.jit(lambda t: reg.value(prob, t))(jnp.zeros(4))))
    with pytest.raises(ValueError, match="eta"):
        TraceLogRegularizer(0.0)
    with pytest.raises(ValueError, match="eta"):
        TraceLogRegularizer(-1.0)
    with pytest.raises(ValueError, match="theta"):
        TraceLogRegularizer(0.1)(prob, np.zeros(3))


def test_trace_log_observable_is_finite_and_flags_domain():
    """Along runs R_trace_log (by Cholesky) equals the eigenvalue formula inside the domain, stays finite
    outside it, and its domain indicator says where. [theory: REG-1]"""
    prob = linear_problem(2)
    h_max = float(np.linalg.eigvalsh(np.asarray(prob.X.T @ prob.X) / prob.n_data).max())
    inside, outside = TraceLogRegularizer(1.0 / h_max), TraceLogRegularizer(3.0 / h_max)
    th = jnp.zeros(4)
    assert float(inside.observable()(prob, th)) == pytest.approx(inside(prob, th), rel=1e-12)
    assert float(inside.domain_observable()(prob, th)) == 1.0
    assert np.isfinite(float(outside.observable()(prob, th)))
    assert float(outside.domain_observable()(prob, th)) == 0.0
    # a nonlinear model at a random point: Cholesky log-det = eigenvalue sum to rounding
    net = s.DiagonalLinearNetwork(3, alpha=0.5)
    rng = np.random.default_rng(0)
    dprob = s.Problem(net, rng.normal(size=(5, 3)), rng.normal(size=5))
    th = jnp.asarray(rng.normal(size=6))
    h = np.linalg.eigvalsh(np.asarray(dprob.hessian(th)))
    eta = 1.0 / np.abs(h).max()
    expect = -np.sum(np.log1p(-0.5 * eta * h)) / (2 * eta)
    assert float(TraceLogRegularizer(eta).observable()(dprob, th)) == pytest.approx(expect, rel=1e-12)


def test_blanc_and_quarter_trace_at_zero_loss():
    """At zero loss tr∇²L = tr G, so Σᵢ‖∇fᵢ‖² = n tr∇²L = 4n·(¼ tr∇²L) (two-layer net at its teacher's
    parameters), and tr∇²L follows C8's two-layer formula. [theory: REG-3, REG-4]"""
    data = s.teacher_network(jax.random.key(0), 7, 3, 4, "tanh")
    model = s.TwoLayerNetwork(3, 4, "tanh")
    prob = s.Problem(model, data.X, data.y)
    th = data.teacher
    assert float(prob.loss(th)) < 1e-28
    quarter = HessianTraceRegularizer()(prob, th)
    blanc = OutputGradientNormRegularizer()(prob, th)
    assert blanc == pytest.approx(4 * prob.n_data * quarter, rel=1e-10)
    W, a = model.split(th)
    z = np.asarray(data.X @ W.T)  # n × m pre-activations
    x2 = np.sum(np.asarray(data.X) ** 2, axis=1)[:, None]
    c8 = np.mean(np.sum(np.tanh(z) ** 2 + np.asarray(a) ** 2 * (1 - np.tanh(z) ** 2) ** 2 * x2, axis=1))
    assert 4 * quarter == pytest.approx(c8, rel=1e-10)


@settings(max_examples=6)
@given(st.integers(0, 10_000))
def test_quarter_trace_of_diagonal_network(seed):
    """For β = u⊙u − v⊙v, tr∇²L = 4 Σ_j D_jj (u_j² + v_j²) at every θ (∇²fᵢ is traceless). [theory: REG-4]"""
    rng = np.random.default_rng(seed)
    n, d = 5, 3
    X, y, th = rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=2 * d)
    prob = s.Problem(s.DiagonalLinearNetwork(d), X, y)
    D = np.sum(X * X, axis=0) / n
    expected = 4 * np.sum(D * (th[:d] ** 2 + th[d:] ** 2))
    assert 4 * HessianTraceRegularizer()(prob, th) == pytest.approx(expected, rel=1e-10)


def test_effective_lambda():
    """λ = ησ²/B; B = n for the full batch; minibatch noise has none. [theory: REG-5]"""
    prob = linear_problem(0, n=12)
    assert effective_lambda(s.LabelNoise(0.5, batch_size=3), 0.2) == pytest.approx(0.2 * 0.25 / 3)
    assert effective_lambda(s.LabelNoise(2.0), 0.1, prob) == pytest.approx(0.1 * 4 / 12)
    with pytest.raises(ValueError, match="problem"):
        effective_lambda(s.LabelNoise(2.0), 0.1)
    with pytest.raises(ValueError, match="LabelNoise"):
        effective_lambda(s.MinibatchNoise(2), 0.1, prob)
    with pytest.raises(ValueError, match="lr"):
        effective_lambda(s.LabelNoise(1.0, batch_size=1), -0.1)
