"""EnsembleResult as a user meets it: no silent 0 ± 0 when every path diverged, a short repr, slicing by
time, tidy export, and a saved configuration that says exactly what ran (issue 15, items 4, 8, 9)."""

import os
import stat

import numpy as np
import pytest

import sgdsde as sd


def _problem():
    return sd.quadratic_problem(np.diag([1.0, 0.5]), np.zeros(2))


def test_all_diverged_records_are_nan_not_zero():
    """At lr = 5 (past 2/λ_max = 2) every path diverges: the late records have count 0 and mean NaN (the
    first, θ₀, is finite), final() is (NaN, NaN), and the warning says which records have no survivor."""
    with pytest.warns(RuntimeWarning) as caught:
        res = sd.simulate_sgd(
            _problem(),
            None,
            np.ones(2),
            lr=5.0,
            n_steps=2000,
            key=0,
            ensemble=sd.Ensemble(n_paths=3),
            record=sd.Record(every=200),
        )
    assert res.count[0] == 3 and res.count[-1] == 0
    assert np.isfinite(res.mean["loss"][0]) and np.isnan(res.mean["loss"][-1])
    m, se = res.final("loss")
    assert np.isnan(m) and np.isnan(se)
    assert any("no surviving path" in str(w.message) for w in caught)


def _run(tmp_path=None, **kw):
    return sd.simulate_sgd(
        _problem(),
        sd.GaussianNoise(np.diag([1 / 3, 2.0])),
        np.ones(2),
        lr=0.1,
        n_steps=100,
        key=1,
        ensemble=sd.Ensemble(n_paths=8),
        record=sd.Record(every=10, observables=["loss", "theta"], n_saved_paths=2),
        **kw,
    )


def test_short_repr_and_time_slicing():
    res = _run()
    text = repr(res)
    assert len(text) < 300 and "n_paths=8" in text and "records=11" in text
    part = res.select((2.5, 7.5))
    np.testing.assert_allclose(part.times, [3.0, 4.0, 5.0, 6.0, 7.0])
    np.testing.assert_array_equal(part.mean["theta"], res.mean["theta"][3:8])
    np.testing.assert_array_equal(part.paths, res.paths[3:8])
    assert part.final("loss")[0] == res.mean["loss"][7]
    with pytest.raises(ValueError, match="holds no record"):
        res.select((50.0, 60.0))
    with pytest.raises(ValueError, match="t0 <= t1"):
        res.select((0.5, 0.1))


def test_tidy_export():
    """One row per record × observable × component (11 records × (1 + 2) components)."""
    res = _run()
    rows = res.to_records()
    assert len(rows) == 11 * 3
    theta_rows = [r for r in rows if r["observable"] == "theta" and r["step"] == 50]
    assert [r["index"] for r in theta_rows] == [0, 1]
    assert theta_rows[1]["mean"] == pytest.approx(float(res.mean["theta"][5, 1]))
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="to_dataframe needs pandas"):
            res.to_dataframe()
    else:
        assert len(res.to_dataframe()) == len(rows)
    try:
        import xarray  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="to_xarray needs xarray"):
            res.to_xarray()
    else:
        ds = res.to_xarray()
        np.testing.assert_array_equal(ds["theta_mean"].values, res.mean["theta"])
        np.testing.assert_array_equal(ds["time"].values, res.times)


def test_saved_config_holds_exact_values_and_private_files(tmp_path):
    """The JSON record writes array-valued options out (the covariance factor √(1/3), the lr schedule), and
    the result files are readable by their owner only (mode 0600)."""
    prefix = str(tmp_path / "run")
    _run(output=sd.Output(save_to=prefix))
    back = sd.EnsembleResult.load(prefix)
    assert "0.57735" in back.config["noise"] and "f32[" not in back.config["noise"]
    for ext in (".npz", ".json"):
        assert stat.S_IMODE(os.stat(prefix + ext).st_mode) == 0o600
