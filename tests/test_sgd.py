"""Discrete SGD simulator: exact identities, Lyapunov covariances, reproducibility, schedules, divergence."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

import sgdsde as sd
from sgdsde._results import RunningMoments  # internal: the accumulator, unit-tested


def test_gd_from_zero_reaches_minimum_norm_solution():
    """GD from 0 on under-determined least squares stays in the row space of X and converges to
    Xᵀ(XXᵀ)⁻¹y. [theory: SGD-2]

    Tolerance: the error contracts by (1 − ηλ_min⁺) per step; 4,000 steps at ηλ_min⁺ ≈ 0.03 leave < 1e-40,
    so only float64 rounding (1e-12) remains.
    """
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(5, 12)), rng.normal(size=5)
    problem = sd.Problem(sd.LinearRegression(12), X, y)
    lam = np.linalg.eigvalsh(X @ X.T / 5)
    lr = 1.0 / lam.max()
    assert lr * lam.min() > 0.02
    res = sd.simulate_sgd(
        problem,
        None,
        np.zeros(12),
        lr=lr,
        n_steps=4000,
        key=0,
        ensemble=sd.Ensemble(dtype=np.float64),
        record=sd.Record(n_saved_paths=1),
    )
    w = X.T @ np.linalg.solve(X @ X.T, y)
    np.testing.assert_allclose(res.paths[-1, 0], w, atol=1e-12)
    assert res.mean["loss"][-1] < 1e-24


def test_uv_toy_exact_discrete_identity():
    """f = u·v, one datum (x, y) = (1, 1), label noise ±σ, B = 1: every step satisfies
    u' = u − ηrv, v' = v − ηru with r = uv − 1 − ε, ε ∈ {±σ}, hence (u²−v²)' = (u²−v²)(1 − η²r²).
    [theory: SGD-3] Checked to float64 rounding (1e-13 relative) on every step of 40 paths."""
    eta, sigma = 0.05, 1.0
    net = sd.TwoLayerNetwork(1, 1, "linear")  # θ = (w, a): f = a·w·x
    problem = sd.Problem(net, np.ones((1, 1)), np.ones(1))
    res = sd.simulate_sgd(
        problem,
        sd.LabelNoise(sigma),
        np.array([2.0, 0.5]),
        lr=eta,
        n_steps=300,
        key=4,
        ensemble=sd.Ensemble(n_paths=40, dtype=np.float64),
        record=sd.Record(every=1, n_saved_paths=40),
    )
    u, v = res.paths[:-1, :, 0], res.paths[:-1, :, 1]
    u1, v1 = res.paths[1:, :, 0], res.paths[1:, :, 1]
    best = np.full(u.shape, np.inf)
    for eps in (-sigma, sigma):
        r = u * v - 1 - eps
        err = np.maximum(np.abs(u1 - (u - eta * r * v)), np.abs(v1 - (v - eta * r * u)))
        ident = np.abs((u1**2 - v1**2) - (u**2 - v**2) * (1 - eta**2 * r**2))
        best = np.minimum(best, np.maximum(err, ident))
    assert best.max() < 1e-13 * max(1.0, np.abs(res.paths).max() ** 2)
    # both signs occur, so the check is not passing on a degenerate noise
    signs = np.sign((u - u1) / (eta * v) - (u * v - 1))
    assert 0.3 < np.mean(signs > 0) < 0.7


def _discrete_lyapunov_path(H, C, eta, k):
    """S_k from S_{k+1} = (I − ηH)S_k(I − ηH)ᵀ + η²C, S_0 = 0."""
    A = np.eye(len(H)) - eta * H
    S = np.zeros_like(H)
    for _ in range(k):
        S = A @ S @ A.T + eta**2 * C
    return S


def _outer_about(theta_star):
    ts = jnp.asarray(theta_star)
    return lambda problem, theta: jnp.outer(theta - ts, theta - ts)


@pytest.mark.parametrize("case", ["label_noise_linear_regression", "gaussian_noise_quadratic"])
def test_stationary_covariance_matches_discrete_lyapunov(case):
    """Quadratic loss with constant noise: E(θ_k−θ*)(θ_k−θ*)ᵀ equals the discrete Lyapunov recursion and, at
    stationarity, S = (I−ηH)S(I−ηH) + η²C; for label noise S = (ησ²/B)(2I − ηH)⁻¹. [theory: SGD-4]

    Monte Carlo, 20,000 paths: each entry within 5 standard errors (s.e. from the spread of the outer
    products across paths).
    """
    rng = np.random.default_rng(1)
    d, eta = 3, 0.2
    if case == "label_noise_linear_regression":
        n, sigma = 12, 0.7
        X = rng.normal(size=(n, d))
        ts = rng.normal(size=d)
        problem = sd.Problem(sd.LinearRegression(d), X, X @ ts)
        H = X.T @ X / n
        C = sigma**2 / n * H
        noise = sd.LabelNoise(sigma)
        eta = 0.6 / np.linalg.eigvalsh(H).max()
        S_closed = eta * sigma**2 / n * np.linalg.inv(2 * np.eye(d) - eta * H)
    else:
        B = rng.normal(size=(d, d))
        H = B @ B.T + 0.5 * np.eye(d)
        ts = rng.normal(size=d)
        problem = sd.quadratic_problem(H, ts)
        M = rng.normal(size=(d, d))
        C = M @ M.T
        noise = sd.GaussianNoise(C)
        eta = 0.6 / np.linalg.eigvalsh(H).max()
        S_closed = None
    k = 400
    res = sd.simulate_sgd(
        problem,
        noise,
        ts,
        lr=eta,
        n_steps=k,
        key=7,
        ensemble=sd.Ensemble(n_paths=20_000, dtype=np.float64),
        record=sd.Record(every=k, observables={"outer": _outer_about(ts)}),
    )
    S_k = _discrete_lyapunov_path(H, C, eta, k)
    A = np.eye(d) - eta * H
    S_inf = scipy.linalg.solve_discrete_lyapunov(A, eta**2 * C)
    np.testing.assert_allclose(S_k, S_inf, rtol=1e-10)  # 400 steps: (1 − ηλ_min)^800 is negligible
    if S_closed is not None:
        np.testing.assert_allclose(S_inf, S_closed, rtol=1e-10)
    mean, se = res.final("outer")
    assert np.all(np.abs(mean - S_k) <= 5 * se), (mean, S_k, se)


@settings(max_examples=6)
@given(seed=st.integers(0, 2**31 - 1), noise_index=st.integers(0, 2), n=st.sampled_from([12, 20]))
def test_same_key_same_paths_different_key_different_paths(seed, noise_index, n):
    """Same key → bit-identical results; another key → other paths; paths within a run are independent."""
    data = sd.sparse_regression(jax.random.key(0), n, 8, 2)
    problem = sd.Problem(sd.DiagonalLinearNetwork(8), data.X, data.y)
    kw = dict(
        lr=0.01,
        n_steps=30,
        ensemble=sd.Ensemble(n_paths=16, dtype=np.float64),
        record=sd.Record(every=10, n_saved_paths=4),
    )
    noise = (sd.LabelNoise(1.0, 4, "shuffle"), sd.MinibatchNoise(5), sd.SphericalGaussianNoise(0.1))[
        noise_index
    ]
    a = sd.simulate_sgd(problem, noise, problem.model.init(), key=seed, **kw)
    b = sd.simulate_sgd(problem, noise, problem.model.init(), key=jax.random.key(seed), **kw)
    c = sd.simulate_sgd(problem, noise, problem.model.init(), key=seed + 1, **kw)
    np.testing.assert_array_equal(a.paths, b.paths)
    np.testing.assert_array_equal(a.mean["loss"], b.mean["loss"])
    assert np.all(a.paths[-1] != c.paths[-1])
    assert np.all(a.paths[-1, 0] != a.paths[-1, 1])  # paths are independent, not copies


def test_chunked_statistics_combine_exactly():
    """Chan's combination of per-chunk (count, mean, M2) equals the pooled statistics."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 100, 2))
    acc = RunningMoments()
    for lo, hi in ((0, 13), (13, 60), (60, 100)):
        part = x[:, lo:hi]
        mu = part.mean(axis=1)
        acc.add(np.full(3, hi - lo), {"x": mu}, {"x": ((part - mu[:, None]) ** 2).sum(axis=1)})
    np.testing.assert_allclose(acc.mean["x"], x.mean(axis=1), atol=1e-13)
    np.testing.assert_allclose(acc.variance()["x"], x.var(axis=1, ddof=1), atol=1e-13)


def test_chunks_and_saving(tmp_path):
    """Chunked runs count every path; a saved result reloads with its configuration and versions."""
    problem = sd.quadratic_problem(np.diag([1.0, 2.0]), np.zeros(2))
    res = sd.simulate_sgd(
        problem,
        sd.SphericalGaussianNoise(0.3),
        np.ones(2),
        lr=0.1,
        n_steps=20,
        key=0,
        ensemble=sd.Ensemble(n_paths=10, chunk_size=4),
        record=sd.Record(every=5, observables=["loss", "theta"], n_saved_paths=6),
        output=sd.Output(save_to=str(tmp_path / "run")),
    )
    assert res.count.tolist() == [10] * 5 and res.paths.shape == (5, 6, 2)
    back = sd.EnsembleResult.load(str(tmp_path / "run"))
    np.testing.assert_array_equal(back.mean["theta"], res.mean["theta"])
    np.testing.assert_array_equal(back.paths, res.paths)
    assert back.complete and back.config["n_paths"] == 10
    import json

    meta = json.loads((tmp_path / "run.json").read_text())
    assert "jax" in meta["versions"] and meta["config"]["record_every"] == 5


def test_schedules_and_sde_clock():
    """t_k = Σ_{j<k} η_j for step decay and cosine schedules. [theory: SGD-1]"""
    step = sd.StepDecayLR(0.1, (10, 20), 0.5)
    np.testing.assert_allclose(step(jnp.array([0, 9, 10, 19, 20, 29])), [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert [float(step(k)) for k in (9, 10, 20)] == [0.1, 0.05, 0.025]  # a plain int step too
    cos = sd.CosineLR(0.2, 100, 0.0)
    np.testing.assert_allclose(cos(jnp.array([0, 50, 100])), [0.2, 0.1, 0.0], atol=1e-7)
    problem = sd.quadratic_problem(np.eye(2), np.zeros(2))
    res = sd.simulate_sgd(
        problem,
        None,
        np.ones(2),
        lr=step,
        n_steps=30,
        key=0,
        ensemble=sd.Ensemble(dtype=np.float64),
        record=sd.Record(every=10, n_saved_paths=1),
    )
    np.testing.assert_allclose(res.times, [0, 1.0, 1.5, 1.75])
    # GD on ½‖θ‖²: θ_k = Π(1 − η_j)θ_0
    expect = 0.9**10 * 0.95**10 * 0.975**10
    np.testing.assert_allclose(res.paths[-1, 0], [expect, expect], rtol=1e-12)
    res = sd.simulate_sgd(
        problem,
        None,
        np.ones(2),
        lr=lambda k: 0.1 / (1 + k),
        n_steps=4,
        key=0,
        ensemble=sd.Ensemble(dtype=np.float64),
        record=sd.Record(n_saved_paths=1),
    )
    np.testing.assert_allclose(res.times[-1], 0.1 * (1 + 1 / 2 + 1 / 3 + 1 / 4))


def test_divergence_is_flagged_with_step_and_count():
    """η beyond 2/λ_max: the run reports how many paths diverged and the first step, and warns."""
    problem = sd.quadratic_problem(np.diag([1.0, 10.0]), np.zeros(2))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = sd.simulate_sgd(
            problem,
            sd.SphericalGaussianNoise(0.1),
            np.ones(2),
            lr=0.5,
            n_steps=2000,
            key=0,
            ensemble=sd.Ensemble(n_paths=8, dtype=np.float32),
            record=sd.Record(every=100),
        )
    assert res.diverged == 8
    # |1 − 0.5·10| = 4 per step: float32 overflows (3.4e38) after log(3.4e38)/log(4) ≈ 64 steps
    assert 55 <= res.first_divergence_step <= 75
    assert res.count[-1] == 0
    assert any("8 of 8 paths diverged" in str(x.message) for x in w)
    assert any("past the GD stability limit 2/λ_max(∇²L(θ₀)) = 0.2" in str(x.message) for x in w)
    assert "first at step" in res.divergence_message()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (lambda: dict(lr=-0.1), "lr must be finite and > 0"),
        (lambda: dict(lr=0.0), "lr must be finite and > 0"),
        (lambda: dict(lr=float("nan")), "lr must be finite"),
        (lambda: dict(lr="0.1"), "lr must be a real number"),
        (lambda: dict(lr=np.full(7, 0.1)), r"lr given as an array must have shape \(20,\)"),
        (lambda: dict(theta0=np.zeros(3)), r"theta0 must have last dimension 2"),
        (lambda: dict(ensemble=sd.Ensemble(n_paths=0)), "n_paths must be >= 1"),
        (lambda: dict(n_steps=0), "n_steps must be >= 1"),
        (lambda: dict(n_steps=-1), "n_steps must be >= 1"),
        (lambda: dict(n_steps=1.5), "n_steps must be an integer"),
        (lambda: dict(ensemble=sd.Ensemble(dtype=np.int32)), "dtype must be float32 or float64"),
        (lambda: dict(record=sd.Record(observables=["nope"])), "unknown name 'nope'"),
        (lambda: dict(record=sd.Record(observables={"fifth": lambda p, t: t[5]})), "indexes outside theta"),
        (lambda: dict(noise=sd.MinibatchNoise(3)), r"batch_size must be in \[1, 2\]"),
        (lambda: dict(key="seed"), "key must be a JAX PRNG key or an int seed"),
        (lambda: dict(key=-3), r"key as an int seed must be in \[0, 2\*\*63\)"),
        (lambda: dict(key=jax.random.split(jax.random.key(0))), r"key must be one PRNG key"),
        (lambda: dict(output=sd.Output(save_to="/no/such/dir/run")), "save_to: directory"),
        (lambda: dict(record=dict(every=2)), "record must be a sgdsde.Record"),
    ],
)
def test_bad_arguments_fail_before_compiling(kwargs, match):
    """Every bad argument raises ValueError naming it, before anything compiles (issue 15.7)."""
    problem = sd.Problem(sd.LinearRegression(2), np.eye(2), np.ones(2))
    args = dict(noise=None, theta0=np.zeros(2), lr=0.1, n_steps=20, key=0)
    with pytest.raises(ValueError, match=match):
        args.update(kwargs())
        noise, theta0 = args.pop("noise"), args.pop("theta0")
        sd.simulate_sgd(problem, noise, theta0, **args)


@pytest.mark.parametrize("n_steps, every", [(20, 7), (202, 2), (10, 25)])
def test_records_at_the_multiples_and_the_end_whatever_the_counts(n_steps, every):
    """``every`` need not divide n_steps (records at 0, every, 2·every, … and at n_steps), a prime number of
    records (101) runs in ~20 blocks, not 101 calls (a shorter last block), and ``every`` > n_steps records
    the start and the end: the recorded means are exactly those of the every=1 run at those steps (the noise
    of step k depends on k alone). [theory: SGD-1]"""
    from sgdsde._ensemble import _record_plan  # internal: the record-block planner

    problem = sd.quadratic_problem(np.diag([1.0, 0.5]), np.zeros(2))
    common = dict(lr=0.1, n_steps=n_steps, key=3, ensemble=sd.Ensemble(n_paths=16, dtype=np.float64))
    noise = sd.SphericalGaussianNoise(0.3)
    fine = sd.simulate_sgd(problem, noise, np.ones(2), record=sd.Record(every=1), **common)
    coarse = sd.simulate_sgd(problem, noise, np.ones(2), record=sd.Record(every=every), **common)
    want = sorted(set(range(0, n_steps + 1, min(every, n_steps))) | {n_steps})
    assert coarse.steps.tolist() == want
    np.testing.assert_array_equal(coarse.mean["loss"], fine.mean["loss"][want])
    np.testing.assert_array_equal(coarse.var["sq_norm"], fine.var["sq_norm"][want])
    plan = _record_plan(n_steps, min(every, n_steps))
    assert sum(c * length for _, c, length in plan) == n_steps and len(plan) <= 21


@pytest.mark.parametrize("simulate", ["sgd", "sde"])
def test_what_chunking_keeps_and_what_it_changes(simulate):
    """The documented invariance (README, "Keys"): chunk c draws from fold_in(key, c), so with a fixed
    chunk_size a larger ensemble made of whole chunks repeats the smaller one's paths bit for bit (more paths
    never change the first ones); a different chunk_size gives other, equally distributed draws (here paths 4–7
    move to another chunk). [theory: SGD-1]"""
    problem = sd.quadratic_problem(np.diag([1.0, 0.5]), np.zeros(2))
    run = sd.simulate_sgd if simulate == "sgd" else sd.simulate_sde
    noise = sd.SphericalGaussianNoise(0.3)

    def paths(n_paths, chunk):
        res = run(
            problem,
            noise,
            np.ones(2),
            lr=0.1,
            n_steps=10,
            key=5,
            ensemble=sd.Ensemble(n_paths=n_paths, chunk_size=chunk, dtype=np.float64),
            record=sd.Record(n_saved_paths=8),
        )
        return res.paths

    small, large = paths(8, 8), paths(24, 8)
    np.testing.assert_array_equal(small, large)
    assert not np.array_equal(paths(24, 4), large)


@pytest.mark.parametrize(
    "lr",
    [1e-7, sd.StepDecayLR(2e-7, [1_000_000], 0.5), lambda k: 1e-7 / (1 + k / 1e6)],
    ids=["constant", "step_decay", "callable"],
)
def test_host_memory_is_flat_in_the_number_of_steps(lr):
    """Neither a constant lr nor a schedule is expanded into per-step host arrays (lr, clock, step indices): a
    schedule is evaluated in blocks of 65,536 steps where needed (validation, each jitted call's steps, the
    clock at the records), so the peak of numpy's traced host allocations during a 2·10⁶-step run stays below
    3 MB (measured 0.04 MB for a constant lr, 2.1 MB for either schedule; 88 MB, 44 B per step, before); a
    schedule JAX can trace is
    evaluated inside the scan; the record times equal Σ_{j<k} η_j to rounding. [theory: SGD-1]"""
    import tracemalloc

    problem = sd.quadratic_problem(np.eye(1), np.zeros(1))
    n_steps = 2_000_000
    sd.simulate_sgd(problem, None, np.ones(1), lr=lr, n_steps=n_steps, key=0, record=sd.Record(every=n_steps))
    tracemalloc.start()
    try:
        res = sd.simulate_sgd(problem, None, np.ones(1), lr=lr, n_steps=n_steps, key=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, peak
    with jax.numpy_dtype_promotion("standard"):
        etas = np.asarray(lr(jnp.arange(n_steps)), np.float64) if callable(lr) else np.full(n_steps, lr)
    assert res.steps.tolist() == [0, n_steps]
    # the clock sums sequentially, numpy pairwise: both within T·ε ≈ 4e-10 relative of the exact sum
    np.testing.assert_allclose(res.times[-1], np.sum(etas), rtol=1e-9)
    np.testing.assert_allclose(res.mean["sq_norm"][-1], np.prod((1 - etas) ** 2), rtol=1e-9)


@pytest.mark.parametrize("chunk", [None, 3])
def test_replayed_draws_rebuild_the_run_and_check_an_identity_on_the_paths(chunk):
    """replay_draws gives the draws simulate_sgd used (same key, chunking, sampler state): rebuilding SGD by
    hand from them, θ_{k+1} = θ_k − η·noise.gradient(θ_k, draws_k), reproduces the saved paths to 1e-12 (the
    rebuild is unjitted, so not bit for bit), here with shuffled batches (a sampler with state); on the u·v toy
    (f = uv, x = y = 1) with label noise, the replayed ε_k verify (u² − v²)_{k+1} = (u² − v²)_k(1 − η²r_k²),
    r_k = u_kv_k − 1 − ε_k, on every step of the saved paths. [theory: SGD-1]"""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 2))
    problem = sd.Problem(sd.LinearRegression(2), X, X @ np.array([1.0, -1.0]), jnp.float64)
    noise = sd.LabelNoise(0.3, 2, sampling="shuffle")
    ens = sd.Ensemble(n_paths=7, chunk_size=chunk, dtype=np.float64)
    kw = dict(n_steps=12, key=4, ensemble=ens)
    res = sd.simulate_sgd(
        problem, noise, np.zeros(2), lr=0.1, record=sd.Record(every=1, n_saved_paths=7), **kw
    )
    paths = [6, 1, 4]
    draws = sd.replay_draws(problem, noise, paths=paths, **kw)
    theta = np.zeros((3, 2))
    for k in range(12):
        g = np.stack(
            [
                np.asarray(
                    noise.gradient(
                        problem, jnp.asarray(theta[i]), jax.tree.map(lambda x, k=k, i=i: x[k, i], draws)
                    )
                )
                for i in range(3)
            ]
        )
        theta = theta - 0.1 * g
        np.testing.assert_allclose(theta, res.paths[k + 1, paths], rtol=1e-12, atol=1e-14)

    toy = sd.Problem(sd.TwoLayerNetwork(1, 1, "linear"), np.ones((1, 1)), np.ones(1))
    label, eta = sd.LabelNoise(1.0, batch_size=1), 0.05
    kw = dict(n_steps=200, key=1, ensemble=sd.Ensemble(n_paths=4, dtype=np.float64))
    run = sd.simulate_sgd(
        toy, label, np.array([2.0, 0.5]), lr=eta, record=sd.Record(every=1, n_saved_paths=4), **kw
    )
    _, eps = sd.replay_draws(toy, label, **kw)
    u, v = run.paths[..., 0], run.paths[..., 1]
    balance, r = u**2 - v**2, u[:-1] * v[:-1] - 1 - eps[..., 0]
    np.testing.assert_allclose(balance[1:], balance[:-1] * (1 - eta**2 * r**2), rtol=1e-10)


def test_replay_draws_bad_input():
    problem = sd.quadratic_problem(np.eye(2), np.zeros(2))
    noise = sd.SphericalGaussianNoise(0.1)
    with pytest.raises(ValueError, match="paths must be a 1-D array of path indices in \\[0, 2\\)"):
        sd.replay_draws(problem, noise, n_steps=3, key=0, ensemble=sd.Ensemble(n_paths=2), paths=[2])
    with pytest.raises(ValueError, match="n_steps must be"):
        sd.replay_draws(problem, noise, n_steps=0, key=0)
    with pytest.raises(ValueError, match="noise must be"):
        sd.replay_draws(problem, None, n_steps=3, key=0)


def test_divergence_check_on_long_rows_flags_exactly_the_non_finite_paths():
    """The per-step check on rows of LONG_ROW or more coordinates (a float sum of θ − θ, one fused pass)
    flags a path exactly when one coordinate is ±inf or NaN, as all(isfinite) does on short rows; values
    near the float32 maximum are finite and not flagged (θ − θ = 0, no overflow)."""
    from sgdsde._ensemble import LONG_ROW, finite_paths  # internal: the divergence check
    from sgdsde._sgd import SGDStepper  # internal: the stepper whose check is tested

    for d in (3, LONG_ROW, LONG_ROW + 72):
        X = np.ones((4, d))
        stepper = SGDStepper(sd.Problem(sd.LinearRegression(d), X, np.ones(4)), sd.NoNoise(), 6)
        theta = jnp.zeros((6, d), jnp.float32).at[1, d - 1].set(jnp.inf).at[2, 0].set(jnp.nan)
        theta = theta.at[3, d // 2].set(-jnp.inf).at[4].set(3e38)
        got = np.asarray(eqx.filter_jit(type(stepper).path_finite)(stepper, (theta, None)))
        np.testing.assert_array_equal(got, [True, False, False, False, True, True])
        # the SDE stepper keeps paths on the last axis: the same check over axis 0
        np.testing.assert_array_equal(np.asarray(jax.jit(finite_paths, static_argnums=1)(theta.T, 0)), got)


def test_stability_bound_is_an_upper_bound_and_the_warning_still_fires():
    """The LAPACK-free bound that spares the eigendecomposition is never below λ_max (random symmetric,
    PSD, NSD and sparse matrices, five orders of magnitude either way), and a run at 1.01 · 2/λ_max is still
    warned about while one at 0.99 · 2/λ_max is not."""
    from sgdsde._sgd import _lambda_max_bound  # internal: the stability bound

    rng = np.random.default_rng(0)
    for t in range(400):
        n = int(rng.integers(1, 40))
        M = rng.normal(size=(n, n)) * 10.0 ** rng.uniform(-5, 5)
        H = (M + M.T, M @ M.T, -(M @ M.T), np.where(rng.random((n, n)) < 0.7, 0, M + M.T))[t % 4]
        H = (H + H.T) / 2
        assert _lambda_max_bound(H) >= np.linalg.eigvalsh(H)[-1] - 1e-12 * np.abs(H).sum(axis=1).max()
    X = rng.normal(size=(20, 8))
    problem = sd.Problem(sd.LinearRegression(8), X, X @ np.ones(8))
    lam = np.linalg.eigvalsh(X.T @ X / 20)[-1]
    for factor, warned in ((1.01, True), (0.99, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sd.simulate_sgd(problem, None, np.zeros(8), lr=factor * 2 / lam, n_steps=2, key=0)
        assert any("stability limit" in str(w.message) for w in caught) == warned, factor


def test_replayed_label_noise_is_already_multiplied_by_sigma():
    """replay_draws' label-noise ε is the perturbation itself, σ·(±1) (docstring): |ε| = σ exactly for
    Rademacher noise, and doubling σ with the same key doubles every ε; GaussianNoise's ξ is unscaled."""
    problem = sd.Problem(sd.LinearRegression(2), np.eye(2), np.ones(2), jnp.float64)
    kw = dict(n_steps=3, key=2, ensemble=sd.Ensemble(n_paths=2, dtype=np.float64))
    _, eps = sd.replay_draws(problem, sd.LabelNoise(0.3, 1), **kw)
    np.testing.assert_array_equal(np.abs(eps), 0.3)
    _, eps2 = sd.replay_draws(problem, sd.LabelNoise(0.6, 1), **kw)
    np.testing.assert_array_equal(eps2, 2 * eps)
    xi1 = sd.replay_draws(problem, sd.GaussianNoise(0.1 * np.eye(2)), **kw)
    xi2 = sd.replay_draws(problem, sd.GaussianNoise(np.eye(2)), **kw)
    np.testing.assert_array_equal(xi1, xi2)


class _StepByStep(sd.LabelNoise):
    """LabelNoise whose draws are made step by step (the engine's path for noises that cannot draw ahead)."""

    def draws_ahead(self) -> bool:
        return False


@pytest.mark.parametrize("lr", [0.12, "array"])
def test_draws_made_ahead_give_the_step_by_step_numbers_bit_for_bit(lr):
    """SGD makes the draws of a segment of steps at once where the noise allows it (±σ label noise): the
    records, the saved paths and every path's divergence step equal the step-by-step run exactly. 8 paths at
    d = 200 make segments of 819 steps, so the 1,000-step records end in a shorter segment; with σ = 2 paths
    diverge, at different steps (lr 0.12: steps 7-8; lr rising to 0.5: steps 888-1047, on both sides of the
    first record's end)."""
    data = sd.sparse_regression(jax.random.key(0), 40, 100, 5)
    model = sd.DiagonalLinearNetwork(100, 1.0)
    problem = sd.Problem(model, data.X, data.y, dtype=jnp.float32)
    rising = np.concatenate([np.full(300, 0.01), np.linspace(0.01, 0.5, 700), np.full(1500, 0.5)])
    lrs = rising if lr == "array" else lr
    runs = []
    for noise in (sd.LabelNoise(2.0), _StepByStep(2.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            runs.append(
                sd.simulate_sgd(
                    problem,
                    noise,
                    model.init(),
                    lr=lrs,
                    n_steps=2500,
                    key=3,
                    ensemble=sd.Ensemble(n_paths=8, dtype=np.float32),
                    record=sd.Record(every=1000, n_saved_paths=8),
                )
            )
    ahead, step_by_step = runs
    assert ahead.diverged > 0 and len(set(ahead.divergence_steps.tolist())) > 1
    np.testing.assert_array_equal(ahead.divergence_steps, step_by_step.divergence_steps)
    np.testing.assert_array_equal(ahead.diverged_paths, step_by_step.diverged_paths)
    np.testing.assert_array_equal(ahead.paths, step_by_step.paths)
    for name in ahead.mean:
        np.testing.assert_array_equal(ahead.mean[name], step_by_step.mean[name])
        np.testing.assert_array_equal(ahead.var[name], step_by_step.var[name])


def _divergent_runs(method, absorbs, monkeypatch, *, grid=None):
    """Runs of a diverging setting (±2 label noise, lr rising to 0.5: paths diverge at different steps, inside
    blocks of records) with the per-block divergence check (``absorbs``) or the per-step one."""
    from sgdsde import _ensemble
    from sgdsde._sde.fixed import SDEStepper
    from sgdsde._sde.svag import SVAGOptimizerStepper, SVAGStepper
    from sgdsde._sgd import SGDStepper

    for cls in (SGDStepper, SDEStepper, SVAGStepper, SVAGOptimizerStepper):
        monkeypatch.setattr(cls, "absorbs_divergence", absorbs)
    monkeypatch.setattr(_ensemble, "DEFER_MIN_WORK", 0)  # per block at any size (the default: long runs only)
    data = sd.sparse_regression(jax.random.key(0), 20, 10, 3)
    model = sd.DiagonalLinearNetwork(10, 1.0)
    problem = sd.Problem(model, data.X, data.y, dtype=jnp.float32)
    lrs = np.concatenate([np.full(50, 0.01), np.linspace(0.01, 0.6, 100), np.full(150, 0.6)])
    options = dict(
        lr=lrs,
        n_steps=300,
        key=3,
        ensemble=sd.Ensemble(n_paths=8, dtype=np.float32),
        record=sd.Record(every=25, n_saved_paths=8),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if grid is not None:
            out = sd.sweep(method, problem, model.init(), grid=grid, **options)
            return list(out.results)
        return [sd.simulate(method, problem, model.init(), **options)]


@pytest.mark.parametrize(
    "method, grid",
    [
        (sd.SGD(sd.LabelNoise(2.0)), None),
        (sd.SDE(sd.LabelNoise(2.0)), None),
        (sd.SVAG(sd.LabelNoise(2.0), 2), None),
        (sd.SGD(sd.LabelNoise(2.0)), {"noise.sigma": [1.5, 2.0]}),
    ],
    ids=["sgd", "sde", "svag", "sweep"],
)
def test_divergence_checked_per_block_gives_the_per_step_marks_bit_for_bit(method, grid, monkeypatch):
    """A run without events checks divergence once per block and, where a path diverged in it, runs the block
    again with the per-step check (the update adds to θ, so a non-finite path stays non-finite): every path's
    divergence step, the saved paths and the records equal the per-step check's exactly, for SGD, the SDE, SVAG
    and a sweep (vmapped grid). [theory: SGD-5]"""
    deferred = _divergent_runs(method, True, monkeypatch, grid=grid)
    per_step = _divergent_runs(method, False, monkeypatch, grid=grid)
    for a, b in zip(deferred, per_step, strict=True):
        assert a.diverged > 0 and len(set(a.divergence_steps.tolist())) > 1
        np.testing.assert_array_equal(a.divergence_steps, b.divergence_steps)
        np.testing.assert_array_equal(a.diverged_paths, b.diverged_paths)
        np.testing.assert_array_equal(a.paths, b.paths)
        for name in a.mean:
            np.testing.assert_array_equal(a.mean[name], b.mean[name])
            np.testing.assert_array_equal(a.var[name], b.var[name])


def test_a_shorter_last_interval_and_block_compile_one_block_program():
    """n_steps = 135 with record.every = 2: 67 whole intervals in blocks of 3 records (67 is prime: the last
    block holds 1), then a 1-step last interval; 16 paths in 2 chunks saving 12 paths (8, then 4). Blocks of
    static length would be three programs (one per block shape); the blocks run as one compiled program
    (traced trip counts, draws made a segment ahead, the per-step lr array padded to the block's shape), and
    its records are those of the every = 1 run at those steps bit for bit (step k's noise depends on k alone)."""
    from sgdsde import _ensemble as engine  # internal: the block program and its planner

    assert {(n, length) for _, n, length in engine._record_plan(135, 2)} == {(3, 2), (1, 2), (1, 1)}
    X = np.random.default_rng(0).normal(size=(12, 4))
    problem = sd.Problem(sd.DiagonalLinearNetwork(4, alpha=0.8), X, X @ np.array([1.0, -0.5, 0.0, 0.3]))

    def run(every):
        return sd.simulate_sgd(
            problem,
            sd.LabelNoise(1.0),
            problem.model.init(),
            lr=np.linspace(0.05, 0.01, 135),
            n_steps=135,
            key=3,
            ensemble=sd.Ensemble(n_paths=16, chunk_size=8, dtype=np.float64),
            record=sd.Record(every=every, n_saved_paths=12),
        )

    before = engine._run_block._cached._cache_size()
    coarse = run(2)
    assert engine._run_block._cached._cache_size() - before == 1
    fine = run(1)
    at = [*range(0, 135, 2), 135]
    assert coarse.steps.tolist() == at and coarse.paths.shape == (69, 12, 8)
    np.testing.assert_array_equal(coarse.paths, fine.paths[at])
    for name in fine.mean:
        np.testing.assert_array_equal(coarse.mean[name], fine.mean[name][at])
        np.testing.assert_array_equal(coarse.var[name], fine.var[name][at])
