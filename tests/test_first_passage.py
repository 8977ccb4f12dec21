"""First passage with and without resetting, simulated (RESET-4..6): the SDE's MFPT against the closed form
T(r) over a grid of (Pe, r) on both sides of Pe = 1, the Euler overshoot bias and its corrections, and the
first-passage option's bad input."""

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from helpers import load_script

import sgdsde as sd
from sgdsde.analysis import mfpt_with_resetting, peclet

FIG = load_script("fig_resetting")
L, D, DT = FIG.L, FIG.D, FIG.DT
SIEGMUND = (
    0.5825971579390106  # −ζ(1/2)/√(2π): Euler's mean overshoot of a Gaussian-walk barrier, in units σ√dt
)


def drift_diffusion(v: float) -> sd.FunctionSDE:
    """dX = −v dt + √(2D) dW, run with lr = DT (fig_resetting's, with the same L, D, DT)."""
    return FIG.drift_diffusion(v)


def horizon(v: float, r: float, n_paths: int) -> float:
    """A run length after which fewer than 0.01 of n_paths are expected to be still out (censoring negligible):
    the inverse-Gaussian tail without resetting; 20 T(r) with resetting (the tail decays like e^{−t/T} or
    faster: e^{−20}·N ≪ 0.01 for N ≤ 10⁶; the passage steps do not depend on the horizon, only censoring)."""
    if r == 0:
        mu, lam = L / v, L**2 / (2 * D)  # inverse Gaussian(mean L/v, shape L²/2D)
        return float(scipy.stats.invgauss(mu / lam, scale=lam).isf(0.01 / n_paths))
    return 20 * mfpt_with_resetting(v, D, L, r)


def simulated_mfpt(v, r, n_paths, bridge, key=0):
    n_steps = math.ceil(horizon(v, r, n_paths) / DT)
    res = sd.simulate_sde(
        drift_diffusion(v),
        None,
        np.array([L]),
        lr=DT,
        n_steps=n_steps,
        key=key,
        ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float64),
        resetting=sd.Resetting(r) if r else None,
        first_passage=sd.FirstPassage(
            observable=lambda p, th: th[0],
            threshold=0.0,
            bridge_variance=2 * D if bridge else None,
            bridge=bridge,
            stop=not r,  # without resetting the run ends at the last arrival (passage steps unchanged)
        ),
    )
    return res


@pytest.fixture(scope="module")
def mfpt_runs():
    """simulated_mfpt, each run once per module: the grid's bridged runs without resetting (key 0) are the
    overshoot test's bridged runs (the same 6000 paths), not a second draw of them."""
    return functools.cache(simulated_mfpt)


# (v, r): Pe = v L/(2D) = 0.5 (resetting helps: r* ≈ 1.37) and Pe = 2 (it does not)
GRID = [(1.0, 0.0), (1.0, 1.37), (4.0, 0.0), (4.0, 1.0)]


def test_mfpt_matches_the_closed_form_over_pe_and_r(mfpt_runs):
    """SDE with Poissonian resetting and the Brownian-bridge crossing test: |z| < 4 at each of 4 grid points
    (z = (simulated − T(r))/s.e., 6000 paths, s.e. ≈ 1.3% of T; 4σ keeps the family-wise false-alarm rate
    below 3e-4). The remaining biases, O(dt) from resetting at the step's end and from the bridge test of a
    Gaussian increment, are ≈ 0.1% at dt = 1e-3, under a tenth of the s.e. [theory: RESET-5]"""
    rows = []
    for v, r in GRID:
        res = mfpt_runs(v, r, 6000, bridge=True)
        fp = res.first_passage
        assert fp.censored == 0
        m, se = fp.mfpt()
        T = mfpt_with_resetting(v, D, L, r)
        rows.append((peclet(v, D, L), r, T, m, se, (m - T) / se))
    for pe, r, T, m, se, z in rows:
        assert abs(z) < 4, f"Pe={pe} r={r}: theory {T:.4f}, simulated {m:.4f} ± {se:.4f} (z = {z:.2f})"
    # the claim the grid is for: at Pe < 1 resetting near r* shortens the MFPT, at Pe > 1 it lengthens it
    by = {(pe, r): (m, se) for pe, r, _, m, se, _ in rows}
    assert by[(0.5, 1.37)][0] + 4 * by[(0.5, 1.37)][1] < by[(0.5, 0.0)][0]
    assert by[(2.0, 1.0)][0] - 4 * by[(2.0, 1.0)][1] > by[(2.0, 0.0)][0]


@pytest.mark.parametrize("v", [1.0, 4.0])
def test_euler_overshoot_bias_and_its_corrections(v, mfpt_runs):
    """Checking only at grid points misses crossings: the MFPT is over-estimated by O(√dt). With the same key
    the bridge and grid-only runs share their paths, so grid-only ≥ bridged path by path, and the paired
    difference (s.e. ~6x smaller than either MFPT's) equals Siegmund's barrier shift 0.5826 σ√dt (σ² = 2D)
    divided by v, within 4 s.e.; it is > 4 s.e. from 0 (the bias is real), and the bridged MFPT matches L/v.
    [theory: RESET-6]"""
    grid = mfpt_runs(v, 0.0, 6000, bridge=False).first_passage
    bridged = mfpt_runs(v, 0.0, 6000, bridge=True).first_passage  # the grid test's run
    assert np.all(grid.steps >= bridged.steps)
    diff = grid.times - bridged.times
    mean, se = diff.mean(), diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(mean - SIEGMUND * math.sqrt(2 * D * DT) / v) < 4 * se
    assert mean > 4 * se
    mb, seb = bridged.mfpt()
    assert abs(mb - L / v) < 4 * seb


def test_first_passage_reports_censoring_and_the_hit_fraction():
    """A horizon too short leaves paths censored: mfpt() refuses unless asked, and the recorded "hit" mean is
    the empirical CDF of the passage times at the record times."""
    res = sd.simulate_sde(
        drift_diffusion(1.0),
        None,
        np.array([L]),
        lr=DT,
        n_steps=500,
        key=0,
        ensemble=sd.Ensemble(n_paths=500, dtype=np.float64),
        record=sd.Record(every=100),
        first_passage=sd.FirstPassage(observable=lambda p, th: th[0], threshold=0.0),
    )
    fp = res.first_passage
    assert fp.censored > 0 and fp.arrived > 0 and fp.censored + fp.arrived == 500
    with pytest.raises(ValueError, match="censored"):
        fp.mfpt()
    m, _ = fp.mfpt(allow_censored=True)
    assert m <= 0.5
    cdf = [np.mean((fp.steps >= 0) & (fp.steps <= k)) for k in res.steps]
    np.testing.assert_allclose(res.mean["hit"], cdf, atol=1e-6)
    assert np.all(np.isnan(fp.times[fp.steps < 0]))
    np.testing.assert_allclose(fp.times[fp.steps >= 0], fp.steps[fp.steps >= 0] * DT, rtol=1e-12)


def test_first_passage_predicate_target_and_start_inside():
    """A predicate target; a path that starts inside has passage step 0."""
    problem = sd.quadratic_problem(np.eye(2), np.zeros(2))
    theta0 = np.array([[1.0, 1.0], [0.01, 0.0]])
    res = sd.simulate_sgd(
        problem,
        None,
        theta0,
        lr=0.1,
        n_steps=50,
        key=0,
        ensemble=sd.Ensemble(n_paths=2),
        first_passage=sd.FirstPassage(target=lambda p, th: jnp.sum(th * th) < 0.01),
    )
    # GD contracts by 0.9 per step: ‖θ_k‖² = 2·0.81^k < 0.01 first at k = 26
    assert res.first_passage.steps.tolist() == [26, 0]


def test_absorbing_target_freezes_arrived_paths():
    """absorb=True: a path stays at its arrival state (here GD toward 0 stops at θ₂₆ = 0.9²⁶θ₀, the first inside
    ‖θ‖² < 0.01), paths not yet arrived move on, and the passage steps are those of the free run."""
    problem = sd.quadratic_problem(np.eye(2), np.zeros(2))
    theta0 = np.array([[1.0, 1.0], [2.0, 2.0]])

    def run(**options):
        return sd.simulate_sgd(
            problem,
            None,
            theta0,
            lr=0.1,
            n_steps=40,
            key=0,
            ensemble=sd.Ensemble(n_paths=2),
            record=sd.Record(n_saved_paths=2),
            first_passage=sd.FirstPassage(target=lambda p, th: jnp.sum(th * th) < 0.01, **options),
        )

    runs = {absorb: run(absorb=absorb) for absorb in (False, True)}
    assert runs[True].first_passage.steps.tolist() == runs[False].first_passage.steps.tolist() == [26, 32]
    np.testing.assert_allclose(runs[True].paths[-1], theta0 * 0.9 ** np.array([[26], [32]]), rtol=1e-12)
    # every path has arrived by step 32: absorbing, the default stop (= absorb) skips steps 33..40, which
    # change nothing; not absorbing, the default runs on, and an explicit stop=True freezes the paths there
    assert runs[True].first_passage.stop_step == 32 and runs[False].first_passage.stop_step is None
    np.testing.assert_allclose(runs[False].paths[-1], theta0 * 0.9**40, rtol=1e-12)
    frozen = run(stop=True)
    np.testing.assert_allclose(frozen.paths[-1], theta0 * 0.9**32, rtol=1e-12)
    assert frozen.first_passage.stop_step == 32
    np.testing.assert_array_equal(run(absorb=True, stop=False).paths, runs[True].paths)
    with pytest.raises(ValueError, match="stop=True cannot be combined with resetting"):
        sd.simulate_sgd(
            problem,
            None,
            theta0,
            lr=0.1,
            n_steps=4,
            key=0,
            ensemble=sd.Ensemble(n_paths=2),
            resetting=sd.Resetting(1.0),
            first_passage=sd.FirstPassage(target=lambda p, th: th[0] < 0, absorb=True),
        )


def test_sde_bridge_by_default_exact_mfpt_and_early_stop():
    """An SDE run without bridge_variance applies the bridge test with the SDE's own rate: dX = −v dt + √(2D) dW
    from L = 1 to 0 (v = 4, D = 1, dt = 1e-3, 4000 paths) has MFPT L/v = 0.25 exactly; the bridged estimate is
    within 4 s.e. (s.e. ≈ 1.1%, the inverse-Gaussian variance 2DL/v³ over N), where the grid-only bias would be
    Siegmund's 0.5826·√(2D dt)/v ≈ 2.6%. The horizon (t = 20, 80 MFPTs) is not guesswork: the run stops at
    the last arrival and says where; a run of exactly that many steps without the stop has the same passage
    steps bit for bit, and one with censored paths equal records with and without the stop. [theory: RESET-6]"""
    v = 4.0
    sde = drift_diffusion(v)
    fp = sd.FirstPassage(observable=lambda p, th: th[0], threshold=0.0, stop=True)
    kw = dict(key=5, ensemble=sd.Ensemble(n_paths=4000, dtype=np.float64), first_passage=fp)
    res = sd.simulate_sde(sde, None, np.array([L]), lr=DT, n_steps=20_000, **kw)
    rep = res.first_passage
    assert isinstance(rep, sd.FirstPassageReport)
    assert rep.censored == 0 and rep.stop_step == rep.steps.max() < 20_000
    m, se = rep.mfpt()
    assert abs(m - L / v) < 4 * se, (m, se)
    full = sd.simulate_sde(
        sde,
        None,
        np.array([L]),
        lr=DT,
        n_steps=int(rep.stop_step),
        **dict(kw, first_passage=dataclasses.replace(fp, stop=False)),
    )
    np.testing.assert_array_equal(full.first_passage.steps, rep.steps)
    assert full.first_passage.stop_step is None
    # censored paths: the stop never acts, records and passage steps are those of a run without it
    short = {
        stop: sd.simulate_sde(
            sde,
            None,
            np.array([L]),
            lr=DT,
            n_steps=200,
            record=sd.Record(every=50, n_saved_paths=3),
            **dict(kw, first_passage=dataclasses.replace(fp, stop=stop)),
        )
        for stop in (True, False)
    }
    assert short[True].first_passage.censored > 0
    np.testing.assert_array_equal(short[True].first_passage.steps, short[False].first_passage.steps)
    np.testing.assert_array_equal(short[True].paths, short[False].paths)
    np.testing.assert_array_equal(short[True].mean["sq_norm"], short[False].mean["sq_norm"])


def test_sde_predicate_target_warns_it_is_grid_only():
    """A predicate target has no distance to bridge: in an SDE run it warns that the passage is grid-only
    (biased late), unless bridge=False says so."""
    target = lambda p, th: th[0] <= 0.0
    kw = dict(lr=DT, n_steps=5, key=0, ensemble=sd.Ensemble(n_paths=4, dtype=np.float64))
    with pytest.warns(RuntimeWarning, match="grid points only"):
        sd.simulate_sde(
            drift_diffusion(1.0), None, np.array([L]), first_passage=sd.FirstPassage(target), **kw
        )
    sd.simulate_sde(
        drift_diffusion(1.0), None, np.array([L]), first_passage=sd.FirstPassage(target, bridge=False), **kw
    )


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sd.FirstPassage(), "needs a target"),
        (lambda: sd.FirstPassage(observable="loss"), "needs threshold"),
        (lambda: sd.FirstPassage(observable="nope", threshold=0.0), "unknown name"),
        (lambda: sd.FirstPassage(target=lambda p, t: t[0] < 0, threshold=0.0), "not both"),
        (lambda: sd.FirstPassage(observable="loss", threshold=float("inf")), "threshold must be a finite"),
        (lambda: sd.FirstPassage(observable="loss", threshold=0.0, bridge_variance=-1.0), "bridge_variance"),
        (lambda: sd.FirstPassage(target=lambda p, t: t[0] < 0, bridge_variance=1.0), "bridge_variance needs"),
        (lambda: sd.FirstPassage(target=lambda p, t: t[0] < 0, absorb="yes"), "absorb must be True or False"),
        (lambda: sd.FirstPassage(target=lambda p, t: t[0] < 0, stop=1), "stop must be True or False"),
        (
            lambda: sd.FirstPassage(observable="loss", threshold=0.0, bridge_variance=1.0, bridge=False),
            "contradicts",
        ),
    ],
)
def test_first_passage_option_bad_input(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "target, match",
    [
        (lambda p, t: t[0], "must return a boolean per path"),
        (lambda p, t: t < 0, "must return a scalar per path"),
    ],
)
def test_first_passage_target_must_be_boolean_per_path(target, match):
    problem = sd.quadratic_problem(np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match=match):
        sd.simulate_sgd(
            problem, None, np.ones(2), lr=0.1, n_steps=5, key=0, first_passage=sd.FirstPassage(target=target)
        )
    with pytest.raises(ValueError, match="first_passage must be a sgdsde.FirstPassage"):
        sd.simulate_sgd(problem, None, np.ones(2), lr=0.1, n_steps=5, key=0, first_passage={"threshold": 0})


def test_reports_survive_save_and_load(tmp_path):
    """The reset and first-passage reports are saved with the result (npz arrays + their JSON meta) and load
    back equal; SVAG reports them in SGD steps."""
    problem = sd.quadratic_problem(np.eye(2), np.zeros(2))
    res = sd.simulate_svag(
        problem,
        sd.GaussianNoise(0.1 * np.eye(2)),
        np.ones(2),
        lr=0.1,
        l=4,
        n_steps=30,
        key=1,
        ensemble=sd.Ensemble(n_paths=16),
        resetting=sd.Resetting(1.0),
        first_passage=sd.FirstPassage(observable="loss", threshold=0.2),
        output=sd.Output(save_to=str(tmp_path / "run")),
    )
    assert res.first_passage.arrived > 0 and res.resets.counts.sum() > 0
    assert res.first_passage.steps.max() <= 30 and res.resets.last_step.max() <= 30
    back = sd.EnsembleResult.load(str(tmp_path / "run"))
    for name in ("resets", "first_passage"):
        a, b = getattr(res, name), getattr(back, name)
        assert type(a) is type(b)
        for k, v in a.arrays().items():
            np.testing.assert_array_equal(v, b.arrays()[k])
        assert a.meta() == b.meta()
    assert "Resetting" in back.config["resetting"]


def test_bridge_rate_is_the_observables_ito_variance_rate_under_the_sme():
    """The bridge test's own rate under an SME is the Itô quadratic-variation rate of f(θ):
    s² = η‖A(θ)ᵀ∇f(θ)‖² (σ = √ηA, the SGD clock), and ‖σᵀ∇f‖² for a FunctionSDE (σ its factor): checked
    against the factor formed explicitly, to rounding (1e-12). [theory: RESET-6]"""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 3))
    problem = sd.Problem(sd.LinearRegression(3), X, X @ np.array([1.0, 0.0, -1.0]))
    noise = sd.LabelNoise(0.7, 4)
    theta = rng.normal(size=(2, 3))
    eta = 0.05
    sme = sd.SME(problem, noise).euler_form()  # what simulate_sde runs with Euler: matrix-free products
    fp = sd.FirstPassage(observable="loss", threshold=0.0)
    event = fp.event(problem, 3, theta[0], sme, 1, np.float64)
    rate = event.own_rate.rate(event.observable, problem, jnp.asarray(theta), jnp.asarray(eta))
    for i in range(2):
        A = np.asarray(noise.covariance_factor(problem, jnp.asarray(theta[i])))
        g = np.asarray(problem.grad(jnp.asarray(theta[i])))
        np.testing.assert_allclose(rate[i], eta * np.sum((A.T @ g) ** 2), rtol=1e-12)
    sde = sd.FunctionSDE(
        lambda th, e: -th, lambda th: jnp.array([[0.5, 0.0], [1.0, 2.0], [0.0, 0.1]]) * th[0]
    )
    f = lambda p, th: jnp.sum(th**2)
    event = sd.FirstPassage(observable=f, threshold=0.0).event(None, 3, theta[0], sde, 1, np.float64)
    rate = event.own_rate.rate(f, None, jnp.asarray(theta), jnp.asarray(eta))
    for i in range(2):
        sig = np.array([[0.5, 0.0], [1.0, 2.0], [0.0, 0.1]]) * theta[i, 0]
        np.testing.assert_allclose(rate[i], np.sum((sig.T @ (2 * theta[i])) ** 2), rtol=1e-12)
