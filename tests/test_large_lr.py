"""Li, Wei & Ma's large-learning-rate setting: the two-pattern distribution (proportions by counting,
separability exactly), the schedule, pre-activation noise, and the learning order under the proxy."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import batch_gradient, load_script

import sgdsde as sd


def test_two_pattern_distribution():
    """Group frequencies within 4 binomial s.e. of (0.2, 0.2, 0.6) over 20000 draws; absent blocks are exactly
    0, the bias coordinate is 1, labels are ±1 and balanced within 4 s.e. [theory: LLR-1]"""
    n = 20000
    data = sd.two_pattern_data(0, n, 10, dim_p=20)
    g = np.asarray(data.group)
    for k, p in enumerate((0.2, 0.2, 0.6)):
        assert abs(np.mean(g == k) - p) < 4 * math.sqrt(p * (1 - p) / n)
    X, y = np.asarray(data.X), np.asarray(data.y)
    assert set(np.unique(y)) == {-1.0, 1.0} and abs(np.mean(y > 0) - 0.5) < 4 * math.sqrt(0.25 / n)
    p_block, q_block = X[:, data.p_slice], X[:, data.q_slice]
    assert np.all(p_block[g == 1] == 0) and np.all(q_block[g == 0] == 0)
    assert np.all(X[:, -1] == 1.0)
    custom = sd.two_pattern_data(1, 4000, 10, proportions=(0.5, 0.0, 0.5), dim_p=5)
    assert not np.any(np.asarray(custom.group) == 1)


def test_p_is_separable_and_q_is_not():
    """P: y·x_P[0] = γ for every example carrying P (separable by e₀ with margin γ, exactly). Q: no affine
    classifier separates the Q-only examples (the LP y(wᵀx_Q + b) ≥ 1 is infeasible), while |x_Q[1]| > r/2 —
    two ReLU units with kinks at ±r/2 — classifies every one of them. [theory: LLR-1]"""
    data = sd.two_pattern_data(2, 400, 10, dim_p=30, margin=0.1, q_radius=1.0)
    X, y, g = np.asarray(data.X), np.asarray(data.y), np.asarray(data.group)
    has_p = g != 1
    np.testing.assert_allclose(y[has_p] * X[has_p, 0], 0.1, rtol=1e-6)
    q = g == 1
    xq, yq = X[q][:, data.q_slice], y[q]
    # variables (w1, w2, b): −y(w·x + b) ≤ −1
    A = -yq[:, None] * np.concatenate([xq, np.ones((len(yq), 1))], axis=1)
    lp = scipy.optimize.linprog(np.zeros(3), A_ub=A, b_ub=-np.ones(len(yq)), bounds=[(None, None)] * 3)
    assert lp.status == 2  # infeasible
    relu_rule = np.where(np.maximum(xq[:, 1] - 0.5, 0) + np.maximum(-xq[:, 1] - 0.5, 0) > 0, 1.0, -1.0)
    assert np.all(relu_rule == yq)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sd.two_pattern_data(0, 10, proportions=(0.5, 0.5, 0.5)), "proportions must sum to 1"),
        (lambda: sd.two_pattern_data(0, 10, proportions=(1.2, -0.2, 0.0)), "non-negative"),
        (lambda: sd.two_pattern_data(0, 10, proportions=(0.5, 0.5)), "3 non-negative numbers"),
        (lambda: sd.two_pattern_data(0, 10, margin=0.0), "margin must be finite and > 0"),
        (lambda: sd.PreactivationNoise(-1.0, 4), "sigma must be finite and >= 0"),
        (lambda: sd.PreactivationNoise(1.0, 4, anneal_step=-3), "anneal_step must be >= 0"),
    ],
)
def test_large_lr_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _net_problem(data, width=8, loss=None):
    m = width
    signs = tuple(np.where(np.arange(m) % 2 == 0, 1.0, -1.0) / np.sqrt(m))
    net = sd.TwoLayerNetwork(data.X.shape[1], m, "relu", train_second_layer=False, second_layer=signs)
    return net, sd.Problem(net, data.X, data.y, jnp.float64, loss=loss or sd.SquaredLoss())


def test_schedule_and_bad_input():
    """StepDecayLR(η₁, [k₀], η₂/η₁) gives η₁ before k₀ and η₂ from k₀ on; an anneal step past the end, a
    non-positive step or a model/problem mismatch is refused by name. [theory: LLR-2]"""
    from sgdsde._schedules import learning_rates  # internal: a schedule's per-step rates

    etas = learning_rates(sd.StepDecayLR(0.5, [30], 0.1), 50)
    np.testing.assert_allclose(etas[:30], 0.5)
    np.testing.assert_allclose(etas[30:], 0.05)
    with pytest.raises(ValueError, match="anneal step must be < n_steps=50"):
        learning_rates(sd.StepDecayLR(0.5, [50], 0.1), 50)
    with pytest.raises(ValueError, match="factor must be finite and > 0"):
        sd.StepDecayLR(0.5, [10], 0.0)
    data = sd.two_pattern_data(0, 40, 10, dim_p=6)
    _, problem = _net_problem(data)
    with pytest.raises(ValueError, match="needs a TwoLayerNetwork"):
        sd.simulate_sgd(
            sd.Problem(sd.LinearRegression(9), data.X, data.y),
            sd.PreactivationNoise(1.0, 4),
            np.zeros(9),
            lr=0.1,
            n_steps=2,
            key=0,
        )
    with pytest.raises(ValueError, match="anneal step must be < n_steps"):
        sd.simulate_sgd(
            problem, None, np.zeros(problem.n_params), lr=sd.StepDecayLR(0.5, [9], 0.1), n_steps=5, key=0
        )


def test_preactivation_noise_gradient():
    """At σ = 0 the noisy gradient is the minibatch gradient; at σ > 0 it equals autodiff of the loss with the
    drawn pre-activation noise added by hand; after the anneal step the noise is off (factor 0). The SDE
    refuses it by name (no closed-form covariance). [theory: LLR-3]"""
    data = sd.two_pattern_data(0, 40, 10, dim_p=6)
    net, problem = _net_problem(data)
    theta = net.init(jax.random.key(1)).astype(jnp.float64)
    noise = sd.PreactivationNoise(0.7, 5, anneal_step=3)
    key = jax.random.key(4)
    (idx, xi), _ = noise.draw(problem, key, 0, noise.init_state(problem, key, 2, jnp.float64), 2, jnp.float64)
    assert idx.shape == (2, 5) and xi.shape == (2, 5, 8)
    assert float(jnp.std(xi)) == pytest.approx(0.7, rel=0.3)
    W, a = net.split(theta)

    def by_hand(th, xb, yb, noise_p):
        h = xb @ net.split(th)[0].T + noise_p
        return 0.5 * jnp.mean((jax.nn.relu(h) @ a - yb) ** 2)

    for p in range(2):
        xb, yb = problem.X[idx[p]], problem.y[idx[p]]
        expected = jax.grad(by_hand)(theta, xb, yb, xi[p])
        np.testing.assert_allclose(noise.gradient(problem, theta, (idx[p], xi[p])), expected, rtol=1e-12)
        zero = jnp.zeros_like(xi[p])
        np.testing.assert_allclose(
            noise.gradient(problem, theta, (idx[p], zero)), batch_gradient(problem, theta, idx[p]), rtol=1e-12
        )
    (_, xi_late), _ = noise.draw(problem, key, 3, None, 2, jnp.float64)
    assert float(jnp.max(jnp.abs(xi_late))) == 0.0
    with pytest.raises(ValueError, match="PreactivationNoise has only the SGD side"):
        sd.simulate_sde(problem, noise, np.asarray(theta), lr=0.1, n_steps=2, key=0)


@pytest.fixture(scope="module")
def proxy_runs():
    """fig_large_lr's toy, small-LR SGD (η = 0.05, B = 16) and the same run with pre-activation noise σ = 1
    switched off at k₀ = 3000, 6000 steps, 4 paired paths (same inits and keys), records every 100 steps. Both
    tests read them: a constant-LR run does not depend on k₀, and the proxy's first 3000 steps do not either,
    so their first 2000 steps (records 0..20) are, bit for bit, the k₀ = 1000, 2000-step runs of LLR-5."""
    fig = load_script("fig_large_lr")
    toy = fig.Toy()
    base = dict(eta1=0.05, eta2=0.05, k0=3000, n_steps=6000, n_paths=4, every=100)
    return fig, toy, toy.run(**base), toy.run(sigma=1.0, **base)


def test_learning_order_under_the_proxy(proxy_runs):
    """Small-LR SGD (η = 0.05, B = 16) against the same run with pre-activation noise σ = 1 switched off at
    k₀ = 3000 of 6000 steps, 4 paired paths (same inits and keys). Claims, each with its s.e.: (a) before
    annealing the small-LR run leads on the training loss (> 3 s.e.; measured 29 and 44 s.e.); (b) it learns
    Q first on every path (fraction of paths with P first 0 ± 0) while the proxy learns P first on every path;
    (c) at the end the proxy run has the lower P-only test error (paired gap > 0.03 and > 3 s.e.; measured
    0.065 ± 0.004). Measured at 8000 steps: 0.288 vs 0.211. [theory: LLR-4]"""
    fig, toy, small, proxy = proxy_runs
    pre = int(np.searchsorted(small.steps, 3000))
    assert small.steps[pre] == 3000
    for g in ("P", "Q"):
        name = f"train_loss_{g}"
        se = math.hypot(small.stderr(name)[pre], proxy.stderr(name)[pre])
        assert proxy.mean[name][pre] - small.mean[name][pre] > 3 * se, g
    ps, pp = fig.per_path(toy, small), fig.per_path(toy, proxy)
    assert fig.fraction(ps["order"] == "P")[0] == 0.0  # s.e. 0: every path agrees
    assert fig.fraction(pp["order"] == "P")[0] == 1.0
    gap, se = fig.paired_gap(ps["test_error_P"], pp["test_error_P"])
    assert gap > 0.03 and gap > 3 * se, (gap, se)


def test_sgd_own_noise_does_not_reproduce_the_effect_here(proxy_runs):
    """The negative result, measured (2000 steps, k₀ = 1000, η₁ = 0.5 → 0.05, B = 16, squared loss, 4 paired
    paths): large-LR SGD ends with a higher P-only test error than small-LR SGD (paired gap < 0 by > 3 s.e.;
    measured −0.039 ± 0.008), and its SDE (order 1, minibatch noise, 2 paths) ends where SGD does (within 4
    s.e. of the two means). Why: minibatch noise is made of per-example gradients, which vanish as the
    training examples are fitted; at η₁ SGD fits P's training examples within the first phase (training
    loss below 1% of its initial value at k₀; measured 0.14%), and its noise with them, while the proxy's
    noise does not depend on the fit (P's training loss stays above 20% of its initial value; measured 71%).
    The small-LR and proxy arms are the shared runs' first 2000 steps (``proxy_runs``). [theory: LLR-5]"""
    fig, toy, small_long, proxy_long = proxy_runs
    base = dict(eta2=0.05, k0=1000, n_steps=2000, n_paths=4, every=100)
    large = toy.run(eta1=0.5, **base)
    first = int(np.searchsorted(small_long.steps, 2000)) + 1  # records at steps 0, 100, …, 2000
    np.testing.assert_array_equal(small_long.steps[:first], large.steps)
    small = types.SimpleNamespace(paths=small_long.paths[:first])  # per_path reads the saved paths only
    gap, se = fig.paired_gap(
        fig.per_path(toy, small)["test_error_P"], fig.per_path(toy, large)["test_error_P"]
    )
    assert gap < -3 * se, (gap, se)
    sde = toy.run(eta1=0.5, sde=True, **dict(base, n_paths=2))
    (m1, s1), (m2, s2) = large.final("test_error_P"), sde.final("test_error_P")
    assert abs(m1 - m2) < 4 * math.hypot(s1, s2)
    k = int(np.searchsorted(large.steps, 1000))
    assert large.mean["train_loss_P"][k] < 0.01 * large.mean["train_loss_P"][0]
    assert proxy_long.steps[k] == 1000  # before its anneal step (3000): the k₀ = 1000 proxy's record
    assert proxy_long.mean["train_loss_P"][k] > 0.2 * proxy_long.mean["train_loss_P"][0]


def test_preactivation_noise_runs_reproducibly_in_sgd():
    """Through simulate_sgd: the same key gives the same paths, another key other paths, all finite."""
    from helpers import SGD_ONLY_NOISES

    data = sd.two_pattern_data(0, 40, 10, dim_p=6)
    net, problem = _net_problem(data)
    theta0 = np.asarray(net.init(jax.random.key(1)), np.float64)
    noise = SGD_ONLY_NOISES["preactivation"](problem.n_data, problem.n_params)
    kw = dict(
        lr=0.05, n_steps=20, ensemble=sd.Ensemble(n_paths=3), record=sd.Record(every=10, n_saved_paths=3)
    )
    a = sd.simulate_sgd(problem, noise, theta0, key=5, **kw)
    b = sd.simulate_sgd(problem, noise, theta0, key=5, **kw)
    c = sd.simulate_sgd(problem, noise, theta0, key=6, **kw)
    np.testing.assert_array_equal(a.paths, b.paths)
    assert not np.allclose(a.paths[-1], c.paths[-1])
    assert np.all(np.isfinite(a.paths))
