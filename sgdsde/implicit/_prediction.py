"""The theory's prediction for a label-noise run: λ = ησ²/B and the stationary points of L + λR."""

from __future__ import annotations

import dataclasses

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
from .._validation import check_positive
from ._common import check_theta, float64_problem, fmt, render_table
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
                [name, fmt(self.lam), fmt(p.loss), fmt(p.reg_value), f"{p.residual:.2g}", p.kind, "ok"]
            )
        for name, why in self.failures.items():
            rows.append([name, fmt(self.lam), "-", "-", "-", "-", f"NO PREDICTION: {why}"])
        head = f"prediction for {self.noise} at lr={self.lr:g}: lambda = {self.lam:.4g}\n"
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
    """λ = ησ²/B and the stationary points of L + λR for Damian's tr-log R and its limit ¼ tr∇²L.

    Args:
        problem: the problem.
        noise: the run's noise (``LabelNoise`` unless ``lam`` is given).
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


def regularizer_observables(lr: float, extra: dict | None = None) -> dict:
    """Observables for ``simulate_sgd``/``simulate_sde`` that ``check_convergence`` reads: θ, L and both R."""
    eta = check_positive("lr", lr)
    obs = {
        "theta": lambda problem, theta: theta,
        "loss": lambda problem, theta: problem.loss(theta),
    }
    trace_log = TraceLogRegularizer(eta)
    for reg in (HessianTraceRegularizer(), trace_log):
        obs[reg.name] = reg.observable()
    obs[DOMAIN_KEY] = trace_log.domain_observable()
    obs.update(extra or {})
    return obs
