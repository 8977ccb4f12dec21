"""The increments options own their behaviour: each turns the solver's own random input into the one it asks
for, or refuses a solver it cannot drive (ValueError naming ``increments``). [theory: SDE-3]"""

import diffrax
import numpy as np
import pytest

import sgdsde as sd
from sgdsde._sde.solvers import SOLVERS  # internal: the solver registry, so a new solver joins this product

# The random input each solver draws by itself (increments=None), written out rather than read from SOLVERS so
# that a changed row fails here: Brownian increments, Brownian increments with Lévy areas, or weak-2 ones.
NATURAL = {
    diffrax.Euler: "brownian",
    diffrax.ItoMilstein: "brownian",
    diffrax.StratonovichMilstein: "brownian",
    diffrax.Heun: "brownian",
    diffrax.EulerHeun: "brownian",
    diffrax.GeneralShARK: "levy",
    diffrax.SPaRK: "levy",
    diffrax.SRA1: "levy",
    diffrax.ShARK: "levy",
    sd.PlatenWeak2: "weak2",
}


def expected(increments, solver_cls) -> str | None:
    """The control an increments option yields with a solver (config["increments"]), None for a refusal."""
    natural = NATURAL[solver_cls]
    if increments is None:
        return natural
    if natural == "weak2":
        return None  # PlatenWeak2's three-point input is part of the scheme: no option replaces it
    if isinstance(increments, sd.TwoPoint):
        return "two_point" if solver_cls is diffrax.Euler else None  # weak Euler only
    if isinstance(increments, sd.CoupledToSGD):
        return "coupled" if natural == "brownian" else natural  # Lévy-area draws already use SGD's order
    return natural  # Gaussian(): the solver's own Brownian input


def test_every_solver_is_in_the_table():
    assert set(NATURAL) == set(SOLVERS)


@pytest.mark.parametrize("increments", [None, sd.Gaussian(), sd.CoupledToSGD(), sd.TwoPoint()], ids=repr)
def test_increments_choose_or_refuse_each_solvers_input(increments):
    """Every increments option × every registered solver, planned (not run) on additive noise, which all
    solvers admit: the configuration records the control the option chose; a refusal names the argument."""
    problem = sd.quadratic_problem(np.diag([1.0, 2.0]), np.zeros(2))
    kw = dict(
        lr=0.1,
        n_steps=2,
        key=0,
        ensemble=sd.Ensemble(n_paths=2),
        record=sd.Record(),
        output=sd.Output(),
        events=(),
    )
    for solver_cls in SOLVERS:
        method = sd.SDE(sd.SphericalGaussianNoise(0.5), solver=solver_cls(), increments=increments)
        want = expected(increments, solver_cls)
        if want is None:
            with pytest.raises(ValueError, match="increments") as err:
                method.plan(problem, np.ones(2), **kw)
            assert solver_cls.__name__ in str(err.value)
        else:
            assert method.plan(problem, np.ones(2), **kw).config["increments"] == want, solver_cls.__name__
