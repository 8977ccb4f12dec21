"""The conventions table (theory/conventions.md): for each paper the project reproduces, its update written out
by hand on the paper's own loss scaling, step size and noise level, against sgdsde's step with the arguments
the table gives, on the same random numbers. Deterministic given the draws: float64 rounding, 1e-12."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdsde as sd

STEPS = 25


def haochen_problem(n=8, d=5, seed=0):
    """HaoChen et al.'s model f = ⟨v⊙v, x⟩ on a small sparse-regression instance (float64)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ np.r_[1.0, 1.0, np.zeros(d - 2)]
    return sd.Problem(sd.DiagonalLinearNetwork(d, 1.0, signed=False), X, y, dtype=jnp.float64), X, y


def library_steps(problem, noise, theta0, eta, n_steps=STEPS, paths=1):
    """sgdsde's SGD step θ ← θ − η g̃(θ) with the noise's own draws (key k at step k); returns the path and
    the draws so the hand-written update can use the same random numbers."""
    theta, out, draws_all = jnp.asarray(theta0, jnp.float64), [], []
    state = noise.init_state(problem, jax.random.key(99), paths, jnp.float64)
    for k in range(n_steps):
        draws, state = noise.draw(problem, jax.random.key(k), k, state, paths, jnp.float64)
        one = jax.tree.map(lambda a: a[0], draws)
        theta = theta - eta * noise.gradient(problem, theta, one)
        out.append(np.asarray(theta))
        draws_all.append(jax.tree.map(np.asarray, one))
    return np.array(out), draws_all


def test_conv1_haochen_lngd():
    """HaoChen LNGD (lr, δ; per-example loss ¼(y − f)²; one example's label + δ·N(0, 1)) = sgdsde
    FullGradientLabelNoise(δ, 1, Gaussian) at η = lr/2. [theory: CONV-1]"""
    problem, X, y = haochen_problem()
    lr, delta = 0.05, 1.0
    lib, draws = library_steps(
        problem, sd.FullGradientLabelNoise(delta, 1, "with_replacement", "gaussian"), np.ones(5), lr / 2
    )
    v = np.ones(5)
    for k in range(STEPS):
        i, xi = int(draws[k][0][0]), float(draws[k][1][0]) / delta
        r = X @ (v * v) - y
        # ∇_v (1/n)Σ ¼(f_j − y_j)² = (1/n)Σ ½ r_j·2v⊙x_j; the noisy label on example i adds −½δξ·2v⊙x_i
        v = v - lr * ((X * r[:, None]).mean(axis=0) * v - delta * xi * v * X[i])
        np.testing.assert_allclose(lib[k], v, rtol=1e-12, atol=1e-12)


def test_conv2_haochen_sgld():
    """HaoChen SGLD (v ← v − lr(∇L_H + δζ), L_H with ¼(y − f)²) = sgdsde SphericalGaussianNoise(2δ) at
    η = lr/2: half the step and twice the noise level. [theory: CONV-2]"""
    problem, X, y = haochen_problem()
    lr, delta = 0.05, 0.3
    lib, draws = library_steps(problem, sd.SphericalGaussianNoise(2 * delta), np.ones(5), lr / 2)
    v = np.ones(5)
    for k in range(STEPS):
        zeta = draws[k] / (2 * delta)
        r = X @ (v * v) - y
        v = v - lr * ((X * r[:, None]).mean(axis=0) * v + delta * zeta)
        np.testing.assert_allclose(lib[k], v, rtol=1e-12, atol=1e-12)


def test_conv3_damian_algorithm_1():
    """Damian et al.'s Algorithm 1 (batch of B, each label ± σ, a gradient step on the perturbed squared loss
    ½(f − y)² averaged over the batch) = sgdsde LabelNoise(σ, B, "without_replacement") at η. [theory: CONV-3]"""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    net = sd.TwoLayerNetwork(2, 3, "tanh")
    problem = sd.Problem(net, X, y, dtype=jnp.float64)
    eta, sigma, B = 0.1, 0.5, 3
    th0 = np.asarray(net.init(jax.random.key(0)), np.float64)
    lib, draws = library_steps(problem, sd.LabelNoise(sigma, B, "without_replacement"), th0, eta)
    theta = jnp.asarray(th0)
    for k in range(STEPS):
        idx, eps = draws[k]
        assert set(np.abs(eps)) == {sigma} and len(set(idx.tolist())) == B  # ±σ on B distinct examples

        def batch_loss(t, idx=idx, eps=eps):
            f = jax.vmap(lambda x: net.output(t, x))(jnp.asarray(X[idx]))
            return jnp.mean(0.5 * (f - (y[idx] + eps)) ** 2)

        theta = theta - eta * jax.grad(batch_loss)(theta)
        np.testing.assert_allclose(lib[k], theta, rtol=1e-12, atol=1e-12)


def test_conv4_li_tai_e_sgd():
    """Li–Tai–E's SGD on f = (1/n)Σ f_i, x ← x − η∇f_γ(x) with γ uniform: sgdsde MinibatchNoise(1,
    "with_replacement") with per-example loss ℓ_i = f_i (here ½(f_i − y_i)²). [theory: CONV-4]"""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(5, 3)), rng.normal(size=5)
    problem = sd.Problem(sd.LinearRegression(3), X, y, dtype=jnp.float64)
    lib, draws = library_steps(problem, sd.MinibatchNoise(1, "with_replacement"), np.zeros(3), 0.2)
    x = np.zeros(3)
    for k in range(STEPS):
        g = int(draws[k][0])
        x = x - 0.2 * (X[g] @ x - y[g]) * X[g]
        np.testing.assert_allclose(lib[k], x, rtol=1e-12, atol=1e-12)


def test_conv5_wu_multiplicative():
    """Wu et al.'s multiplicative SGD θ ← θ − η(1/n)Σ_i m_i∇ℓ_i with E m = 𝟙 = sgdsde MultiplicativeNoise(b,
    weights) with the drawn weights m. [theory: CONV-5]"""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    problem = sd.Problem(sd.LinearRegression(2), X, y, dtype=jnp.float64)
    for weights in ("gaussian_fisher", "gaussian_centred", "bernoulli"):
        lib, draws = library_steps(problem, sd.MultiplicativeNoise(2, weights), np.zeros(2), 0.1)
        th = np.zeros(2)
        for k in range(STEPS):
            m = draws[k]
            th = th - 0.1 * np.mean(m[:, None] * (X @ th - y)[:, None] * X, axis=0)
            np.testing.assert_allclose(lib[k], th, rtol=1e-12, atol=1e-12)


def test_conv6_blanc_sum_loss():
    """Blanc et al.'s loss is a sum, Σ_i ½(f_i − y_i)² = n·L: their step η_B is sgdsde's η = n·η_B (GD and
    label-noise gradients scale alike), and their regularizer Σ_i‖∇f_i‖² is
    OutputGradientNormRegularizer = n·tr G. [theory: CONV-6]"""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(4, 2)), rng.normal(size=4)
    net = sd.TwoLayerNetwork(2, 2, "tanh")
    problem = sd.Problem(net, X, y, dtype=jnp.float64)
    eta_b, n = 0.02, 4
    lib, _ = library_steps(problem, sd.NoNoise(), net.init().astype(jnp.float64), n * eta_b)
    theta = net.init().astype(jnp.float64)

    def sum_loss(t):
        return jnp.sum(0.5 * (jax.vmap(lambda x: net.output(t, x))(jnp.asarray(X)) - y) ** 2)

    for k in range(STEPS):
        theta = theta - eta_b * jax.grad(sum_loss)(theta)
        np.testing.assert_allclose(lib[k], theta, rtol=1e-12, atol=1e-12)
    blanc = sum(float(jnp.sum(jax.grad(net.output)(theta, jnp.asarray(x)) ** 2)) for x in X)
    reg = sd.implicit.OutputGradientNormRegularizer()
    assert float(reg.value(problem, theta)) == pytest.approx(blanc, rel=1e-12)
    assert float(reg.value(problem, theta)) == pytest.approx(
        n * float(jnp.trace(problem.gauss_newton(theta))), rel=1e-12
    )


def test_conv7_pillaud_vivien_label_noise_sde():
    """The label-noise SDE of a diagonal network in our convention (label-noise.md §5(c)): for β = u⊙u − v⊙v
    and full-batch label noise σ, sgdsde's SME factor √η·A is 2√(ησ²/n)·[u ⊙ Xᵀ/√n; −v ⊙ Xᵀ/√n] (B = n).
    [theory: CONV-7]"""
    rng = np.random.default_rng(5)
    n, d, sigma, eta = 6, 3, 0.7, 0.05
    X = rng.normal(size=(n, d))
    problem = sd.Problem(sd.DiagonalLinearNetwork(d), X, X @ np.ones(d), dtype=jnp.float64)
    theta = jnp.asarray(rng.normal(size=2 * d))
    u, v = np.asarray(theta[:d]), np.asarray(theta[d:])
    sme = sd.SME(problem, sd.LabelNoise(sigma))
    hand = 2 * np.sqrt(eta * sigma**2 / n) * np.vstack([u[:, None] * X.T, -v[:, None] * X.T]) / np.sqrt(n)
    np.testing.assert_allclose(np.asarray(sme.diffusion(theta, eta)), hand, rtol=1e-12, atol=1e-12)
