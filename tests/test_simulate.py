"""One verb, methods as objects, open events (issue 22, items 1 and 3): ``simulate(method, problem, θ₀, ...,
events=(...))`` gives exactly the numbers of the older spellings, a new event is one class defined here (not in
the package), and confusions between methods, noises and events are refused by name."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import interrupted_at_update

import sgdsde as sd


def _problem():
    X = np.random.default_rng(0).normal(size=(12, 4))
    y = X @ np.array([1.0, -0.5, 0.0, 0.3])
    return sd.Problem(sd.DiagonalLinearNetwork(4, alpha=0.8), X, y)


PROBLEM = _problem()
THETA0 = PROBLEM.model.init()
NOISE = sd.LabelNoise(0.5, 3)
KW = dict(
    lr=0.05,
    n_steps=20,
    key=3,
    ensemble=sd.Ensemble(n_paths=8, chunk_size=4),
    record=sd.Record(every=5, n_saved_paths=2),
)
FP = sd.FirstPassage(observable="loss", threshold=0.5)
RESET = sd.Resetting(2.0)


def _assert_same(a: sd.EnsembleResult, b: sd.EnsembleResult):
    """Bit for bit (exact equality, no tolerance): records, saved paths and every report array."""
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_array_equal(a.paths, b.paths)
    for k in a.mean:
        np.testing.assert_array_equal(a.mean[k], b.mean[k])
        np.testing.assert_array_equal(a.var[k], b.var[k])
    assert a.reports.keys() == b.reports.keys()
    for name in a.reports:
        for k, v in a.reports[name].arrays().items():
            np.testing.assert_array_equal(v, b.reports[name].arrays()[k])


@pytest.mark.parametrize(
    "method, legacy",
    [
        (sd.SGD(NOISE), lambda **kw: sd.simulate_sgd(PROBLEM, NOISE, THETA0, **kw)),
        (sd.SDE(NOISE), lambda **kw: sd.simulate_sde(PROBLEM, NOISE, THETA0, **kw)),
        (sd.SVAG(NOISE, 3), lambda **kw: sd.simulate_svag(PROBLEM, NOISE, THETA0, l=3, **kw)),
    ],
    ids=["sgd", "sde", "svag"],
)
def test_simulate_equals_the_older_spellings_with_events(method, legacy):
    """Each method through ``simulate`` with events given in either order equals its simulate_x with the
    keyword events, bit for bit; resets are Bernoulli per step for the discrete methods and Poissonian for
    the SDE (the event asks the method), and each report sits in ``result.reports`` under its name."""
    new = sd.simulate(method, PROBLEM, THETA0, **KW, events=(RESET, FP))
    old = legacy(**KW, resetting=RESET, first_passage=FP)
    _assert_same(new, old)
    assert set(new.reports) == {"resets", "first_passage"}
    assert new.resets is new.reports["resets"] and new.first_passage is new.reports["first_passage"]
    assert new.resets.poisson is isinstance(method, sd.SDE)
    assert new.resets.counts.sum() > 0  # rate·T = 2 × 1 per path: resets happen
    assert new.config["resetting"] == old.config["resetting"]


def test_a_new_event_is_one_class_here_and_saves_with_its_report(tmp_path):
    """An event defined in this test file (not in the package): it counts the steps each path spends with
    θ₀ > 0 and moves nothing. The count is checked against the saved paths, and the result saves and loads
    with the report's own class."""

    @dataclasses.dataclass
    class Occupation(sd.AbstractReport):
        steps: np.ndarray

        def arrays(self):
            return {"steps": self.steps}

        def meta(self):
            return {}

        @classmethod
        def from_saved(cls, arrays, meta):
            return cls(**arrays)

    class PositiveTime(sd.AbstractStepEvent):
        name: ClassVar[str] = "positive_time"
        records: ClassVar[tuple[str, ...]] = ("positive",)

        def init(self, problem, theta):
            return jnp.zeros(theta.shape[0], jnp.int32)

        def after_step(self, problem, state, before, after, k_next, dt, key):
            return after, state + (after[:, 0] > 0).astype(jnp.int32)

        def observe(self, state):
            return {"positive": state.astype(jnp.float32)}

        def per_path(self, state):
            return {"steps": state}

        def report(self, arrays, clock, step_unit):
            return Occupation(np.asarray(arrays["steps"]))

    globals()["Occupation"] = Occupation  # a saved report's class is found by module and name
    Occupation.__qualname__ = "Occupation"
    n_steps = 12
    res = sd.simulate(
        sd.SGD(NOISE),
        PROBLEM,
        THETA0 - 0.3,
        **dict(KW, n_steps=n_steps, record=sd.Record(every=1, n_saved_paths=8)),
        events=(PositiveTime(),),
    )
    # the count from the saved paths: θ_k for k = 1..T (the event sees every step's end)
    expected = (res.paths[1:, :, 0] > 0).sum(axis=0)
    np.testing.assert_array_equal(res.reports["positive_time"].steps, expected)
    np.testing.assert_allclose(res.mean["positive"][-1], expected.mean(), rtol=1e-6)  # float32 record
    res.save(str(tmp_path / "r"))
    back = sd.EnsembleResult.load(str(tmp_path / "r"))
    np.testing.assert_array_equal(back.reports["positive_time"].steps, expected)


def test_confusions_are_refused_by_name():
    """A noise where a method goes, a method where a noise goes, a noise among the events, a bad order."""
    with pytest.raises(TypeError, match="method must be a method, got the noise model LabelNoise"):
        sd.simulate(NOISE, PROBLEM, THETA0, **KW)
    with pytest.raises(TypeError, match="noise must be a noise model.*got the method SGD"):
        sd.SDE(sd.SGD(NOISE))
    with pytest.raises(TypeError, match="noise must be a noise model.*got the method SVAG"):
        sd.simulate_sgd(PROBLEM, sd.SVAG(NOISE, 2), THETA0, **KW)
    with pytest.raises(TypeError, match="events must hold .* got LabelNoise"):
        sd.simulate(sd.SGD(NOISE), PROBLEM, THETA0, **KW, events=(NOISE,))
    with pytest.raises(TypeError, match="events must be a tuple"):
        sd.simulate(sd.SGD(NOISE), PROBLEM, THETA0, **KW, events="resetting")
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        sd.SDE(NOISE, order=3)
    with pytest.raises(ValueError, match="two events report as \\['resets'\\]"):
        sd.simulate(sd.SGD(NOISE), PROBLEM, THETA0, **KW, events=(RESET, sd.Resetting(1.0)))
    with pytest.raises(ValueError, match="stop=True cannot be combined with resetting"):
        sd.simulate(
            sd.SGD(NOISE),
            PROBLEM,
            THETA0,
            **KW,
            events=(sd.Resetting(1.0), dataclasses.replace(FP, stop=True)),
        )


def test_an_sde_object_refuses_an_order_it_does_not_have():
    """``order=`` applied to the SME built from a problem; an SDE given as the problem fixes its own drift,
    and an order it does not have is refused instead of ignored."""
    sde = sd.SME(PROBLEM, NOISE, 1)
    with pytest.raises(ValueError, match="order=2 applies to the SME built from a problem"):
        sd.simulate(sd.SDE(order=2), sde, THETA0, **KW)
    with pytest.raises(ValueError, match="order=2 applies to the SME built from a problem"):
        sd.simulate_sde(sde, None, THETA0, order=2, **KW)
    _assert_same(sd.simulate(sd.SDE(), sde, THETA0, **KW), sd.simulate(sd.SDE(NOISE), PROBLEM, THETA0, **KW))


def test_an_event_that_moves_theta_needs_a_method_that_allows_it():
    """A user's method whose stepper cannot replace θ refuses resetting by name, before any step runs."""

    class Frozen(sd.SGD):
        @property
        def moves_theta(self) -> bool:
            return False

    with pytest.raises(ValueError, match="Resetting moves theta, which the method Frozen cannot honour"):
        sd.simulate(Frozen(NOISE), PROBLEM, THETA0, **KW, events=(RESET,))
    sd.simulate(Frozen(NOISE), PROBLEM, THETA0, **dict(KW, n_steps=2), events=(FP,))  # observing is fine


def test_sweep_over_a_method_equals_the_simulator_spelling():
    """``sweep(SGD(noise), ...)`` with a bare and a dotted leaf name and a reset rate equals the older
    ``sweep(simulate_sgd, problem, noise, ...)`` point by point, bit for bit; a field that is not an array
    leaf, or one the method does not have, is refused by name."""
    grid = {"lr": [0.02, 0.05], "sigma": [0.3, 1.2], "reset_rate": [0.5, 1.0]}
    kw = {k: v for k, v in KW.items() if k != "lr"}
    new = sd.sweep(sd.SGD(NOISE), PROBLEM, THETA0, grid=grid, **kw, events=(RESET,))
    dotted = {("noise.sigma" if k == "sigma" else k): v for k, v in grid.items()}  # the same point order
    also = sd.sweep(sd.SGD(NOISE), PROBLEM, THETA0, grid=dotted, **kw, events=(RESET,))
    old = sd.sweep(sd.simulate_sgd, PROBLEM, NOISE, THETA0, grid=grid, **kw, resetting=RESET)
    for a, b, c in zip(new.results, old.results, also.results, strict=True):
        _assert_same(a, b)
        _assert_same(c, b)
    one = new.points[3]
    single = sd.simulate(
        sd.SGD(sd.LabelNoise(one["sigma"], 3)),
        PROBLEM,
        THETA0,
        **dict(KW, lr=one["lr"]),
        events=(sd.Resetting(one["reset_rate"]),),
    )
    # a reset-rate grid equals its single runs in the paths and reports exactly and in the records to rounding
    # (one ulp in the loss mean: the grid's statistics run inside its vmap, as in test_sweep's (v, r) grid)
    np.testing.assert_array_equal(single.paths, new.results[3].paths)
    np.testing.assert_array_equal(single.resets.counts, new.results[3].resets.counts)
    np.testing.assert_allclose(single.mean["loss"], new.results[3].mean["loss"], rtol=1e-13)
    with pytest.raises(ValueError, match="'noise.batch_size' is not a traced hyperparameter of LabelNoise"):
        sd.sweep(sd.SGD(NOISE), PROBLEM, THETA0, grid={"noise.batch_size": [2]}, **KW)
    with pytest.raises(ValueError, match="unknown hyperparameter 'noise.tau'"):
        sd.sweep(sd.SGD(NOISE), PROBLEM, THETA0, grid={"noise.tau": [2.0]}, **KW)


def test_methods_are_pytrees_with_their_noise_as_leaves():
    """A method is an equinox module: its noise's σ is an array leaf that ``eqx.tree_at`` can replace (what a
    sweep does), and ``jax.tree`` sees it."""
    leaves = jax.tree.leaves(sd.SGD(NOISE))
    assert any(isinstance(x, jax.Array) and float(x) == 0.5 for x in leaves)


class HeavyBall(sd.AbstractMethod):
    """A method written outside the package, in one class plus its stepper: Polyak's heavy ball,
    $v_{k+1} = \\beta v_k - \\eta_k \\tilde g(\\theta_k)$, $\\theta_{k+1} = \\theta_k + v_{k+1}$; its state is the PyTree
    (θ, v, the noise's sampler state) with the projection θ."""

    noise: sd.AbstractGradientNoise | None
    beta: float = 0.9

    def stepper(self, problem, n_paths):
        return _HeavyBallStepper(problem, self.noise or sd.NoNoise(), n_paths, self.beta)


class _HeavyBallStepper(sd.AbstractStepper):
    problem_: sd.Problem
    noise: sd.AbstractGradientNoise
    n_paths: int
    beta: float

    @property
    def problem(self):
        return self.problem_

    def init(self, key, theta0):
        return (
            theta0,
            jnp.zeros_like(theta0),
            self.noise.init_state(self.problem_, key, self.n_paths, theta0.dtype),
        )

    def step(self, carry, k, eta, key):
        theta, v, state = carry
        draws, state = self.noise.draw(self.problem_, key, k, state, self.n_paths, theta.dtype)
        g = jax.vmap(self.noise.gradient, in_axes=(None, 0, 0))(self.problem_, theta, draws)
        v = self.beta * v - eta * g
        return theta + v, v, state

    def theta(self, carry):
        return carry[0]

    def with_theta(self, carry, theta):
        return theta, carry[1], carry[2]


def test_a_method_with_state_beyond_theta_runs_on_the_engine(tmp_path):
    """A user's method with state (θ, v): without noise it equals the heavy-ball recursion written out in
    float64 (to 1e-12: the same operations, summed in another order inside jit); with noise and events it
    chunks, records and resumes from a checkpoint of its whole state bit for bit; β = 0 is SGD to rounding."""
    kw = dict(KW, n_steps=12, record=sd.Record(every=3, n_saved_paths=2))
    res = sd.simulate(HeavyBall(None, 0.5), PROBLEM, THETA0, **kw)
    theta, v = np.asarray(THETA0, np.float64), np.zeros(len(THETA0))
    for _ in range(12):
        v = 0.5 * v - 0.05 * np.asarray(PROBLEM.grad(jnp.asarray(theta)))
        theta = theta + v
    np.testing.assert_allclose(res.paths[-1, 0], theta, rtol=1e-12, atol=1e-14)
    assert res.config["simulator"] == "heavyball" and res.method == "HeavyBall"
    # β = 0 is SGD up to rounding (v = 0·v − ηg, θ + v: XLA may fuse it otherwise than θ − ηg; 1 ulp seen)
    hb0 = sd.simulate(HeavyBall(NOISE, 0.0), PROBLEM, THETA0, **kw)
    np.testing.assert_allclose(hb0.paths, sd.simulate(sd.SGD(NOISE), PROBLEM, THETA0, **kw).paths, rtol=1e-14)

    prefix = str(tmp_path / "hb")
    full = sd.simulate(HeavyBall(NOISE), PROBLEM, THETA0, **kw, events=(FP, RESET))
    out = sd.Output(save_to=prefix, checkpoint_every=1)
    with interrupted_at_update(3):  # inside chunk 0, after its second block of records
        sd.simulate(
            HeavyBall(NOISE),
            PROBLEM,
            THETA0,
            **kw,
            events=(FP, RESET),
            output=dataclasses.replace(out, progress=True),
        )
    resumed = sd.simulate(
        HeavyBall(NOISE),
        PROBLEM,
        THETA0,
        **kw,
        events=(FP, RESET),
        output=dataclasses.replace(out, resume=True),
    )
    _assert_same(full, resumed)
