"""The theory's prediction for a label-noise run: λ = ησ²/B and the stationary points of L + λR."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from .._noise import AbstractGradientNoise
from .._problem import Problem
from .._regularizers import (
    AbstractRegularizer,
    HessianTraceRegularizer,
    TraceLogRegularizer,
    effective_lambda,
)
from .._regularizers.base import matrix_free
from .._schedules import learning_rates
from .._validation import check_positive
from ._common import check_theta, float64_problem, fmt, render_table
from ._spaces import function_weights
from ._stationary import StationaryPoint, StationaryPointError, stationary_point


@dataclasses.dataclass
class Prediction:
    """λ and, per regularizer, the stationary point of L + λR near θ_init, or why there is none.

    ``points[name]`` is a converged StationaryPoint; ``failures[name]`` says why a regularizer gives no
    prediction (outside its domain, or the solve did not converge).
    """

    lam: float
    lr: float
    noise: str
    points: dict[str, StationaryPoint]
    failures: dict[str, str]

    @property
    def primary(self) -> str:
        """The regularizer the verdict compares with first: the tr-log form when it is defined."""
        for name in ("R_trace_log", "R_quarter_trace"):
            if name in self.points:
                return name
        if self.points:
            return next(iter(self.points))
        raise ValueError(f"no regularizer gave a prediction: {self.failures}")

    def point(self, name: str | None = None) -> StationaryPoint:
        """The stationary point for ``name`` (default ``primary``); raise if that R gave none."""
        name = self.primary if name is None else name
        if name in self.points:
            return self.points[name]
        raise ValueError(f"no prediction for {name}: {self.failures.get(name, 'not requested')}")

    def table(self) -> str:
        rows = []
        for name, p in self.points.items():
            rows.append(
                [name, fmt(self.lam), fmt(p.loss), fmt(p.reg_value), f"{p.residual:.2g}", p.kind, "solved"]
            )
        for name, why in self.failures.items():
            rows.append([name, fmt(self.lam), "-", "-", "-", "-", f"NO PREDICTION: {why}"])
        head = (
            f"prediction for {self.noise} at lr={self.lr:g}: lambda = {self.lam:.4g} (stationary points of "
            "L + lambda R as solved; check_convergence says whether a run reached them)\n"
        )
        return head + render_table(["regularizer", "lambda", "L", "R", "|grad|", "kind", "status"], rows)

    def __str__(self) -> str:
        return self.table()


def predict(
    problem: Problem,
    noise: AbstractGradientNoise,
    lr: float,
    theta_init,
    *,
    regularizers: list[AbstractRegularizer] | None = None,
    lam: float | None = None,
    **solve_kwargs,
) -> Prediction:
    """λ (the noise's own, ησ²/B for label noise) and the stationary points of L + λR for Damian's tr-log R
    and its limit ¼ tr∇²L, at one constant step size (``predict_phases`` for a step-decay schedule).

    Args:
        problem: the problem.
        noise: the run's noise: any noise model that defines λ (``noise.effective_lambda``: LabelNoise,
            FullGradientLabelNoise), or any noise with an explicit ``lam``.
        lr: the constant step size η (also the η of the tr-log R).
        theta_init: where to start the solves (e.g. the end of a run, or a theory point).
        regularizers: default (¼ tr∇²L, tr-log at η); the ¼ tr point seeds the tr-log solve.
        lam: override λ (e.g. for a noise with no label-noise λ).
        **solve_kwargs: passed to ``stationary_point``.

    Returns:
        Prediction; a regularizer outside its domain or whose solve fails is listed in ``failures``,
        never given a number (theory/implicit-regularization.md, REG-5, REG-6).
    """
    problem = float64_problem(problem)
    eta = check_positive("lr", lr)
    th0 = check_theta(problem, theta_init, "theta_init")
    lam = (
        effective_lambda(noise, eta, problem) if lam is None else check_positive("lam", lam, allow_zero=True)
    )
    if regularizers is None:
        regularizers = [HessianTraceRegularizer(), TraceLogRegularizer(eta)]
    points: dict[str, StationaryPoint] = {}
    failures: dict[str, str] = {}
    start = th0
    for reg in regularizers:
        try:
            # the theory needs R defined where the run starts, not only at the answer
            reg.check_domain(problem, th0)
            try:
                p = stationary_point(problem, reg, lam, start, on_failure="raise", **solve_kwargs)
            except (ValueError, StationaryPointError):
                if start is th0:
                    raise
                p = stationary_point(problem, reg, lam, th0, on_failure="raise", **solve_kwargs)
        except (ValueError, StationaryPointError) as err:
            failures[reg.name] = str(err)
            continue
        points[reg.name] = p
        start = p.theta
    return Prediction(lam=lam, lr=eta, noise=describe_noise(noise), points=points, failures=failures)


@dataclasses.dataclass
class Phase:
    """A constant-step-size phase of a schedule: steps [start, stop), SDE times [t_start, t_stop], its η and
    its prediction (λ = λ(η) and the stationary points of L + λR)."""

    start: int
    stop: int
    t_start: float
    t_stop: float
    lr: float
    prediction: Prediction

    @property
    def t_range(self) -> tuple[float, float]:
        """The phase's time window, for ``check_convergence(..., t_range=phase.t_range)``."""
        return (self.t_start, self.t_stop)


def predict_phases(
    problem: Problem,
    noise: AbstractGradientNoise,
    lr,
    n_steps: int,
    theta_init,
    *,
    lam: Callable[[float], float] | None = None,
    **kwargs,
) -> list[Phase]:
    """One prediction per constant-η phase of a schedule (e.g. ``StepDecayLR``): λ = λ(η_phase) and the
    stationary points of L + λR with the tr-log R at that η (theory/implicit-regularization.md, REG-5).

    Each phase's solve starts from the previous phase's point. A schedule that never holds η constant (a
    cosine) has as many phases as steps: give a step-decay schedule or constant pieces.

    Args:
        lr: a float, schedule or array of n_steps step sizes (as the simulators take it).
        n_steps: the run's number of SGD steps.
        lam: None (the noise's λ at each phase's η), or a callable η ↦ λ.
        theta_init, **kwargs: as in ``predict``.

    Returns:
        The phases in order, with times on the simulators' clock t_k = Σ_{j<k} η_j.
    """
    etas = learning_rates(lr, n_steps)
    if lam is not None and not callable(lam):
        raise ValueError(f"lam must be None or a callable lr -> lambda for phases, got {type(lam).__name__}")
    cuts = np.flatnonzero(np.diff(etas) != 0) + 1
    starts = np.r_[0, cuts]
    stops = np.r_[cuts, n_steps]
    if len(starts) > 64:
        raise ValueError(
            f"lr changes {len(starts) - 1} times in {n_steps} steps: give a schedule with constant phases "
            "(StepDecayLR, or an array of constant pieces)"
        )
    clock = np.concatenate([[0.0], np.cumsum(etas)])
    phases, start = [], theta_init
    for a, b in zip(starts, stops, strict=True):
        eta = float(etas[a])
        pred = predict(problem, noise, eta, start, lam=None if lam is None else lam(eta), **kwargs)
        phases.append(Phase(int(a), int(b), float(clock[a]), float(clock[b]), eta, pred))
        if pred.points:
            start = pred.point().theta
    return phases


def describe_noise(noise) -> str:
    """'LabelNoise(sigma=1, batch_size=None, …)': the noise's scalar fields, arrays shown as numbers."""
    if noise is None:
        return "GD"
    fields = []
    for name, value in vars(noise).items():
        if isinstance(value, (jax.Array, np.ndarray)):
            if value.shape != ():
                continue
            value = float(value)
        if isinstance(value, float):
            fields.append(f"{name}={value:g}")
        elif isinstance(value, (int, str, type(None))):
            fields.append(f"{name}={value!r}")
    return f"{type(noise).__name__}({', '.join(fields)})"


DOMAIN_KEY = "R_trace_log_defined"
BETA_KEY = "beta"
ABS_THETA_KEY = "abs_theta"


def regularizer_observables(lr: float, extra: dict | None = None, problem: Problem | None = None) -> dict:
    """Observables for ``simulate_sgd``/``simulate_sde`` that ``check_convergence`` reads: θ, |θ| (for the
    collapse report), L and both R; with ``problem`` a reparametrized linear predictor, also β = weights(θ).

    Args:
        lr: one constant step size η (the tr-log R depends on η). A schedule is refused: under a step-decay
            schedule, record with the η of the phase you check (``predict_phases`` gives each phase's ``lr``);
            the tr-log observable is R at that η in every phase.
        extra: more observables, name → (problem, θ) ↦ value.
        problem: the problem, to add "beta" when its model is a diagonal network (REG-15). Above
            ``MAX_DENSE_PARAMS`` parameters both R observables are left out (CURV-5): tr-log has no exact
            matrix-free form, and ¼tr∇²L costs d Hessian-vector products per record and path; the verdict
            reads θ (give an R through ``extra`` to record it anyway).
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"lr must be one constant step size (a positive number), got {type(lr).__name__}: the tr-log R "
            "depends on η, and an observable has no step index; for a schedule, pass the η of the phase that "
            "check_convergence(t_range=phase.t_range) will judge (predict_phases gives each phase's lr)"
        )
    eta = check_positive("lr", lr)
    obs = {
        "theta": lambda problem, theta: theta,
        ABS_THETA_KEY: lambda problem, theta: abs(theta),
        "loss": lambda problem, theta: problem.loss(theta),
    }
    if problem is not None:
        weights = function_weights(problem)
        if weights is not None:
            obs[BETA_KEY] = lambda problem, theta: problem.model.weights(theta)
    if problem is None or not matrix_free(problem):
        trace_log = TraceLogRegularizer(eta)
        for reg in (HessianTraceRegularizer(), trace_log):
            obs[reg.name] = reg.observable()
        obs[DOMAIN_KEY] = trace_log.domain_observable()
    obs.update(extra or {})
    return obs
