"""Option objects: each validates itself once, naming the field; the three simulators share one signature
shape; the run's dtype follows the problem; SVAG's saved and returned records agree; keys give common random
numbers across starts and independent ones across keys."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdsde as sd


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sd.Ensemble(n_paths=0), "n_paths must be >= 1"),
        (lambda: sd.Ensemble(n_paths=2.5), "n_paths must be an integer"),
        (lambda: sd.Ensemble(chunk_size=0), "chunk_size must be >= 1"),
        (lambda: sd.Ensemble(dtype=np.int32), "dtype must be float32 or float64"),
        (lambda: sd.Ensemble(devices="cpu"), "devices must be None, an int or a non-empty list"),
        (lambda: sd.Ensemble(devices=[]), "devices must be None, an int or a non-empty list"),
        (lambda: sd.Record(every=0), "every must be >= 1"),
        (lambda: sd.Record(n_saved_paths=-1), "n_saved_paths must be >= 0"),
        (lambda: sd.Record(observables="loss"), "observables must be a list of names"),
        (lambda: sd.Record(observables=["nope"]), "unknown name 'nope'"),
        (lambda: sd.Record(observables={"x": 3}), r"observables\['x'\] must be a function"),
        (lambda: sd.Output(save_to="/no/such/folder/run"), "save_to: directory"),
        (lambda: sd.Output(save_to=3), "save_to must be a path"),
        (lambda: sd.Output(progress="yes"), "progress must be True or False"),
        (lambda: sd.Output(label=3), "label must be a string"),
        (lambda: sd.Fixed(substeps=0), "substeps must be >= 1"),
        (lambda: sd.Fixed(dt=-0.1), "dt must be finite and > 0"),
        (lambda: sd.Fixed(substeps=2, dt=0.1), "at most one of substeps and dt"),
        (lambda: sd.Adaptive(max_steps=0), "max_steps must be >= 1"),
        (lambda: sd.Adaptive(controller=0.1), "controller must be None, a diffrax.PIDController"),
    ],
)
def test_options_validate_themselves(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_simulators_share_one_signature_shape():
    """(problem, noise, theta0, *, lr, n_steps, key, [method options], ensemble, record, output, resetting,
    first_passage) for all three; options passed as anything but their objects are refused by name."""
    shapes = []
    for fn in (sd.simulate_sgd, sd.simulate_sde, sd.simulate_svag):
        params = inspect.signature(fn).parameters
        positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
        keyword = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
        assert positional == ["problem", "noise", "theta0"], fn.__name__
        assert keyword[:3] == ["lr", "n_steps", "key"] or keyword[:4] == ["lr", "l", "n_steps", "key"]
        assert keyword[-5:] == ["ensemble", "record", "output", "resetting", "first_passage"], fn.__name__
        assert inspect.signature(fn).return_annotation in ("EnsembleResult", sd.EnsembleResult)
        shapes.append(keyword[-3:])
    problem = sd.Problem(sd.LinearRegression(2), np.eye(2), np.ones(2))
    with pytest.raises(ValueError, match="ensemble must be a sgdsde.Ensemble"):
        sd.simulate_sgd(problem, None, np.zeros(2), lr=0.1, n_steps=2, key=0, ensemble=4)
    with pytest.raises(ValueError, match="stepping must be sgdsde.Fixed"):
        sd.simulate_sde(problem, None, np.zeros(2), lr=0.1, n_steps=2, key=0, stepping=2)
    with pytest.raises(ValueError, match="increments must be None, sgdsde.Gaussian"):
        sd.simulate_sde(problem, None, np.zeros(2), lr=0.1, n_steps=2, key=0, increments="coupled")


def test_dtype_follows_the_problem():
    """A float64 problem runs in float64 unless told otherwise (no silent downcast): GD's iterates equal the
    float64 recursion to 1e-13, where the float32 run is off by ~1e-7; an explicit float32 is honoured.
    (issue 15, item 2)"""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 3))
    y = rng.normal(size=6)
    problem = sd.Problem(sd.LinearRegression(3), X, y, dtype=jnp.float64)
    run = lambda **kw: sd.simulate_sgd(
        problem, None, np.zeros(3), lr=0.05, n_steps=50, key=0, record=sd.Record(n_saved_paths=1), **kw
    )
    theta = np.zeros(3)
    for _ in range(50):
        theta = theta - 0.05 * X.T @ (X @ theta - y) / 6
    r64 = run()
    assert r64.config["dtype"] == "float64" and r64.paths.dtype == np.float64
    np.testing.assert_allclose(r64.paths[-1, 0], theta, rtol=0, atol=1e-13)
    r32 = run(ensemble=sd.Ensemble(dtype=np.float32))
    assert r32.config["dtype"] == "float32"
    assert np.max(np.abs(r32.paths[-1, 0] - theta)) > 1e-10


def test_svag_saved_and_returned_records_agree(tmp_path):
    """simulate_svag's saved file and its returned result carry the same (SGD-step) record indices, with
    l = 4: [0, 2, 4, 6, 8] both. (issue 10, item 4)"""
    problem = sd.quadratic_problem(np.eye(2), np.zeros(2))
    res = sd.simulate_svag(
        problem,
        sd.SphericalGaussianNoise(0.3),
        np.ones(2),
        lr=0.1,
        l=4,
        n_steps=8,
        key=0,
        ensemble=sd.Ensemble(n_paths=4, chunk_size=2),
        record=sd.Record(every=2),
        output=sd.Output(save_to=str(tmp_path / "svag"), label="svag"),
    )
    back = sd.EnsembleResult.load(str(tmp_path / "svag"))
    np.testing.assert_array_equal(res.steps, [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(back.steps, res.steps)
    np.testing.assert_allclose(res.times, 0.1 * res.steps)
    assert res.method == "svag" and back.config["record_every"] == 2


def test_keys_common_random_numbers_and_independent_runs():
    """The same key from two starts draws the same numbers (common random numbers): with additive noise on a
    quadratic the paths differ by exactly (I − ηH)^k(θ₀ − θ₀'); different keys (split/fold_in) draw
    independent numbers. Float64 rounding: 1e-12."""
    H = np.diag([1.0, 2.0])
    problem = sd.quadratic_problem(H, np.zeros(2), dtype=jnp.float64)
    noise = sd.SphericalGaussianNoise(0.5)

    def run(theta0, key):
        return sd.simulate_sgd(
            problem, noise, theta0, lr=0.1, n_steps=10, key=key, record=sd.Record(every=10, n_saved_paths=1)
        ).paths[-1, 0]

    a, b = run(np.zeros(2), 3), run(np.ones(2), 3)
    np.testing.assert_allclose(
        b - a, np.linalg.matrix_power(np.eye(2) - 0.1 * H, 10) @ np.ones(2), atol=1e-12
    )
    k1, k2 = jax.random.split(jax.random.key(3))
    c, d = run(np.zeros(2), k1), run(np.zeros(2), k2)
    assert not np.allclose(a, c) and not np.allclose(c, d)
    e = run(np.zeros(2), jax.random.fold_in(jax.random.key(3), 1))
    assert not np.allclose(e, a)
