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
    LOSSES,
    MODELS as ALL_MODELS,
    NOISES,
    SGD_ONLY_NOISES,
    check_latex,
    make_problem,
    random_theta,
)

import sgdsde as sd
import sgdsde.symbolic as sy
from sgdsde._normals import step_normals

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


class _SphericalSampler(sd.AbstractGradientNoise):
    """A user's sampler with the SGD side only: ∇L + σξ, drawn exactly as SphericalGaussianNoise draws
    (``step_normals``: materialized normals, NOISE-8)."""

    sigma: float

    def draw(self, problem, key, step, state, n_paths, dtype):
        xi = step_normals(key, n_paths, problem.n_params, dtype)
        return jnp.asarray(self.sigma, dtype) * xi, state

    def gradient(self, problem, theta, draws):
        return problem.grad(theta) + draws


def test_a_noise_with_only_the_sgd_side_runs_sgd():
    """The two sides of the noise contract: a sampler that subclasses AbstractGradientNoise alone (no
    covariance factor) runs in simulate_sgd, bit for bit the run of the full noise with the same draws
    (SphericalGaussianNoise), and the consumers of the SDE side in the noise package's users (λ, the affine
    moments) refuse it by name. Every registered noise with an SDE has both sides; PreactivationNoise has
    only the SGD side. [theory: NOISE-3]"""
    problem = make_problem("two_layer_tanh", 5, 2, 0)
    theta0 = np.asarray(random_theta(problem, 0))
    runs = [
        sd.simulate_sgd(
            problem,
            noise,
            theta0,
            lr=0.05,
            n_steps=6,
            key=3,
            ensemble=sd.Ensemble(n_paths=3),
            record=sd.Record(every=2, n_saved_paths=3),
        )
        for noise in (_SphericalSampler(0.4), sd.SphericalGaussianNoise(0.4))
    ]
    np.testing.assert_array_equal(runs[0].paths, runs[1].paths)
    assert np.all(np.isfinite(runs[0].paths)) and not np.array_equal(
        runs[0].paths[:, 0], runs[0].paths[:, -1]
    )
    user = _SphericalSampler(0.4)
    assert isinstance(user, sd.AbstractGradientNoise) and not isinstance(user, sd.AbstractSDENoise)
    message = "_SphericalSampler has only the SGD side"
    with pytest.raises(ValueError, match=f"effective_lambda needs a noise with an SDE side.*{message}"):
        sd.implicit.effective_lambda(user, 0.1, problem)
    with pytest.raises(ValueError, match=message):
        sd.analysis.AffineNoise.from_noise(problem, user)
    for make in (*NOISES.values(), *CLASSIFICATION_NOISES.values()):
        noise = make(5, 2)
        assert isinstance(noise, sd.AbstractGradientNoise) and isinstance(noise, sd.AbstractSDENoise)
    for make in SGD_ONLY_NOISES.values():
        noise = make(5, 2)
        assert isinstance(noise, sd.AbstractGradientNoise) and not isinstance(noise, sd.AbstractSDENoise)


def test_the_sde_refuses_a_noise_without_the_sde_side():
    """SME and simulate_sde need the SDE side: a noise with only the SGD side (a user's sampler,
    PreactivationNoise) is refused with a ValueError that names it and says what it lacks; a value that is
    no noise at all is refused naming the argument."""
    problem = make_problem("two_layer_tanh", 5, 2, 0)
    theta0 = np.asarray(random_theta(problem, 0))
    for noise in (_SphericalSampler(0.4), sd.PreactivationNoise(0.5, 2)):
        message = f"SME needs a noise with an SDE side.*{type(noise).__name__} has only the SGD side"
        with pytest.raises(ValueError, match=message):
            sd.SME(problem, noise)
        with pytest.raises(ValueError, match=message):
            sd.simulate_sde(problem, noise, theta0, lr=0.05, n_steps=2, key=0)
    with pytest.raises(ValueError, match="SME: noise must be an sgdsde noise model"):
        sd.SME(problem, "minibatch")


def test_problem_keeps_no_noise_or_back_end_special_cases():
    """Problem has no noise-specific methods (the per-example gradients live in the noise package) and no
    dead ones; its derivatives back end is a value, Autodiff() by default, equal across problems so a
    jitted function of a Problem compiles once; linearity in θ (additive label noise) is read from the
    model, for every registered model. [theory: NOISE-2, SME-6]"""
    for name in ("batch_gradient", "weighted_gradient", "loss_vjp", "loss_derivative"):
        assert not hasattr(sd.Problem, name), name
    problem = make_problem("linear", 4, 2, 0)
    assert problem.derivatives == sd.Autodiff() and hash(problem.derivatives) == hash(sd.Autodiff())
    assert not problem.is_symbolic and sd.SME(problem).reason == "numeric autodiff"
    assert problem.with_derivatives(None).derivatives == sd.Autodiff()
    from sgdsde._noise.per_example import output_gradients_constant  # internal: the linearity test

    linear = {name: output_gradients_constant(make_problem(name, 4, 2, 0)) for name in ALL_MODELS}
    assert linear == {name: name == "linear" for name in ALL_MODELS}
    assert sd.LabelNoise(0.5).noise_type(problem) == "additive"
    assert sd.LabelNoise(0.5).noise_type(make_problem("diagonal_signed", 4, 2, 0)) == "general"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_fast_forms_equal_their_definitions(name):
    """A loss's data-wide forms (ℓ′, L, ∂²ℓ, G, tr G; the squared loss's closed forms) equal the generic
    definitions from its per-example ℓ, ∂ℓ, ∂²ℓ. Float64 rounding of O(1) sums: 1e-12.
    [theory: LOSS-1, LOSS-5]"""
    loss, K, labels = LOSSES[name]
    rng = np.random.default_rng(1)
    n, d = 6, 3
    f = jnp.asarray(rng.normal(size=(n, K) if K > 1 else (n,)))
    y = jnp.asarray(np.resize(np.asarray(labels), n))
    J = jnp.asarray(rng.normal(size=(d, n, K) if K > 1 else (d, n)))
    base = sd.AbstractLoss
    for form in ("residuals", "mean", "curvatures"):
        close(getattr(loss, form)(f, y), getattr(base, form)(loss, f, y), 1e-12)
    close(loss.gauss_newton(J, f, y), base.gauss_newton(loss, J, f, y), 1e-12)
    close(loss.trace_gauss_newton(J, f, y), jnp.trace(base.gauss_newton(loss, J, f, y)), 1e-12)


def test_sampling_schemes_are_objects_named_by_the_noise_models():
    """A sampling scheme is an object owning its sampler state and its covariance scale c (1 with replacement,
    (n − B)/(n − 1) for a uniform subset or shuffled epochs: minibatch-noise.md §5, §9.1); a noise model takes
    the object or its name and keeps the name, so the same key gives the same draws either way."""
    problem = sd.quadratic_problem(np.diag([1.0, 0.5, 0.2]), np.zeros(3), dtype=np.float64)
    n = problem.n_data
    for obj, c in (
        (sd.WithReplacement(), 1.0),
        (sd.WithoutReplacement(), (n - 2) / (n - 1)),
        (sd.Shuffled(), (n - 2) / (n - 1)),
    ):
        by_name, by_object = sd.MinibatchNoise(2, obj.name), sd.MinibatchNoise(2, obj)
        assert by_object == by_name and by_object.sampling == obj.name
        assert (
            obj.scale(2, n) == c
            and not obj.full_batch(2, n)
            and obj.full_batch(n, n) != (obj.name == "with_replacement")
        )
        runs = [
            sd.simulate(
                sd.SGD(noise),
                problem,
                np.ones(3),
                lr=0.1,
                n_steps=4,
                key=1,
                ensemble=sd.Ensemble(3),
                record=sd.Record(n_saved_paths=3),
            )
            for noise in (by_name, by_object)
        ]
        np.testing.assert_array_equal(runs[0].paths, runs[1].paths)
    with pytest.raises(ValueError, match="sampling must be one of"):
        sd.LabelNoise(0.5, 2, "bogus")
