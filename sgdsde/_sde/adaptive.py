"""Adaptive stepping: each path integrates a whole interval with a PID-controlled solver on its own
virtual Brownian tree (theory/sde.md, SDE-8).

Fixed steps share one draw for all paths per step (the fast layout); adaptive steps differ per path, so the
Brownian motion must be queryable at any time, consistently after rejected steps: a
``diffrax.VirtualBrownianTree`` per path, keyed by fold_in(step key, path). This is the slow per-path RNG
(../shared/performance.md), worth it when the SDE's time scale is much longer than η (steps ≫ η) or locally
stiff (steps ≪ η where needed).
"""

from __future__ import annotations

import math
from typing import Any, cast

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from .._ensemble import AbstractStepper
from .._noise.base import NoiseType
from .._validation import check_int_range
from .base import AbstractSDE
from .solvers import SOLVERS
from .stepping import AbstractStepping, StepperSetup, SteppingPlan

# The Brownian tree resolves an interval of length T down to T / 2**TREE_DEPTH; steps finer than that would
# see linearly interpolated noise, so the controller's dtmin is set to this resolution unless given.
TREE_DEPTH = 20


class AdaptiveSDEStepper(AbstractStepper):
    """One call covers ``steps_per_call`` SGD steps, $[t_k, t_k + s\\eta_k]$: every path solves
    $d\\theta = b\\,dt + s(\\eta_k)A\\,dW$ there by ``diffeqsolve`` with the step-size controller,
    starting from dt0; a path whose solve fails (max_steps, dtmin) becomes NaN and is reported as diverged."""

    sde: AbstractSDE
    solver: Any
    controller: Any
    n_paths: int = eqx.field(static=True)
    steps_per_call: int = eqx.field(static=True)
    substeps: int = eqx.field(static=True)  # dt0 = η/substeps, the first trial step of each interval
    max_steps: int = eqx.field(static=True)
    stratonovich: bool = eqx.field(static=True)
    m: int = eqx.field(static=True)
    levy: bool = eqx.field(static=True)

    @property
    def problem(self):
        return self.sde.problem

    def init(self, key, theta0):
        zeros = jnp.zeros((self.n_paths,), jnp.int32)
        y0 = jax.vmap(self.sde.init_state)(theta0)  # the SDE's state per path (θ₀ itself for SGD's SMEs)
        return y0, jnp.zeros((), theta0.dtype), (zeros, zeros, zeros)

    def theta(self, carry):
        return jax.vmap(self.sde.theta_of)(carry[0])

    @property
    def records(self):
        return self.sde.records

    def observe(self, carry):
        return jax.vmap(self.sde.observe)(carry[0]) if self.sde.records else {}

    def with_theta(self, carry, theta):
        return (jax.vmap(self.sde.with_theta)(carry[0], theta), *carry[1:])

    def restart(self, carry, mask):
        """y ← init_state(theta_of(y)) on the paths in ``mask``."""
        y = carry[0]
        fresh = jax.vmap(lambda u: self.sde.init_state(self.sde.theta_of(u)))(y)
        return (jnp.where(mask[:, None], fresh, y), *carry[1:])

    def solver_stats(self, carry):
        accepted, rejected, failed = carry[2]
        return {
            "accepted_steps": jnp.sum(accepted),
            "rejected_steps": jnp.sum(rejected),
            "failed_solves": jnp.sum(failed),
        }

    def _drift(self, theta, eta):
        b = self.sde.drift(theta, eta)
        if self.stratonovich:
            b = b + self.sde.stratonovich_correction(theta, eta)
        return b

    def step(self, carry, k, eta, key):
        theta, t, (accepted, rejected, failed) = carry
        dtype = theta.dtype
        eta = eta.astype(dtype)
        T = self.steps_per_call * eta
        t1 = t + T
        controller = self.controller
        clipped = isinstance(controller, diffrax.ClipStepSizeController)
        # adaptive_controller checks the (wrapped) controller is a PIDController
        pid = cast(diffrax.PIDController, controller.controller if clipped else controller)
        if pid.dtmin is None:
            pid = eqx.tree_at(lambda c: c.dtmin, pid, T / 2**TREE_DEPTH, is_leaf=lambda x: x is None)
            controller = eqx.tree_at(lambda c: c.controller, controller, pid) if clipped else pid
        shape = jax.ShapeDtypeStruct((self.m,), dtype)
        levy = diffrax.SpaceTimeLevyArea if self.levy else diffrax.BrownianIncrement

        def one_path(y0, i):
            bm = diffrax.VirtualBrownianTree(
                t, t1, T / 2**TREE_DEPTH, shape, jax.random.fold_in(key, i), levy_area=levy
            )
            terms = diffrax.MultiTerm(
                diffrax.ODETerm(lambda s, y, args: self._drift(y, args)),
                diffrax.ControlTerm(lambda s, y, args: self.sde.diffusion(y, args), bm),
            )
            sol = diffrax.diffeqsolve(
                terms,
                self.solver,
                t,
                t1,
                jnp.minimum(eta / self.substeps, T),
                y0,
                args=eta,
                stepsize_controller=controller,
                saveat=diffrax.SaveAt(t1=True),
                max_steps=self.max_steps,
                throw=False,
            )
            ok = sol.result == diffrax.RESULTS.successful
            if sol.ys is None:  # SaveAt(t1=True) saves the end state
                raise RuntimeError("diffeqsolve saved no state")
            y = jnp.where(ok, sol.ys[-1], jnp.nan)
            return y, sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"], ~ok

        y, acc, rej, bad = jax.vmap(one_path)(theta, jnp.arange(self.n_paths))
        stats = (
            accepted + acc.astype(jnp.int32),
            rejected + rej.astype(jnp.int32),
            failed + bad.astype(jnp.int32),
        )
        return y, t1, stats


def adaptive_controller(adaptive, noise_type: str):
    """The step-size controller for ``simulate_sde(stepping=Adaptive(controller))``: None means
    PIDController(rtol=1e-3, atol=1e-3); with non-commutative noise it is wrapped in ClipStepSizeController(store_rejected_steps=16),
    which revisits rejected step times (Foster & Jelinčič 2024; without it the Lévy-area terms are biased)."""
    if adaptive is None:
        adaptive = diffrax.PIDController(rtol=1e-3, atol=1e-3)
    pid = adaptive.controller if isinstance(adaptive, diffrax.ClipStepSizeController) else adaptive
    if not isinstance(pid, diffrax.PIDController):
        raise ValueError(
            "Adaptive(controller=...) must be None, a diffrax.PIDController or a ClipStepSizeController "
            "wrapping one, got "
            f"{type(adaptive).__name__}"
        )
    if noise_type == NoiseType.GENERAL:
        if not isinstance(adaptive, diffrax.ClipStepSizeController):
            return diffrax.ClipStepSizeController(adaptive, store_rejected_steps=16)
        if adaptive.store_rejected_steps is None:
            raise ValueError(
                "Adaptive(controller=...): with general (non-commutative) noise the ClipStepSizeController needs "
                "store_rejected_steps (rejected steps must be revisited, Foster & Jelinčič 2024)"
            )
    return adaptive


class Adaptive(AbstractStepping):
    """Adaptive steps (SDE-8): each path integrates every record interval (every SGD step under a schedule)
    with ``controller`` (default a PID controller) on its own VirtualBrownianTree; a solve that needs more
    than ``max_steps`` steps fails and its path is reported as diverged."""

    controller: Any = None
    max_steps: int | None = None

    def __check_init__(self):
        if self.max_steps is not None:
            check_int_range("max_steps", self.max_steps, 1)
        c = self.controller
        pid = c.controller if isinstance(c, diffrax.ClipStepSizeController) else c
        if c is not None and not isinstance(pid, diffrax.PIDController):
            raise ValueError(
                "controller must be None, a diffrax.PIDController or a ClipStepSizeController wrapping one, "
                f"got {type(c).__name__}"
            )

    def stepper(self, setup: StepperSetup) -> SteppingPlan:
        """``AdaptiveSDEStepper``, one solve per record interval; needs an error-estimating solver and
        Brownian increments."""
        s = setup
        if not s.info.adaptive:
            able = ", ".join(sorted(c.__name__ for c, i in SOLVERS.items() if i.adaptive))
            raise ValueError(
                f"solver {type(s.solver).__name__} has no embedded error estimate, which adaptive stepping "
                f"needs (use one of {able})"
            )
        if s.increments is not None and not s.increments.virtual_tree:
            raise ValueError(
                "adaptive stepping draws Brownian motion from a virtual Brownian tree; increments must be "
                f"None or Gaussian(), got {s.increments!r}"
            )
        controller = adaptive_controller(self.controller, s.sde.noise_type)
        # a constant lr lets one solve span a whole record interval (steps ≫ η possible); a schedule changes
        # the diffusion √η_k at every SGD step, so each step is its own solve
        every = s.n_steps if s.record.every is None else min(s.record.every, s.n_steps)
        # gcd: one solve spans a record interval, or a common divisor when the last interval is shorter
        per_call = math.gcd(every, s.n_steps) if s.etas.uniform else 1
        max_steps = max(4096, 64 * per_call) if self.max_steps is None else self.max_steps
        levy = s.info.control.levy_area
        config = {"adaptive": repr(controller), "max_steps": max_steps, "steps_per_solve": per_call}
        stepper = lambda n: AdaptiveSDEStepper(
            s.sde, s.solver, controller, n, per_call, 1, max_steps, s.stratonovich, s.m, levy
        )
        return SteppingPlan(stepper, 1, per_call, max_steps, config)
