"""First passage under resetting: the closed forms against independent numerics (the renewal formula with the
inverse-Gaussian density integrated by quadrature, the moments of that density, a brute-force minimum)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_script
from scipy.integrate import quad
from scipy.optimize import brentq

import sgdsde as sd
from sgdsde.analysis import fpt_moments, mfpt_with_resetting, optimal_resetting_rate, peclet


def fpt_density(t, v, D, L):
    """Inverse-Gaussian first-passage density of dX = −v dt + √(2D) dW from L to 0."""
    return L / math.sqrt(4 * math.pi * D * t**3) * math.exp(-((L - v * t) ** 2) / (4 * D * t))


def renewal_mfpt(v, D, L, r):
    """T(r) = (1 − Q̃(r)) / (r Q̃(r)), Q̃(r) = E e^{−rτ} by quadrature of the density (the renewal argument for
    resetting to the start; independent of the closed form's algebra)."""
    q = quad(
        lambda t: math.exp(-r * t) * fpt_density(t, v, D, L), 0, np.inf, limit=400, epsabs=0, epsrel=1e-12
    )[0]
    return (1 - q) / (r * q)


@pytest.mark.parametrize(
    "v, D, L", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5), (0.3, 1.0, 2.0), (0.0, 1.0, 1.0), (-0.5, 1.0, 1.0)]
)
@pytest.mark.parametrize("r", [0.05, 0.5, 3.0])
def test_mfpt_closed_form_matches_the_renewal_integral(v, D, L, r):
    """T(r) closed form = renewal formula with Q̃ by quadrature (relative 1e-8: quadrature tolerance), for
    drift towards (v > 0), none (v = 0) and away from the target (v < 0, finite only with resetting).
    [theory: RESET-1]"""
    assert mfpt_with_resetting(v, D, L, r) == pytest.approx(renewal_mfpt(v, D, L, r), rel=1e-8)


def test_no_resetting_limit_and_peclet_criterion():
    """T(0) = L/v, T(r) → L/v as r → 0, the inverse-Gaussian moments give CV² = 1/Pe (quadrature), and the
    slope T'(0) = (L/v²)(L/2 − D/v) is negative exactly when Pe < 1: small-rate resetting helps iff Pe < 1.
    [theory: RESET-1, RESET-2]"""
    for v, D, L in [(1.0, 1.0, 1.0), (1.0, 0.2, 1.0), (0.5, 1.0, 3.0), (2.0, 1.0, 0.5)]:
        assert mfpt_with_resetting(v, D, L) == L / v
        mean, var = fpt_moments(v, D, L)
        m1, m2 = (
            quad(lambda t, k=k, a=(v, D, L): t**k * fpt_density(t, *a), 0, np.inf, epsrel=1e-12, limit=400)[0]
            for k in (1, 2)
        )
        assert mean == pytest.approx(m1, rel=1e-8) and var == pytest.approx(m2 - m1**2, rel=1e-7)
        assert var / mean**2 == pytest.approx(1 / peclet(v, D, L), rel=1e-12)
        h = 1e-6 * D / L**2
        slope = (mfpt_with_resetting(v, D, L, h) - L / v) / h
        assert slope == pytest.approx((L / v**2) * (L / 2 - D / v), rel=1e-3, abs=1e-9)
        assert (slope < 0) == (peclet(v, D, L) < 1)


@pytest.mark.parametrize(
    "v, D, L", [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0), (0.0, 1.0, 1.0), (1.0, 0.25, 1.0), (3.0, 1.0, 1.0)]
)
def test_optimal_rate(v, D, L):
    """r* minimises T over a dense log grid (to its spacing); r* > 0 with T(r*) < T(0) iff Pe < 1, else r* = 0.
    For v = 0 the known optimum is ρ* = r*L²/D = z² with z ≈ 1.5936 solving z/2 = 1 − e^{−z}.
    [theory: RESET-3]"""
    opt = optimal_resetting_rate(v, D, L)
    grid = np.exp(np.linspace(np.log(1e-6), np.log(1e2), 4001)) * D / L**2
    T = np.array([mfpt_with_resetting(v, D, L, r) for r in grid])
    if v > 0 and peclet(v, D, L) >= 1:
        assert opt.rate == 0.0 and opt.mfpt == L / v
        assert np.all(T >= L / v * (1 - 1e-12))
    else:
        assert opt.rate > 0 and opt.mfpt < opt.mfpt_without
        assert opt.mfpt <= T.min() * (1 + 1e-9)
        i = int(np.argmin(T))
        assert grid[max(i - 1, 0)] <= opt.rate * (1 + 1e-6) and opt.rate <= grid[
            min(i + 1, len(grid) - 1)
        ] * (1 + 1e-6)
    if v == 0:
        z = brentq(lambda z: z / 2 - 1 + math.exp(-z), 0.5, 3.0)
        assert z == pytest.approx(1.5936, abs=1e-4)
        assert opt.rate * L**2 / D == pytest.approx(z**2, rel=1e-6)


def test_resetting_bad_input():
    for call, match in [
        (lambda: mfpt_with_resetting(1.0, 0.0, 1.0), "D must be finite and > 0"),
        (lambda: mfpt_with_resetting(1.0, 1.0, -1.0), "L must be finite and > 0"),
        (lambda: mfpt_with_resetting(1.0, 1.0, 1.0, -0.1), "r must be finite and >= 0"),
        (lambda: mfpt_with_resetting(float("nan"), 1.0, 1.0), "v must be a finite real number"),
        (lambda: fpt_moments(-1.0, 1.0, 1.0), "v must be > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()
    assert mfpt_with_resetting(-1.0, 1.0, 1.0) == math.inf


# --- resetting in the simulators (RESET-4) --------------------------------------------------------------


def _quadratic():
    return sd.quadratic_problem(np.diag([1.0, 0.5]), np.zeros(2))


@pytest.mark.parametrize("simulator", ["sgd", "sde"])
def test_reset_counts_are_poisson_binomial_with_the_right_mean(simulator):
    """Per-path reset counts under a step-size schedule: SGD resets with p_k = rη_k, the SDE with
    p_k = 1 − e^{−rη_k}, independently per step and path, so a count is Poisson-binomial with mean Σp_k and
    variance Σp_k(1 − p_k). 4000 paths: the mean is checked within 4 s.e. of Σp_k, and the variance through
    the dispersion index, whose sampling s.d. is ≈ √(2/N) ≈ 0.022 (tolerance 0.1). The recorded "resets"
    mean is the cumulative count. [theory: RESET-4]"""
    problem = _quadratic()
    lr = sd.StepDecayLR(0.05, [100], 0.2)
    etas = np.where(np.arange(200) < 100, 0.05, 0.01)
    rate = 2.0
    p = rate * etas if simulator == "sgd" else -np.expm1(-rate * etas)
    run = sd.simulate_sgd if simulator == "sgd" else sd.simulate_sde
    res = run(
        problem,
        sd.GaussianNoise(0.1 * np.eye(2)),
        np.ones(2),
        lr=lr,
        n_steps=200,
        key=4,
        ensemble=sd.Ensemble(n_paths=4000),
        record=sd.Record(every=50),
        resetting=sd.Resetting(rate),
    )
    counts = res.resets.counts
    mean, var = p.sum(), (p * (1 - p)).sum()
    assert abs(counts.mean() - mean) < 4 * math.sqrt(var / len(counts))
    assert abs(counts.var(ddof=1) / var - 1) < 0.1
    cumulative = np.concatenate([[0.0], np.cumsum(p)])[res.steps]
    np.testing.assert_allclose(res.mean["resets"], cumulative, atol=4 * math.sqrt(var / len(counts)))
    assert res.mean["resets"][-1] == pytest.approx(counts.mean())
    assert np.all(
        (res.resets.first_step <= res.resets.last_step) & ((counts == 0) == (res.resets.first_step < 0))
    )


def test_zero_rate_is_the_plain_run_and_resets_land_on_the_checkpoint():
    """rate 0 reproduces the run without resetting draw for draw (the coins use their own key stream); with a
    fixed checkpoint, a path reset at the last step ends exactly at θ_c; the same key gives the same resets.
    [theory: RESET-4]"""
    problem = _quadratic()
    noise = sd.GaussianNoise(0.1 * np.eye(2))
    kw = dict(
        lr=0.1,
        n_steps=40,
        key=7,
        ensemble=sd.Ensemble(n_paths=64),
        record=sd.Record(every=10, n_saved_paths=64),
    )
    plain = sd.simulate_sgd(problem, noise, np.ones(2), **kw)
    zero = sd.simulate_sgd(problem, noise, np.ones(2), resetting=sd.Resetting(0.0), **kw)
    np.testing.assert_array_equal(plain.paths, zero.paths)
    assert zero.resets.counts.sum() == 0
    theta_c = np.array([0.3, -0.2])
    res = sd.simulate_sgd(problem, noise, np.ones(2), resetting=sd.Resetting(5.0, checkpoint=theta_c), **kw)
    again = sd.simulate_sgd(problem, noise, np.ones(2), resetting=sd.Resetting(5.0, checkpoint=theta_c), **kw)
    np.testing.assert_array_equal(res.resets.counts, again.resets.counts)
    np.testing.assert_array_equal(res.paths, again.paths)
    at_end = res.resets.last_step == 40
    assert at_end.sum() > 10  # p = 0.5 per step
    np.testing.assert_array_equal(res.paths[-1][at_end], np.broadcast_to(theta_c, (at_end.sum(), 2)))
    assert not np.any(np.all(res.paths[-1][~at_end] == theta_c, axis=1))


def test_best_so_far_checkpoint_follows_the_papers_rule():
    """GD on L = ½‖θ‖² from θ₀ = (1, 1) passes the validation optimum a = (0.5, 0.5) and gets worse: the best
    state is the GD iterate closest to a (θ_k = 0.9^k θ₀, k = 7), resetting switches on ``patience`` steps
    after that improvement stopped, and every path then returns to that best state (GD is deterministic,
    so after a reset it retraces the same iterates and never improves on it). [theory: RESET-4]"""
    problem = sd.quadratic_problem(np.eye(2), np.zeros(2))
    a = jnp.array([0.5, 0.5])
    val = lambda p, th: jnp.sum((th - a) ** 2)
    res = sd.simulate_sgd(
        problem,
        None,
        np.ones(2),
        lr=0.1,
        n_steps=60,
        key=0,
        ensemble=sd.Ensemble(n_paths=32),
        resetting=sd.Resetting(3.0, checkpoint=sd.BestSoFar(val, patience=5)),
    )
    iterates = 0.9 ** np.arange(61)[:, None] * np.ones(2)
    k_best = int(np.argmin(np.sum((iterates - 0.5) ** 2, axis=1)))
    assert k_best == 7
    r = res.resets
    np.testing.assert_allclose(r.best_theta, np.broadcast_to(iterates[k_best], (32, 2)), rtol=1e-12)
    assert np.all(r.switched_on)
    assert np.all(r.first_step[r.counts > 0] > k_best + 5)
    assert r.counts.sum() > 0
    # never switched on: a validation observable that keeps improving gives no resets
    res = sd.simulate_sgd(
        problem,
        None,
        np.ones(2),
        lr=0.1,
        n_steps=60,
        key=0,
        ensemble=sd.Ensemble(n_paths=8),
        resetting=sd.Resetting(3.0, checkpoint=sd.BestSoFar(lambda p, th: p.loss(th), patience=5)),
    )
    assert res.resets.counts.sum() == 0 and not res.resets.switched_on.any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(resetting=sd.Resetting(11.0)), "rate \\* lr must be < 1"),
        (dict(resetting=sd.Resetting(1.0, checkpoint=np.zeros(3))), "checkpoint must have shape \\(2,\\)"),
        (dict(resetting={"rate": 1.0}), "resetting must be a sgdsde.Resetting"),
        (
            dict(resetting=sd.Resetting(1.0, checkpoint=sd.BestSoFar(lambda p, t: t, patience=3))),
            "must return a scalar per path",
        ),
    ],
)
def test_resetting_option_bad_input(kwargs, match):
    problem = _quadratic()
    for run in (sd.simulate_sgd, sd.simulate_sde):
        with pytest.raises(ValueError, match=match):
            run(problem, sd.GaussianNoise(0.1 * np.eye(2)), np.ones(2), lr=0.1, n_steps=5, key=0, **kwargs)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sd.Resetting(-1.0), "rate must be finite and >= 0"),
        (lambda: sd.Resetting(1.0, checkpoint="best"), "checkpoint must be 'start'"),
        (lambda: sd.Resetting(1.0, checkpoint=np.full(2, np.nan)), "finite \\(d,\\) array"),
        (lambda: sd.BestSoFar(lambda p, t: 0.0, patience=0), "patience must be >= 1"),
        (lambda: sd.BestSoFar("loss", patience=3), "observable must be a function"),
    ],
)
def test_resetting_options_validate_themselves(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_latent_gradient_bias_splits_the_gradient():
    """(1−τ)∇R_c + τ∇R_w = ∇L exactly, and the bias part is the corrupted examples' share. [theory: RESET-7]"""
    data = sd.noisy_teacher_classification(0, 200, 5, 0.3, 50, 50)
    assert 0.2 < float(np.mean(data.corrupted)) < 0.4
    np.testing.assert_array_equal(np.asarray(data.y) != np.asarray(data.y_clean), np.asarray(data.corrupted))
    net = sd.TwoLayerNetwork(5, 8, "relu")
    problem = sd.Problem(net, data.X, data.y, jnp.float64, loss=sd.LogisticLoss())
    theta = net.init(jax.random.key(0)).astype(jnp.float64)
    clean, wrong = sd.analysis.latent_gradient_bias(problem, theta, data.corrupted)
    np.testing.assert_allclose(clean + wrong, problem.grad(theta), rtol=1e-12, atol=1e-14)
    only_wrong = sd.Problem(
        net, data.X[data.corrupted], data.y[data.corrupted], jnp.float64, loss=sd.LogisticLoss()
    )
    share = np.asarray(data.corrupted).mean()  # numpy: jnp.mean of a bool mask is float32 here
    np.testing.assert_allclose(wrong, share * only_wrong.grad(theta), rtol=1e-10)
    with pytest.raises(ValueError, match="corrupted must be a boolean mask"):
        sd.analysis.latent_gradient_bias(problem, theta, np.ones(3, bool))
    with pytest.raises(ValueError, match="flip_rate must be in \\[0, 1\\)"):
        sd.noisy_teacher_classification(0, 10, 2, 1.0)


def _without_and_with_resetting(fig, mech, n_steps: int, n_paths: int, seed: int = 0):
    """fig_resetting's ``mech.run(16, p, n_steps, n_paths, seed)`` at p = 0 and p = 0.05 as one sweep over the
    resetting rate (the same method, start, keys, records and BestSoFar checkpoint): sweep's points equal
    their single runs bit for bit (its default; checked against Mechanism.run: test-error records and best
    states equal), and the two share one program and each step's per-step overhead. [(errors, result)] × 2."""
    theta0 = np.asarray(jax.vmap(mech.net.init)(jax.random.split(jax.random.key(seed + 1), n_paths)))
    observables = {"test_error": lambda pr, th: mech.test_error(th), "bias": mech.bias_norms}
    checkpoint = sd.BestSoFar(mech.val_loss, patience=1000, every=10)
    sweep = sd.sweep(
        sd.SGD(sd.MinibatchNoise(16)),
        mech.problem,
        theta0,
        grid={"reset_rate": [0.0, 0.05 / fig.LR]},
        lr=fig.LR,
        n_steps=n_steps,
        key=seed,
        ensemble=sd.Ensemble(n_paths=n_paths),
        record=sd.Record(every=n_steps // 20, observables=observables),
        events=(sd.Resetting(0.05 / fig.LR, checkpoint=checkpoint),),
    )
    return [
        (np.asarray(jax.vmap(mech.test_error)(jnp.asarray(r.resets.best_theta))), r) for r in sweep.results
    ]


def test_resetting_counters_noisy_labels():
    """Bae, Song & Jeong's mechanism at CPU size (RESET-7): SGD (B = 16, η = 0.01, 8000 steps) on 1000
    teacher labels with 40% flipped memorizes them: the latent gradient bias τ∇R_w grows to the size of the
    clean part (1−τ)∇R_c and turns against it, and the test error of the current model rises after its minimum; resetting with p = 0.05 per step to the best-validation
    checkpoint lowers the best-validation model's test error. The gain is paired over 4 paths (same inits and
    keys): required > 0.02 and > 3 s.e. (measured 0.067 ± 0.008). With clean labels resetting never switches
    on and the gain is exactly 0. [theory: RESET-7]"""
    fig = load_script("fig_resetting")
    mech = fig.Mechanism(0.4)
    (e0, r0), (e1, r1) = _without_and_with_resetting(fig, mech, 8000, 4)
    gain, se = fig.benefit(e0, e1)
    assert gain > 0.02 and gain > 3 * se, (gain, se)
    curve = r0.mean["test_error"]
    assert curve[-1] > curve.min() + 0.03  # memorization: the current model's test error rises again
    clean_norm, bias_norm, cos = r0.mean["bias"].T
    # the latent bias grows to match the clean part and points against it (measured: ratio 0.58 → 0.98,
    # cos −0.46 → −0.97): the flipped labels' pull cancels the teacher's signal in the mean gradient
    assert bias_norm[-1] / clean_norm[-1] > 0.9 and bias_norm[0] / clean_norm[0] < 0.7
    assert cos[-1] < -0.8 and cos[0] > -0.6
    assert r1.resets.switched_on.all() and r1.resets.counts.min() > 0
    (c0, _), (c1, rc) = _without_and_with_resetting(fig, fig.Mechanism(0.0), 8000, 4)
    assert not rc.resets.switched_on.any()
    assert fig.benefit(c0, c1) == (0.0, 0.0)
