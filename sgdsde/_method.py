"""Methods as objects, and the one verb that runs them.

    simulate(method, problem, θ₀, *, lr, n_steps, key, ensemble=…, record=…, output=…, events=(…))

A method (``SGD(noise)``, ``SDE(noise, order=…, solver=…)``, ``SVAG(noise, l)``, or a user's own) owns its
checks, its stepper, its time unit and its description; the engine (``_ensemble``) owns chunks, records,
divergence, events, checkpoints and progress, the same for every method.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

from ._describe import describe
from ._ensemble import AbstractStepper, RunPlan, run_plan
from ._events import AbstractEvent, RunInfo, bind_events, check_events, event_config
from ._first_passage import FirstPassage
from ._noise import AbstractGradientNoise, NoNoise
from ._options import Ensemble, Output, Record, check_options
from ._problem import Problem
from ._resetting import AbstractResetLaw, PerStepReset, Resetting
from ._results import EnsembleResult
from ._schedules import rates
from ._stability import warn_if_unstable
from ._validation import check_int_range


class AbstractMethod(eqx.Module):
    """A way to move N paths through time on a problem: discrete SGD, an SDE solver, SVAG, or a user's own.

    ``plan`` validates the run and returns the engine's ``RunPlan`` (a stepper for n paths, the step sizes,
    the time unit and the configuration record); a discrete method (one step per SGD step on a ``Problem``)
    defines only ``stepper``, whose carry may be any PyTree with a projection to θ (``AbstractStepper.theta``:
    momentum's (θ, v) runs on the same engine). ``reset_law`` says what a reset at rate r means per step (the
    ``Resetting`` event asks); ``moves_theta`` whether its stepper lets events move θ."""

    noise: eqx.AbstractVar[AbstractGradientNoise | None]

    def plan(
        self,
        problem,
        theta0,
        *,
        lr,
        n_steps: int,
        key,
        ensemble: Ensemble,
        record: Record,
        output: Output,
        events: tuple[AbstractEvent, ...],
    ) -> RunPlan:
        """The validated run (ValueError naming a wrong argument). This one is a discrete method's on a
        ``Problem``, one ``stepper`` call per SGD step: the problem, noise, θ₀, step sizes (and GD's stability
        limit), dtype, events and configuration record; a method that needs more overrides it (SDE, SVAG)."""
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
        noise = NoNoise() if self.noise is None else self.noise
        check_options(ensemble, record, output)
        noise.check(problem)
        problem.check_theta(theta0, "theta0")
        etas = rates(lr, check_int_range("n_steps", n_steps, 1))
        warn_if_unstable(problem, theta0, etas, self.stability_limit())
        dtype = ensemble.resolved_dtype(problem.X.dtype)
        same = dtype == problem.X.dtype == problem.y.dtype
        dtype_problem = problem if same else problem.astype(dtype)
        config = {
            "simulator": type(self).__name__.lower(),
            "noise": describe(noise),
            "model": describe(problem.model),
            "n_data": problem.n_data,
            "lr": lr if np.ndim(lr) == 0 and not callable(lr) else describe(lr),
        }
        config.update(self.check_run(problem, theta0, dtype))
        bound = bind_events(events, RunInfo(problem, problem.n_params, etas, theta0, self, dtype=dtype))
        config.update(event_config(events))
        return RunPlan(
            lambda n: self.stepper(dtype_problem, n),
            method=output.label or self.label(),
            theta0=theta0,
            n_params=problem.n_params,
            lr=etas,
            n_steps=n_steps,
            key=key,
            ensemble=ensemble,
            record=record,
            output=output,
            dtype=dtype,
            config=config,
            events=bound,
        )

    def stepper(self, problem: Problem, n_paths: int) -> AbstractStepper:
        """The stepper that moves ``n_paths`` paths one SGD step on ``problem`` (in the run's dtype)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define stepper(problem, n_paths), or plan(...) for a run that is not "
            "one stepper call per SGD step on a Problem"
        )

    def stability_limit(self) -> tuple[float, str] | None:
        """(c, name): the step is locally unstable on a quadratic when $\\eta\\lambda_{\\max} \\ge c$ (GD: 2); None:
        no such limit to warn about."""
        return (2.0, "GD")

    def check_run(self, problem: Problem, theta0, dtype) -> dict:
        """Checks of the method's own options against the run (ValueError naming one that does not fit); the
        entries they add to the configuration record."""
        return {}

    def label(self) -> str:
        """The run's name in results and progress (``Output(label=...)`` overrides it)."""
        return type(self).__name__

    def reset_law(self) -> AbstractResetLaw:
        """A reset per step of time Δt at rate r: a discrete method's Bernoulli coin, $P = r\\,\\Delta t$."""
        return PerStepReset()

    @property
    def moves_theta(self) -> bool:
        """Whether events may replace θ between steps (resetting, absorbing first passage)."""
        return True


def check_noise(noise, what: str = "noise") -> AbstractGradientNoise | None:
    """``noise`` if it is a noise model or None; TypeError naming ``what`` otherwise (a method given where a
    noise is expected says so)."""
    if noise is None or isinstance(noise, AbstractGradientNoise):
        return noise
    if isinstance(noise, AbstractMethod):
        raise TypeError(
            f"{what} must be a noise model (e.g. sgdsde.LabelNoise(...)) or None, got the method "
            f"{type(noise).__name__}; a method goes first in sgdsde.simulate(method, problem, theta0, ...)"
        )
    raise TypeError(f"{what} must be an AbstractGradientNoise or None, got {type(noise).__name__}")


def check_method(method) -> AbstractMethod:
    """``method`` if it is a method; TypeError naming it and the valid choices otherwise."""
    if isinstance(method, AbstractMethod):
        return method
    if isinstance(method, AbstractGradientNoise):
        raise TypeError(
            f"method must be a method, got the noise model {type(method).__name__}: wrap it as "
            f"sgdsde.SGD({type(method).__name__}(...)), sgdsde.SDE(...) or sgdsde.SVAG(..., l=...)"
        )
    raise TypeError(
        "method must be sgdsde.SGD(noise), sgdsde.SDE(noise, ...), sgdsde.SVAG(noise, l) or an "
        f"sgdsde.AbstractMethod, got {type(method).__name__}"
    )


def legacy_events(resetting, first_passage, events=()) -> tuple[AbstractEvent, ...]:
    """The events of the keyword spelling ``resetting=``, ``first_passage=`` (first passage first), then
    ``events``."""
    out = []
    if first_passage is not None:
        if not isinstance(first_passage, FirstPassage):
            raise ValueError(
                f"first_passage must be a sgdsde.FirstPassage(...), got {type(first_passage).__name__}"
            )
        out.append(first_passage)
    if resetting is not None:
        if not isinstance(resetting, Resetting):
            raise ValueError(f"resetting must be a sgdsde.Resetting(...), got {type(resetting).__name__}")
        out.append(resetting)
    return check_events(tuple(out) + check_events(events))


def legacy_plan(method: AbstractMethod, problem, theta0, *, resetting, first_passage, **run) -> RunPlan:
    """``method.plan`` for the keyword spelling ``simulate_x(problem, noise, θ₀, …, resetting=,
    first_passage=)`` (``run``: lr, n_steps, key, ensemble, record, output)."""
    return method.plan(problem, theta0, events=legacy_events(resetting, first_passage), **run)


def simulate(
    method: AbstractMethod,
    problem,
    theta0,
    *,
    lr,
    n_steps: int,
    key,
    ensemble: Ensemble = Ensemble(),
    record: Record = Record(),
    output: Output = Output(),
    events: tuple[AbstractEvent, ...] = (),
) -> EnsembleResult:
    """Simulate N paths of ``method`` on ``problem`` from θ₀, on SGD's clock $t_k = \\sum_{j<k}\\eta_j$.

    Args:
        method: ``SGD(noise)`` (discrete SGD, the ground truth), ``SDE(noise, order=, solver=, stepping=,
            increments=)`` (SGD's SDE through diffrax), ``SVAG(noise, l)``, or an ``AbstractMethod``.
        problem: a ``Problem`` (model + data + loss); for ``SDE``, also an ``AbstractSDE`` (a user's SDE).
        theta0: (d,) shared start, or (n_paths, d).
        lr: a float, a schedule (callable of the step), or an array of n_steps step sizes.
        n_steps: number of SGD steps T.
        key: JAX key or int seed, the only source of randomness (the same key gives the same draws).
        ensemble, record, output: ``Ensemble(...)``, ``Record(...)``, ``Output(...)``.
        events: ``Resetting(...)``, ``FirstPassage(...)`` or any ``AbstractEvent``; each reports in
            ``result.reports[name]``.

    Returns:
        EnsembleResult with the same time grid for every method given the same lr, n_steps and record.
    """
    method = check_method(method)
    plan = method.plan(
        problem,
        theta0,
        lr=lr,
        n_steps=n_steps,
        key=key,
        ensemble=ensemble,
        record=record,
        output=output,
        events=check_events(events),
    )
    return run_plan(plan)
