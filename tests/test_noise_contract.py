"""The noise contract, for every registered noise model: each formula a noise owns (matrix-free product,
Euler form, noise dimension and type, Itô→Stratonovich correction, mean and bias, λ, LaTeX) agrees with its
definition from the covariance factor, and the SME built on it is the same on the autodiff and symbolic back
ends. A new noise model joins every check by one line in tests/helpers.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    CLASSIFICATION_NOISES,
    CLASSIFICATION_PROBLEMS,
    NOISES,
    check_latex,
    make_problem,
    random_theta,
)

import sgdsde as sd
import sgdsde.symbolic as sy

MODELS = ["linear", "two_layer_tanh", "diagonal_signed"]
# (noise, problem) cases: every regression noise on three models, every classification noise on the logistic
# (one output) problem
CASES = [(nn, m) for nn in sorted(NOISES) for m in MODELS] + [
    (nn, "logistic") for nn in sorted(CLASSIFICATION_NOISES)
]


def build(noise_name, model, seed):
    if noise_name in CLASSIFICATION_NOISES:
        problem = CLASSIFICATION_PROBLEMS[model]()
        theta = 0.7 * jax.random.normal(jax.random.key(seed), (problem.n_params,), jnp.float64)
        return problem, theta, CLASSIFICATION_NOISES[noise_name](problem.n_data, problem.n_params)
    n = 5
    problem = make_problem(model, n, 3 if model != "two_layer_tanh" else 2, seed)
    theta = random_theta(problem, seed)
    return problem, theta, NOISES[noise_name](n, problem.n_params)


def close(a, b, tol=1e-11):
    # Deterministic float64 identities of O(1) quantities: only rounding separates the two sides.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("noise_name, model", CASES)
def test_noise_formulas_agree_with_the_factor(noise_name, model):
    """factor_mv (and the Euler form's) = A w; noise_dim = A's columns; the declared noise type holds
    (additive: A the same at two θ; commutative: one column, and (∂A_j)A_k symmetric in j, k); the noise's own
    Itô→Stratonovich correction = −½Σ_j(∂A_j)A_j by jax.jacfwd; an unbiased noise has zero bias.
    [theory: SME-3, SME-4, SME-6, NOISE-5]"""
    problem, theta, noise = build(noise_name, model, 4)
    noise.check(problem)
    A = noise.covariance_factor(problem, theta)
    m = noise.noise_dim(problem)
    assert A.shape == (problem.n_params, m)
    w = jnp.cos(jnp.arange(m, dtype=jnp.float64))
    close(noise.factor_mv(problem, theta, w), A @ w)
    close(noise.euler_form(problem).factor_mv(problem, theta, w), A @ w)
    kind = noise.noise_type(problem)
    assert kind in ("additive", "commutative", "general")
    if kind == "additive":
        close(noise.covariance_factor(problem, 2.0 * theta + 1.0), A)
    dA = jax.jacfwd(lambda t: noise.covariance_factor(problem, t))(theta)
    if kind == "commutative":
        assert m == 1
        L = jnp.einsum("ijk,kl->ijl", dA, A)
        close(L, jnp.swapaxes(L, 1, 2))
    close(noise.ito_to_stratonovich(problem, theta), -0.5 * jnp.einsum("ijk,kj->i", dA, A))
    if noise.unbiased:
        close(noise.bias(problem, theta), 0.0)
        close(noise.mean_gradient(problem, theta), problem.grad(theta))
    tex = noise.latex()
    assert isinstance(tex, str) and "A" in tex and "$" not in tex
    check_latex(tex, noise_name)


@pytest.mark.parametrize("noise_name", sorted(NOISES) + sorted(CLASSIFICATION_NOISES))
def test_sme_is_the_same_on_both_back_ends(noise_name):
    """``sgdsde.SME(problem, noise)`` (autodiff) and ``symbolic.derive_sme(problem, noise)`` are one class
    on two derivative back ends: drift (orders 1, 2), factor, matrix-free product and Stratonovich
    correction agree to float64 rounding, and the symbolic one says it is symbolic. [theory: SME-6]"""
    problem, theta, noise = build(
        noise_name, "logistic" if noise_name in CLASSIFICATION_NOISES else "two_layer_tanh", 7
    )
    for order in (1, 2):
        numeric, symbolic = sd.SME(problem, noise, order), sy.derive_sme(problem, noise, order)
        assert type(numeric) is type(symbolic)
        assert symbolic.is_symbolic and not numeric.is_symbolic
        assert symbolic.noise_type == numeric.noise_type
        close(symbolic.drift(theta, 0.3), numeric.drift(theta, 0.3))
    A = numeric.factor(theta)
    close(symbolic.factor(theta), A)
    w = jnp.sin(jnp.arange(A.shape[1], dtype=jnp.float64))
    close(symbolic.factor_mv(theta, w), A @ w)
    close(symbolic.stratonovich_correction(theta, 0.3), numeric.stratonovich_correction(theta, 0.3))


def test_effective_lambda_is_the_noise_models_own():
    """λ = ησ²/B comes from the label-noise models themselves (B = n for a full-batch LabelNoise); noises
    without λ say so by name.
    [theory: REG-5]"""
    problem = make_problem("linear", 6, 2, 0)
    assert sd.LabelNoise(0.5, 3).effective_lambda(0.2) == pytest.approx(0.2 * 0.25 / 3)
    assert sd.LabelNoise(2.0).effective_lambda(0.1, problem) == pytest.approx(0.1 * 4 / 6)
    with pytest.raises(ValueError, match="problem is needed"):
        sd.LabelNoise(2.0).effective_lambda(0.1)
    for make in (*NOISES.values(), *CLASSIFICATION_NOISES.values()):
        noise = make(6, 2)
        if not isinstance(noise, sd.LabelNoise | sd.FullGradientLabelNoise):
            with pytest.raises(ValueError, match=type(noise).__name__):
                noise.effective_lambda(0.1, problem)


def test_derivative_back_end_is_validated():
    """Problem(derivatives=...) takes None (autodiff) or an AbstractDerivatives, and names the argument."""
    problem = make_problem("linear", 4, 2, 0)
    with pytest.raises(ValueError, match="derivatives must be None"):
        sd.Problem(problem.model, problem.X, problem.y, derivatives="sympy")
    symbolic = problem.with_derivatives(sy.SymbolicDerivatives(problem.model))
    assert symbolic.is_symbolic and symbolic.astype(jnp.float32).derivatives is symbolic.derivatives
