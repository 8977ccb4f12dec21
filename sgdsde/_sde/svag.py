"""SVAG (Li, Malladi, Arora 2021): a discrete simulator that converges to SGD's SDE as l → ∞, at finite η."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._ensemble import AbstractStepper, RunPlan, check_steps, simulator
from .._events import RunInfo, bind_events, event_config
from .._first_passage import FirstPassage
from .._method import AbstractMethod, check_noise, legacy_plan
from .._noise import AbstractGradientNoise, NoNoise
from .._options import Ensemble, Output, Record, check_options
from .._problem import Problem
from .._resetting import Resetting
from .._results import describe
from .._schedules import rates
from .._validation import check_int_range


def svag_coefficients(l: int) -> tuple[float, float]:  # noqa: E741 (the paper's name)
    """$a, c = (1 \\pm \\sqrt{2l-1})/2$: a + c = 1 and a² + c² = l (minibatch-noise.md §2(c), §9.3)."""
    r = math.sqrt(2 * l - 1)
    return (1 + r) / 2, (1 - r) / 2


class SVAGStepper(AbstractStepper):
    """$\\theta_{j+1} = \\theta_j - \\frac{\\eta}{l}(a\\,\\tilde g_1 + c\\,\\tilde g_2)$ with two
    independent stochastic
    gradients from the noise model: mean ∇L, covariance lΣ."""

    problem_: Problem
    noise: AbstractGradientNoise
    n_paths: int
    coeffs: jax.Array  # (a, c) as an array leaf, so a sweep over l does not recompile

    @property
    def problem(self):
        return self.problem_

    def init(self, key, theta0):
        k1, k2 = jax.random.split(key)
        n, dt = self.n_paths, theta0.dtype
        return theta0, (
            self.noise.init_state(self.problem_, k1, n, dt),
            self.noise.init_state(self.problem_, k2, n, dt),
        )

    def step(self, carry, k, eta, key):
        theta, (s1, s2) = carry
        k1, k2 = jax.random.split(key)
        grad = jax.vmap(self.noise.gradient, in_axes=(None, 0, 0))
        d1, s1 = self.noise.draw(self.problem_, k1, k, s1, self.n_paths, theta.dtype)
        d2, s2 = self.noise.draw(self.problem_, k2, k, s2, self.n_paths, theta.dtype)
        a, c = self.coeffs[0].astype(theta.dtype), self.coeffs[1].astype(theta.dtype)
        g = a * grad(self.problem_, theta, d1) + c * grad(self.problem_, theta, d2)
        return theta - eta * g, (s1, s2)

    def theta(self, carry):
        return carry[0]

    def with_theta(self, carry, theta):
        return theta, carry[1]


class SVAG(AbstractMethod):
    """SVAG with parameter l (Li, Malladi, Arora 2021): l steps of size η_k/l per SGD step k, gradient
    $a\\tilde g_1 + c\\tilde g_2$ from two independent draws of ``noise``; l = 1 is SGD. Records carry SGD
    step indices on the clock $t = \\sum \\eta_k$ (theory/sde.md, SDE-7).

    Args:
        noise: a gradient-noise model, or None (GD: then SVAG is GD at step η/l).
        l: integer ≥ 1.
    """

    noise: AbstractGradientNoise | None = None
    l: int = 1  # noqa: E741 (the paper's name)

    def __check_init__(self):
        check_noise(self.noise)
        check_int_range("l", self.l, 1)

    def plan(self, problem, theta0, *, lr, n_steps, key, ensemble, record, output, events) -> RunPlan:
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
        noise = NoNoise() if self.noise is None else self.noise
        l = self.l  # noqa: E741
        check_options(ensemble, record, output)
        n_steps, every = check_steps(n_steps, record)
        noise.check(problem)
        problem.check_theta(theta0, "theta0")
        etas = rates(lr, n_steps).repeat(l)
        dtype = ensemble.resolved_dtype(problem.X.dtype)
        dtype_problem = problem.astype(dtype) if dtype != problem.X.dtype else problem
        coeffs = jnp.asarray(svag_coefficients(l))
        run = RunInfo(problem, problem.n_params, etas, theta0, self, dtype=dtype)
        bound = bind_events(events, run)
        config = {"simulator": "svag", "l": l, "noise": describe(noise), "lr": describe(lr)}
        config.update(event_config(events))
        return RunPlan(
            lambda n: SVAGStepper(dtype_problem, noise, n, coeffs),
            method=output.label or f"SVAG(l={l})",
            theta0=theta0,
            n_params=problem.n_params,
            lr=etas,
            n_steps=n_steps * l,
            key=key,
            ensemble=ensemble,
            record=Record(every * l, record.observables, record.n_saved_paths),
            output=output,
            dtype=dtype,
            config=config,
            step_unit=l,
            events=bound,
        )


def plan_svag(
    problem: Problem,
    noise: AbstractGradientNoise | None,
    theta0,
    *,
    lr,
    l: int,  # noqa: E741 (the paper's name)
    n_steps: int,
    key,
    ensemble: Ensemble = Ensemble(),
    record: Record = Record(),
    output: Output = Output(),
    resetting: Resetting | None = None,
    first_passage: FirstPassage | None = None,
) -> RunPlan:
    """SVAG with parameter l: l steps of size η_k/l per SGD step k, gradient $a\\tilde g_1 + c\\tilde g_2$.

    Each SVAG step has drift $(\\eta/l)\\nabla L$ and noise covariance $(\\eta/l)\\,\\eta\\Sigma$: the SDE's
    increments over time η/l, so for g ∈ G⁴ the weak error to the SDE is O(1/l) at fixed η (Li, Malladi,
    Arora 2021, Thm; minibatch-noise.md §2(c), §9.3; theory/sde.md, SDE-7). l = 1 is SGD. Exact moments on a
    quadratic loss: ``sgdsde.analysis.svag_moments``.

    Args:
        lr, n_steps: SGD's (n_steps SGD steps = l·n_steps SVAG steps).
        l: integer ≥ 1.
        record: ``Record(every, …)`` with ``every`` in SGD steps; records (returned and saved alike) carry SGD
            step indices, on the clock $t = \\sum \\eta_k$, so results compare index by index with
            simulate_sgd/simulate_sde.
        key, ensemble, output: as in simulate_sgd.
        resetting, first_passage: as in simulate_sgd, per SVAG step (reset probability rate·η_k/l); steps
            are reported in SGD steps (rounded up).


    ``simulate(SVAG(noise, l), problem, θ₀, ...)`` in the keyword spelling of events. ``plan_svag``
    validates and returns the engine's RunPlan (what a sweep batches); ``simulate_svag``
    runs it.
    """
    method = SVAG(check_noise(noise), l)
    return legacy_plan(
        method,
        problem,
        theta0,
        resetting=resetting,
        first_passage=first_passage,
        lr=lr,
        n_steps=n_steps,
        key=key,
        ensemble=ensemble,
        record=record,
        output=output,
    )


simulate_svag = simulator(plan_svag)
