"""Sweeps as one compiled program (issue 14, item 1): every grid point equals its single run bit for bit."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import NOISES

import sgdsde as sd


def _problem():
    X = np.random.default_rng(0).normal(size=(12, 4))
    y = X @ np.array([1.0, -0.5, 0.0, 0.3])
    return sd.Problem(sd.DiagonalLinearNetwork(4, alpha=0.8), X, y)


KW = dict(
    n_steps=20,
    key=7,
    ensemble=sd.Ensemble(n_paths=6, chunk_size=3),
    record=sd.Record(every=10, n_saved_paths=4),
)


def _assert_same(a: sd.EnsembleResult, b: sd.EnsembleResult):
    """Bit for bit: every recorded array (exact equality, no tolerance)."""
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.paths, b.paths)
    for k in a.mean:
        np.testing.assert_array_equal(a.mean[k], b.mean[k])
        np.testing.assert_array_equal(a.var[k], b.var[k])
    assert a.n_paths == b.n_paths and a.diverged == b.diverged


def test_sgd_sweep_equals_the_loop_bit_for_bit():
    """A 2 × 2 × 2 grid (lr, σ, batch size: two compiled groups, shuffled epochs carrying sampler state, two
    chunks) gives, point by point, exactly simulate_sgd's numbers."""
    problem = _problem()
    theta0 = problem.model.init()
    noise = sd.LabelNoise(1.0, 2, "shuffle")
    grid = {"lr": [0.02, 0.05], "sigma": [0.3, 1.2], "batch_size": [2, 3]}
    sw = sd.sweep(sd.simulate_sgd, problem, noise, theta0, grid=grid, **KW)
    assert len(sw) == 8 and sw.shape == (2, 2, 2)
    for point, res in zip(sw.points, sw.results, strict=True):
        single = sd.simulate_sgd(
            problem,
            sd.LabelNoise(point["sigma"], point["batch_size"], "shuffle"),
            theta0,
            lr=point["lr"],
            **KW,
        )
        _assert_same(single, res)
    # points differ where they should: the loss at the end grows with σ at fixed lr and batch size
    mean, se = sw.final("loss")
    assert mean.shape == (2, 2, 2) and np.all(se > 0)


def test_sde_sweep_equals_the_loop_bit_for_bit():
    """simulate_sde's Euler–Maruyama SME, swept over σ at a fixed lr, equals its single runs exactly."""
    problem = _problem()
    theta0 = problem.model.init()
    sw = sd.sweep(
        sd.simulate_sde, problem, sd.LabelNoise(1.0), theta0, grid={"sigma": [0.5, 2.0]}, lr=0.04, **KW
    )
    for point, res in zip(sw.points, sw.results, strict=True):
        _assert_same(sd.simulate_sde(problem, sd.LabelNoise(point["sigma"]), theta0, lr=0.04, **KW), res)


@pytest.mark.parametrize(
    # spherical noise, whose sweeps differed before (label noise's Gaussian ε did too; GaussianNoise's A@ξ
    # and the multiplicative weights did not here): every normal draw goes through step_normals
    "simulate, substeps",
    [(sd.simulate_sgd, None), (sd.simulate_sde, None), (sd.simulate_sde, 2)],
)
def test_a_sweep_with_normal_draws_equals_the_loop_bit_for_bit(simulate, substeps):
    """Normal draws (a Gaussian noise's, label noise's ε, multiplicative weights, the SDE's increments) are
    materialized before use (``step_normals``), so a 3-point lr grid equals its single runs bit for bit: with
    the normal transform fused into the vmapped update, points differed by 1–4 ulps. [theory: NOISE-8]"""
    problem = _problem()
    theta0 = problem.model.init()
    # substeps: Euler steps per SGD step, their normals from the Brownian bridge
    kw = KW if substeps is None else dict(KW, stepping=sd.Fixed(substeps=substeps))
    noise = NOISES["spherical"](problem.n_data, problem.n_params)
    sw = sd.sweep(simulate, problem, noise, theta0, grid={"lr": [0.02, 0.05, 0.08]}, **kw)
    for point, res in zip(sw.points, sw.results, strict=True):
        _assert_same(simulate(problem, noise, theta0, lr=point["lr"], **kw), res)


def test_shared_data_sweep_agrees_to_rounding_and_table_is_labelled():
    """bitwise=False keeps the data once: the points agree with the loop to rounding (a few ulps over 25
    steps, tolerance 1e-12 on O(1) values); the table has one row per point, labelled by its
    hyperparameters."""
    problem = _problem()
    theta0 = problem.model.init()
    grid = {"lr": [0.02, 0.05], "sigma": [0.3, 1.2]}
    sw = sd.sweep(sd.simulate_sgd, problem, sd.LabelNoise(1.0), theta0, grid=grid, bitwise=False, **KW)
    for point, res in zip(sw.points, sw.results, strict=True):
        single = sd.simulate_sgd(problem, sd.LabelNoise(point["sigma"]), theta0, lr=point["lr"], **KW)
        np.testing.assert_allclose(res.paths, single.paths, rtol=0, atol=1e-12)
    table = sw.table()
    np.testing.assert_array_equal(table["lr"], [0.02, 0.02, 0.05, 0.05])
    np.testing.assert_array_equal(table["sigma"], [0.3, 1.2, 0.3, 1.2])
    np.testing.assert_array_equal(table["loss_mean"], sw.final("loss")[0].ravel())
    assert set(table) >= {"loss_stderr", "sq_norm_mean", "diverged"}
    try:
        import xarray  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            sw.to_xarray()
    else:
        ds = sw.to_xarray()
        np.testing.assert_array_equal(ds["loss_mean"].sel(lr=0.05, sigma=1.2).values, sw[3].mean["loss"])


@pytest.mark.parametrize(
    "grid, extra, match",
    [
        ({"temperature": [1.0]}, {}, "unknown hyperparameter 'temperature'"),
        ({"distribution": [1.0]}, {}, "'distribution' is not a traced hyperparameter"),
        ({"sigma": []}, {}, r"grid\['sigma'\] is empty"),
        ({"sigma": [0.5, float("nan")]}, {}, "must be finite"),
        ({"sigma": [0.5, float("inf")]}, {}, "must be finite"),
        ({"sigma": "0.5"}, {}, "must be a sequence"),
        ({"sigma": [0.5, 0.5]}, {}, "repeats a value"),
        ({}, {}, "grid must be a non-empty mapping"),
        ({"lr": [0.1]}, {"lr": 0.1}, "either in grid or as an argument"),
        ({"sigma": [-1.0]}, {}, "sigma"),
        ({"lr": [-0.1]}, {"_no_lr": True}, "lr"),
    ],
)
def test_bad_grids_are_refused_by_name(grid, extra, match):
    problem = _problem()
    kw = dict(KW, **extra)
    if not kw.pop("_no_lr", False) and "lr" not in grid and "lr" not in kw:
        kw["lr"] = 0.05
    with pytest.raises(ValueError, match=match):
        sd.sweep(sd.simulate_sgd, problem, sd.LabelNoise(1.0), problem.model.init(), grid=grid, **kw)


def test_batch_size_of_a_noise_without_one_is_refused():
    problem = _problem()
    with pytest.raises(ValueError, match="grid: SphericalGaussianNoise has no field among"):
        sd.sweep(
            sd.simulate_sgd,
            problem,
            sd.SphericalGaussianNoise(0.1),
            problem.model.init(),
            grid={"batch_size": [2]},
            lr=0.05,
            **KW,
        )


def test_sweep_needs_a_simulator_and_an_lr():
    problem = _problem()
    with pytest.raises(ValueError, match="simulate must be"):
        sd.sweep(print, problem, sd.LabelNoise(1.0), problem.model.init(), grid={"sigma": [1.0]}, **KW)
    with pytest.raises(ValueError, match="lr is required"):
        sd.sweep(
            sd.simulate_sgd, problem, sd.LabelNoise(1.0), problem.model.init(), grid={"sigma": [1.0]}, **KW
        )


def test_drift_and_resetting_rate_grid_is_one_program_equal_to_the_loop():
    """A (Pe, r) grid: a drift–diffusion FunctionSDE with its drift v in ``params`` and Poissonian resetting,
    with a first passage, swept over v and r in one compiled program (two chunks), equals each single run:
    reset counts and passage steps exactly, records and saved paths to rounding (the bridge test's rate is
    computed inside the grid's vmap, where XLA may fuse it differently: one ulp was seen in one of 16 saved
    values, so the tolerance is 1e-13 on O(1) values). Both are traced, so the four single runs share one
    compiled program too; the points differ (no resets at r = 0; a larger v arrives sooner, path by path)."""
    sde = sd.FunctionSDE(
        lambda th, eta, p: -p["v"] * jnp.ones_like(th),
        lambda th, p: jnp.full((1, 1), 2**0.5, th.dtype),
        noise_type="additive",
        params={"v": 1.0},
    )
    kw = dict(
        lr=0.01,
        n_steps=60,
        key=3,
        ensemble=sd.Ensemble(n_paths=6, chunk_size=3),
        record=sd.Record(every=20, n_saved_paths=4),
        first_passage=sd.FirstPassage(observable=lambda p, th: th[0], threshold=0.0),
    )
    grid = {"v": [1.0, 8.0], "reset_rate": [0.0, 9.0]}
    sw = sd.sweep(sd.simulate_sde, sde, None, np.array([0.5]), grid=grid, resetting=sd.Resetting(1.0), **kw)
    assert sw.shape == (2, 2)
    for point, res in zip(sw.points, sw.results, strict=True):
        single = sd.simulate_sde(
            sde.with_params(v=point["v"]),
            None,
            np.array([0.5]),
            resetting=sd.Resetting(point["reset_rate"]),
            **kw,
        )
        np.testing.assert_array_equal(single.count, res.count)
        np.testing.assert_allclose(single.paths, res.paths, rtol=1e-13, atol=1e-13)
        for k in single.mean:
            np.testing.assert_allclose(single.mean[k], res.mean[k], rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(single.var[k], res.var[k], rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(single.resets.counts, res.resets.counts)
        np.testing.assert_array_equal(single.first_passage.steps, res.first_passage.steps)
        assert res.resets.rate == point["reset_rate"]
    assert sw[0].resets.counts.sum() == 0 < sw[1].resets.counts.sum()
    # common random numbers: with the larger drift every path arrives no later
    assert np.all(sw[2].first_passage.steps <= sw[0].first_passage.steps)
    assert sw[2].first_passage.steps.sum() < sw[0].first_passage.steps.sum()
    with pytest.raises(ValueError, match="'reset_rate' sweeps the rate of resetting="):
        sd.sweep(sd.simulate_sde, sde, None, np.array([0.5]), grid={"reset_rate": [1.0]}, **kw)
    with pytest.raises(ValueError, match=r"unknown hyperparameter 'D'.*params of a FunctionSDE \(v\)"):
        sd.sweep(sd.simulate_sde, sde, None, np.array([0.5]), grid={"D": [1.0]}, **kw)
    with pytest.raises(ValueError, match=r"params\['v'\] must be a real number"):
        sde.with_params(v="fast")


def test_a_warm_start_sweeps_as_one_program_equal_to_the_loop():
    """A grid over Adam's warm start (``optimizer.m0`` × ``optimizer.v0``, array leaves: each value an array of
    the leaf's shape, stacked by the grid like any traced leaf) runs as one program and each point equals its
    single run bit for bit; labels, the table and the refusals name the arrays. (The SDE and SVAG with the same
    grid also equal their loops bit for bit, checked by hand: the same stacking; one method here for time.)
    [theory: ASDE-8]"""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 2))
    problem = sd.Problem(sd.LinearRegression(2), X, X @ np.array([0.5, -1.0]) + 2.0 * rng.standard_normal(16))
    noise = sd.MinibatchNoise(batch_size=2)
    kw = dict(lr=0.05, n_steps=20, key=0, ensemble=sd.Ensemble(16, chunk_size=8), record=sd.Record(every=10))
    grid = {"optimizer.m0": [[0.0, 0.0], [1.0, -1.0]], "optimizer.v0": [[1.0, 2.0], np.array([0.5, 0.25])]}
    adam = lambda m0, v0: sd.Adam(0.9, 0.99, 0.1, m0=m0, v0=v0)  # noqa: E731
    for method in (sd.SGD,):
        sw = sd.sweep(
            method(noise, optimizer=adam([0.1, 0.2], [1.0, 1.0])), problem, np.zeros(2), grid=grid, **kw
        )
        assert sw.shape == (2, 2) and sw.points[1] == {
            "optimizer.m0": (0.0, 0.0),
            "optimizer.v0": (0.5, 0.25),
        }
        assert sw.results[1].method.endswith("[optimizer.m0=[0, 0], optimizer.v0=[0.5, 0.25]]")
        for point, res in zip(sw.points, sw.results, strict=True):
            one = method(noise, optimizer=adam(point["optimizer.m0"], point["optimizer.v0"]))
            _assert_same(sd.simulate(one, problem, np.zeros(2), **kw), res)
        loss = sw.final("loss")[0]
        assert len(np.unique(loss)) == 4  # the starts matter
    table = sw.table()
    assert table["optimizer.v0"].dtype == object and table["optimizer.v0"][3] == (0.5, 0.25)
    warm = sd.SGD(noise, optimizer=adam([0.1, 0.2], [1.0, 1.0]))
    for bad, match in [
        ({"optimizer.v0": [[1.0, 2.0, 3.0]]}, r"grid\['optimizer.v0'\] must hold arrays of shape \(2,\)"),
        ({"optimizer.v0": [1.0]}, r"must hold arrays of shape \(2,\)"),
        ({"optimizer.v0": [[1.0, np.nan]]}, r"grid\['optimizer.v0'\] must be finite"),
        ({"optimizer.v0": [[1.0, 2.0], [1.0, 2.0]]}, "repeats a value"),
        ({"optimizer.v0": [[1.0, -2.0]]}, "v0 must hold finite reals > 0"),  # the optimizer's own check
    ]:
        with pytest.raises(ValueError, match=match):
            sd.sweep(warm, problem, np.zeros(2), grid=bad, **kw)
    # a cold start has no v0 leaf to trace (warm and cold are different programs): refused
    with pytest.raises(ValueError, match="'optimizer.v0' is not a traced hyperparameter of Adam"):
        sd.sweep(
            sd.SGD(noise, optimizer=sd.Adam()),
            problem,
            np.zeros(2),
            grid={"optimizer.v0": [[1.0, 1.0]]},
            **kw,
        )
