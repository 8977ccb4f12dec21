"""Self-distillation (Mobahi, Farajtabar & Bartlett 2020): the closed-form rounds against explicit solves, the
constrained form's budget equation, the collapse round and its bounds, the sparsifying basis, and the same
rounds trained by sgdsde's simulators (theory/self-distillation.md)."""

import math

import numpy as np
import pytest
from helpers import NOISES
from hypothesis import given, strategies as st
from scipy.linalg import solve_discrete_lyapunov

import sgdsde as sd
from sgdsde.implicit import (
    budget_c,
    label_noise_rounds_msd,
    self_distillation,
    train_self_distillation,
)


def _problem(seed: int, n: int = 7, p: int = 10):
    """Features Φ (n, p), K = ΦΦᵀ (positive definite a.s. for p ≥ n) and labels y."""
    rng = np.random.default_rng(seed)
    Phi = rng.normal(size=(n, p)) / math.sqrt(p)
    y = Phi @ rng.normal(size=p) + 0.3 * rng.normal(size=n)
    return Phi, Phi @ Phi.T, y


def _explicit_rounds(K, y, cs):
    """y_t = (K + c_tI)⁻¹K y_{t−1} by dense solves, independent of the eigenbasis; 0 for c_t = inf."""
    out = [np.asarray(y, np.float64)]
    for c in cs:
        out.append(
            np.zeros_like(out[-1])
            if not np.isfinite(c)
            else np.linalg.solve(K + c * np.eye(len(y)), K @ out[-1])
        )
    return np.array(out)


@pytest.mark.parametrize("form", ["plain", "constrained", "singular"])
def test_closed_form_matches_explicit_solves(form):
    """Every round's predictions, dual coefficients and weights against dense float64 solves (1e-10 relative:
    the eigendecomposition's and the solves' rounding, κ ≈ 1e2 here). [theory: DIST-1]"""
    Phi, K, y = _problem(0, n=7, p=5 if form == "singular" else 10)
    kw = {"c": 0.7} if form == "plain" else {"epsilon": 0.2 * float(np.mean(y**2))}
    r = self_distillation(K, y, rounds=6, **kw)
    ref = _explicit_rounds(K, y, r.c)
    scale = np.linalg.norm(y)
    np.testing.assert_allclose(r.predictions, ref, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(r.coefficients, ref @ r.eigenvectors, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(r.dual @ K, ref[1:], rtol=0, atol=1e-10 * scale)  # f_t(X) = Kα_t
    np.testing.assert_allclose(r.weights(Phi) @ Phi.T, ref[1:], rtol=0, atol=1e-10 * scale)  # Φθ_t
    np.testing.assert_allclose(r.predict(K), ref[1:], rtol=0, atol=1e-10 * scale)
    if form == "plain":
        assert np.all(r.c == 0.7) and r.collapse_round is None and r.collapse_bounds is None
    if form == "singular":  # rank 5 of 7: the null space is gone after round 1
        assert np.allclose(r.shrinkage[:, :2], 0) and r.eigenvalues[1] < 1e-12


def test_constrained_c_spends_the_budget_exactly_and_grows():
    """(1/n)‖y_t − y_{t−1}‖² = ε to 1e-12 relative in every round before the collapse (Brent's root in float64),
    c_t inside its bracket s·d_min/(1 − s) ≤ c_t ≤ s·d_max/(1 − s), and c_t strictly increasing.
    [theory: DIST-2]"""
    _, K, y = _problem(1)
    eps = 0.05 * float(np.mean(y**2))
    r = self_distillation(K, y, rounds=12, epsilon=eps)
    live = np.flatnonzero(np.isfinite(r.c))
    assert live.size >= 3 and r.collapse_round == live[-1] + 2
    n = len(y)
    for t in live:
        spent = np.mean((r.predictions[t + 1] - r.predictions[t]) ** 2)
        assert abs(spent - eps) <= 1e-12 * eps, (t, spent, eps)
        s = math.sqrt(n * eps) / np.linalg.norm(r.predictions[t])
        lo, hi = s * r.eigenvalues[0] / (1 - s), s * r.eigenvalues[-1] / (1 - s)
        assert lo * (1 - 1e-12) <= r.c[t] <= hi * (1 + 1e-12)
    assert np.all(np.diff(r.c[live]) > 0)
    # the scalar solver alone, against a root found by plain bisection
    d, z = r.eigenvalues, r.coefficients[0]
    lo, hi = 1e-12, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if np.sum((mid * z / (d + mid)) ** 2) < n * eps else (lo, mid)
    assert budget_c(d, z, n * eps) == pytest.approx(lo, rel=1e-12)


def test_collapse_round_is_the_first_round_within_budget():
    """The collapse round is the first t with (1/n)‖y_{t−1}‖² ≤ ε in the explicit recursion (each round re-solving
    its c_t); from it on the predictor is 0; with ‖y₀‖² ≤ nε round 1 collapses. [theory: DIST-3]"""
    _, K, y = _problem(2)
    n = len(y)
    eps = 0.03 * float(np.mean(y**2))
    r = self_distillation(K, y, rounds=15, epsilon=eps)
    yt, first = y.copy(), None
    d, V = np.linalg.eigh(K)
    for t in range(1, 16):
        if np.mean(yt**2) <= eps:
            first = t if first is None else first
            yt = np.zeros(n)
            continue
        c = budget_c(d, V.T @ yt, n * eps)
        yt = np.linalg.solve(K + c * np.eye(n), K @ yt)
    assert first is not None and r.collapse_round == first
    assert np.all(r.predictions[first:] == 0) and np.all(np.isinf(r.c[first - 1 :]))
    assert np.all(r.effective_count[first:] == 0)
    tiny = self_distillation(K, y, rounds=2, epsilon=1.01 * float(np.mean(y**2)))
    assert tiny.collapse_round == 1 and np.all(tiny.predictions[1:] == 0)


def test_collapse_round_with_equal_eigenvalues_is_ceil_rho():
    """K = aI (κ = 1): every round moves y by √(nε) along itself, so the collapse round is ⌈ρ⌉ exactly and the
    bounds meet. [theory: DIST-4]"""
    rng = np.random.default_rng(3)
    y = rng.normal(size=5)
    for rho in (3.3, 4.7, 6.1):
        eps = float(np.sum(y**2)) / (5 * rho**2)
        r = self_distillation(2.5 * np.eye(5), y, rounds=10, epsilon=eps)
        assert r.collapse_round == math.ceil(rho) and r.collapse_bounds == (
            math.ceil(rho),
            float(math.ceil(rho)),
        )


@given(seed=st.integers(0, 10_000), n=st.sampled_from([3, 6]), frac=st.floats(0.005, 0.5))
def test_collapse_bounds_hold(seed, n, frac):
    """⌈ρ⌉ ≤ collapse round ≤ ⌈κ(ρ − 1)⌉ + 1, from the per-round steps ‖y_{t−1}‖ − √(nε) ≤ ‖y_t‖ ≤
    ‖y_{t−1}‖ − √(nε)/κ (checked round by round, 1e-9 relative for rounding). [theory: DIST-4]"""
    _, K, y = _problem(seed, n=n, p=n + 2)
    eps = frac * float(np.mean(y**2))
    r = self_distillation(K, y, rounds=200, epsilon=eps)
    lo, hi = r.collapse_bounds
    assert r.collapse_round is not None and lo <= r.collapse_round <= hi
    step, kappa = math.sqrt(n * eps), r.condition_number
    norms = np.linalg.norm(r.predictions, axis=1)
    for t in range(r.collapse_round - 1):
        assert norms[t] - step - 1e-9 * norms[t] <= norms[t + 1] <= norms[t] - step / kappa + 1e-9 * norms[t]


@given(seed=st.integers(0, 10_000), plain=st.booleans())
def test_shrinkage_and_effective_count_are_monotone(seed, plain):
    """The shrinkage d_k/(d_k + c_t) increases with d_k, the products B_{t,k} fall round by round, and the effective
    count N_t = Σ_k B_{t,k}/max_j B_{t,j} never rises (from n at t = 0). [theory: DIST-5]"""
    _, K, y = _problem(seed, n=6, p=8)
    kw = {"c": 0.3} if plain else {"epsilon": 0.05 * float(np.mean(y**2))}
    r = self_distillation(K, y, rounds=8, **kw)
    assert np.all(np.diff(r.shrinkage, axis=1) >= 0)  # eigenvalues ascend
    assert np.all(np.diff(r.products, axis=0) <= 0)
    assert r.effective_count[0] == 6 and np.all(np.diff(r.effective_count) <= 1e-12)
    assert r.effective_count[-1] < r.effective_count[1]


@pytest.mark.parametrize("form", ["plain", "constrained"])
def test_gd_rounds_agree_with_the_closed_form(form):
    """GD with weight decay c_t/n on the linear model over Φ, 3 chained rounds from θ = 0, against the closed form:
    ‖ŷ_t − y_t‖ ≤ Σ_{τ≤t} ‖Φ‖ q_τ ‖θ*_τ‖ (q_τ = max_k|1 − η(d_k + c_τ)/n|^T, GD's contraction on span Φᵀ; each
    round's map is a contraction so errors add) plus 1e-12 relative rounding. [theory: DIST-6]"""
    Phi, K, y = _problem(4, n=8, p=12)
    kw = {"c": 0.4} if form == "plain" else {"epsilon": 0.1 * float(np.mean(y**2))}
    r = self_distillation(K, y, rounds=3, **kw)
    assert np.all(np.isfinite(r.c))
    lr = 0.9 * 2 * 8 / (r.eigenvalues[-1] + r.c.max())
    tr = train_self_distillation(Phi, y, r.c, lr=lr, n_steps=600)
    theta_norm = np.linalg.norm(r.weights(Phi), axis=1)
    bound = np.cumsum(np.linalg.norm(Phi, 2) * tr.contraction * theta_norm) + 1e-12 * np.linalg.norm(y)
    err = np.linalg.norm(tr.predictions[1:, 0] - r.predictions[1:], axis=1)
    assert np.all(err <= bound), (err, bound)
    assert np.all(tr.contraction < 1e-3) and np.all(err < 1e-6 * np.linalg.norm(y))
    np.testing.assert_allclose(tr.weight_decay, r.c / 8)


def test_label_noise_rounds_are_unbiased_with_the_exact_variance():
    """Full-batch label-noise SGD (σ = 0.5), 2 chained rounds, 32 paths: the path mean of ŷ_t is GD's round (every
    |z| < 4.5 over 12 coordinates) and the mean squared deviation matches the exact linear-recursion variance
    within 4 standard errors of its path average; that exact value (diagonal in Φ's singular basis) equals the dense
    recursion (a discrete Lyapunov equation per round, propagated by LΦ) to 1e-10. [theory: DIST-7]"""
    Phi, K, y = _problem(5, n=6, p=8)
    r = self_distillation(K, y, rounds=2, c=3.0)
    lr, steps, P = 0.1, 1500, 32
    tr = train_self_distillation(Phi, y, r.c, lr=lr, n_steps=steps, noise=sd.LabelNoise(0.5), n_paths=P)
    pred = tr.predictions[1:]  # (2, P, n)
    z = (pred.mean(1) - r.predictions[1:]) / (pred.std(1, ddof=1) / math.sqrt(P))
    assert np.max(np.abs(z)) < 4.5, z
    msd = np.mean((pred - r.predictions[1:, None, :]) ** 2, axis=2)  # (2, P)
    exact = label_noise_rounds_msd(Phi, r.c, lr=lr, n_steps=steps, sigma=0.5)
    se = msd.std(1, ddof=1) / math.sqrt(P)
    assert np.all(np.abs(msd.mean(1) - exact) < 4 * se), (msd.mean(1), exact, se)
    # the diagonal closed form against the dense recursion: Lyapunov S = ASAᵀ + Q per round, propagated by LΦ
    A = np.eye(8) - lr * (Phi.T @ Phi + 3.0 * np.eye(8)) / 6
    AT, Q = np.linalg.matrix_power(A, steps), (lr * 0.5 / 6) ** 2 * Phi.T @ Phi
    S = solve_discrete_lyapunov(A, Q)
    G = (np.eye(8) - AT) @ np.linalg.solve(np.eye(8) - A, lr * Phi.T / 6) @ Phi
    cov1 = S - AT @ S @ AT.T
    cov2 = G @ cov1 @ G.T + cov1
    dense = [np.trace(Phi @ cv @ Phi.T) / 6 for cv in (cov1, cov2)]
    np.testing.assert_allclose(exact, dense, rtol=1e-10)
    # halving the step size halves the variance to O(η): λ = ησ²/n is the one parameter
    half = label_noise_rounds_msd(Phi, r.c, lr=lr / 2, n_steps=2 * steps, sigma=0.5)
    assert np.all(np.abs(half / exact - 0.5) < 0.05)


@pytest.mark.parametrize("name", ["minibatch_wr", "label_minibatch_gaussian"])
def test_trained_rounds_run_with_registered_noises(name):
    """Registered noises of both kinds the rounds are about (minibatch, label) run the chained rounds: finite
    predictions, the labels in row 0, one chain per path, and a path mean near GD's round (noise of size √λ).
    [theory: DIST-6]"""
    Phi, K, y = _problem(6, n=6, p=8)
    r = self_distillation(K, y, rounds=2, c=2.0)
    tr = train_self_distillation(Phi, y, r.c, lr=0.02, n_steps=800, noise=NOISES[name](6, 8), n_paths=3)
    assert tr.predictions.shape == (3, 3, 6) and np.all(np.isfinite(tr.predictions))
    assert np.all(tr.predictions[0] == y) and not np.allclose(tr.predictions[1, 0], tr.predictions[1, 1])
    assert np.max(np.abs(tr.predictions[1:].mean(1) - r.predictions[1:])) < 0.5 * np.max(np.abs(y))


def test_bad_input_names_the_argument():
    Phi, K, y = _problem(7, n=4, p=6)
    cases = [
        (dict(gram=K, y=y, rounds=2, c=0.0), "c must be"),
        (dict(gram=K, y=y, rounds=2, c=-1.0), "c must be"),
        (dict(gram=K, y=y, rounds=2, epsilon=0.0), "epsilon must be"),
        (dict(gram=K, y=y, rounds=0, c=1.0), "rounds must be"),
        (dict(gram=K, y=y, rounds=2), "exactly one of c"),
        (dict(gram=K, y=y, rounds=2, c=1.0, epsilon=0.1), "exactly one of c"),
        (dict(gram=K - 2 * np.eye(4), y=y, rounds=2, c=1.0), "gram must be positive semi-definite"),
        (dict(gram=K + np.triu(np.ones((4, 4)), 1), y=y, rounds=2, c=1.0), "gram must be symmetric"),
        (dict(gram=K[:3], y=y, rounds=2, c=1.0), "gram must be a square"),
        (dict(gram=K, y=y[:3], rounds=2, c=1.0), "y must have shape"),
        (
            dict(gram=np.zeros((4, 4)), y=y, rounds=2, epsilon=1e-3 * float(np.mean(y**2))),
            "epsilon is too small",
        ),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            self_distillation(kw.pop("gram"), kw.pop("y"), **kw)
    train_cases = [
        (dict(features=Phi[:, 0], y=y, c=[1.0], lr=0.1, n_steps=10), "features must be"),
        (dict(features=Phi, y=y[:2], c=[1.0], lr=0.1, n_steps=10), "y must have shape"),
        (dict(features=Phi, y=y, c=[1.0, 0.0], lr=0.1, n_steps=10), "c must be"),
        (dict(features=Phi, y=y, c=[1.0], lr=0.0, n_steps=10), "lr must be"),
        (dict(features=Phi, y=y, c=[1.0], lr=0.1, n_steps=0), "n_steps must be"),
        (dict(features=Phi, y=y, c=[1.0], lr=0.1, n_steps=10, n_paths=0), "n_paths must be"),
        (dict(features=Phi, y=y, c=[1.0], lr=0.1, n_steps=10, noise="label"), "noise must be"),
        (dict(features=Phi, y=y, c=[1.0], lr=100.0, n_steps=10), "lr must be < 2n"),
    ]
    for kw, msg in train_cases:
        with pytest.raises(ValueError, match=msg):
            train_self_distillation(kw.pop("features"), kw.pop("y"), kw.pop("c"), **kw)
    for c, lr, msg in (
        ([1.0, -1.0], 0.1, "c must be"),
        ([1.0], 0.0, "lr must be"),
        ([1.0], 100.0, "lr must be < 2n"),
    ):
        with pytest.raises(ValueError, match=msg):
            label_noise_rounds_msd(Phi, c, lr=lr, n_steps=10, sigma=0.5)
