"""Models and problems: autodiff quantities against finite differences and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MODELS, make_problem, random_theta
from hypothesis import given, strategies as st

import sgdsde as sd


@pytest.mark.parametrize("name", sorted(MODELS))
@given(seed=st.integers(0, 2**16), n=st.sampled_from([3, 5]), p=st.sampled_from([2, 4]))
def test_gradient_matches_finite_differences(name, seed, n, p):
    """∇L by one VJP equals central finite differences. [theory: MOD-1]

    Tolerance: central differences with h = 1e-6 in float64 have error O(h²·L''') + O(eps/h) ≈ 1e-9
    relative; 1e-6 leaves room for ReLU points within h of a kink (probability ~1e-5 per draw).
    """
    problem = make_problem(name, n, p, seed)
    theta = random_theta(problem, seed)
    g = np.asarray(problem.grad(theta))
    h = 1e-6
    eye = np.eye(problem.n_params)
    fd = np.array([(problem.loss(theta + h * e) - problem.loss(theta - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * (1 + np.abs(g).max()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_matrix_and_gauss_newton(name):
    """Jᵀ (hand-written where given) equals autodiff; ∇ℓᵢ = rᵢ∇fᵢ; ∇L = mean ∇ℓᵢ; G = JJᵀ/n. [theory: MOD-1]"""
    problem = make_problem(name, 6, 3, 7)
    theta = random_theta(problem, 7)

    @jax.jit  # one compile (op by op, the Hessian and Jacobian took seconds per model)
    def quantities(t):
        out = (
            problem.output_gradients(t),
            problem.loss_gradients(t),
            problem.grad(t),
            problem.gauss_newton(t),
        )
        return jax.jacfwd(problem.outputs)(t), out, problem.hessian(t)  # jacfwd: n × d

    J_auto, (J, G, g, gn), H = quantities(theta)
    np.testing.assert_allclose(J, J_auto.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(G.mean(axis=1), g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gn, J_auto.T @ J_auto / 6, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H, H.T, atol=1e-12)


def test_loss_convention_is_half_mean_square():
    """L = (1/2n) Σ (f − y)². [theory: MOD-1]"""
    problem = sd.Problem(sd.LinearRegression(2), np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([1.0, 1.0]))
    # residuals at θ = (3, 1): (2, 1) → L = (4 + 1)/4
    assert float(problem.loss(jnp.array([3.0, 1.0]))) == pytest.approx(5 / 4, abs=1e-15)


def test_diagonal_network_weights_and_init():
    """β = u⊙u − v⊙v with u = v = α𝟙 at init (β = 0); unsigned β = v⊙v. [theory: MOD-2]"""
    m = sd.DiagonalLinearNetwork(3, alpha=2.0)
    theta = m.init()
    np.testing.assert_array_equal(m.weights(theta), np.zeros(3))
    theta = jnp.array([1.0, 2.0, 3.0, 0.5, 1.0, 4.0])
    np.testing.assert_allclose(m.weights(theta), [0.75, 3.0, -7.0])
    mu = sd.DiagonalLinearNetwork(3, alpha=2.0, signed=False)
    np.testing.assert_allclose(mu.weights(mu.init()), [4.0, 4.0, 4.0])
    assert m.param_names()[:1] == ["u_0"] and m.param_names()[3] == "v_0"


def test_two_layer_output_formula():
    """f = Σⱼ aⱼ φ(wⱼᵀx), θ = (vec W row-major, a). [theory: MOD-3]"""
    net = sd.TwoLayerNetwork(2, 3, "tanh")
    W = np.arange(6.0).reshape(3, 2) / 10
    a = np.array([1.0, -2.0, 0.5])
    x = np.array([0.3, -0.7])
    theta = jnp.concatenate([jnp.asarray(W).ravel(), jnp.asarray(a)])
    assert float(net.output(theta, x)) == pytest.approx(float(a @ np.tanh(W @ x)), rel=1e-14)
    fixed = sd.TwoLayerNetwork(2, 3, "relu", train_second_layer=False, second_layer=(1.0, -1.0, 2.0))
    assert fixed.n_params == 6
    expect = np.array([1.0, -1.0, 2.0]) @ np.maximum(W @ x, 0)
    assert float(fixed.output(jnp.asarray(W).ravel(), x)) == pytest.approx(float(expect), rel=1e-14)


def test_quadratic_problem_reproduces_hessian_and_minimum():
    """quadratic_problem(H, θ*): L = ½(θ−θ*)ᵀH(θ−θ*), ∇²L = H, also for singular H. [theory: MOD-1b]"""
    rng = np.random.default_rng(0)
    B = rng.normal(size=(4, 3))
    for H in (B @ B.T, B @ B.T + np.eye(4)):
        ts = rng.normal(size=4)
        problem = sd.quadratic_problem(H, ts)
        theta = rng.normal(size=4)
        expect = 0.5 * (theta - ts) @ H @ (theta - ts)
        assert float(problem.loss(jnp.asarray(theta))) == pytest.approx(expect, rel=1e-12)
        np.testing.assert_allclose(problem.hessian(jnp.asarray(theta)), H, atol=1e-12)


def test_sparse_regression_teacher():
    data = sd.sparse_regression(jax.random.key(0), 40, 100, 5)
    assert data.X.shape == (40, 100) and data.y.shape == (40,)
    np.testing.assert_array_equal(np.asarray(data.teacher)[:5], 1.0)
    assert np.count_nonzero(np.asarray(data.teacher)) == 5
    np.testing.assert_allclose(data.y, data.X @ data.teacher, atol=1e-12)
    t = sd.teacher_network(jax.random.key(1), 10, 3, 4, "relu")
    assert t.X.shape == (10, 3) and t.teacher.shape == (16,)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sd.Problem(sd.LinearRegression(3), np.zeros((4, 2)), np.zeros(4)), "X must have 3 columns"),
        (
            lambda: sd.Problem(sd.LinearRegression(2), np.zeros((4, 2)), np.zeros(3)),
            r"y must have shape \(4,\)",
        ),
        (lambda: sd.Problem(sd.LinearRegression(2), np.zeros(4), np.zeros(4)), "X must be a 2-D array"),
        (lambda: sd.TwoLayerNetwork(2, 3, "swish-ish"), "activation must be one of"),
        (lambda: sd.DiagonalLinearNetwork(3, alpha=-1.0), "alpha must be finite and > 0"),
        (lambda: sd.TwoLayerNetwork(2, 0), "width must be >= 1"),
        (lambda: sd.quadratic_problem(-np.eye(2), np.zeros(2)), "positive semi-definite"),
        (lambda: sd.quadratic_problem(np.eye(2), np.zeros(3)), r"theta_star must have shape \(2,\)"),
        (lambda: sd.sparse_regression(jax.random.key(0), 10, 5, 6), r"sparsity must be in \[0, 5\]"),
    ],
)
def test_bad_input_names_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()
