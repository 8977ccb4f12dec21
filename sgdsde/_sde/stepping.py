"""How the SDE is stepped between SGD's clock points: each stepping builds its own stepper.

``SDE.plan`` gathers what every stepping may need (``StepperSetup``) and asks the stepping for its
``SteppingPlan``; a new stepping is one file here (a final ``AbstractStepping`` with its stepper) plus one
re-export line in ``sgdsde/__init__.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx

from .._ensemble import AbstractStepper
from .._options import Record
from .._schedules import Rates
from .base import AbstractSDE
from .increments import AbstractControl, AbstractIncrements
from .solvers import SolverInfo


class StepperSetup(NamedTuple):
    """What ``SDE.plan`` has resolved before the stepper is built (the SDE already in the run's dtype)."""

    sde: AbstractSDE
    solver: Any
    info: SolverInfo  # the solver's row of SOLVERS
    increments: AbstractIncrements | None  # the option asked for (None: the solver's natural input)
    control: AbstractControl  # draws fixed steps' random inputs
    stratonovich: bool  # the drift gets the Itô→Stratonovich correction
    m: int  # Brownian dimension
    state_dim: int  # p, the SDE's state dimension (d for SGD's SMEs)
    etas: Rates
    n_steps: int
    record: Record


class SteppingPlan(NamedTuple):
    """A stepping's answer: the stepper for n paths, the engine steps one call covers, the solver's step
    cap (None: fixed steps never fail), and the settings it adds to ``result.config``."""

    stepper: Callable[[int], AbstractStepper]
    substeps: int
    steps_per_call: int = 1
    max_steps: int | None = None
    config: dict[str, Any] = {}


class AbstractStepping(eqx.Module):
    """How the SDE is stepped between SGD's clock points."""

    @abc.abstractmethod
    def stepper(self, setup: StepperSetup) -> SteppingPlan:
        """The stepper (and its engine settings) of this stepping for ``setup``; ValueError for a solver or
        increments it cannot use."""
