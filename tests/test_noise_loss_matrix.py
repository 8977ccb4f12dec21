"""The noise × loss conformance matrix: every registered noise model × every registered loss × every path that
turns the noise into numbers, each against the exact law of SGD's stochastic gradient.

The exact law is computed by enumeration (every batch with its probability, every label-flip configuration,
every Bernoulli weight pattern) and, for the Gaussian or Rademacher parts that enter the gradient linearly,
by their exact first two moments: no Monte Carlo. The paths are
- ``sgd``: the noise's own ``draw`` and ``gradient`` (one step of simulate_sgd) — the law it samples is the
  enumerated one (a Monte Carlo check of the draws within 5 standard errors), and ``mean_gradient``;
- ``factor``: the SME's covariance factor A (``SME.diffusion`` = √η A, what every non-Euler diffrax solver
  integrates), with A Aᵀ = the exact covariance;
- ``euler``: the Euler fast path's matrix-free product (``SME.euler_form().factor_mv``, what the Euler stepper
  calls) and the noise's own ``factor_mv``, column by column;
- ``symbolic``: the same three on the symbolic back end (``symbolic.derive_sme``).
A pair a noise does not define is refused by name (``noise.check``, the SME and simulate_sgd), and REFUSED
lists which: a new noise model or loss joins every pair by its one registry line in tests/helpers.py.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CLASSIFICATION_NOISES, LOSSES, NOISES

import sgdsde as sd
import sgdsde.symbolic as sy

ALL_NOISES = {**NOISES, **CLASSIFICATION_NOISES}
ADDITIVE_LABEL_NOISES = {
    n for n in ALL_NOISES if isinstance(ALL_NOISES[n](4, 2), sd.LabelNoise | sd.FullGradientLabelNoise)
}
FLIPS = set(CLASSIFICATION_NOISES)
# (noise, loss) pairs that are refused by name: additive label noise y + ε is defined for real labels only
# (a label on ±1 or a class is flipped, not shifted), label flips need classes.
REFUSED = {(nn, ll) for nn in ADDITIVE_LABEL_NOISES for ll in ("logistic", "cross_entropy")} | {
    (nn, "squared") for nn in FLIPS
}
PAIRS = [(nn, ll) for nn in sorted(ALL_NOISES) for ll in sorted(LOSSES)]
N_DATA = 4


def problem_for(loss_name: str) -> sd.Problem:
    """n = 4 examples, a tanh network with 2 inputs and width 2 (K outputs for a K-class loss), float64."""
    loss, K, labels = LOSSES[loss_name]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N_DATA, 2))
    y = np.asarray([labels[i % len(labels)] for i in range(N_DATA)])
    return sd.Problem(sd.TwoLayerNetwork(2, 2, "tanh", n_outputs=K), X, y, loss=loss)


def close(a, b, tol=1e-11):
    # float64 identities of O(1) quantities: only rounding separates the two sides
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# -- the exact law of one step's stochastic gradient ---------------------------------------------------------
def index_law(n: int, B: int, sampling: str):
    """(probabilities (L,), batch indices (L, B) or None) of one step: the n^B ordered tuples with
    replacement, the ordered B-permutations without (shuffled epochs: each step's batch is a uniform B-subset,
    the same law); None for the full batch."""
    if sampling != "with_replacement" and B == n:
        return jnp.ones(1), None
    if sampling == "with_replacement":
        tuples = list(itertools.product(range(n), repeat=B))
    else:
        tuples = list(itertools.permutations(range(n), B))
    return jnp.full(len(tuples), 1.0 / len(tuples)), jnp.asarray(tuples, jnp.int32)


def conditional_laws(noise, problem, theta):
    """(p (L,), E[g̃ | discrete part] (L, d), Cov[g̃ | discrete part] (L, d, d)) over the noise's discrete
    randomness (batches, flips, Bernoulli weights); a part that enters g̃ linearly (label noise ε, Gaussian
    ξ, Gaussian weights) contributes its exact covariance M Cov Mᵀ, M = ∂g̃/∂(that part)."""
    n, d = problem.n_data, problem.n_params
    grad = lambda draws: noise.gradient(problem, theta, draws)
    one = jnp.ones(1)

    def linear(g, at, cov):  # g affine in its argument of mean ``at`` and covariance ``cov``
        M = jax.jacfwd(g)(at)
        return g(at)[None], (M @ cov @ M.T)[None]

    if isinstance(noise, sd.NoNoise):
        return one, grad(jnp.zeros(0))[None], jnp.zeros((1, d, d))
    if isinstance(noise, sd.MinibatchNoise):
        p, idx = index_law(n, noise.batch_size, noise.sampling)
        g = grad(None)[None] if idx is None else jax.vmap(grad)(idx)
        return p, g, jnp.zeros((len(p), d, d))
    if isinstance(noise, sd.LabelNoise | sd.FullGradientLabelNoise):
        B = noise.batch(problem) if isinstance(noise, sd.LabelNoise) else noise.batch_size
        p, idx = index_law(n, B, noise.sampling)
        if idx is None and isinstance(noise, sd.FullGradientLabelNoise):
            idx = jnp.arange(n, dtype=jnp.int32)[None]
        # ε = σ·(±1) or σ·N(0, 1): mean 0, covariance σ²I (the draws carry σ)
        cov = float(noise.sigma) ** 2 * jnp.eye(B)
        if idx is None:
            return (p, *linear(lambda e: grad((None, e)), jnp.zeros(B), cov))
        m, C = jax.vmap(lambda i: linear(lambda e: grad((i, e)), jnp.zeros(B), cov))(idx)
        return p, m[:, 0], C[:, 0]
    if isinstance(noise, sd.SphericalGaussianNoise):
        return (one, *linear(grad, jnp.zeros(d), float(noise.sigma) ** 2 * jnp.eye(d)))
    if isinstance(noise, sd.GaussianNoise):
        m = noise.noise_dim(problem)
        return (one, *linear(grad, jnp.zeros(m), jnp.eye(m)))
    if isinstance(noise, sd.MultiplicativeNoise):
        b = noise.batch_size
        if noise.weights == "bernoulli":  # m_i = Bern(q)/q, q = b/n: every pattern of the n bits
            q = b / n
            bits = jnp.asarray(list(itertools.product((0.0, 1.0), repeat=n)))
            p = jnp.prod(jnp.where(bits > 0, q, 1 - q), axis=1)
            return p, jax.vmap(grad)(bits / q), jnp.zeros((len(p), d, d))
        # m = 1 + √(n/b)·ε, ε ~ N(0, I) (Fisher) or its centred ε − ε̄ (covariance I − 11ᵀ/n)
        cov = (n / b) * (jnp.eye(n) - float(noise.weights == "gaussian_centred") * jnp.ones((n, n)) / n)
        return (one, *linear(grad, jnp.ones(n), cov))
    if isinstance(noise, sd.LabelFlipNoise):
        T = np.asarray(noise.matrix(problem))
        cls = np.asarray(noise._class_index(problem, problem.y))
        K = T.shape[0]
        p_idx, idx = index_law(n, noise.batch(problem), noise.sampling)
        rows_all = np.arange(n)[None] if idx is None else np.asarray(idx)
        probs, idxs, labels = [], [], []
        for p_b, rows in zip(np.asarray(p_idx), rows_all, strict=True):
            for new in itertools.product(range(K), repeat=len(rows)):
                q = p_b * math.prod(T[cls[r], c] for r, c in zip(rows, new, strict=True))
                if q > 0:
                    probs.append(q), idxs.append(rows), labels.append(new)
        lab = noise._label(problem, jnp.asarray(labels), problem.y)
        if idx is None:
            g = jax.vmap(lambda lb: grad((None, lb)))(lab)
        else:
            g = jax.vmap(lambda i, lb: grad((i, lb)))(jnp.asarray(np.stack(idxs), jnp.int32), lab)
        return jnp.asarray(probs), g, jnp.zeros((len(probs), d, d))
    raise AssertionError(f"no exact law for {type(noise).__name__}: add one to conditional_laws")


def exact_moments(noise, problem, theta):
    """E g̃ and Cov g̃ of one step, exactly (law of total covariance over the discrete randomness)."""
    p, m, C = conditional_laws(noise, problem, theta)
    assert abs(float(jnp.sum(p)) - 1.0) < 1e-12
    mean = p @ m
    c = m - mean[None, :]
    return mean, jnp.einsum("l,lij->ij", p, C) + (c * p[:, None]).T @ c


def columns(mv, m: int):
    """The d × m matrix of a matrix-free product w ↦ A w."""
    return jax.vmap(mv, out_axes=1)(jnp.eye(m))


def build(noise_name, loss_name):
    problem = problem_for(loss_name)
    theta = 0.7 * jax.random.normal(jax.random.key(5), (problem.n_params,), jnp.float64)
    if noise_name in CLASSIFICATION_NOISES:
        K = max(2, problem.model.n_outputs)
        return problem, theta, CLASSIFICATION_NOISES[noise_name](problem.n_data, problem.n_params, K)
    return problem, theta, NOISES[noise_name](problem.n_data, problem.n_params)


@pytest.mark.parametrize("noise_name, loss_name", PAIRS)
def test_every_noise_loss_pair_on_every_path_is_the_exact_law(noise_name, loss_name):
    """Exact mean and covariance of SGD's stochastic gradient (enumeration) = ``mean_gradient`` and A Aᵀ of
    the SME's factor, the Euler fast path's matrix-free product, the noise's own product, and the symbolic
    back end's; the SME's order-1 drift is −mean; a refused pair is refused by name on every path.
    [theory: NOISE-6, NOISE-1, NOISE-2, NOISE-5, LOSS-1, SME-1]"""
    problem, theta, noise = build(noise_name, loss_name)
    loss_cls = type(problem.loss_fn).__name__
    if (noise_name, loss_name) in REFUSED:
        for refuse in (
            lambda: noise.check(problem),
            lambda: sd.SME(problem, noise),
            lambda: sd.simulate_sgd(problem, noise, theta, lr=0.1, n_steps=1, key=jax.random.key(0)),
        ):
            with pytest.raises(ValueError, match=loss_cls if noise_name not in FLIPS else "classification"):
                refuse()
        return
    noise.check(problem)
    mean, cov = exact_moments(noise, problem, theta)
    eta = 0.3
    # sgd: the noise's mean; factor: the SME's diffusion √η A (generic diffrax solvers) and drift
    close(noise.mean_gradient(problem, theta), mean)
    sme = sd.SME(problem, noise)
    close(sme.drift(theta, eta), -mean)
    S = sme.diffusion(theta, eta)
    close(S @ S.T / eta, cov)
    m = noise.noise_dim(problem)
    assert S.shape == (problem.n_params, m)
    # euler: the Euler stepper's matrix-free product, and the noise's own
    A_euler = columns(lambda w: sme.euler_form().factor_mv(theta, w), m)
    close(A_euler @ A_euler.T, cov)
    A_mv = columns(lambda w: noise.factor_mv(problem, theta, w), m)
    close(A_mv @ A_mv.T, cov)
    # symbolic: the same SME on sympy's derivatives (the model and every loss have a symbolic form)
    ssme = sy.derive_sme(problem, noise)
    assert ssme.is_symbolic
    close(ssme.drift(theta, eta), -mean)
    A_sym = ssme.factor(theta)
    close(A_sym @ A_sym.T, cov)
    A_sym_mv = columns(lambda w: ssme.euler_form().factor_mv(theta, w), m)
    close(A_sym_mv @ A_sym_mv.T, cov)


@pytest.mark.parametrize("noise_name, loss_name", [p for p in PAIRS if p not in REFUSED])
def test_the_draws_sample_the_enumerated_law(noise_name, loss_name):
    """simulate_sgd's draws (``draw`` then ``gradient``, 4,000 paths of one step, fixed key) have the
    enumerated mean and covariance: each entry within 5 standard errors (SE of the sample mean from the exact
    covariance; SE of each sample covariance entry from the per-path products). [theory: NOISE-6, NOISE-1, NOISE-2]"""
    problem, theta, noise = build(noise_name, loss_name)
    mean, cov = exact_moments(noise, problem, theta)
    N, key = 4000, jax.random.key(17)
    state = noise.init_state(problem, key, N, jnp.float64)
    draws, _ = noise.draw(problem, key, jnp.int32(0), state, N, jnp.float64)
    g = jax.vmap(lambda dr: noise.gradient(problem, theta, dr))(draws)
    se_mean = jnp.sqrt(jnp.diag(cov) / N)
    assert jnp.all(jnp.abs(g.mean(0) - mean) <= 5 * se_mean + 1e-12), (g.mean(0) - mean) / se_mean
    c = g - mean[None, :]
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(0) / math.sqrt(N)
    assert jnp.all(jnp.abs(prods.mean(0) - cov) <= 5 * se_cov + 1e-12)


@pytest.mark.parametrize("loss_name", ["logistic", "cross_entropy"])
def test_one_step_of_sgd_and_of_its_euler_sde_on_a_classification_loss(loss_name):
    """End to end, the bug of a squared-loss residual in the Euler fast path (issue 26 §1): one step of
    minibatch SGD and one Euler step of its SME from θ₀ have the same second moment
    E[(θ₁ − θ₀)(θ₁ − θ₀)ᵀ] = η²(m mᵀ + Σ), m and Σ the enumerated law; each simulator's ensemble mean (4,000
    paths, fixed key) within 5 standard errors of it per entry. [theory: NOISE-6, NOISE-1, SDE-1]"""
    problem, theta, noise = build("minibatch_wr", loss_name)
    mean, cov = exact_moments(noise, problem, theta)
    eta = 0.5
    want = eta**2 * (jnp.outer(mean, mean) + cov)
    record = sd.Record(observables={"dd": lambda p, th: jnp.outer(th - theta, th - theta)})
    for simulate in (sd.simulate_sgd, sd.simulate_sde):
        res = simulate(
            problem,
            noise,
            theta,
            lr=eta,
            n_steps=1,
            key=jax.random.key(3),
            ensemble=sd.Ensemble(n_paths=4000),
            record=record,
        )
        got, se = res.mean["dd"][-1], res.stderr("dd")[-1]
        assert np.all(np.abs(got - np.asarray(want)) <= 5 * se + 1e-14), (
            simulate.__name__,
            (got - want) / se,
        )
