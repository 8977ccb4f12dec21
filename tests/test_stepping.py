"""The stepping contract: a stepping builds its own stepper from what ``SDE.plan`` resolved, so a new
stepping is one class (issue 22) and runs on the same engine as Fixed and Adaptive."""

import jax
import numpy as np

import sgdsde as sd
from sgdsde._sde import SDEStepper  # internal: the fixed-step stepper a new stepping may reuse
from sgdsde._sde.stepping import AbstractStepping, StepperSetup, SteppingPlan  # internal: the contract


class TwoSubsteps(AbstractStepping):
    """Two solver steps per SGD step, built from the setup alone (no change to SDE.plan)."""

    def stepper(self, setup: StepperSetup) -> SteppingPlan:
        s = setup
        make = lambda n: SDEStepper(s.sde, s.solver, n, 2, s.control, s.stratonovich, s.m, True)
        return SteppingPlan(make, substeps=2, config={"stepping": "two substeps"})


def test_a_new_stepping_is_one_class_and_matches_fixed_bit_for_bit():
    """A user's stepping that builds two substeps per SGD step runs on the engine and gives
    Fixed(substeps=2)'s numbers exactly (the same stepper module, so the same program: deterministic, no
    tolerance); its settings join the result's config."""
    problem = sd.quadratic_problem(np.diag([1.0, 0.5]), np.array([0.3, -0.2]))
    noise = sd.SphericalGaussianNoise(0.4)
    kw = dict(
        lr=0.05,
        n_steps=4,
        key=jax.random.key(3),
        ensemble=sd.Ensemble(n_paths=4, dtype=np.float64),
        record=sd.Record(every=2, n_saved_paths=4),
    )
    ours = sd.simulate(sd.SDE(noise, stepping=TwoSubsteps()), problem, np.ones(2), **kw)
    fixed = sd.simulate(sd.SDE(noise, stepping=sd.Fixed(substeps=2)), problem, np.ones(2), **kw)
    assert ours.paths is not None and fixed.paths is not None
    np.testing.assert_array_equal(ours.paths, fixed.paths)
    assert np.all(np.isfinite(ours.paths)) and not np.array_equal(ours.paths[0], ours.paths[-1])  # it moved
    assert {k: v for k, v in ours.config.items() if k != "stepping"} == fixed.config
    assert ours.config["substeps"] == 2 and ours.config["stepping"] == "two substeps"
