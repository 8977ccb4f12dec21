"""The noise × loss conformance matrix: every registered noise model × every registered loss × every path that
turns the noise into numbers, each against the exact law of SGD's stochastic gradient.

The exact law is computed by enumeration (every batch with its probability, every label-flip configuration,
every Bernoulli weight pattern) and, for the Gaussian or Rademacher parts that enter the gradient linearly,
by their exact first two moments: no Monte Carlo. The paths are
- ``sgd``: the noise's own ``draw`` and ``gradient`` (one step of simulate_sgd) — the law it samples is the
  enumerated one (a Monte Carlo check of the draws within 5 standard errors), and ``mean_gradient``;
- ``factor``: the SME's covariance factor A (``SME.diffusion`` = √η A, what every non-Euler diffrax solver
  integrates), with A Aᵀ = the exact covariance;
- ``euler``: the Euler fast path's matrix-free product (``SME.euler_form().factor_mv``), the noise's own
  ``factor_mv``, column by column, and the increment the Euler stepper adds (``euler_increment``: drift and
  diffusion in one VJP for a per-example noise, whose traced program runs the model's forward pass once);
- ``symbolic``: the same three on the symbolic back end (``symbolic.derive_sme``).
A pair a noise does not define is refused by name (``noise.check``, the SME and simulate_sgd), and REFUSED
lists which: a new noise model or loss joins every pair by its one registry line in tests/helpers.py.
"""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CLASSIFICATION_NOISES, LOSSES, NOISES
from jax.extend.core import ClosedJaxpr, Jaxpr

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
        cov = noise.sigma.astype(jnp.float64) ** 2 * jnp.eye(B)
        if idx is None:
            return (p, *linear(lambda e: grad((None, e)), jnp.zeros(B), cov))
        m, C = jax.vmap(lambda i: linear(lambda e: grad((i, e)), jnp.zeros(B), cov))(idx)
        return p, m[:, 0], C[:, 0]
    if isinstance(noise, sd.SphericalGaussianNoise):
        return (one, *linear(grad, jnp.zeros(d), noise.sigma.astype(jnp.float64) ** 2 * jnp.eye(d)))
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
        rows = None if idx is None else jnp.asarray(np.stack(idxs), jnp.int32)
        return (
            jnp.asarray(probs),
            _flip_gradients(noise, problem, theta, rows, lab),
            jnp.zeros((len(probs), d, d)),
        )
    raise AssertionError(f"no exact law for {type(noise).__name__}: add one to conditional_laws")


@eqx.filter_jit
def _flip_gradients(noise, problem, theta, rows, labels):
    if rows is None:
        return jax.vmap(lambda lb: noise.gradient(problem, theta, (None, lb)))(labels)
    return jax.vmap(lambda i, lb: noise.gradient(problem, theta, (i, lb)))(rows, labels)


def exact_moments(noise, problem, theta):
    """E g̃ and Cov g̃ of one step, exactly (law of total covariance over the discrete randomness); one
    compiled program per noise (label flips: the host enumerates their configurations)."""
    laws = conditional_laws if isinstance(noise, sd.LabelFlipNoise) else eqx.filter_jit(conditional_laws)
    p, m, C = laws(noise, problem, theta)
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
    back end's (float64 rounding); the SME's order-1 drift is −mean; the noise's draws sample that law (Monte
    Carlo, 5 s.e.); a refused pair is refused by name on every path.
    [theory: NOISE-6, NOISE-1, NOISE-2, NOISE-5, LOSS-1, SME-1, SDE-10]"""
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
    eta, m = 0.3, noise.noise_dim(problem)
    sme, ssme = sd.SME(problem, noise), sy.derive_sme(problem, noise)
    assert ssme.is_symbolic  # the model and every loss have a symbolic form
    got = _paths(noise, problem, theta, sme, ssme, m, eta)
    # sgd: the noise's mean; factor: the SME's drift and diffusion √η A (generic diffrax solvers)
    close(got["mean_gradient"], mean)
    close(got["drift"], -mean)
    assert got["diffusion"].shape == (problem.n_params, m)
    close(got["diffusion"] @ got["diffusion"].T / eta, cov)
    # euler: the Euler stepper's matrix-free product, and the noise's own; symbolic: the same on sympy's
    # derivatives
    for name in ("euler", "factor_mv", "symbolic_factor", "symbolic_euler"):
        close(got[name] @ got[name].T, cov)
    close(got["symbolic_drift"], -mean)
    # Euler's increment −mΔt + √η A w (Δt = η; √η A = the factor path's diffusion), and the momentum SME's
    # (MSDE-2) from y = (θ, m₀): θ moves by −m₀Δt, m by (mean + wθ − (1 − β)m₀)Δt/η − η^{-1/2}A w; each one
    # forward pass of the model (a tanh per pass) in its traced program, as the drift alone: drift and diffusion
    # share one VJP (SDE-10)
    d, m0, w = problem.n_params, momentum0(problem.n_params), fixed_w(m)
    close(got["increment0"], -eta * mean)
    close(got["increment_w"] - got["increment0"], got["diffusion"] @ w)
    close(got["momentum_increment0"], jnp.concatenate([-eta * m0, mean + WD * theta - (1 - BETA) * m0]))
    diff = got["momentum_increment_w"] - got["momentum_increment0"]
    close(diff, jnp.concatenate([jnp.zeros(d), -got["diffusion"] @ w / eta]))
    for sde, y in ((sme.euler_form(), theta), (momentum_sme(problem, noise), jnp.concatenate([theta, m0]))):
        jaxpr = jax.make_jaxpr(lambda t, w, sde=sde: sde.euler_increment(t, eta, eta, w))(y, jnp.zeros(m))
        assert count_primitive(jaxpr.jaxpr, "tanh") == 1
    # sgd: simulate_sgd's draws (``draw`` then ``gradient``, 4,000 paths of one step, fixed key) sample the
    # enumerated law: each entry within 5 standard errors (SE of the sample mean from the exact covariance;
    # SE of each sample covariance entry from the per-path products)
    N = 4000
    g = _draws(noise, problem, theta, jax.random.key(17), N)
    se_mean = jnp.sqrt(jnp.diag(cov) / N)
    assert jnp.all(jnp.abs(g.mean(0) - mean) <= 5 * se_mean + 1e-12), (g.mean(0) - mean) / se_mean
    c = g - mean[None, :]
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(0) / math.sqrt(N)
    assert jnp.all(jnp.abs(prods.mean(0) - cov) <= 5 * se_cov + 1e-12)


@eqx.filter_jit
def _paths(noise, problem, theta, sme, ssme, m, eta):
    """Every path's numbers at θ, in one compiled program: the mean, the SME's drift and diffusion, the
    Euler and the noise's matrix-free products as matrices, the symbolic SME's, and Euler's increments."""
    d = problem.n_params
    return {
        "mean_gradient": noise.mean_gradient(problem, theta),
        "drift": sme.drift(theta, eta),
        "diffusion": sme.diffusion(theta, eta),
        "euler": columns(lambda w: sme.euler_form().factor_mv(theta, w), m),
        "factor_mv": columns(lambda w: noise.factor_mv(problem, theta, w), m),
        "symbolic_drift": ssme.drift(theta, eta),
        "symbolic_factor": ssme.factor(theta),
        "symbolic_euler": columns(lambda w: ssme.euler_form().factor_mv(theta, w), m),
        # Euler's increment at w = 0 and at one fixed w, for the SME and the momentum SME (affine in w)
        **{
            f"{name}{tag}": sde.euler_increment(y, eta, eta, w)
            for name, sde, y in (
                ("increment", sme.euler_form(), theta),
                ("momentum_increment", momentum_sme(problem, noise), jnp.concatenate([theta, momentum0(d)])),
            )
            for tag, w in (("0", jnp.zeros(m)), ("_w", fixed_w(m)))
        },
    }


BETA, WD = 0.8, 0.05


def momentum0(d: int):
    """A momentum buffer m₀ (d,), fixed."""
    return jnp.asarray(np.random.default_rng(4).normal(size=d))


def fixed_w(m: int):
    """A fixed Brownian increment w (m,)."""
    return jnp.asarray(np.random.default_rng(5).normal(size=m))


def momentum_sme(problem, noise):
    return sd.MomentumSME(problem, noise, beta=BETA, weight_decay=WD)


def count_primitive(jaxpr, name: str) -> int:
    """How many equations apply primitive ``name`` in a jaxpr, its sub-jaxprs included (pjit, custom rules)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == name
        for v in eqn.params.values():
            for x in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(x, ClosedJaxpr | Jaxpr):
                    total += count_primitive(x.jaxpr if isinstance(x, ClosedJaxpr) else x, name)
    return total


@eqx.filter_jit
def _draws(noise, problem, theta, key, n):
    """One step's stochastic gradients of n paths, drawn as simulate_sgd draws them."""
    state = noise.init_state(problem, key, n, jnp.float64)
    draws, _ = noise.draw(problem, key, jnp.int32(0), state, n, jnp.float64)
    return jax.vmap(lambda dr: noise.gradient(problem, theta, dr))(draws)


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
