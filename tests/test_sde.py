"""simulate_sde: exact coupling with Gaussian-noise SGD, the shared clock, solver checks and bad input."""

import math
import warnings

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdsde
from sgdsde import SME, FunctionSDE, PlatenWeak2, simulate_sde
from sgdsde.analysis import fit_order, sde_moments, weak_error


def quad(d=3, seed=0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    H = Q @ np.diag(np.linspace(0.5, 2.0, d)) @ Q.T
    return sgdsde.quadratic_problem(H, rng.normal(size=d)), H


def common(**kw):
    base = dict(
        n_steps=30,
        key=7,
        ensemble=sgdsde.Ensemble(n_paths=16, dtype=np.float64),
        record=sgdsde.Record(every=10, n_saved_paths=16),
    )
    base.update(kw)
    return base


@pytest.mark.parametrize("which", ["gaussian", "spherical", "none"])
def test_euler_with_dt_eta_reproduces_gaussian_sgd(which):
    """Euler with dt = η on the shared increments ΔW = −√η ξ (increments="coupled") is Gaussian-noise SGD, to
    rounding, also under a schedule; the time grids coincide; "gaussian" draws the same numbers in another layout. [theory: SDE-3]"""
    problem, _ = quad()
    rng = np.random.default_rng(1)
    G = rng.normal(size=(3, 3))
    noise = {
        "gaussian": sgdsde.GaussianNoise(G @ G.T),
        "spherical": sgdsde.SphericalGaussianNoise(0.7),
        "none": None,
    }[which]
    lr = sgdsde.StepDecayLR(0.2, (10, 20), 0.5)
    th0 = np.ones(3)
    sgd = sgdsde.simulate_sgd(problem, noise, th0, lr=lr, **common())
    sde = simulate_sde(problem, noise, th0, lr=lr, **common(), increments=sgdsde.CoupledToSGD())
    np.testing.assert_array_equal(sgd.times, sde.times)
    np.testing.assert_array_equal(sgd.steps, sde.steps)
    # float64 rounding over 30 steps of O(1) values
    np.testing.assert_allclose(sde.paths, sgd.paths, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sde.mean["loss"], sgd.mean["loss"], rtol=1e-12)
    fast = simulate_sde(problem, noise, th0, lr=lr, **common(), increments=sgdsde.Gaussian())
    assert which == "none" or not np.allclose(fast.paths, sgd.paths)


def test_substeps_share_the_brownian_path_strong_orders():
    """With k substeps the fine increments are a bridge of SGD's: Euler's strong error against a fine
    reference
    on the same path is O(dt^½) for multiplicative noise and Milstein's O(dt) (commutative, d = m = 1).
    [theory: SDE-3, SDE-5]"""
    # dX = −X/2 dt + 0.8√0.5 X dW (a FunctionSDE's factor is its whole diffusion; lr = 0.5 below)
    sde = FunctionSDE(
        lambda th, eta: -0.5 * th, lambda th: 0.8 * math.sqrt(0.5) * th[:, None], noise_type="commutative"
    )
    kw = dict(
        lr=0.5,
        n_steps=4,
        key=3,
        ensemble=sgdsde.Ensemble(n_paths=2000, dtype=np.float64),
        record=sgdsde.Record(observables=("theta",), n_saved_paths=2000),
        increments=sgdsde.CoupledToSGD(),
    )
    ref = simulate_sde(
        sde, None, np.ones(1), solver=diffrax.ItoMilstein(), **kw, stepping=sgdsde.Fixed(substeps=512)
    ).paths[-1]
    ks = np.array([4, 8, 16, 32])
    strong = {}
    for solver in (diffrax.Euler(), diffrax.ItoMilstein()):
        errs = [
            np.sqrt(
                np.mean(
                    (
                        simulate_sde(
                            sde, None, np.ones(1), solver=solver, **kw, stepping=sgdsde.Fixed(substeps=int(k))
                        ).paths[-1]
                        - ref
                    )
                    ** 2
                )
            )
            for k in ks
        ]
        strong[type(solver).__name__] = fit_order(0.5 / ks, errs)
    # 2000 coupled paths: the RMS error's relative s.e. is a few %; bands of ±0.15 around 0.5 and 1
    assert abs(strong["Euler"].order - 0.5) < 0.15, str(strong["Euler"])
    assert abs(strong["ItoMilstein"].order - 1.0) < 0.15, str(strong["ItoMilstein"])


def test_sme2_drift_is_the_modified_gradient_on_a_quadratic():
    """SME-2's drift is −(H + (η/2)H²)(θ − θ*) on a quadratic loss (minibatch-noise.md §10).
    [theory: SDE-2]"""
    problem, H = quad(4, seed=2)
    th = jnp.asarray(np.linspace(-1, 1, 4))
    ts = np.linalg.lstsq(np.asarray(problem.X), np.asarray(problem.y), rcond=None)[0]
    eta = 0.1
    expect = -(H + 0.5 * eta * H @ H) @ (np.asarray(th) - ts)
    np.testing.assert_allclose(SME(problem, None, order=2).drift(th, eta), expect, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        SME(problem, None, order=1).drift(th, eta), -H @ (np.asarray(th) - ts), atol=1e-12
    )


def test_sme_noise_types():
    """The SME declares additive noise exactly where A cannot depend on θ. [theory: SDE-4]"""
    problem, _ = quad()
    assert SME(problem, sgdsde.SphericalGaussianNoise(1.0)).noise_type == "additive"
    assert SME(problem, sgdsde.LabelNoise(0.5)).noise_type == "additive"
    assert SME(problem, sgdsde.MinibatchNoise(1)).noise_type == "general"
    net = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(2), np.eye(2), np.ones(2))
    assert SME(net, sgdsde.LabelNoise(0.5)).noise_type == "general"


def test_solver_strong_orders_are_the_ones_diffrax_states():
    """Each admitted solver's strong order is read from diffrax (``strong_order(terms)`` on terms shaped as the
    SME's, drift + diffusion driven by a Brownian path), and is the literature's for the noise the solver is
    admitted with (Kloeden & Platen 1992; diffrax's docs); PlatenWeak2, a weak scheme, states none. The weak
    orders, which diffrax does not state, are our table's: never below the strong order."""
    import jax

    from sgdsde._sde.solvers import SOLVERS  # internal: the solver table under test

    bm = diffrax.VirtualBrownianTree(
        0.0, 1.0, 1e-3, (2,), key=jax.random.key(0), levy_area=diffrax.SpaceTimeLevyArea
    )
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, args: -y), diffrax.ControlTerm(lambda t, y, args: jnp.eye(2), bm)
    )
    literature = {
        diffrax.Euler: 0.5,
        diffrax.ItoMilstein: 1.0,  # commutative noise
        diffrax.StratonovichMilstein: 1.0,  # commutative noise
        diffrax.Heun: 0.5,
        diffrax.EulerHeun: 0.5,
        diffrax.GeneralShARK: 0.5,
        diffrax.SPaRK: 0.5,
        diffrax.SRA1: 1.5,  # additive noise
        diffrax.ShARK: 1.5,  # additive noise
        PlatenWeak2: None,
    }
    assert set(SOLVERS) == set(literature)
    for cls, info in SOLVERS.items():
        assert info.solver is cls
        assert info.strong_order == cls().strong_order(terms) == literature[cls], cls.__name__
        assert info.weak_order >= (info.strong_order or 0.0), cls.__name__


def test_unfit_solvers_and_bad_input_are_refused():
    """Solvers whose calculus or noise assumption does not fit, and bad dt, raise ValueError naming them.
    [theory: SDE-4]"""
    net = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(2), np.eye(2), np.ones(2))
    noise = sgdsde.LabelNoise(0.5)
    kw = dict(lr=0.1, n_steps=2, key=0)
    th0 = np.ones(4)
    for solver, word in [
        (diffrax.SRA1(), "SRA1"),
        (diffrax.ShARK(), "ShARK"),
        (diffrax.ItoMilstein(), "ItoMilstein"),
        (diffrax.Tsit5(), "Tsit5"),
    ]:
        with pytest.raises(ValueError, match=word):
            simulate_sde(net, noise, th0, solver=solver, **kw)
    with pytest.raises(ValueError, match="TwoPoint"):
        simulate_sde(net, noise, th0, solver=diffrax.Heun(), **kw, increments=sgdsde.TwoPoint())
    with pytest.raises(ValueError, match="increments"):
        simulate_sde(net, noise, th0, **kw, increments="uniform")  # a string, not an increments object
    for dt in (0.2, 0.0, -0.1, 0.03):
        with pytest.raises(ValueError, match="dt"):
            simulate_sde(net, noise, th0, **kw, stepping=sgdsde.Fixed(dt=dt))
    with pytest.raises(ValueError, match="substeps"):
        simulate_sde(net, noise, th0, **kw, stepping=sgdsde.Fixed(substeps=0))
    with pytest.raises(ValueError, match="order"):
        simulate_sde(net, noise, th0, order=3, **kw)
    with pytest.raises(ValueError, match="theta0"):
        simulate_sde(net, noise, np.ones(3), **kw)
    wrong = FunctionSDE(lambda th, eta: -th, lambda th: th[:, None], noise_type="additive")
    with pytest.raises(ValueError, match="additive"):
        simulate_sde(wrong, None, np.ones(2), **kw)
    noncomm = FunctionSDE(
        lambda th, eta: -th,
        lambda th: jnp.stack([th[::-1], jnp.array([th[0], 0.0])], axis=1),
        noise_type="commutative",
    )
    with pytest.raises(ValueError, match="commutative"):
        simulate_sde(noncomm, None, np.ones(2), **kw)
    with pytest.raises(ValueError, match="noise=None"):
        simulate_sde(wrong, noise, np.ones(2), **kw)
    # dt = η/4 is accepted and means 4 substeps
    res = simulate_sde(net, noise, th0, **kw, stepping=sgdsde.Fixed(dt=0.025))
    assert res.config["substeps"] == 4


def test_stratonovich_solvers_run_with_correction_and_additive_solvers_on_additive_noise():
    """Every admitted solver runs on the SME it fits and agrees with Euler's mean within Monte Carlo error.
    [theory: SDE-4]"""
    problem, _ = quad()
    noise = sgdsde.SphericalGaussianNoise(0.5)
    kw = dict(
        lr=0.05,
        n_steps=20,
        key=5,
        ensemble=sgdsde.Ensemble(n_paths=4000, dtype=np.float64),
        record=sgdsde.Record(observables=("sq_norm",)),
        stepping=sgdsde.Fixed(substeps=2),
    )
    base = simulate_sde(problem, noise, np.ones(3), **kw)
    solvers = (
        diffrax.SRA1(),
        diffrax.ShARK(),
        diffrax.GeneralShARK(),
        diffrax.SPaRK(),
        diffrax.Heun(),
        PlatenWeak2(),
    )
    for solver in solvers:
        res = simulate_sde(problem, noise, np.ones(3), solver=solver, **kw)
        err, se = weak_error(base, res).final("sq_norm")
        # independent-looking noise per solver; 5 s.e. plus the O(dt) Euler bias (dt = 0.025)
        assert abs(err) < 5 * se + 0.03, (type(solver).__name__, err, se)
    net = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(2), np.eye(2) * 1.5, np.ones(2))
    res = simulate_sde(net, sgdsde.LabelNoise(0.5), np.ones(4), solver=diffrax.Heun(), **kw)
    assert res.config["calculus"] == "stratonovich" and np.all(np.isfinite(res.mean["sq_norm"]))


def test_nonfinite_paths_are_flagged():
    """A diverging SDE is reported (paths, first step) and warned about, never returned silently.
    [theory: SDE-3]"""
    problem, _ = quad()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = simulate_sde(
            problem,
            sgdsde.SphericalGaussianNoise(0.1),
            np.ones(3),
            lr=5.0,
            n_steps=400,
            key=0,
            ensemble=sgdsde.Ensemble(n_paths=4, dtype=np.float32),
        )
    assert res.diverged == 4 and res.first_divergence_step is not None
    assert any("diverged" in str(x.message) for x in w)


@pytest.mark.parametrize(
    "noise",
    [
        sgdsde.MinibatchNoise(2, "with_replacement"),
        sgdsde.MinibatchNoise(3, "without_replacement"),
        sgdsde.LabelNoise(0.7),
        sgdsde.LabelNoise(0.7, batch_size=2, sampling="with_replacement"),
        sgdsde.LabelNoise(0.3, batch_size=3, sampling="shuffle"),
        sgdsde.SphericalGaussianNoise(0.4),
        sgdsde.NoNoise(),
    ],
)
def test_matrix_free_factor_product_equals_the_factor(noise):
    """SME.factor_mv (one VJP, used by Euler) equals noise.covariance_factor(θ) @ w for every noise and model.
    [theory: SDE-3]"""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 3))
    for model in (sgdsde.LinearRegression(3), sgdsde.DiagonalLinearNetwork(3), sgdsde.TwoLayerNetwork(3, 2)):
        problem = sgdsde.Problem(model, X, rng.normal(size=6))
        sme = SME(problem, noise)
        th = jnp.asarray(rng.normal(size=problem.n_params))
        A = sme.factor(th)
        w = jnp.asarray(rng.normal(size=A.shape[1]))
        np.testing.assert_allclose(sme.factor_mv(th, w), A @ w, rtol=1e-12, atol=1e-12)


def test_function_sde_without_problem_defaults_to_theta_observables():
    """An SDE given only by functions records ‖θ‖² by default and refuses loss-based observables by name."""
    sde = FunctionSDE(lambda th, eta: -th, lambda th: jnp.eye(2), noise_type="additive")
    res = simulate_sde(
        sde,
        None,
        np.ones(2),
        lr=0.1,
        n_steps=10,
        key=0,
        ensemble=sgdsde.Ensemble(n_paths=4, dtype=np.float64),
    )
    assert res.observables == ["sq_norm"] and res.count[-1] == 4
    with pytest.raises(ValueError, match=r"observables \['loss'\] need a problem"):
        simulate_sde(
            sde, None, np.ones(2), lr=0.1, n_steps=10, key=0, record=sgdsde.Record(observables=["loss"])
        )


def test_adaptive_stepping_matches_exact_moments_and_takes_steps_longer_than_eta():
    """PID-controlled ShARK on per-path virtual Brownian trees gives the OU's exact E‖θ‖² (continuous
    Lyapunov / matrix exponential) within Monte Carlo error, with steps much longer than η where the SDE is
    smooth; the same key gives the same numbers. [theory: SDE-8]"""
    problem, H = quad()
    ts = np.asarray(problem.X.T @ problem.y / problem.n_data)
    ts = np.linalg.solve(H, ts)
    noise = sgdsde.SphericalGaussianNoise(0.5)
    kw = dict(
        lr=0.01,
        n_steps=200,
        key=3,
        solver=diffrax.ShARK(),
        ensemble=sgdsde.Ensemble(n_paths=2000, dtype=np.float64),
        record=sgdsde.Record(every=100, observables=("sq_norm",)),
        stepping=sgdsde.Adaptive(controller=diffrax.PIDController(rtol=1e-3, atol=1e-3)),
    )
    res = simulate_sde(problem, noise, np.ones(3), **kw)
    exact = sde_moments(H, ts, 0.25 * np.eye(3), np.ones(3), lr=0.01, times=res.times)
    z = (res.mean["sq_norm"] - exact.expectations(H, ts)["sq_norm"])[1:] / res.stderr("sq_norm")[1:]
    # ShARK is strong order 1.5 on additive noise: at rtol = atol = 1e-3 its bias is far below the Monte
    # Carlo s.e. (~6e-3 here), so the gap is pure sampling error: 5 s.e.
    assert np.all(np.abs(z) < 5), z
    stats = res.config["solver_stats"]
    assert stats["failed_solves"] == 0 and res.config["steps_per_solve"] == 100
    # coarsening: fewer accepted steps than SGD steps (fixed dt = η would take 200 per path)
    assert stats["accepted_steps"] < 0.5 * 200 * 2000, stats
    again = simulate_sde(problem, noise, np.ones(3), **kw)
    np.testing.assert_array_equal(again.mean["sq_norm"], res.mean["sq_norm"])


def test_adaptive_stepping_general_noise_agrees_with_fixed_steps():
    """On label noise on a diagonal network (general, non-commutative noise: the controller revisits
    rejected steps), adaptive Heun + Itô→Stratonovich correction agrees with fixed-step Euler (dt = η/4),
    also under a schedule (one solve per SGD step). [theory: SDE-8]"""
    X = np.array([[1.5, 0.3], [-0.4, 1.2], [0.7, -0.9]])
    net = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(2), X, np.array([1.0, 0.5, -0.3]))
    noise = sgdsde.LabelNoise(0.5)
    th0 = np.array([1.0, 0.8, 0.6, 0.9])
    kw = dict(
        n_steps=40,
        key=11,
        ensemble=sgdsde.Ensemble(n_paths=3000, dtype=np.float64),
        record=sgdsde.Record(every=20, observables=("loss",)),
    )
    for lr in (0.02, sgdsde.StepDecayLR(0.02, (20,), 0.5)):
        base = simulate_sde(net, noise, th0, lr=lr, **kw, stepping=sgdsde.Fixed(substeps=4))
        res = simulate_sde(net, noise, th0, lr=lr, solver=diffrax.Heun(), **kw, stepping=sgdsde.Adaptive())
        assert "ClipStepSizeController" in res.config["adaptive"]
        assert res.config["steps_per_solve"] == (20 if lr == 0.02 else 1)
        err, se = weak_error(base, res).final("loss")
        # independent noise; 5 s.e. plus Euler's O(dt) weak bias at dt = 0.005 (loss ~0.1: < 2e-3)
        assert abs(err) < 5 * se + 2e-3, (lr, err, se)


def test_adaptive_stepping_refuses_unfit_input_and_flags_failed_solves():
    """Adaptive stepping needs an error-estimating solver, Brownian increments and a PID controller; a solve
    that runs out of steps is reported as divergence, never returned as numbers. [theory: SDE-8]"""
    problem, _ = quad()
    noise = sgdsde.SphericalGaussianNoise(0.5)
    kw = dict(lr=0.01, n_steps=20, key=0, ensemble=sgdsde.Ensemble(n_paths=8, dtype=np.float64))
    with pytest.raises(ValueError, match="solver Euler"):
        simulate_sde(problem, noise, np.ones(3), **kw, stepping=sgdsde.Adaptive())
    with pytest.raises(ValueError, match="solver GeneralShARK has no embedded error estimate"):
        simulate_sde(
            problem, noise, np.ones(3), solver=diffrax.GeneralShARK(), **kw, stepping=sgdsde.Adaptive()
        )
    with pytest.raises(ValueError, match="increments must be"):
        simulate_sde(
            problem,
            noise,
            np.ones(3),
            solver=diffrax.ShARK(),
            **kw,
            stepping=sgdsde.Adaptive(),
            increments=sgdsde.CoupledToSGD(),
        )
    with pytest.raises(ValueError, match="controller must be None, a diffrax.PIDController"):
        simulate_sde(
            problem, noise, np.ones(3), solver=diffrax.ShARK(), **kw, stepping=sgdsde.Adaptive(controller=0.1)
        )
    net = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(2), np.eye(2), np.ones(2))
    clip = diffrax.ClipStepSizeController(diffrax.PIDController(rtol=1e-3, atol=1e-3))
    with pytest.raises(ValueError, match="store_rejected_steps"):
        simulate_sde(
            net,
            sgdsde.LabelNoise(0.5),
            np.ones(4),
            solver=diffrax.Heun(),
            **kw,
            stepping=sgdsde.Adaptive(controller=clip),
        )
    with pytest.raises(ValueError, match="max_steps"):
        simulate_sde(
            problem, noise, np.ones(3), solver=diffrax.ShARK(), **kw, stepping=sgdsde.Adaptive(max_steps=0)
        )
    with pytest.warns(RuntimeWarning) as caught:
        res = simulate_sde(
            problem,
            noise,
            np.ones(3),
            solver=diffrax.ShARK(),
            **kw,
            stepping=sgdsde.Adaptive(controller=diffrax.PIDController(rtol=1e-9, atol=1e-9), max_steps=2),
        )
    assert res.diverged == 8 and res.first_divergence_step == 20
    assert res.config["solver_stats"]["failed_solves"] == 8
    messages = " | ".join(str(w.message) for w in caught)
    assert "8 of 8 paths diverged" in messages and "8 adaptive solves failed (max_steps=2" in messages


def test_divergence_is_reported_path_by_path_with_step_and_time(tmp_path):
    """Which paths diverged, at which step and time: θ ← θ − 0.5·10θ = −4θ is exact in float32 for powers of
    two, so a path started at 2^j overflows exactly at the first k with 2k + j ≥ 128; a path at 0 never does.
    Global path indices survive chunking, and saving. (Recording θ only: an observable such as ‖θ‖² would
    overflow first and flag the path at its record.) [theory: SDE-3]"""
    sde = FunctionSDE(
        lambda th, eta: -10.0 * th, lambda th: jnp.zeros((1, 1), th.dtype), noise_type="additive"
    )
    theta0 = np.array([[0.0], [2.0**10], [0.0], [2.0**20], [2.0**10]])
    with pytest.warns(RuntimeWarning, match=r"3 of 5 paths diverged.*paths 3 \(step 54, t = 27\)"):
        res = simulate_sde(
            sde,
            None,
            theta0,
            lr=0.5,
            n_steps=80,
            key=0,
            ensemble=sgdsde.Ensemble(n_paths=5, chunk_size=2, dtype=np.float32),
            record=sgdsde.Record(every=10, observables=("theta",)),
        )
    np.testing.assert_array_equal(res.diverged_paths, [1, 3, 4])
    np.testing.assert_array_equal(res.divergence_steps, [59, 54, 59])
    np.testing.assert_allclose(res.divergence_times, [29.5, 27.0, 29.5])
    assert res.diverged == 3 and res.first_divergence_step == 54 and res.count[-1] == 2
    back = sgdsde.EnsembleResult.load(res.save(str(tmp_path / "div")))
    np.testing.assert_array_equal(back.diverged_paths, res.diverged_paths)
    np.testing.assert_array_equal(back.divergence_steps, res.divergence_steps)
    assert back.divergence_message() == res.divergence_message()


def test_sweeps_over_eta_sigma_and_batch_size_do_not_recompile():
    """After a first run, simulate_sde over other η, σ and B compiles nothing (they are traced arguments;
    the SME's Euler form is B-free); simulate_sgd likewise over η and σ. Counted with jax.monitoring's
    backend-compile events. [theory: SDE-3]"""
    from jax import monitoring

    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda name, dur, **kw: (
            compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None
        )
    )
    X = np.random.default_rng(0).normal(size=(12, 3))
    problem = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(3), X, X @ np.ones(3))
    kw = dict(
        n_steps=20,
        key=0,
        ensemble=sgdsde.Ensemble(n_paths=64, dtype=np.float64),
        record=sgdsde.Record(every=10, observables=("loss",)),
    )
    simulate_sde(problem, sgdsde.LabelNoise(0.5, batch_size=4), np.ones(6), lr=0.01, **kw)
    sgdsde.simulate_sgd(problem, sgdsde.LabelNoise(0.5, batch_size=4), np.ones(6), lr=0.01, **kw)
    n0 = len(compiles)
    for lr, sigma, B in ((0.02, 0.5, 4), (0.01, 1.5, 4), (0.01, 0.5, 2), (0.005, 0.1, 8)):
        simulate_sde(problem, sgdsde.LabelNoise(sigma, batch_size=B), np.ones(6), lr=lr, **kw)
    for lr, sigma in ((0.02, 0.5), (0.01, 1.5)):
        sgdsde.simulate_sgd(problem, sgdsde.LabelNoise(sigma, batch_size=4), np.ones(6), lr=lr, **kw)
    assert len(compiles) == n0, compiles[n0:]


SHARDED_RUN = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
import sgdsde
from sgdsde import simulate_sde
assert len(jax.devices()) == 4
rng = np.random.default_rng(0)
X = rng.normal(size=(12, 3))
problem = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(3), X, X @ np.ones(3))
kw = dict(lr=0.02, n_steps=40, key=3, record=sgdsde.Record(every=10, observables=("loss", "theta"), n_saved_paths=8))
ens = dict(n_paths=64, chunk_size=32, dtype=np.float64)
worst = 0.0
adam = lambda problem, noise, th, **kw: sgdsde.simulate(sgdsde.SGD(noise, optimizer=sgdsde.Adam(weight_decay=0.01)), problem, th, **kw)
# plain SGD with sampler state, the SDE, and minibatch SGD with an optimizer's state per path
for sim, noise in ((sgdsde.simulate_sgd, sgdsde.LabelNoise(0.5, batch_size=3, sampling="shuffle")),
                   (simulate_sde, sgdsde.LabelNoise(0.5)),
                   (adam, sgdsde.MinibatchNoise(4))):  # an optimizer's state per path (issue 23)
    one = sim(problem, noise, np.ones(6), ensemble=sgdsde.Ensemble(**ens), **kw)
    four = sim(problem, noise, np.ones(6), ensemble=sgdsde.Ensemble(devices=4, **ens), **kw)
    assert four.config["devices"] == 4 and one.config["devices"] == 1
    if sim is adam:  # Adam's bias correction rounds per fusion (FMOD-5): a few ulp, not bit for bit
        assert np.max(np.abs(one.paths - four.paths)) <= 4e-15
    else:
        assert np.array_equal(one.paths, four.paths)
    worst = max([worst] + [float(np.max(np.abs(one.mean[k] - four.mean[k]))) for k in one.mean])
for bad, match in ((dict(devices=3), "multiples of the number of devices"), (dict(devices=5), "devices must be in [1, 4]")):
    try:
        sgdsde.simulate_sgd(problem, None, np.ones(6), ensemble=sgdsde.Ensemble(**dict(ens, **bad)), **kw)
    except ValueError as e:
        assert match in str(e), str(e)
    else:
        raise AssertionError(bad)
print(worst)
"""


def test_paths_sharded_across_devices_give_the_same_numbers():
    """devices=4 (four CPU devices via XLA_FLAGS, in a subprocess) shards each chunk's paths (also Adam's state
    per path: [theory: OPT-1]): the saved paths are identical to one device's (Adam's to a few ulp: the
    diagonal net's (u, v) leaves are fused differently in the partitioned program, FMOD-5) and the ensemble
    statistics agree up to the order of the cross-device sums (float64: < 1e-12); bad device counts are refused
    by name."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SHARDED_RUN], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-12


def test_function_sde_is_in_its_own_time_units():
    """A FunctionSDE's factor is its whole diffusion: the OU process dX = −κX dt + σ dW (κ = 1, σ = √2, X₀ = 0)
    run to T = 3 with dt = 0.01 and dt = 0.02 has, at both steps, the exact variance σ²(1 − e^{−2κT})/(2κ) = 0.9975
    within Euler's O(dt) bias (its stationary variance is σ²/(2κ − κ²dt): +0.5% and +1%) plus 4 s.e. of the
    sample variance (20,000 paths: √(2/N) ≈ 1%). Scaling the factor by √dt (the SGD clock) would give 0.01 and
    0.02. A bare SDE follows its θ₀'s precision: float64 here (x64), float32 for a float32 θ₀. [theory: SDE-9]"""
    kappa, sigma, T, n = 1.0, math.sqrt(2.0), 3.0, 20_000
    sde = FunctionSDE(
        lambda th, eta: -kappa * th, lambda th: jnp.full((1, 1), sigma, th.dtype), noise_type="additive"
    )
    exact = sigma**2 * (1 - math.exp(-2 * kappa * T)) / (2 * kappa)
    for dt in (0.01, 0.02):
        res = simulate_sde(
            sde,
            None,
            np.zeros(1),
            lr=dt,
            n_steps=round(T / dt),
            key=1,
            ensemble=sgdsde.Ensemble(n_paths=n),
            record=sgdsde.Record(observables=("theta",)),
        )
        assert res.config["dtype"] == "float64"
        var = float(res.var["theta"][-1, 0])
        bias = exact * (1 / (1 - kappa * dt / 2) - 1)
        assert abs(var - exact) < bias + 4 * var * math.sqrt(2 / (n - 1)), (dt, var, exact)
    small = simulate_sde(sde, None, np.zeros(1, np.float32), lr=0.1, n_steps=2, key=0)
    assert small.config["dtype"] == "float32"
