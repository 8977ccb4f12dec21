"""Noise models: exact enumeration of minibatch and label-noise covariances, Wu et al.'s weights, and a
Monte Carlo conformance test of every registered noise (mean = ∇L, covariance = A Aᵀ)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    CLASSIFICATION_NOISES,
    MODEL_NOISES,
    MODELS,
    NOISES,
    SGD_ONLY_NOISES,
    batch_gradient,
    make_problem,
    random_theta,
)
from hypothesis import given, settings, strategies as st

import sgdsde as sd


def draw_gradients(noise, problem, theta, key, n_draws, step=0, state=None):
    """n_draws stochastic gradients at θ from one step's draws (the simulator's own code path)."""
    if state is None:
        state = noise.init_state(problem, key, n_draws, theta.dtype)
    draws, state = noise.draw(problem, key, step, state, n_draws, theta.dtype)
    return jax.vmap(noise.gradient, in_axes=(None, None, 0))(problem, theta, draws), state


def exact_moments(gradients, probs):
    g = np.asarray(gradients)
    mean = probs @ g
    centred = g - mean
    return mean, (centred * probs[:, None]).T @ centred


@pytest.mark.parametrize("model", ["linear", "two_layer_tanh", "diagonal_signed"])
@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement", "shuffle"])
def test_minibatch_covariance_by_exact_enumeration(model, sampling):
    """Enumerating every batch: mean = ∇L and Cov = c·Σ₁/B = A Aᵀ, c = 1 (WR) or (n−B)/(n−1).
    [theory: NOISE-1] Exact up to float64 rounding: tolerance 1e-12."""
    n, B = 5, 2
    problem = make_problem(model, n, 3, 11)
    theta = random_theta(problem, 11)
    if sampling == "with_replacement":
        batches = list(itertools.product(range(n), repeat=B))
    else:
        batches = list(itertools.combinations(range(n), B))
    probs = np.full(len(batches), 1 / len(batches))
    grads = jnp.stack([batch_gradient(problem, theta, jnp.array(b)) for b in batches])
    mean, cov = exact_moments(grads, probs)
    noise = sd.MinibatchNoise(B, sampling)
    np.testing.assert_allclose(mean, problem.grad(theta), atol=1e-12)
    np.testing.assert_allclose(cov, noise.covariance(problem, theta), atol=1e-12)
    # Σ₁ from its definition, scaled: the closed form of minibatch-noise.md §5.
    G = np.asarray(problem.loss_gradients(theta))
    C = G - G.mean(axis=1, keepdims=True)
    sigma1 = C @ C.T / n
    c = 1.0 if sampling == "with_replacement" else (n - B) / (n - 1)
    np.testing.assert_allclose(cov, c * sigma1 / B, atol=1e-12)


def test_without_replacement_full_batch_has_no_noise():
    """WOR at B = n is GD: Σ = 0. [theory: NOISE-1]"""
    problem = make_problem("two_layer_tanh", 4, 2, 3)
    theta = random_theta(problem, 3)
    for sampling in ("without_replacement", "shuffle"):
        np.testing.assert_allclose(sd.MinibatchNoise(4, sampling).covariance(problem, theta), 0, atol=1e-14)


@pytest.mark.parametrize(
    "batch_size, sampling",
    [(None, "without_replacement"), (2, "with_replacement"), (3, "without_replacement")],
)
def test_label_noise_covariance_by_exact_enumeration(batch_size, sampling):
    """Enumerating batches × Rademacher signs: Cov = Σ_minibatch + (σ²/B)G(θ) at any θ, not only at zero
    loss. [theory: NOISE-2] Exact: tolerance 1e-12."""
    n, sigma = 4, 0.7
    problem = make_problem("two_layer_tanh", n, 2, 5)
    theta = random_theta(problem, 5)
    B = n if batch_size is None else batch_size
    if sampling == "with_replacement":
        batches = list(itertools.product(range(n), repeat=B))
    else:
        batches = list(itertools.combinations(range(n), B))
    signs = list(itertools.product([-sigma, sigma], repeat=B))
    grads = jnp.stack(
        [
            batch_gradient(problem, theta, jnp.array(b), problem.y[jnp.array(b)] + jnp.array(s))
            for b in batches
            for s in signs
        ]
    )
    probs = np.full(len(grads), 1 / len(grads))
    mean, cov = exact_moments(grads, probs)
    noise = sd.LabelNoise(sigma, batch_size, sampling)
    np.testing.assert_allclose(mean, problem.grad(theta), atol=1e-12)
    np.testing.assert_allclose(cov, noise.covariance(problem, theta), atol=1e-12)
    minibatch = sd.MinibatchNoise(B, sampling).covariance(problem, theta)
    expect = minibatch + sigma**2 / B * problem.gauss_newton(theta)
    np.testing.assert_allclose(cov, expect, atol=1e-12)


def test_wu_multiplicative_covariances_match_minibatch_forms():
    """Wu et al. with σ² = n/b: centred Gaussian → Σ₁/b (the WR minibatch covariance); Fisher → F/b;
    Bernoulli(b/n)/p → ((n−b)/(nb))F. [theory: NOISE-4] Exact: tolerance 1e-12."""
    n, b = 6, 2
    problem = make_problem("diagonal_signed", n, 3, 9)
    theta = random_theta(problem, 9)
    G = np.asarray(problem.loss_gradients(theta))
    F = G @ G.T / n
    wr = sd.MinibatchNoise(b, "with_replacement").covariance(problem, theta)
    np.testing.assert_allclose(
        sd.MultiplicativeNoise(b, "gaussian_centred").covariance(problem, theta), wr, atol=1e-12
    )
    np.testing.assert_allclose(
        sd.MultiplicativeNoise(b, "gaussian_fisher").covariance(problem, theta), F / b, atol=1e-12
    )
    np.testing.assert_allclose(
        sd.MultiplicativeNoise(b, "bernoulli").covariance(problem, theta), (n - b) / (n * b) * F, atol=1e-12
    )


@pytest.mark.parametrize("weights", ["gaussian_fisher", "gaussian_centred", "bernoulli"])
def test_wu_weight_covariances_monte_carlo(weights):
    """The drawn weights have E m = 𝟙 and Cov m = (n/b)I, (n/b)(I − 𝟙𝟙ᵀ/n), ((1−p)/p)I. [theory: NOISE-4]

    Monte Carlo with 200,000 draws: each entry's standard error is ≤ √(2·var²/N) ≈ 0.01 for var = 3;
    we allow 5 standard errors.
    """
    n, b, N = 6, 2, 200_000
    problem = make_problem("linear", n, 2, 1)
    noise = sd.MultiplicativeNoise(b, weights)
    m, _ = noise.draw(problem, jax.random.key(3), 0, None, N, jnp.float64)
    m = np.asarray(m)
    if weights == "gaussian_fisher":
        expect = n / b * np.eye(n)
    elif weights == "gaussian_centred":
        expect = n / b * (np.eye(n) - np.ones((n, n)) / n)
    else:
        p = b / n
        expect = (1 - p) / p * np.eye(n)
    se = np.sqrt(2 * np.max(np.diag(expect)) ** 2 / N)
    np.testing.assert_allclose(m.mean(axis=0), 1.0, atol=5 * np.sqrt(np.max(np.diag(expect)) / N))
    np.testing.assert_allclose(np.cov(m.T), expect, atol=5 * se)


@pytest.mark.parametrize("noise_name", sorted(NOISES))
@settings(max_examples=5)
@given(
    seed=st.integers(0, 2**16),
    model=st.sampled_from(["linear", "two_layer_tanh", "diagonal_signed"]),
    n=st.sampled_from([4, 6]),
    p=st.sampled_from([2, 3]),
)
def test_every_noise_is_unbiased_with_covariance_A_At(noise_name, seed, model, n, p):
    """Every noise model's stochastic gradient has its stated mean (∇L unless the noise says it is biased)
    and covariance A(θ)A(θ)ᵀ, through the simulator's own draw/gradient path. [theory: NOISE-1, NOISE-2, NOISE-3, NOISE-4]

    Monte Carlo, N = 40,000 draws: the mean is checked per coordinate within 5 standard errors (the
    sample s.e.), the covariance entrywise within 5 standard errors of the mean of products (estimated
    from the same draws), plus 1e-10 for exact zeros.
    """
    problem = make_problem(model, n, p, seed)
    theta = random_theta(problem, seed)
    noise = NOISES[noise_name](n, problem.n_params)
    noise.check(problem)
    N = 40_000
    g, _ = draw_gradients(noise, problem, theta, jax.random.key(seed), N)
    g = np.asarray(g)
    grad = np.asarray(noise.mean_gradient(problem, theta))  # ∇L, or the stated mean of a biased noise
    se_mean = g.std(axis=0) / math.sqrt(N)
    assert np.all(np.abs(g.mean(axis=0) - grad) <= 5 * se_mean + 1e-10)
    c = g - grad
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(axis=0) / math.sqrt(N)
    cov = np.asarray(noise.covariance(problem, theta))
    assert np.all(np.abs(prods.mean(axis=0) - cov) <= 5 * se_cov + 1e-10), np.abs(prods.mean(0) - cov).max()


def test_shuffled_epochs_are_partitions():
    """Shuffle sampling: within an epoch the m = ⌊n/B⌋ batches are disjoint; epochs differ. [theory: NOISE-1]"""
    n, B, N = 7, 2, 50
    problem = make_problem("linear", n, 2, 0)
    noise = sd.MinibatchNoise(B, "shuffle")
    state = noise.init_state(problem, jax.random.key(0), N, jnp.float64)
    epochs = []
    for epoch in range(2):
        idx = []
        for j in range(n // B):
            step = epoch * (n // B) + j
            batch, state = noise.draw(problem, jax.random.key(step), step, state, N, jnp.float64)
            idx.append(np.asarray(batch))
        idx = np.concatenate(idx, axis=1)  # N × (mB)
        assert all(len(set(row)) == (n // B) * B for row in idx)
        epochs.append(idx)
    assert np.any(epochs[0] != epochs[1])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sd.LabelNoise(-0.1), "sigma must be finite and >= 0"),
        (lambda: sd.LabelNoise(float("nan")), "sigma must be finite"),
        (lambda: sd.LabelNoise(1.0, distribution="cauchy"), "distribution must be one of"),
        (lambda: sd.MinibatchNoise(0), "batch_size must be an integer >= 1"),
        (lambda: sd.MinibatchNoise(2, "poisson"), "sampling must be one of"),
        (lambda: sd.GaussianNoise(np.array([[1.0, 2.0], [2.0, 1.0]])), "positive semi-definite"),
        (lambda: sd.GaussianNoise(np.ones((2, 3))), "square matrix"),
        (lambda: sd.MultiplicativeNoise(2, "laplace"), "weights must be one of"),
        (lambda: sd.SphericalGaussianNoise(-1), "sigma must be finite and >= 0"),
    ],
)
def test_bad_noise_parameters(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_batch_larger_than_data_is_rejected():
    problem = make_problem("linear", 5, 2, 0)
    for noise in (sd.MinibatchNoise(6), sd.LabelNoise(1.0, 6), sd.MultiplicativeNoise(9)):
        with pytest.raises(ValueError, match=r"batch_size must be in \[1, 5\]"):
            noise.check(problem)
    with pytest.raises(ValueError, match=r"noise factor must have shape \(2, m\)"):
        sd.GaussianNoise(np.eye(3)).check(problem)


def test_registry_covers_every_noise_class():
    """A new noise class must join the registry (and so every conformance test)."""
    classes = {
        type(f(6, 4)) for f in (*NOISES.values(), *CLASSIFICATION_NOISES.values(), *SGD_ONLY_NOISES.values())
    } | {type(f(6, 4)) for _, f in MODEL_NOISES.values()}
    public = {c for c in vars(sd).values() if isinstance(c, type) and issubclass(c, sd.AbstractGradientNoise)}
    assert public - {sd.AbstractGradientNoise} <= classes
    assert {type(f(3)) for f in MODELS.values()} >= {
        c
        for c in vars(sd).values()
        if isinstance(c, type) and issubclass(c, sd.AbstractModel) and not c.__name__.startswith("Abstract")
    }


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_full_gradient_label_noise_by_exact_enumeration(sampling):
    """Full gradient + label noise on B sampled examples: enumerating every batch × sign pattern, the mean is
    ∇L and the covariance (σ²/B)G(θ) exactly (no minibatch part), = A Aᵀ. [theory: NOISE-5] Exact: 1e-12."""
    n, B, sigma = 4, 2, 0.7
    problem = make_problem("two_layer_tanh", n, 2, 8)
    theta = random_theta(problem, 8)
    noise = sd.FullGradientLabelNoise(sigma, B, sampling)
    if sampling == "with_replacement":
        batches = list(itertools.product(range(n), repeat=B))
    else:
        batches = list(itertools.combinations(range(n), B))
    signs = list(itertools.product([-sigma, sigma], repeat=B))
    grads = jnp.stack(
        [noise.gradient(problem, theta, (jnp.array(b), jnp.array(s))) for b in batches for s in signs]
    )
    mean, cov = exact_moments(grads, np.full(len(grads), 1 / len(grads)))
    np.testing.assert_allclose(mean, problem.grad(theta), atol=1e-12)
    np.testing.assert_allclose(cov, sigma**2 / B * problem.gauss_newton(theta), atol=1e-12)
    np.testing.assert_allclose(cov, noise.covariance(problem, theta), atol=1e-12)
    assert noise.effective_lambda(0.1) == pytest.approx(0.1 * sigma**2 / B)


def test_full_gradient_label_noise_is_haochens_lngd_update():
    """HaoChen et al.'s LNGD step written out by hand, on their conventions (per-example loss ¼(y − f)²
    averaged, f = ⟨v⊙v, x⟩, one random example's label + δ·N(0, 1)), equals sgdsde's step with
    FullGradientLabelNoise(σ = δ, B = 1, Gaussian) and η = lr/2, on the same random numbers, for 30 steps.
    [theory: NOISE-5, CONV-1] Deterministic given the draws: float64 rounding, tolerance 1e-12."""
    rng = np.random.default_rng(0)
    n, d, lr, delta = 8, 5, 0.05, 1.0
    X = rng.normal(size=(n, d))
    y = X @ np.r_[1.0, 1.0, np.zeros(d - 2)]
    problem = sd.Problem(sd.DiagonalLinearNetwork(d, 1.0, signed=False), X, y, dtype=jnp.float64)
    noise = sd.FullGradientLabelNoise(delta, 1, "with_replacement", "gaussian")
    v_hand = np.ones(d)
    v_lib = jnp.ones(d)
    for k in range(30):
        draws, _ = noise.draw(problem, jax.random.key(k), k, None, 1, jnp.float64)
        i, xi = int(draws[0][0, 0]), float(draws[1][0, 0]) / delta
        # HaoChen's code: gradient of (1/n)Σ_j ¼(ỹ_j − ⟨v⊙v, x_j⟩)² with ỹ_i = y_i + δξ on the one example i,
        # the label noise entering without the 1/n: the noise term is −δξ·(v⊙x_i) (label-noise.md §3(b)).
        r = (v_hand**2) @ X.T - y
        grad_hand = (X * r[:, None]).mean(axis=0) * v_hand - delta * xi * v_hand * X[i]
        v_hand = v_hand - lr * grad_hand
        g = noise.gradient(problem, v_lib, jax.tree.map(lambda a: a[0], draws))
        v_lib = v_lib - (lr / 2) * g
    np.testing.assert_allclose(np.asarray(v_lib), v_hand, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "noise_name, problem_name",
    # every classification noise on the binary problem; those without a 2-class matrix also on K = 3
    [(nn, "logistic") for nn in sorted(CLASSIFICATION_NOISES)]
    + [(nn, "ce3") for nn in sorted(CLASSIFICATION_NOISES) if "transition" not in nn],
)
def test_every_classification_noise_has_its_stated_mean_and_covariance(noise_name, problem_name):
    """The classification-noise registry through the simulator's own draw/gradient path: mean within 5
    standard errors of ``mean_gradient`` (the stated, biased mean) and covariance within 5 s.e. of A Aᵀ
    (40,000 draws, fixed key; as the regression conformance test). [theory: FLIP-1, FLIP-2]"""
    from helpers import CLASSIFICATION_PROBLEMS

    problem = CLASSIFICATION_PROBLEMS[problem_name]()
    noise = CLASSIFICATION_NOISES[noise_name](problem.n_data, problem.n_params)
    noise.check(problem)
    theta = 0.7 * jax.random.normal(jax.random.key(9), (problem.n_params,), jnp.float64)
    N = 40_000
    g, _ = draw_gradients(noise, problem, theta, jax.random.key(10), N)
    g = np.asarray(g)
    mean = np.asarray(noise.mean_gradient(problem, theta))
    assert np.all(np.abs(g.mean(axis=0) - mean) <= 5 * g.std(axis=0) / math.sqrt(N) + 1e-10)
    c = g - mean
    prods = c[:, :, None] * c[:, None, :]
    se = prods.std(axis=0) / math.sqrt(N)
    assert np.all(np.abs(prods.mean(axis=0) - np.asarray(noise.covariance(problem, theta))) <= 5 * se + 1e-10)
