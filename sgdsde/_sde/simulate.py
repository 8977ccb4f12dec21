"""simulate_sde: N paths of the SME on SGD's clock $t_k = \\sum_{j<k}\\eta_j$, through the shared ensemble
engine."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._ensemble import RunPlan, check_theta0, simulator
from .._events import RunInfo, bind_events, event_config
from .._first_passage import FirstPassage
from .._method import AbstractMethod, check_noise, legacy_plan
from .._noise import AbstractGradientNoise, require_sde_side
from .._noise.base import NoiseType
from .._optimizers import AbstractOptimizer, check_optimizer
from .._options import Ensemble, Output, Record, check_options
from .._problem import Problem
from .._resetting import AbstractResetLaw, PoissonReset, Resetting
from .._results import EnsembleResult, describe
from .._schedules import rates
from .._validation import check_int_range
from .base import AbstractSDE
from .fixed import Fixed
from .increments import AbstractIncrements, increments_choices
from .optimizer_sdes import check_optimizer_sde, optimizer_sde
from .sme import SME
from .solvers import PlatenWeak2, calculus, check_solver
from .stepping import AbstractStepping, StepperSetup


def _input_dtype(theta0) -> np.dtype:
    """The dtype of a run without a problem: θ₀'s if floating (as JAX would hold it: float64 needs x64), else
    JAX's default float."""
    dt = np.asarray(theta0).dtype
    if not np.issubdtype(dt, np.floating):
        return np.dtype(jnp.result_type(float))
    return np.dtype(jax.dtypes.canonicalize_dtype(dt))


def _check_declared_noise(sde: AbstractSDE, theta0: np.ndarray, eta: float) -> None:
    """Verify the declared noise structure at y₀ = init_state(θ₀) (a wrong declaration would make a solver
    solve another SDE)."""
    if sde.noise_type == NoiseType.GENERAL:
        return
    p = sde.state_dim(theta0.shape[-1])
    if p * p * sde.noise_dim(theta0.shape[-1], np.float32) > 10**7:
        return  # ∂A is p × m × p: a check past this size would cost more than the run (FMOD-2)
    sde32 = sde.astype(np.float32)
    th = sde32.init_state(jnp.asarray(theta0 if theta0.ndim == 1 else theta0[0], jnp.float32))
    A = sde32.factor(th)
    dA = jax.jacfwd(sde32.factor)(th)  # (p, m, p)
    scale = float(jnp.max(jnp.abs(A))) + 1e-30
    if sde.noise_type == NoiseType.ADDITIVE:
        bad = float(jnp.max(jnp.abs(dA))) > 1e-5 * max(scale, 1.0)
    else:
        L = jnp.einsum("ijk,kl->ijl", dA, A)  # L[:, j, l] = (∂A_j) A_l
        bad = float(jnp.max(jnp.abs(L - jnp.swapaxes(L, 1, 2)))) > 1e-5 * max(scale, 1.0) ** 2
    if bad:
        raise ValueError(
            f"the SDE declares {sde.noise_type} noise, but its factor at theta0 is not {sde.noise_type}"
        )


class SDE(AbstractMethod):
    """SGD's SDE through diffrax: N paths on SGD's clock, the same engine and result as ``SGD``.

    $d\\theta = -\\nabla(L + \\tfrac{(o-1)\\eta}{4}\\|\\nabla L\\|^2)\\,dt + \\sqrt{\\eta_k}\\,A(\\theta)\\,dW$ on
    $[t_k, t_{k+1}]$, $t_k = \\sum_{j<k}\\eta_j$, A = ``noise.covariance_factor`` (theory/sde.md, SDE-1..SDE-6).

    Args:
        noise: the gradient-noise model whose covariance the SDE carries (None with a problem: no noise,
            gradient flow; None when the run's problem is an ``AbstractSDE``, which fixes its own noise).
        order: SME order, 1 or 2 (None: 1); only for an SME built from a problem and a noise.
        solver, stepping, increments: as in ``simulate_sde``.
        optimizer: None (SGD's SME, as above) or an optimizer whose SDE is known (``Momentum(β)``: Li–Tai–E's
            momentum SME in the state (θ, m), theory/momentum-sde.md); the SDE comes from the registry
            ``sgdsde._sde.optimizer_sdes.OPTIMIZER_SDES``, and an optimizer without one is refused by name.

    Resetting under an SDE is Poissonian (``reset_law``: probability 1 − e^{−rη_k} per SGD step, RESET-4);
    ``Resetting(optimizer=True)`` restarts the state beyond θ (y ← init_state(θ)).
    """

    noise: AbstractGradientNoise | None = None
    order: int | None = None
    solver: Any = None
    stepping: AbstractStepping = Fixed()
    increments: AbstractIncrements | None = None
    optimizer: AbstractOptimizer | None = eqx.field(default=None, converter=check_optimizer)

    def __check_init__(self):
        if check_noise(self.noise) is not None:
            require_sde_side(self.noise, "SME")  # the SME this method builds needs it
        if self.order is not None and (isinstance(self.order, bool) or self.order not in (1, 2)):
            raise ValueError(f"order must be 1 or 2, got {self.order!r}")
        if self.optimizer is not None:
            check_optimizer_sde(self.optimizer)  # an optimizer without a known SDE is refused by name
        if not isinstance(self.stepping, AbstractStepping):
            raise ValueError(
                f"stepping must be sgdsde.Fixed(...) or sgdsde.Adaptive(...), got {type(self.stepping).__name__}"
            )
        if self.increments is not None and not isinstance(self.increments, AbstractIncrements):
            raise ValueError(f"increments must be {increments_choices()}, got {self.increments!r}")

    def reset_law(self) -> AbstractResetLaw:
        """Poissonian resetting in time t = Ση: $P = 1 - e^{-r\\,\\Delta t}$ per step (RESET-4)."""
        return PoissonReset()

    def _sde_for(self, problem) -> AbstractSDE:
        """The SDE to integrate: the SME of the problem and noise, or the AbstractSDE given as the problem."""
        if isinstance(problem, AbstractSDE):
            if self.noise is not None:
                raise ValueError(
                    "give noise=None when passing an AbstractSDE (its factor already fixes the noise)"
                )
            if self.optimizer is not None:
                raise ValueError(
                    "give optimizer=None when passing an AbstractSDE (it fixes its own state and drift); "
                    "optimizer= builds the optimizer's SDE from a problem and a noise"
                )
            if self.order is not None and self.order != getattr(problem, "order", None):
                raise ValueError(
                    f"order={self.order} applies to the SME built from a problem and a noise; this "
                    f"{type(problem).__name__} fixes its own drift (give order=None)"
                )
            return problem
        if isinstance(problem, Problem):
            noise = None if self.noise is None else require_sde_side(self.noise, "SME")  # checked at init
            if self.optimizer is not None:
                return optimizer_sde(problem, noise, self.optimizer, self.order)
            return SME(problem, noise, 1 if self.order is None else self.order)
        raise ValueError(f"problem must be a sgdsde.Problem or an AbstractSDE, got {type(problem).__name__}")

    def plan(self, problem, theta0, *, lr, n_steps, key, ensemble, record, output, events) -> RunPlan:
        sde = self._sde_for(problem)
        if theta0 is None:
            raise ValueError("theta0 is required")
        check_options(ensemble, record, output)
        etas = rates(lr, check_int_range("n_steps", n_steps, 1))
        solver = diffrax.Euler() if self.solver is None else self.solver
        info = check_solver(solver, sde.noise_type)
        if isinstance(solver, PlatenWeak2):
            solver = PlatenWeak2(noise=sde.noise_type)
        d = _theta_dim(theta0)
        th0 = check_theta0(theta0, d, ensemble.n_paths)
        if sde.problem is not None:
            sde.problem.check_theta(theta0, "theta0")
        default = sde.problem.X.dtype if sde.problem is not None else _input_dtype(theta0)
        sde.check_shapes(d, default)  # in the problem's dtype: a float32 problem under x64 mixes no dtypes
        _check_declared_noise(sde, th0, etas.first)
        dtype = ensemble.resolved_dtype(default)
        dtype_sde = sde.astype(dtype)
        m = dtype_sde.noise_dim(d, dtype)
        if isinstance(dtype_sde, SME) and isinstance(solver, diffrax.Euler):
            dtype_sde = dtype_sde.euler_form()  # B-free: sweeps over the batch size reuse the compiled step
        # the solver's own random input, or the one the increments option asks for (it refuses a solver it
        # cannot drive)
        control = info.control.for_sde(sde.noise_type, m)
        if self.increments is not None:
            control = self.increments.control(control, solver)
        stratonovich = calculus(solver) == "stratonovich" and sde.noise_type != NoiseType.ADDITIVE
        p = sde.state_dim(d)  # checked by check_shapes
        setup = StepperSetup(
            dtype_sde, solver, info, self.increments, control, stratonovich, m, p, etas, n_steps, record
        )
        stepping = self.stepping.stepper(setup)
        config = {
            "simulator": "sde",
            "sde": type(sde).__name__,
            "order": getattr(sde, "order", None),
            "noise": describe(self.noise) if self.noise is not None else sde.noise_type,
            "solver": type(solver).__name__,
            "calculus": calculus(solver),
            "increments": control.name,
            "substeps": stepping.substeps,
            "lr": lr if np.ndim(lr) == 0 and not callable(lr) else describe(lr),
        }
        if self.optimizer is not None:
            config["optimizer"] = self.optimizer.description(d)
        config.update(stepping.config)
        if sde.problem is None:
            record = _problemless_record(record)
        if p != d:
            _check_bridge_beyond_theta(events, type(sde).__name__)
        run = RunInfo(sde.problem, d, etas, th0, self, dtype_sde, stepping.steps_per_call, dtype)
        bound = bind_events(events, run)
        config.update(event_config(events))
        return RunPlan(
            stepping.stepper,
            method=output.label or f"{type(sde).__name__}-{type(solver).__name__}",
            theta0=theta0,
            n_params=d,
            lr=etas,
            n_steps=n_steps,
            key=key,
            ensemble=ensemble,
            record=record,
            output=output,
            dtype=dtype,
            config=config,
            steps_per_call=stepping.steps_per_call,
            events=bound,
            finish=functools.partial(_warn_failed_solves, max_steps=stepping.max_steps),
        )


def _check_bridge_beyond_theta(events, name: str) -> None:
    """The first-passage bridge test takes its rate from the diffusion at θ, which an SDE whose state extends
    θ does not have: ValueError naming the options that work (a given rate, or grid points only)."""
    for e in events:
        if isinstance(e, FirstPassage) and e.target is None and e.bridge and e.bridge_variance is None:
            raise ValueError(
                f"FirstPassage: the bridge test's rate comes from the SDE's diffusion at theta, and {name}'s state "
                "extends theta; give bridge_variance= (the observable's diffusion rate) or bridge=False (grid "
                "points only; under MomentumSME theta has no diffusion, so the grid misses no O(sqrt(lr)) Brownian excursions)"
            )


def _theta_dim(theta0) -> int:
    """d of a (d,) or (n_paths, d) θ₀ (an SDE without a problem learns d from it)."""
    try:
        shape = np.shape(theta0)
    except ValueError:
        raise ValueError("theta0 must be a real array, got a ragged sequence") from None
    if isinstance(theta0, (str, bytes)) or len(shape) == 0 or shape[-1] < 1:
        raise ValueError(f"theta0 must be a (d,) or (n_paths, d) array, got {theta0!r}")
    return shape[-1]


def _problemless_record(record: Record) -> Record:
    """An SDE given by functions alone has no loss: ‖θ‖² by default, problem-based observables refused."""
    observables = ("sq_norm",) if record.observables is None else record.observables
    needs_problem = {"loss", "grad_sq_norm", "trace_gauss_newton"}
    if not isinstance(observables, Mapping) and needs_problem & set(observables):
        raise ValueError(
            f"observables {sorted(needs_problem & set(observables))} need a problem; this SDE has none "
            "(pass problem= to FunctionSDE, or record functions of theta)"
        )
    return Record(record.every, observables, record.n_saved_paths)


def plan_sde(
    problem,
    noise: AbstractGradientNoise | None = None,
    theta0=None,
    *,
    lr,
    n_steps: int,
    key,
    order: int | None = 1,
    solver=None,
    stepping: AbstractStepping = Fixed(),
    increments: AbstractIncrements | None = None,
    optimizer=None,
    ensemble: Ensemble = Ensemble(),
    record: Record = Record(),
    output: Output = Output(),
    resetting: Resetting | None = None,
    first_passage: FirstPassage | None = None,
) -> RunPlan:
    """Simulate N paths of SGD's SDE on SGD's clock, as one jitted scan (same engine and result as
    simulate_sgd).

    $d\\theta = -\\nabla(L + \\tfrac{(o-1)\\eta}{4}\\|\\nabla L\\|^2)\\,dt + \\sqrt{\\eta_k}\\,A(\\theta)\\,dW$ on
    $[t_k, t_{k+1}]$, $t_k = \\sum_{j<k}\\eta_j$, A = ``noise.covariance_factor`` (theory/sde.md, SDE-1..SDE-6).

    Args:
        problem: a Problem (with ``noise`` and ``order``: the SME), or any AbstractSDE (then noise=None; a
            ``FunctionSDE`` is in its own time units, its diffusion not scaled by √η: SDE-9).
        noise: the gradient-noise model whose covariance the SDE carries.
        theta0: (d,) or (n_paths, d) start.
        lr: float, schedule or array of n_steps step sizes: SGD's; record k is at time t_k.
        n_steps: number of SGD steps covered (the SDE runs to $t = \\sum_k \\eta_k$).
        key: JAX key or int seed. With ``increments=CoupledToSGD()`` and dt = η, the same key as simulate_sgd
            with GaussianNoise/SphericalGaussianNoise gives the same noise: Euler then reproduces that SGD run.
            The same key from another θ₀ gives the same increments (common random numbers).
        order: SME order, 1 or 2.
        solver: a diffrax solver or PlatenWeak2 (default Euler). Itô: Euler (any noise; strong 0.5, weak 1),
            ItoMilstein (commutative; strong 1, weak 1), PlatenWeak2 (any noise; weak 2). Stratonovich solvers
            (Heun, EulerHeun, GeneralShARK, SPaRK: general noise; StratonovichMilstein: commutative) get the
            Itô→Stratonovich drift correction; SRA1, ShARK (strong 1.5, weak 2) need additive noise.
        stepping: ``Fixed(substeps=k)`` (dt = η_k/k) or ``Fixed(dt=lr/k)`` (constant lr); default one step of
            dt = η_k. ``Adaptive(controller, max_steps)``: each path integrates every record interval (every
            SGD step under a schedule) with the controller (default a PID controller) on its own
            VirtualBrownianTree (SDE-8); needs a solver with an error estimate (Heun, SPaRK; SRA1, ShARK for
            additive noise); accepted/rejected step totals go to ``result.config["solver_stats"]``.
        increments: ``Gaussian()`` (Brownian, fastest layout), ``CoupledToSGD()`` (sharing simulate_sgd's
            draws), ``TwoPoint()`` (±√dt, weak Euler only), or None (the solver's natural choice).
        ensemble, record, output: as in simulate_sgd (dtype None: the problem's; for an SDE without a
            problem, θ₀'s floating dtype, else JAX's default float: float64 with jax_enable_x64).
        resetting: ``Resetting(rate, checkpoint)``: Poissonian resetting at ``rate`` per unit time; a path
            whose Poisson clock rings during an SGD step (probability 1 − e^{−rate·η_k}) is reset at the step's
            end (RESET-4).
        first_passage: ``FirstPassage(...)``, checked after every SGD step (``bridge_variance``: also between
            grid points, RESET-6).
        optimizer: None (SGD's SME) or an optimizer whose SDE is known: ``SDE(noise, optimizer=...)``.

    Returns:
        EnsembleResult on the same time grid as simulate_sgd with the same lr, n_steps and record.every.


    ``simulate(SDE(noise, order=, solver=, stepping=, increments=), problem, θ₀, ...)`` in the keyword
    spelling of events. ``plan_sde`` validates and returns the engine's RunPlan (what a sweep batches); ``simulate_sde``
    runs it.
    """
    if isinstance(problem, AbstractSDE) and order == 1:
        order = None  # the default: an SDE object fixes its own drift
    method = SDE(check_noise(noise), order, solver, stepping, increments, optimizer)
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


def _warn_failed_solves(result: EnsembleResult, max_steps) -> EnsembleResult:
    failed = result.config.get("solver_stats", {}).get("failed_solves", 0)
    if failed:
        warnings.warn(
            f"{failed} adaptive solves failed (max_steps={max_steps} reached, or the controller could not meet "
            "its tolerances): those paths are reported as diverged; raise max_steps, loosen rtol/atol, or record "
            "more often (each record interval is one solve)",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


simulate_sde = simulator(plan_sde)
