"""Optimizers with state (issue 23, the discrete side): ``SGD(noise, optimizer=...)`` runs momentum, Nesterov,
RMSprop, Adam(W) and any optax transformation per path on the engine (theory/optimizers.md, OPT-1..OPT-5).

Exact references: momentum SGD on a quadratic with Gaussian noise is a linear recursion in (θ, m), whose mean
and covariance at step T follow exactly (OPT-5); Adam and RMSprop are checked against their recursions written
out in NumPy on the run's own replayed draws."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import NOISES, OPTIMIZERS, SGD_ONLY_NOISES, interrupted_at_update, make_problem

import sgdsde as sd
from sgdsde._layout import FLAT

H = np.diag([1.0, 0.3])
C = np.array([[0.5, 0.1], [0.1, 0.2]])
QUAD = sd.quadratic_problem(H, np.zeros(2), dtype=np.float64)
GAUSS = sd.GaussianNoise(C)
TH0 = np.array([1.0, -1.0])


def _x_problem():
    X = np.random.default_rng(0).normal(size=(12, 4))
    y = X @ np.array([1.0, -0.5, 0.0, 0.3])
    return sd.Problem(sd.DiagonalLinearNetwork(4, alpha=0.8), X, y)


PROBLEM = _x_problem()
THETA0 = PROBLEM.model.init()
NOISE = sd.LabelNoise(0.5, 3)
KW = dict(
    lr=0.05,
    n_steps=12,
    key=3,
    ensemble=sd.Ensemble(n_paths=8, chunk_size=4),
    record=sd.Record(every=3, n_saved_paths=8),
)


def test_no_optimizer_and_zero_momentum_are_plain_sgd_bit_for_bit():
    """[theory: OPT-1] optimizer=None runs today's SGD step; Momentum(0) (m = 0·m + g̃, θ + η·(−m)) gives the
    same numbers exactly (IEEE: negation and adding 0·θ are exact; a bare optax transformation equals the named
    optimizer: the next test)."""
    base = sd.simulate(sd.SGD(NOISE), PROBLEM, THETA0, **KW)
    res = sd.simulate(sd.SGD(NOISE, optimizer=sd.Momentum(0.0)), PROBLEM, THETA0, **KW)
    np.testing.assert_array_equal(res.paths, base.paths)
    np.testing.assert_array_equal(res.mean["loss"], base.mean["loss"])
    assert "optimizer" not in base.config and sd.SGD(NOISE).optimizer is None


@pytest.mark.parametrize(
    "beta, nesterov, w",
    [(0.9, False, 0.0), (0.8, True, 0.0), (0.9, False, 0.2)],
    ids=["hb", "nesterov", "wd"],
)
def test_momentum_ensemble_matches_the_exact_linear_recursion(beta, nesterov, w):
    """[theory: OPT-2, OPT-5] Momentum SGD on a quadratic with Gaussian noise: the ensemble's mean and covariance of θ
    at T = 150 and its recorded E‖m‖² equal the exact linear recursion z' = Mz + Bξ within Monte Carlo error.
    Tolerances: 4.5 standard errors per entry (the largest of 2 + 3 + 1 statistics per case; the sample
    covariance's s.e. is √((P_ii P_jj + P_ij²)/N) for Gaussian z, which z is here)."""
    eta, n, T = 0.1, 4096, 150
    opt = sd.Momentum(beta, nesterov=nesterov, weight_decay=w)
    res = sd.simulate(
        sd.SGD(GAUSS, optimizer=opt),
        QUAD,
        TH0,
        lr=eta,
        n_steps=T,
        key=11,
        ensemble=sd.Ensemble(n),
        record=sd.Record(every=T, observables=("theta",), n_saved_paths=n),
    )
    mu, P = sd.analysis.momentum_sgd_moments(
        H, C, np.zeros(2), TH0, eta, beta, T, nesterov=nesterov, weight_decay=w
    )
    theta = res.paths[-1]
    se_mean = np.sqrt(np.diag(P)[:2] / n)
    assert np.all(np.abs(theta.mean(0) - mu[:2]) < 4.5 * se_mean), (theta.mean(0), mu[:2], se_mean)
    cov = np.cov(theta.T)
    Pt = P[:2, :2]
    se_cov = np.sqrt((np.outer(np.diag(Pt), np.diag(Pt)) + Pt**2) / n)
    assert np.all(np.abs(cov - Pt) < 4.5 * se_cov), (cov, Pt, se_cov)
    # E‖m‖² from the recorded optimizer observable: its sample variance gives the s.e.
    m2_exact = np.trace(P[2:, 2:]) + mu[2:] @ mu[2:]
    se_m2 = np.sqrt(res.var["momentum_sq_norm"][-1] / n)
    assert abs(res.mean["momentum_sq_norm"][-1] - m2_exact) < 4.5 * se_m2
    assert res.mean["momentum_sq_norm"][0] == 0.0  # m₀ = 0


def _numpy_adaptive(kind, theta0, grads_of, n_steps, eta, b1, b2, eps, w):
    """RMSprop (ε outside the square root, v₀ = 0) and Adam(W) with bias corrections, written out (OPT-3, OPT-4)."""
    theta = theta0.copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for k in range(n_steps):
        g = grads_of(k, theta)
        if kind == "rmsprop":
            v = b2 * v + (1 - b2) * g * g
            theta = theta - eta * g / (np.sqrt(v) + eps)
        else:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mh, vh = m / (1 - b1 ** (k + 1)), v / (1 - b2 ** (k + 1))
            theta = theta - eta * (mh / (np.sqrt(vh) + eps) + w * theta)
    return theta


@pytest.mark.parametrize("kind", ["rmsprop", "adamw"])
def test_adaptive_optimizers_follow_their_recursions_on_the_runs_own_draws(kind):
    """[theory: OPT-3, OPT-4] The run's paths equal RMSprop's / AdamW's recursion written out in NumPy, fed the
    run's own minibatch draws (``replay_draws``) and the problem's per-batch gradient: the lr multiplies the
    unit-lr update, the bias corrections count from step 1, the decay is decoupled and scaled by η. Tolerance
    1e-10 relative: float64, the same operations in another order (g/(√v + ε) amplifies rounding where v is
    small)."""
    noise = sd.MinibatchNoise(3, "with_replacement")
    opt = sd.RMSprop(0.9, 1e-6) if kind == "rmsprop" else sd.Adam(0.8, 0.95, 1e-6, weight_decay=0.1)
    kw = dict(KW, n_steps=10, record=sd.Record(every=10, n_saved_paths=8))
    res = sd.simulate(sd.SGD(noise, optimizer=opt), PROBLEM, THETA0, **kw)
    draws = sd.replay_draws(PROBLEM, noise, n_steps=10, key=3, ensemble=kw["ensemble"])
    for i in range(8):
        grads_of = lambda k, th, i=i: np.asarray(
            noise.gradient(PROBLEM, jnp.asarray(th), jax.tree.map(lambda x: x[k, i], draws))
        )
        want = _numpy_adaptive(
            kind,
            np.asarray(THETA0, np.float64),
            grads_of,
            10,
            0.05,
            0.8,
            0.9 if kind == "rmsprop" else 0.95,
            1e-6,
            0.1 if kind != "rmsprop" else 0.0,
        )
        np.testing.assert_allclose(res.paths[-1, i], want, rtol=1e-10, atol=1e-12)


def test_a_bare_optax_transformation_equals_the_named_optimizer(monkeypatch):
    """[theory: OPT-1] ``optax.sgd(1.0, momentum=β)`` given as it is runs the same numbers as Momentum(β): bit
    for bit in the flat layout that a user's transformation keeps (the named one carries the diagonal net's
    (u, v) pair, equal to rounding: FMOD-5)."""
    b = sd.simulate(sd.SGD(NOISE, optimizer=optax.sgd(1.0, momentum=0.7)), PROBLEM, THETA0, **KW)
    monkeypatch.setattr(sd.DiagonalLinearNetwork, "layout", lambda self: FLAT)
    a = sd.simulate(sd.SGD(NOISE, optimizer=sd.Momentum(0.7)), PROBLEM, THETA0, **KW)
    np.testing.assert_array_equal(a.paths, b.paths)
    assert b.method.endswith("+Optax") and "probe=" in b.config["optimizer"]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_resumes_from_a_checkpoint_of_its_state_bit_for_bit(name, tmp_path):
    """[theory: OPT-1] The optimizer state is per path in the carry: with first passage and resetting (which
    restarts the optimizer) a run interrupted inside a chunk resumes bit for bit; a checkpoint of another
    optimizer is refused."""
    method = sd.SGD(NOISE, optimizer=OPTIMIZERS[name]())
    events = (sd.FirstPassage(observable="loss", threshold=0.5), sd.Resetting(2.0, optimizer=True))
    full = sd.simulate(method, PROBLEM, THETA0, **KW, events=events)
    out = sd.Output(save_to=str(tmp_path / "r"), checkpoint_every=1)
    with interrupted_at_update(3):  # inside chunk 0, after its second block of records
        sd.simulate(
            method, PROBLEM, THETA0, **KW, events=events, output=dataclasses.replace(out, progress=True)
        )
    resumed = sd.simulate(
        method, PROBLEM, THETA0, **KW, events=events, output=dataclasses.replace(out, resume=True)
    )
    np.testing.assert_array_equal(full.paths, resumed.paths)
    for k in full.mean:
        np.testing.assert_array_equal(full.mean[k], resumed.mean[k])
    other = sd.SGD(NOISE, optimizer=sd.Momentum(0.5) if name != "momentum" else sd.Adam())
    with pytest.raises(ValueError, match="optimizer"):
        sd.simulate(other, PROBLEM, THETA0, **KW, events=events, output=dataclasses.replace(out, resume=True))


def test_a_warm_start_resumes_only_under_its_own_initial_moments(tmp_path):
    """[theory: ASDE-8] An Adam run from a warm start (m₀, v₀) interrupted inside a chunk resumes bit for bit
    under the same start; resumed under another v₀ (or another m₀, or none: m₀ = 0) it is refused by the
    checkpoint's fingerprint, and the refusal names the optimizer's entry of the configuration (the run's
    record holds the start's values; RMSprop's v₀ enters its record the same way:
    test_adaptive_sdes.py::test_warm_start_state_update_description_and_maps)."""
    noise, m0, v0 = sd.GaussianNoise(C), [0.1, -0.2], [1.0, 2.0]
    make = lambda m0, v0: sd.Adam(0.9, 0.99, 0.1, m0=m0, v0=v0)  # noqa: E731
    others = [([0.1, -0.2], [1.0, 2.5]), ([0.3, -0.2], [1.0, 2.0]), (None, [1.0, 2.0])]
    kw = dict(KW, record=sd.Record(every=3, n_saved_paths=8, observables=("theta",)))
    out = sd.Output(save_to=str(tmp_path / "warm"), checkpoint_every=1)
    full = sd.simulate(sd.SGD(noise, optimizer=make(m0, v0)), QUAD, TH0, **kw)
    with interrupted_at_update(2):  # inside chunk 0, after its first block of records
        sd.simulate(
            sd.SGD(noise, optimizer=make(m0, v0)),
            QUAD,
            TH0,
            **kw,
            output=dataclasses.replace(out, progress=True),
        )
    resume = dataclasses.replace(out, resume=True)
    for m0_other, v0_other in others:
        other = sd.SGD(noise, optimizer=make(m0_other, v0_other))
        with pytest.raises(
            ValueError, match=r"another run: configs, data differ .*first at configs\[0\]\.optimizer"
        ):
            sd.simulate(other, QUAD, TH0, **kw, output=resume)
    resumed = sd.simulate(sd.SGD(noise, optimizer=make(m0, v0)), QUAD, TH0, **kw, output=resume)
    np.testing.assert_array_equal(full.paths, resumed.paths)
    assert set(full.mean) == set(resumed.mean) and "second_moment_mean" in full.mean
    for k in full.mean:
        np.testing.assert_array_equal(full.mean[k], resumed.mean[k])
        np.testing.assert_array_equal(full.var[k], resumed.var[k])


@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_a_reset_restores_parameters_only_unless_asked_to_restart_the_optimizer(kind):
    """[theory: OPT-6, OPT-7] Resetting(rate) keeps a reset path's momentum (Bae et al.'s code default,
    --opt-reset 0); Resetting(rate, optimizer=True) restarts it as at step 0 (--opt-reset 1): Adam's moments and
    its own step count, so its bias corrections count again from 1 on that path only (the run is not in
    lockstep). Under GD the only randomness is the reset coin (p = rη = 0.5 per step), so each saved path is
    replayed in NumPy from its own resets (read off the record: θ_k = θ₀ exactly) under either rule, to 1e-12
    (float64, other summation order)."""
    eta, beta, n_steps = 0.05, 0.9, 8
    b2, eps = 0.99, 1e-8
    kw = dict(
        lr=eta,
        n_steps=n_steps,
        key=5,
        ensemble=sd.Ensemble(n_paths=8, chunk_size=4),
        record=sd.Record(every=1, n_saved_paths=8, observables=("theta",)),
    )
    th0 = np.asarray(THETA0, np.float64)
    grad = lambda th: np.asarray(PROBLEM.grad(jnp.asarray(th)))
    runs = {}
    opt = sd.Momentum(beta) if kind == "momentum" else sd.Adam(beta, b2, eps)
    for restart in (False, True):
        method = sd.SGD(None, optimizer=opt)
        res = sd.simulate(method, PROBLEM, THETA0, **kw, events=(sd.Resetting(10.0, optimizer=restart),))
        runs[restart] = res.paths
        for i in range(8):
            th, m, v, t = th0.copy(), np.zeros_like(th0), np.zeros_like(th0), 0
            for k in range(1, n_steps + 1):
                g, t = grad(th), t + 1
                if kind == "momentum":
                    m = beta * m + g
                    th = th - eta * m
                else:
                    m, v = beta * m + (1 - beta) * g, b2 * v + (1 - b2) * g * g
                    th = th - eta * (m / (1 - beta**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
                if np.array_equal(res.paths[k, i], th0):  # reset after step k
                    th = th0.copy()
                    if restart:
                        m, v, t = np.zeros_like(m), np.zeros_like(v), 0
                np.testing.assert_allclose(res.paths[k, i], th, rtol=1e-12, atol=1e-14)
    resets = np.all(runs[True] == th0, axis=-1)
    assert resets[1:-1].any() and (~resets[2:] & resets[1:-1]).any()  # a reset followed by a free step
    assert not np.array_equal(runs[True], runs[False])  # the same coins, another rule
    with pytest.raises(ValueError, match="optimizer"):
        sd.simulate(sd.SGD(NOISE), PROBLEM, THETA0, **KW, events=(sd.Resetting(1.0, optimizer=True),))


@pytest.mark.parametrize("name", ["momentum", "rmsprop", "adam", "adam_warm", "optax_clip_adam"])
def test_in_lockstep_an_optimizer_updates_all_paths_as_one(name):
    """[theory: OPT-7] With no event that restarts a path, a leafwise optimizer updates the stacked paths as one
    array with the step count of path 0 (``update_paths(lockstep=True)``): over three steps on four paths of
    different gradients, in the flat layout and in the diagonal net's (u, v) pair, the same updates and states
    as the per-path (vmapped) update to rounding (rtol 1e-14: XLA may reassociate the bias correction per
    fusion, FMOD-5), and the counts stay per path, equal; an optimizer that is not leafwise (a user's optax
    chain with a global norm) is updated per path either way, bit for bit. A run whose resets keep the
    optimizer's state steps in lockstep."""
    d = PROBLEM.n_params
    opt = (
        sd.Adam(v0=np.linspace(0.5, 1.5, d), m0=np.linspace(-1, 1, d))
        if name == "adam_warm"
        else OPTIMIZERS[name]()
    )
    g = jax.random.normal(jax.random.key(0), (3, 4, d))
    theta = jax.random.normal(jax.random.key(1), (4, d))
    for layout in (FLAT, PROBLEM.model.layout()):
        runs = []
        for lockstep in (False, True):
            th, out = layout.pack(theta), []
            state = jax.vmap(functools.partial(opt.init, layout=layout))(th)
            for k in range(3):
                u, state = opt.update_paths(layout.pack(g[k]), state, th, lockstep=lockstep)  # eager
                th = jax.tree.map(lambda a, b: a + 0.1 * b, th, u)
                out.append((layout.unpack(u), state))
            runs.append(out)
        for (u0, s0), (u1, s1) in zip(*runs, strict=True):
            assert jax.tree.structure(s0) == jax.tree.structure(s1)
            if name == "optax_clip_adam":
                jax.tree.map(np.testing.assert_array_equal, (u0, s0), (u1, s1))
            else:
                np.testing.assert_allclose(u0, u1, rtol=1e-14, atol=1e-16)
                jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-16), s0, s1)
    if name != "adam":
        return
    spy = []

    class SpyAdam(sd.Adam):  # its own type: a program of its own, traced here
        def update_paths(self, g, state, theta, *, lockstep=False):
            spy.append(lockstep)
            return super().update_paths(g, state, theta, lockstep=lockstep)

    # (with resets that restart the optimizer the run is not in lockstep: the reset test above replays
    # per-path counts, and a stepper in lockstep refuses to restart)
    run = dict(KW, n_steps=2, record=sd.Record())
    sd.simulate(sd.SGD(None, optimizer=SpyAdam()), PROBLEM, THETA0, **run, events=(sd.Resetting(1.0),))
    assert spy and set(spy) == {True}, spy


def test_a_sweep_over_momentum_and_lr_is_one_program_equal_to_single_runs():
    """[theory: OPT-1] β is an array leaf: ``sweep`` batches it with lr, and each point equals its single run."""
    method = sd.SGD(NOISE, optimizer=sd.Momentum(0.9))
    sw = sd.sweep(
        method,
        PROBLEM,
        THETA0,
        grid={"optimizer.beta": [0.5, 0.9], "lr": [0.02, 0.05]},
        **{k: v for k, v in KW.items() if k != "lr"},
    )
    assert len(sw) == 4
    for point, res in zip(sw.points, sw.results, strict=True):
        opt = sd.Momentum(point["optimizer.beta"])
        single = sd.simulate(sd.SGD(NOISE, optimizer=opt), PROBLEM, THETA0, **dict(KW, lr=point["lr"]))
        np.testing.assert_array_equal(res.paths, single.paths)


def test_a_diverging_optimizer_is_reported_per_path():
    """An update that overflows (Momentum at a step size far past GD's stability limit) marks the paths as
    diverged at their step, like SGD's divergence, never returning the numbers silently."""
    with pytest.warns(RuntimeWarning) as caught:
        res = sd.simulate(
            sd.SGD(GAUSS, optimizer=sd.Momentum(0.9)),
            QUAD,
            TH0,
            lr=50.0,
            n_steps=400,
            key=0,
            ensemble=sd.Ensemble(8),
            record=sd.Record(every=400),
        )
    said = " ".join(str(w.message) for w in caught)
    assert "heavy-ball momentum stability limit 3.8/" in said and "8 of 8 paths diverged" in said
    assert res.diverged == 8 and res.count[-1] == 0
    assert np.all(res.divergence_steps > 0) and sorted(res.diverged_paths) == list(range(8))


def test_the_stability_warning_is_the_optimizers():
    """[theory: OPT-5] Heavy ball is stable on a quadratic up to ηλ < 2(1 + β), Nesterov (this form) up to 2(1 + β)/(1 + 2β)
    (OPT-5): lr = 3 with λ_max = 1 is past GD's limit 2 but not heavy ball's 3.8 (no warning; warnings are
    errors here), past Nesterov's 3.8/2.8 = 1.357 (warned by name); Adam has no such limit (no warning)."""
    kw = dict(lr=3.0, n_steps=2, key=0, ensemble=sd.Ensemble(2))
    sd.simulate(sd.SGD(GAUSS, optimizer=sd.Momentum(0.9)), QUAD, TH0, **kw)
    sd.simulate(sd.SGD(GAUSS, optimizer=sd.Adam()), QUAD, TH0, **kw)
    with pytest.warns(RuntimeWarning, match="Nesterov momentum stability limit 1.357"):
        sd.simulate(sd.SGD(GAUSS, optimizer=sd.Momentum(0.9, nesterov=True)), QUAD, TH0, **kw)
    with pytest.warns(RuntimeWarning, match="GD stability limit 2/"):
        sd.simulate(sd.SGD(GAUSS), QUAD, TH0, **kw)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: sd.Momentum(1.0), r"beta must be in \[0, 1\)"),
        (lambda: sd.Momentum(-0.1), "beta must be finite and >= 0"),
        (lambda: sd.Adam(b2=1.5), r"b2 must be in \[0, 1\)"),
        (lambda: sd.Adam(eps=0.0), "eps must be finite and > 0"),
        (lambda: sd.RMSprop(eps=-1.0), "eps must be finite and > 0"),
        (lambda: sd.Momentum(nesterov="yes"), "nesterov must be True or False"),
        (lambda: sd.SGD(NOISE, optimizer="adam"), "optimizer must be None, sgdsde.Momentum"),
        (lambda: sd.Optax(lambda g: g), "optimizer must be"),
        (lambda: sd.Resetting(1.0, optimizer=1), "optimizer must be True or False"),
        (
            lambda: sd.Resetting(1.0, checkpoint=sd.BestSoFar(lambda p, t: p.loss(t), 3), optimizer=True),
            "BestSoFar",
        ),
    ],
)
def test_bad_optimizer_input_is_refused_by_name(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_an_optimizer_whose_state_does_not_fit_theta_is_refused():
    """A transformation whose update changes θ's shape (here: it sums the gradient) is refused at the start."""
    bad = optax.GradientTransformation(lambda p: (), lambda g, s, p=None: (jnp.sum(g), s))
    with pytest.raises(ValueError, match="optimizer: its update must have"):
        sd.simulate(sd.SGD(NOISE, optimizer=bad), PROBLEM, THETA0, **KW)


def test_the_keyword_spellings_take_the_optimizer_too():
    """[theory: OPT-1] ``simulate_sgd/sde/svag(..., optimizer=...)`` run the methods ``SGD/SDE/SVAG(noise, ...,
    optimizer=...)`` bit for bit."""
    kw = dict(KW, n_steps=6)
    pairs = [
        (
            sd.simulate_sgd(PROBLEM, NOISE, THETA0, optimizer=sd.Momentum(0.9), **kw),
            sd.SGD(NOISE, sd.Momentum(0.9)),
        ),
        (
            sd.simulate_sde(PROBLEM, NOISE, THETA0, optimizer=sd.Momentum(0.9), **kw),
            sd.SDE(NOISE, optimizer=sd.Momentum(0.9)),
        ),
        (
            sd.simulate_svag(PROBLEM, NOISE, THETA0, l=2, optimizer=sd.Adam(), **kw),
            sd.SVAG(NOISE, 2, sd.Adam()),
        ),
    ]
    for legacy, method in pairs:
        np.testing.assert_array_equal(legacy.paths, sd.simulate(method, PROBLEM, THETA0, **kw).paths)


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("noise_name", sorted(NOISES) + sorted(SGD_ONLY_NOISES))
def test_every_optimizer_steps_with_every_noise(noise_name, optimizer_name):
    """[theory: OPT-1] Every registered optimizer with every registered noise (a product of the registries):
    SGD(noise, optimizer)'s stepper keeps the optimizer state's structure, shape and dtype per path over two
    steps, its update is the optimizer's update of the step's stochastic gradient (the same key's draws as plain
    SGD, whose step gives g̃ = (θ − θ')/η: to rounding, 1e-9 relative), and a restart returns the state to
    step 0's."""
    model = "two_layer_tanh" if noise_name == "preactivation" else "linear"
    problem = make_problem(model, 5, 2 if model == "two_layer_tanh" else 3, 1)
    registry = NOISES if noise_name in NOISES else SGD_ONLY_NOISES
    noise = registry[noise_name](5, problem.n_params)
    opt = OPTIMIZERS[optimizer_name]()
    n, eta, key = 3, 0.05, jax.random.key(2)
    theta0 = jnp.broadcast_to(0.5 * jnp.ones(problem.n_params), (n, problem.n_params))
    plain = sd.SGD(noise).stepper(problem, n)
    stepper = sd.SGD(noise, optimizer=opt).stepper(problem, n)
    carry, base = stepper.init(key, theta0), plain.init(key, theta0)
    for k in range(2):
        kk = jax.random.fold_in(key, k)
        g = (base[0] - plain.step(base, jnp.int32(k), jnp.asarray(eta), kk)[0]) / eta
        u, want = jax.vmap(opt.update)(g, carry[2], carry[0])
        new = stepper.step(carry, jnp.int32(k), jnp.asarray(eta), kk)
        np.testing.assert_allclose(new[0], carry[0] + eta * u, rtol=1e-9, atol=1e-9)
        assert jax.tree.structure(new[2]) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(new[2]), jax.tree.leaves(want), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype and a.shape[:1] == (n,)
        carry, base = new, new[:2]  # plain SGD continues from the same θ and sampler state
    restarted = stepper.restart(carry, jnp.ones(n, bool))
    fresh = jax.vmap(opt.init)(carry[0])
    for a, b in zip(jax.tree.leaves(restarted[2]), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
