"""SVAG (Li, Malladi, Arora 2021): a discrete simulator that converges to SGD's SDE as l → ∞, at finite η; with an
optimizer (Momentum, RMSprop, Adam), to that optimizer's SDE (theory/adaptive-sdes.md, ASDE-7)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._ensemble import AbstractStepper, RunPlan, check_steps, simulator
from .._events import RunInfo, bind_events, event_config
from .._first_passage import FirstPassage
from .._method import AbstractMethod, check_noise, legacy_plan
from .._noise import AbstractGradientNoise, NoNoise
from .._optimizers import AbstractOptimizer, Adam, Momentum, RMSprop, check_optimizer, check_state
from .._options import Ensemble, Output, Record, check_options
from .._problem import Problem
from .._resetting import Resetting
from .._results import describe
from .._schedules import rates
from .._sgd import SGDStepper
from .._validation import check_int_range


def svag_coefficients(l: int) -> tuple[float, float]:  # noqa: E741 (the paper's name)
    """$a, c = (1 \\pm \\sqrt{2l-1})/2$: a + c = 1 and a² + c² = l (minibatch-noise.md §2(c), §9.3)."""
    r = math.sqrt(2 * l - 1)
    return (1 + r) / 2, (1 - r) / 2


class SVAGStepper(AbstractStepper):
    """$\\theta_{j+1} = \\theta_j - \\frac{\\eta}{l}(a\\,\\tilde g_1 + c\\,\\tilde g_2)$ with two
    independent stochastic
    gradients from the noise model: mean ∇L, covariance lΣ."""

    absorbs_divergence = True  # θ ← θ − η(...) or θ + rτu
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


def svag_optimizer(optimizer: AbstractOptimizer | None, l: int) -> tuple[AbstractOptimizer | None, float]:  # noqa: E741
    """(optimizer_l, r): the optimizer SVAG runs at parameter l and its step size $r\\,\\eta/l$ per SVAG step
    (η/l the clock's advance), chosen so that the optimizer's SDE is unchanged by the noise covariance lΣ
    (theory/adaptive-sdes.md, ASDE-7).

    - None (SGD): unchanged, r = 1 (step η/l; SDE-7).
    - RMSprop, Adam: 1 − β → (1 − β)/l for each decay, ε → √l·ε, AdamW's w → w/√l, a warm start's
      v₀ → l·v₀, r = √l (step η/√l): Malladi et al.'s square-root rule with κ = 1/l.
    - Momentum (heavy ball): 1 − β → (1 − β)/l, w unchanged, r = 1/l (step η/l²); its buffer is l·m.

    l = 1 returns the optimizer itself and r = 1. The decays are mapped by array arithmetic (no concrete check),
    so a traced β (a sweep) maps too; the results always lie in [0, 1).

    Args:
        optimizer: None, ``Momentum`` (not Nesterov), ``RMSprop`` or ``Adam`` (ValueError naming optimizer
            for any other).
        l: integer ≥ 1.
    """
    l = check_int_range("l", l, 1)  # noqa: E741
    optimizer = check_svag_optimizer(optimizer)
    if l == 1 or optimizer is None:
        return optimizer, 1.0
    root = math.sqrt(l)
    inv = 1.0 / l
    decay = lambda b: 1 - (1 - b) * inv  # noqa: E731
    if isinstance(optimizer, RMSprop):
        new = eqx.tree_at(lambda o: (o.beta, o.eps), optimizer, (decay(optimizer.beta), optimizer.eps * root))
        return _scale_v0(new, l), root
    if isinstance(optimizer, Adam):
        new = eqx.tree_at(
            lambda o: (o.b1, o.b2, o.eps, o.weight_decay),
            optimizer,
            (
                decay(optimizer.b1),
                decay(optimizer.b2),
                optimizer.eps * root,
                optimizer.weight_decay * (1.0 / root),
            ),
        )
        return _scale_v0(new, l), root
    assert isinstance(optimizer, Momentum)
    return eqx.tree_at(lambda o: o.beta, optimizer, decay(optimizer.beta)), 1.0 / l


def _scale_v0(optimizer, l: int):  # noqa: E741
    """A warm start's v₀ → l·v₀ (the SVAG run's second moment is l·v; m₀ is kept: ASDE-7, ASDE-8)."""
    if optimizer.v0 is None:
        return optimizer
    return eqx.tree_at(lambda o: o.v0, optimizer, optimizer.v0 * l)


def check_svag_optimizer(optimizer) -> AbstractOptimizer | None:
    """None, ``Momentum`` (heavy ball), ``RMSprop`` or ``Adam``: the optimizers whose SDE SVAG's mapping keeps
    (ASDE-7); ValueError naming ``optimizer`` for Nesterov, ``Optax`` and anything else."""
    optimizer = check_optimizer(optimizer)
    if optimizer is None or isinstance(optimizer, (RMSprop, Adam)):
        return optimizer
    if isinstance(optimizer, Momentum):
        if optimizer.nesterov:
            raise ValueError(
                "optimizer: SVAG maps heavy-ball Momentum onto Li-Tai-E's SME; Momentum(nesterov=True) has no "
                "SDE here (theory/momentum-sde.md, MSDE-2), so SVAG refuses it"
            )
        return optimizer
    raise ValueError(
        "optimizer: SVAG needs an optimizer whose SDE its hyperparameter map keeps (ASDE-7): None, "
        f"sgdsde.Momentum (heavy ball), sgdsde.RMSprop or sgdsde.Adam; got {optimizer.label()}"
    )


class SVAGOptimizerStepper(AbstractStepper):
    """SVAG with an optimizer: $\\theta_{j+1} = \\theta_j + r\\tau_j u_j$, u_j the mapped optimizer's update of
    $a\\tilde g_1 + c\\tilde g_2$, τ_j = η/l the clock's step (carry (θ, (s₁, s₂), optimizer state)). It holds
    the user's optimizer and maps it inside the traced step (``svag_optimizer``), so a sweep over its decay
    (a traced leaf) maps each point."""

    absorbs_divergence = True  # θ ← θ − η(...) or θ + rτu
    problem_: Problem
    noise: AbstractGradientNoise
    n_paths: int
    coeffs: jax.Array
    optimizer: AbstractOptimizer
    l: int = eqx.field(static=True)  # noqa: E741 (the paper's name)

    @property
    def problem(self):
        return self.problem_

    @property
    def mapped(self) -> tuple[AbstractOptimizer, float]:
        opt, factor = svag_optimizer(self.optimizer, self.l)
        assert opt is not None
        return opt, factor

    def init(self, key, theta0):
        k1, k2 = jax.random.split(key)
        n, dt = self.n_paths, theta0.dtype
        states = (
            self.noise.init_state(self.problem_, k1, n, dt),
            self.noise.init_state(self.problem_, k2, n, dt),
        )
        return theta0, states, jax.vmap(self.mapped[0].init)(theta0)

    def step(self, carry, k, eta, key):
        theta, (s1, s2), opt_state = carry
        opt, factor = self.mapped
        k1, k2 = jax.random.split(key)
        grad = jax.vmap(self.noise.gradient, in_axes=(None, 0, 0))
        d1, s1 = self.noise.draw(self.problem_, k1, k, s1, self.n_paths, theta.dtype)
        d2, s2 = self.noise.draw(self.problem_, k2, k, s2, self.n_paths, theta.dtype)
        a, c = self.coeffs[0].astype(theta.dtype), self.coeffs[1].astype(theta.dtype)
        g = a * grad(self.problem_, theta, d1) + c * grad(self.problem_, theta, d2)
        u, opt_state = jax.vmap(opt.update)(g, opt_state, theta)
        return theta + (eta * factor) * u, (s1, s2), opt_state

    def theta(self, carry):
        return carry[0]

    def with_theta(self, carry, theta):
        return (theta, *carry[1:])

    @property
    def records(self):
        return self.optimizer.records

    def observe(self, carry):
        if not self.optimizer.records:
            return {}
        return jax.vmap(self.mapped[0].observe)(carry[2])

    def restart(self, carry, mask):
        fresh = jax.vmap(self.mapped[0].init)(carry[0])
        pick = lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        return (*carry[:2], jax.tree.map(pick, fresh, carry[2]))


class SVAG(AbstractMethod):
    """SVAG with parameter l (Li, Malladi, Arora 2021): l steps of size η_k/l per SGD step k, gradient
    $a\\tilde g_1 + c\\tilde g_2$ from two independent draws of ``noise``; l = 1 is SGD. Records carry SGD
    step indices on the clock $t = \\sum \\eta_k$ (theory/sde.md, SDE-7).

    With an optimizer (theory/adaptive-sdes.md, ASDE-7), the noise covariance lΣ is absorbed by the optimizer's
    hyperparameters so that its SDE is unchanged (``svag_optimizer``): RMSprop/Adam run at step η/√l with
    1 − β → (1 − β)/l and ε → √l·ε (Malladi et al.'s square-root rule at κ = 1/l), heavy-ball Momentum at
    step η/l² with 1 − β → (1 − β)/l; the clock still advances η/l per SVAG step. l = 1 with an optimizer is
    ``SGD(noise, optimizer=...)`` bit for bit.

    Args:
        noise: a gradient-noise model, or None (GD: then SVAG is GD at step η/l).
        l: integer ≥ 1.
        optimizer: None (SGD), ``Momentum(...)`` (heavy ball), ``RMSprop(...)`` or ``Adam(...)`` with the
            hyperparameters of the run at l = 1; Nesterov and ``Optax`` are refused (no SDE to keep).
    """

    noise: AbstractGradientNoise | None = None
    l: int = 1  # noqa: E741 (the paper's name)
    optimizer: AbstractOptimizer | None = None

    def __init__(self, noise: AbstractGradientNoise | None = None, l: int = 1, optimizer=None):  # noqa: E741
        self.noise = noise
        self.l = l
        self.optimizer = check_svag_optimizer(optimizer)

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
        label = f"SVAG(l={l})"
        make = lambda n: SVAGStepper(dtype_problem, noise, n, coeffs)  # noqa: E731
        if self.optimizer is not None:
            opt = self.optimizer
            check_state(opt, jnp.zeros((problem.n_params,), dtype))  # the map keeps the optimizer's shapes
            config["optimizer"] = opt.description(problem.n_params)
            label = f"{label}+{opt.label()}"
            if l == 1:  # SGD with the optimizer, the same stepper: bit for bit
                make = lambda n: SGDStepper(dtype_problem, noise, n, opt)  # noqa: E731
            else:  # the map is applied inside the stepper (traced, like a sweep's)
                make = lambda n: SVAGOptimizerStepper(dtype_problem, noise, n, coeffs, opt, l)  # noqa: E731
        return RunPlan(
            make,
            method=output.label or label,
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
    optimizer=None,
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
        optimizer: None (SGD), or ``Momentum``/``RMSprop``/``Adam`` mapped for SVAG: ``SVAG(noise, l,
            optimizer=...)`` (theory/adaptive-sdes.md, ASDE-7).


    ``simulate(SVAG(noise, l), problem, θ₀, ...)`` in the keyword spelling of events. ``plan_svag``
    validates and returns the engine's RunPlan (what a sweep batches); ``simulate_svag``
    runs it.
    """
    method = SVAG(check_noise(noise), l, optimizer)
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
