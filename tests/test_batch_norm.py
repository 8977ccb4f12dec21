"""Batch-normalization noise and StochNorm (theory/normalization.md): the exact law by enumeration against an
independent NumPy implementation (complex-step derivatives), against the Monte Carlo ensemble of the SGD
side's draws, its bias, the p = 0 / p = 1 reductions, its SME against SGD, and bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import OPTIMIZERS

import sgdsde as sd

N_DATA, DIM, WIDTH = 5, 2, 2
MEAN, VAR = (0.1, -0.2), (1.2, 0.8)  # moving statistics: not the data's, so the branches differ


def _problem(loss="squared"):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_DATA, DIM))
    model = sd.NormalizedTwoLayerNetwork(DIM, WIDTH, mean=MEAN, var=VAR)
    if loss == "logistic":
        return sd.Problem(model, X, np.where(rng.normal(size=N_DATA) > 0, 1.0, -1.0), loss=sd.LogisticLoss())
    return sd.Problem(model, X, rng.normal(size=N_DATA))


@pytest.fixture(scope="module")
def problem():
    return _problem()


@pytest.fixture(scope="module")
def theta(problem):
    return problem.model.init(jax.random.key(1))


# -- an independent NumPy implementation: forward pass in complex arithmetic, derivatives by complex step ---


def _np_batch_loss(theta, Xb, yb, mask, loss, eps=1e-5):
    m, p = WIDTH, DIM
    W = theta[: m * p].reshape(m, p)
    gamma, beta, a = theta[m * p : m * p + m], theta[m * p + m : m * p + 2 * m], theta[m * p + 2 * m :]
    H = Xb @ W.T
    mu_b = H.mean(axis=0)
    var_b = ((H - mu_b) ** 2).mean(axis=0)
    Z_batch = gamma * (H - mu_b) / np.sqrt(var_b + eps) + beta
    Z_moving = gamma * (H - np.array(MEAN)) / np.sqrt(np.array(VAR) + eps) + beta
    f = np.tanh(np.where(mask, Z_batch, Z_moving)) @ a
    if loss == "logistic":
        return np.mean(np.log(1 + np.exp(-yb * f)))
    return np.mean(0.5 * (f - yb) ** 2)


def _np_gradient(theta, Xb, yb, mask, loss):
    """Complex-step derivative Im L(θ + ih e_k)/h: exact to rounding (no subtraction), an analytic forward."""
    h = 1e-30
    d = len(theta)
    return np.array(
        [_np_batch_loss(theta + 1j * h * np.eye(d)[k], Xb, yb, mask, loss).imag / h for k in range(d)]
    )


def _np_law(theta, X, y, B, p, sampling, loss):
    """(mean, covariance, outcome gradients, probabilities) by enumerating batches and masks."""
    n = len(y)
    if sampling == "with_replacement":
        batches = list(itertools.product(range(n), repeat=B))
    else:
        batches = list(itertools.combinations(range(n), B))
    grads, probs = [], []
    for rows in batches:
        for mask in itertools.product((0, 1), repeat=WIDTH):
            k = sum(mask)
            prob = p**k * (1 - p) ** (WIDTH - k) / len(batches)
            if prob == 0:
                continue
            rows_ = np.array(rows)
            grads.append(
                _np_gradient(np.asarray(theta, complex), X[rows_], y[rows_], np.array(mask, bool), loss)
            )
            probs.append(prob)
    G, w = np.array(grads), np.array(probs)
    mean = w @ G
    return mean, (G - mean).T @ ((G - mean) * w[:, None]), G, w


@pytest.mark.parametrize(
    "sampling, B, p, loss",
    [
        ("without_replacement", 2, 0.5, "squared"),
        ("without_replacement", 3, 1.0, "logistic"),
        ("with_replacement", 2, 0.3, "squared"),
    ],
)
def test_enumerated_law_matches_numpy_reference(sampling, B, p, loss):
    """The SDE side's mean m = Σ π_o g_o and Σ = AAᵀ equal an independent NumPy enumeration with complex-step
    gradients of the batch-statistics loss, to float64 rounding (1e-10 relative: sums of ≤ 250 terms).
    p = 1 is plain batch normalization. [theory: NORM-1] [theory: NORM-2]"""
    problem = _problem(loss)
    theta = problem.model.init(jax.random.key(1))
    noise = sd.BatchNormNoise(B, p=p, sampling=sampling)
    mean_ref, cov_ref, _, _ = _np_law(
        np.asarray(theta), np.asarray(problem.X), np.asarray(problem.y), B, p, sampling, loss
    )
    mean = np.asarray(noise.mean_gradient(problem, theta))
    cov = np.asarray(noise.covariance(problem, theta))
    assert np.max(np.abs(mean - mean_ref)) <= 1e-10 * np.max(np.abs(mean_ref))
    assert np.max(np.abs(cov - cov_ref)) <= 1e-10 * np.max(np.abs(cov_ref))
    assert noise.noise_dim(problem) == noise.covariance_factor(problem, theta).shape[1]


def test_monte_carlo_draws_match_the_enumerated_law(problem, theta):
    """20,000 draws of the SGD side (rows and Bernoulli(p) masks by ``draw``, then ``gradient``) have the
    enumerated mean and covariance: every entry within 4.5 exact standard errors (the SE of a mean from Σ,
    of a covariance entry from the enumerated fourth moments; 65 entries, fixed seed). The masks matter: the
    law without them (p = 1) is rejected by the same ensemble. [theory: NORM-2]"""
    N = 20_000
    noise = sd.BatchNormNoise(2, p=0.5)
    draws, _ = noise.draw(problem, jax.random.key(7), 0, None, N, jnp.float64)
    g = np.asarray(jax.jit(jax.vmap(lambda d: noise.gradient(problem, theta, d)))(draws))
    G, probs = (np.asarray(a) for a in noise.enumerated_gradients(problem, theta))
    mean = probs @ G
    C = G - mean
    cov = C.T @ (C * probs[:, None])
    z_mean = (g.mean(0) - mean) / np.sqrt(np.diag(cov) / N)
    gc = g - mean  # centred at the exact mean: E[ξξᵀ] = Σ, Var(ξ_iξ_j) from the law's fourth moments
    iu = np.triu_indices(G.shape[1])
    prod = np.einsum("ki,kj->kij", C, C)[:, iu[0], iu[1]]
    var_prod = probs @ prod**2 - (probs @ prod) ** 2
    sample = (np.einsum("ki,kj->ij", gc, gc) / N)[iu]
    z_cov = (sample - cov[iu]) / np.sqrt(var_prod / N)
    assert np.max(np.abs(z_mean)) < 4.5, z_mean
    assert np.max(np.abs(z_cov)) < 4.5, np.max(np.abs(z_cov))
    # the same ensemble against batch normalization's law (every unit on batch statistics): far off
    mean_bn = np.asarray(sd.BatchNormNoise(2, p=1.0).mean_gradient(problem, theta))
    assert np.max(np.abs((g.mean(0) - mean_bn) / np.sqrt(np.diag(cov) / N))) > 10


def test_bias_and_the_reductions_of_the_law(problem, theta):
    """E g̃ ≠ ∇L of the moving-statistics network for p > 0 (batch normalization and StochNorm are biased);
    at p = 0 the law is MinibatchNoise's on the same model (mean ∇L, the same covariance, 1e-12: rounding
    of sums over 10 batches); at B = n, p = 1, with the data's statistics as moving statistics, the outputs
    are the same and the noise vanishes, but the bias does not. [theory: NORM-3]"""
    grad = np.asarray(problem.grad(theta))
    for p in (0.5, 1.0):
        bias = np.asarray(sd.BatchNormNoise(2, p=p).bias(problem, theta))
        assert np.linalg.norm(bias) > 0.1 * np.linalg.norm(grad), (p, bias)
    for sampling in ("without_replacement", "with_replacement"):  # shuffle's one-step law is the first's
        noise0 = sd.BatchNormNoise(2, p=0.0, sampling=sampling)
        ref = sd.MinibatchNoise(2, sampling)
        scale = np.max(np.abs(grad))
        assert np.max(np.abs(np.asarray(noise0.mean_gradient(problem, theta)) - grad)) < 1e-12 * scale
        cov0, cov_ref = (np.asarray(x.covariance(problem, theta)) for x in (noise0, ref))
        assert np.max(np.abs(cov0 - cov_ref)) < 1e-12 * np.max(np.abs(cov_ref)), sampling
    assert not sd.BatchNormNoise.unbiased
    # the full batch (B = n) with the data's own statistics at θ as moving statistics: the outputs coincide,
    # yet E g̃ ≠ ∇L (batch normalization differentiates through μ(θ), s²(θ)) while Σ = 0
    model = problem.model.with_statistics(*problem.model.population_statistics(theta, problem.X))
    full = sd.Problem(model, problem.X, problem.y)
    np.testing.assert_allclose(model.batch_outputs(theta, full.X), full.outputs(theta), rtol=1e-12)
    noise = sd.BatchNormNoise(N_DATA, p=1.0)
    bias = np.asarray(noise.bias(full, theta))
    assert np.linalg.norm(bias) > 0.1 * np.linalg.norm(np.asarray(full.grad(theta))), bias
    assert np.max(np.abs(np.asarray(noise.covariance(full, theta)))) < 1e-28


def test_p0_draws_minibatch_sgd_and_p1_is_batch_norm(problem, theta):
    """p = 0: the same key draws MinibatchNoise's rows (bit for bit) and the moving-statistics minibatch
    gradient (1e-12: the same derivative by another autodiff route), so SGD's paths coincide; p = 1 draws
    every unit on batch statistics, and its gradient is batch normalization's (1e-12). [theory: NORM-3]"""
    N, key = 64, jax.random.key(3)
    for sampling in ("with_replacement", "shuffle", "without_replacement"):
        ref = sd.MinibatchNoise(2, sampling)
        noise0 = sd.BatchNormNoise(2, p=0.0, sampling=sampling)
        state_ref = ref.init_state(problem, key, N, jnp.float64)
        state = noise0.init_state(problem, key, N, jnp.float64)
        both = jax.jit(
            lambda k, step, s_ref, s, ref=ref, noise0=noise0: (
                ref.draw(problem, k, step, s_ref, N, jnp.float64),
                noise0.draw(problem, k, step, s, N, jnp.float64),
            )
        )
        for step in range(3):  # a shuffled epoch has two batches: step 2 starts the next epoch
            (rows_ref, state_ref), ((rows, mask), state) = both(
                jax.random.fold_in(key, step), step, state_ref, state
            )
            np.testing.assert_array_equal(np.asarray(rows), np.asarray(rows_ref))
            assert not np.any(np.asarray(mask))
    # the last sampling's rows (uniform subsets) for the gradients
    ref = sd.MinibatchNoise(2, "without_replacement")
    noise0 = sd.BatchNormNoise(2, p=0.0)
    bn = sd.BatchNormNoise(2, p=1.0)
    (_, mask_bn), _ = bn.draw(problem, key, 0, None, N, jnp.float64)
    assert np.all(np.asarray(mask_bn))  # p = 1: every unit on batch statistics, every step

    @jax.jit
    def gradients(rows, mask, rows_ref, mask_bn):
        per_path = lambda noise, r, s: jax.vmap(lambda r_, s_: noise.gradient(problem, theta, (r_, s_)))(r, s)

        def plain_bn(r):  # batch normalization written directly: every unit on the batch's statistics
            loss = lambda th: problem.loss_fn.mean(
                problem.model.batch_outputs(th, problem.X[r]), problem.y[r]
            )
            return jax.grad(loss)(theta)

        return (
            per_path(noise0, rows, mask),
            jax.vmap(lambda r: ref.gradient(problem, theta, r))(rows_ref),
            per_path(bn, rows, mask_bn),
            jax.vmap(plain_bn)(rows),
        )

    g0, g_ref, g_bn, g_plain = gradients(rows, mask, rows_ref, mask_bn)
    assert np.max(np.abs(np.asarray(g0 - g_ref))) < 1e-12 * np.max(np.abs(np.asarray(g_ref)))
    assert np.max(np.abs(np.asarray(g_bn - g_plain))) < 1e-12 * np.max(np.abs(np.asarray(g_plain)))


def test_sme_with_enumerated_covariance_matches_sgd(problem, theta):
    """The SME dθ = −m dt + √η A dW with the enumerated m and A (Euler, dt = η) against StochNorm SGD
    (p = 0.5), η = 0.1, T = 1, 2,000 paths each: E θ_T within 4 standard errors entrywise (the O(η) weak
    error is below the MC error here: measured |z| ≤ 1.8 at η = 0.05 and 0.1 with 4,000 paths), the
    variances within 25% (their SE is ≈ 4.5% of each at 2,000 + 2,000 paths, plus O(η)); the SME that
    ignores the bias (gradient descent on L) is rejected by > 10 standard errors.
    [theory: NORM-4]"""
    N, eta = 2000, 0.1
    kw = dict(
        lr=eta,
        n_steps=10,
        ensemble=sd.Ensemble(n_paths=N, dtype=np.float64),
        record=sd.Record(observables=("theta",)),
    )
    noise = sd.BatchNormNoise(2, p=0.5)
    sgd = sd.simulate_sgd(problem, noise, theta, key=1, **kw)
    sde = sd.simulate_sde(problem, noise, theta, key=2, **kw)
    m_sgd, m_sde = sgd.mean["theta"][-1], sde.mean["theta"][-1]
    v_sgd, v_sde = sgd.var["theta"][-1], sde.var["theta"][-1]
    z = (m_sgd - m_sde) / np.sqrt((v_sgd + v_sde) / N)
    assert np.max(np.abs(z)) < 4, z
    assert np.max(np.abs(v_sde / v_sgd - 1)) < 0.25, v_sde / v_sgd
    # gradient descent on L (the moving-statistics network, whose SME drifts along −∇L) misses SGD's mean:
    # the bias of the batch statistics drives the dynamics
    step = jax.jit(lambda th: th - eta * problem.grad(th))
    th = theta
    for _ in range(10):
        th = step(th)
    assert np.max(np.abs(m_sgd - np.asarray(th)) / np.sqrt(v_sgd / N)) > 10


def test_every_optimizer_steps_with_batch_norm_noise(problem, theta):
    """The optimizer registry × BatchNormNoise (StochNorm, p = 0.5; the noise needs its own model, so it is
    not in helpers.NOISES): SGD(noise, optimizer) steps by the optimizer's update of the step's own
    stochastic gradient, the one plain SGD draws from the same key (g̃ = (θ − θ')/η; 1e-9 relative: the
    division by η). Every optimizer in one compiled program (one compile for the registry). [theory: NORM-1]"""
    noise, n, eta, key = sd.BatchNormNoise(2, p=0.5), 3, 0.05, jax.random.key(2)
    theta0 = jnp.broadcast_to(theta, (n, problem.n_params))
    plain = sd.SGD(noise).stepper(problem, n)
    opts = {name: make() for name, make in OPTIMIZERS.items()}
    steppers = {name: sd.SGD(noise, optimizer=opt).stepper(problem, n) for name, opt in opts.items()}

    @jax.jit
    def two_steps(carries, base):
        out = {}
        for name, opt in opts.items():
            carry, b = carries[name], base
            for k in range(2):  # plain SGD continues from the optimizer's θ and sampler state each step
                kk = jax.random.fold_in(key, k)
                g = (b[0] - plain.step(b, jnp.int32(k), jnp.asarray(eta), kk)[0]) / eta
                u, _ = jax.vmap(opt.update)(g, carry[2], carry[0])
                new = steppers[name].step(carry, jnp.int32(k), jnp.asarray(eta), kk)
                out.setdefault(name, []).append((new[0], carry[0] + eta * u))
                carry, b = new, new[:2]
        return out

    base = plain.init(key, theta0)
    carries = {name: st.init(key, theta0) for name, st in steppers.items()}
    for name, pairs in two_steps(carries, base).items():
        for got, want in pairs:
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=name)


def test_bad_input(problem):
    """p outside [0, 1], batch statistics of one example, a batch larger than n, a model without a
    normalization layer, too many outcomes to enumerate, bad moving statistics: ValueError naming the
    argument. [theory: NORM-1]"""
    for p in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(ValueError, match="p must"):
            sd.BatchNormNoise(2, p=p)
    with pytest.raises(ValueError, match="batch_size must be >= 2 when p > 0"):
        sd.BatchNormNoise(1, p=0.5)
    sd.BatchNormNoise(1, p=0.0)  # moving statistics only: one example is fine
    with pytest.raises(ValueError, match="batch_size"):
        sd.BatchNormNoise(0)
    with pytest.raises(ValueError, match="batch_size must be in"):
        sd.BatchNormNoise(N_DATA + 1).check(problem)
    with pytest.raises(ValueError, match="sampling"):
        sd.BatchNormNoise(2, sampling="poisson")
    other = sd.Problem(sd.TwoLayerNetwork(DIM, WIDTH), problem.X, problem.y)
    with pytest.raises(ValueError, match="NormalizedTwoLayerNetwork"):
        sd.BatchNormNoise(2).check(other)
    with pytest.raises(ValueError, match="max_outcomes"):
        sd.BatchNormNoise(3, p=0.5, sampling="with_replacement", max_outcomes=100).covariance_factor(
            problem, problem.model.init()
        )
    with pytest.raises(ValueError, match="mean must be 2"):
        sd.NormalizedTwoLayerNetwork(DIM, WIDTH, mean=[0.0])
    with pytest.raises(ValueError, match="var must be >= 0"):
        sd.NormalizedTwoLayerNetwork(DIM, WIDTH, var=[1.0, -1.0])
    with pytest.raises(ValueError, match="eps"):
        sd.NormalizedTwoLayerNetwork(DIM, WIDTH, eps=0.0)
    with pytest.raises(ValueError, match="SME"):
        sd.SME(problem, sd.PreactivationNoise(0.1, 2))  # the SDE side refuses SGD-only noise; ours has it
    sd.SME(problem, sd.BatchNormNoise(2, p=0.5))
