"""Bad input found on review (issue 15, items 7 and 9): each gets a ValueError naming the argument before
anything compiles, and everyday types (numpy integers, int seeds) are accepted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdsde as sd
from sgdsde._observables import check_observables, resolve
from sgdsde.analysis import AffineNoise, fit_order, weak_error
from sgdsde.implicit import weighted_lasso


def linear_problem(n=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return sd.Problem(sd.LinearRegression(d), X, X @ np.ones(d))


def test_numpy_integer_batch_sizes_and_int_seeds_are_everyday_types():
    """numpy integers are batch sizes like Python ints (stored as int: static fields hash alike); the data
    generators take an int seed as the simulators do."""
    for noise in (
        sd.MinibatchNoise(np.int64(2)),
        sd.LabelNoise(1.0, np.int32(2)),
        sd.MultiplicativeNoise(np.int16(2)),
        sd.FullGradientLabelNoise(1.0, np.int64(2)),
    ):
        assert type(noise.batch_size) is int and noise.batch_size == 2
    assert sd.MinibatchNoise(np.int64(2)) == sd.MinibatchNoise(2)
    a, b = sd.sparse_regression(3, 6, 4, 2), sd.sparse_regression(jax.random.key(3), 6, 4, 2)
    np.testing.assert_array_equal(a.X, b.X)
    t = sd.teacher_network(1, 5, 2, 3)
    assert t.X.shape == (5, 2)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sd.MinibatchNoise(2.0), "batch_size must be an integer"),
        (lambda: sd.MinibatchNoise(True), "batch_size must be an integer"),
        (lambda: sd.MultiplicativeNoise(0), "batch_size must be an integer >= 1"),
        (lambda: sd.LabelNoise(1.0, 0), r"batch_size must be an integer >= 1 or None"),
        (lambda: sd.FullGradientLabelNoise(1.0, 1, "shuffle"), "sampling must be"),
        (lambda: sd.FullGradientLabelNoise(-1.0), "sigma must be finite and >= 0"),
        (lambda: sd.sparse_regression("seed", 5, 3, 1), "key must be"),
        (lambda: fit_order([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]), "at least 2 distinct"),
        (lambda: weighted_lasso(np.ones((4, 2)), np.ones(3), 0.1), r"y must have shape \(4,\)"),
        (lambda: weighted_lasso(np.ones((4, 2)), np.ones(4), np.ones(3)), r"penalties must be a scalar"),
        (lambda: weighted_lasso(np.ones(4), np.ones(4), 0.1), "X must be a non-empty 2-D array"),
    ],
)
def test_bad_arguments_name_themselves(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_affine_noise_needs_a_linear_model():
    """AffineNoise.from_noise on a nonlinear model (label noise on a diagonal network has an affine factor,
    but SGD's moments do not close: ∇L is cubic) is refused naming the model."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 2))
    diag = sd.Problem(sd.DiagonalLinearNetwork(2), X, X @ np.ones(2))
    with pytest.raises(ValueError, match="DiagonalLinearNetwork is not linear"):
        AffineNoise.from_noise(diag, sd.LabelNoise(1.0))
    assert AffineNoise.from_noise(linear_problem(), sd.LabelNoise(1.0)).dim == 3


def test_weak_error_refuses_different_survivors():
    """Two ensembles that lost different numbers of paths to divergence have means over different survivors:
    weak_error refuses unless told to compare them anyway."""
    from sgdsde._results import EnsembleResult

    def result(diverged):
        return EnsembleResult(
            method="m",
            steps=np.arange(3),
            times=np.arange(3.0),
            mean={"x": np.zeros(3)},
            var={"x": np.ones(3)},
            count=np.full(3, 10 - diverged),
            n_paths=10,
            diverged=diverged,
            first_divergence_step=1 if diverged else None,
        )

    with pytest.raises(ValueError, match="different numbers of paths"):
        weak_error(result(0), result(2))
    assert weak_error(result(2), result(2)).max_error("x")[0] == 0.0
    assert weak_error(result(0), result(2), allow_different_survivors=True).max_error("x")[0] == 0.0


def test_observables_that_index_past_theta_are_refused():
    """JAX clamps an out-of-bounds index inside a run; the observables are evaluated once at θ₀ with JAX's
    index checks first, so `lambda p, t: t[5]` on d = 3 raises naming the observable."""
    problem = linear_problem()
    theta = jnp.zeros(3)
    check_observables(problem, resolve(["loss", "theta"]), theta)
    with pytest.raises(ValueError, match=r"observables\['fifth'\] indexes outside theta"):
        check_observables(problem, resolve({"fifth": lambda p, t: t[5]}), theta)
    with pytest.raises(ValueError, match=r"observables\['bad'\] failed at theta0"):
        check_observables(problem, resolve({"bad": lambda p, t: t @ jnp.ones(4)}), theta)
    with pytest.raises(ValueError, match=r"observables\['str'\] failed at theta0"):
        check_observables(problem, resolve({"str": lambda p, t: "x"}), theta)


def test_function_sde_shapes_are_checked_without_running():
    """A FunctionSDE whose drift or factor has the wrong shape is refused by abstract evaluation."""
    good = sd.FunctionSDE(lambda th, eta: -th, lambda th: jnp.eye(3))
    assert good.check_shapes(3, jnp.float64) == 3
    with pytest.raises(ValueError, match=r"drift\(theta, eta\) must return one array of shape \(3,\)"):
        sd.FunctionSDE(lambda th, eta: -th[:2], lambda th: jnp.eye(3)).check_shapes(3, jnp.float64)
    with pytest.raises(ValueError, match=r"factor\(theta\) must return one array of shape \(3, m\)"):
        sd.FunctionSDE(lambda th, eta: -th, lambda th: jnp.ones(3)).check_shapes(3, jnp.float64)


# --- one property over the public entry points (issue 15, item 7) ---------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

BAD_VALUES = {
    "lr": [-0.1, 0.0, float("nan"), float("inf"), "0.1", 1j, np.full(3, 0.1), [0.1, -0.1] * 5, None],
    "n_steps": [0, -1, 1.5, "10", None, np.float64(10.0), True],
    "key": [-1, 2**64, 1.5, "seed", None, np.zeros(3)],
    "theta0": [
        np.zeros(2),
        np.zeros((4, 3)),
        np.array([np.nan, 0.0, 0.0]),
        "abc",
        np.ones(3) * 1j,
        [[1, 2], [3]],
    ],
    "noise": ["label", 3, sd.Ensemble()],
    "ensemble": [dict(n_paths=2), 4, None],
    "record": [dict(every=2), 5],
    "output": ["out", 1],
}
SIMULATORS = {
    "simulate_sgd": lambda p, **kw: sd.simulate_sgd(p, **kw),
    "simulate_sde": lambda p, **kw: sd.simulate_sde(p, **kw),
    "simulate_svag": lambda p, **kw: sd.simulate_svag(p, **kw, l=2),
}


@settings(max_examples=80)
@given(
    simulator=st.sampled_from(sorted(SIMULATORS)),
    arg_and_value=st.sampled_from([(a, i) for a, vs in BAD_VALUES.items() for i in range(len(vs))]),
)
def test_every_simulator_refuses_a_bad_argument_by_name(simulator, arg_and_value):
    """Each simulator, given one bad argument (the others good), raises ValueError or TypeError whose message
    names that argument, never a failure deep in JAX or numpy (80 of the 150 combinations per run; all of them
    pass when enumerated)."""
    arg, i = arg_and_value
    bad = BAD_VALUES[arg][i]
    problem = linear_problem()
    kwargs = dict(
        noise=sd.MinibatchNoise(2),
        theta0=np.zeros(3),
        lr=0.1,
        n_steps=10,
        key=0,
        ensemble=sd.Ensemble(n_paths=2),
        record=sd.Record(),
        output=sd.Output(),
    )
    kwargs[arg] = bad
    with pytest.raises((ValueError, TypeError)) as err:
        SIMULATORS[simulator](problem, **kwargs)
    assert arg in str(err.value), (simulator, arg, bad, str(err.value))


SPECIFIC = (
    [("simulate_sde", "order", v) for v in (0, 3, 1.5, "1")]
    + [("simulate_sde", "solver", v) for v in ("euler", 3)]
    + [("simulate_sde", "stepping", v) for v in ("fixed", 2)]
    + [("simulate_sde", "increments", v) for v in ("gauss", 1)]
    + [("simulate_svag", "l", v) for v in (0, -1, 1.5, "2")]
    + [(s, "resetting", v) for s in ("simulate_sgd", "simulate_sde") for v in (0.1, "r")]
    + [(s, "first_passage", v) for s in ("simulate_sgd", "simulate_svag") for v in (1.0, "x")]
)


@pytest.mark.parametrize("simulator, arg, bad", SPECIFIC)
def test_simulator_specific_options_refuse_bad_values_by_name(simulator, arg, bad):
    """The options only some simulators take (order, solver, stepping, increments, l, resetting,
    first_passage): a bad value is a ValueError or TypeError naming the option."""
    fn = {"simulate_sgd": sd.simulate_sgd, "simulate_sde": sd.simulate_sde, "simulate_svag": sd.simulate_svag}
    kwargs = dict(noise=sd.MinibatchNoise(2), theta0=np.zeros(3), lr=0.1, n_steps=10, key=0)
    if simulator == "simulate_svag":
        kwargs["l"] = 2
    kwargs[arg] = bad
    with pytest.raises((ValueError, TypeError)) as err:
        fn[simulator](linear_problem(), **kwargs)
    assert arg in str(err.value), (simulator, arg, bad, str(err.value))
