"""Fixed stepping: every SGD step of time η_k as ``substeps`` solver steps of dt = η_k/k, all paths at once
(theory/sde.md, SDE-1..SDE-6); the increments are drawn for all paths and substeps in one call, in the
fastest layout or bridged to SGD's own draws (SDE-3)."""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from .._ensemble import AbstractStepper, finite_paths
from .._validation import check_int_range, check_positive
from . import increments as inc
from .base import AbstractSDE
from .stepping import AbstractStepping, StepperSetup, SteppingPlan

# Paths go on the last axis up to this d: a short last axis is slow on CPU (../shared/performance.md);
# measured
# in scripts/bench_sde.py: d = 10 OU 1.7x faster paths-last, label-noise diagonal net d = 200 1.5x slower.
PATHS_LAST_MAX_DIM = 128


class _GivenIncrement(diffrax.AbstractPath):
    """A path whose increment over the step being taken was drawn beforehand (for all paths at once)."""

    increment: Any
    # diffrax declares t0/t1 as equinox AbstractVars, which pyright reads as ClassVars; a field is the override
    t0: float = 0.0  # pyright: ignore[reportIncompatibleVariableOverride]
    t1: float = 1.0  # pyright: ignore[reportIncompatibleVariableOverride]

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        if isinstance(self.increment, diffrax.SpaceTimeLevyArea) and not use_levy:
            return self.increment.W
        return self.increment


class _EulerIncrement(diffrax.AbstractTerm):
    """Euler's whole increment $b\\,\\Delta t + s(\\eta)A(\\theta)\\Delta W$ as one term, computed by the SDE
    (``AbstractSDE.euler_increment``: one VJP for an SME of a per-example noise, SDE-10); Euler's step only
    (``contr``, ``vf_prod``): it has no vector field of its own."""

    increment: Any  # (y, args, dt, ΔW) -> the increment
    path: _GivenIncrement

    def vf(self, t, y, args):
        raise NotImplementedError("_EulerIncrement is for diffrax.Euler, which calls vf_prod only")

    def contr(self, t0, t1, **kwargs):
        return t1 - t0, self.path.evaluate(t0, t1)

    def prod(self, vf, control):
        raise NotImplementedError("_EulerIncrement is for diffrax.Euler, which calls vf_prod only")

    def vf_prod(self, t, y, args, control):
        dt, dw = control
        return self.increment(y, args, dt, dw)


class SDEStepper(AbstractStepper):
    """One SGD step of time η_k as ``substeps`` solver steps of dt = η_k/k, all paths vmapped through the
    diffrax solver's ``step``; increments are drawn for all paths and substeps in one call."""

    sde: AbstractSDE
    solver: Any
    n_paths: int = eqx.field(static=True)
    substeps: int = eqx.field(static=True)
    control: inc.AbstractControl  # draws the steps' random inputs (no array leaves)
    stratonovich: bool = eqx.field(static=True)
    m: int = eqx.field(static=True)
    paths_last: bool = eqx.field(static=True, default=True)
    absorbs_divergence = True  # a diffrax solver step: y₁ = y₀ + (a combination of drift and diffusion terms)

    @property
    def ctrl_axis(self) -> int:
        """The path axis of the drawn increments: the state's for Gaussian/two-point increments (no
        transposes),
        0 for SGD-coupled ones (simulate_sgd's (N, m) order) and for Lévy areas and weak-2 inputs."""
        return self.control.axis(self.paths_last)

    @property
    def problem(self):
        return self.sde.problem

    @property
    def _ax(self) -> int:
        """The path axis of the state y: (p, N) paths-last, else (N, p)."""
        return 1 if self.paths_last else 0

    def init(self, key, theta0):
        # the SDE's state y₀ = init_state(θ₀) per path (θ₀ itself for SGD's SMEs); paths on the last axis:
        # batched matmuls and elementwise work run along the long axis (performance.md)
        y0 = jax.vmap(self.sde.init_state, out_axes=self._ax)(theta0)
        return y0, jnp.zeros((), theta0.dtype)

    def theta(self, carry):
        return jax.vmap(self.sde.theta_of, in_axes=self._ax)(carry[0])

    def with_theta(self, carry, theta):
        y = jax.vmap(self.sde.with_theta, in_axes=(self._ax, 0), out_axes=self._ax)(carry[0], theta)
        return y, carry[1]

    def restart(self, carry, mask):
        """y ← init_state(theta_of(y)) on the paths in ``mask`` (a reset that restarts the optimizer's
        state: the momentum of an optimizer's SDE returns to its start)."""
        y = carry[0]
        fresh = jax.vmap(
            lambda u: self.sde.init_state(self.sde.theta_of(u)), in_axes=self._ax, out_axes=self._ax
        )(y)
        keep = mask.reshape((1, -1) if self.paths_last else (-1, 1))
        return jnp.where(keep, fresh, y), carry[1]

    def path_finite(self, carry):
        return finite_paths(carry[0], axis=0 if self.paths_last else 1)

    @property
    def records(self):
        return self.sde.records

    def observe(self, carry):
        if not self.sde.records:
            return {}
        return jax.vmap(self.sde.observe, in_axes=self._ax)(carry[0])

    def _drift(self, theta, eta):
        b = self.sde.drift(theta, eta)
        if self.stratonovich:
            b = b + self.sde.stratonovich_correction(theta, eta)
        return b

    def _euler_increment(self, y, eta, dt, dw):
        """Euler's increment over dt: the SDE's ``euler_increment``, plus the Itô→Stratonovich correction's
        dt-term for a Stratonovich-targeted run."""
        d = self.sde.euler_increment(y, eta, dt, dw)
        if self.stratonovich:
            d = d + self.sde.stratonovich_correction(y, eta) * dt
        return d

    def _draw(self, key, j, dt, remaining, dtype) -> tuple[Any, Any]:
        """The random input of substep j for all paths, and the remaining bridge sum (Brownian controls)."""
        shape = (self.m, self.n_paths) if self.ctrl_axis == 1 else (self.n_paths, self.m)
        return self.control.draw(key, j, dt, remaining, shape, dtype, self.substeps)

    def step(self, carry, k, eta, key):
        theta, t = carry
        dtype = theta.dtype
        eta = eta.astype(dtype)
        dt = eta / self.substeps
        if isinstance(self.solver, diffrax.Euler):
            # Euler needs only b Δt + σ(θ)ΔW: the SDE's own increment, never forming A (d × m), and one VJP
            # of the outputs for an SME of a per-example noise (SDE-10)
            terms_of = lambda ctrl: _EulerIncrement(self._euler_increment, _GivenIncrement(ctrl))
        else:
            terms_of = lambda ctrl: diffrax.MultiTerm(
                diffrax.ODETerm(lambda s, y, args: self._drift(y, args)),
                diffrax.ControlTerm(lambda s, y, args: self.sde.diffusion(y, args), _GivenIncrement(ctrl)),
            )

        def one_path(y, ctrl, t0):
            terms = terms_of(ctrl)
            state = self.solver.init(terms, t0, t0 + dt, y, eta)
            return self.solver.step(terms, t0, t0 + dt, y, eta, state, False)[0]

        # the SGD step's Brownian increment −√η ξ, ξ drawn exactly as Gaussian-noise SGD draws it (SDE-3)
        total = None
        if self.control.bridged:
            total = -jnp.sqrt(eta) * inc.coarse_normals(key, self.n_paths, self.m, dtype)
            if self.ctrl_axis == 1:
                total = total.reshape(
                    self.m, self.n_paths
                )  # same numbers, fast layout: not SGD's per-path split

        def substep(state, j):
            y, remaining = state
            ctrl, remaining = self._draw(key, j, dt, remaining, dtype)
            ax = 1 if self.paths_last else 0
            y = jax.vmap(one_path, in_axes=(ax, self.ctrl_axis, None), out_axes=ax)(
                y, ctrl, t + j.astype(dtype) * dt
            )
            return (y, remaining), None

        if self.substeps == 1:
            (theta, _), _ = substep((theta, total), jnp.int32(0))
        else:
            (theta, _), _ = jax.lax.scan(substep, (theta, total), jnp.arange(self.substeps))
        return theta, t + eta


def _substeps(etas, dt, substeps) -> int:
    """Solver steps per SGD step from ``Fixed(substeps=…)`` or ``Fixed(dt=…)`` (validated there)."""
    if substeps is not None:
        return substeps
    if dt is None:
        return 1
    if not etas.uniform:
        raise ValueError("dt needs a constant lr; with a schedule give substeps=k (dt = η_k/k)")
    ratio = etas.first / dt
    k = round(ratio)
    if dt > etas.first * (1 + 1e-12) or k < 1 or abs(ratio - k) > 1e-9 * ratio:
        raise ValueError(f"dt must be lr/k for an integer k >= 1 (0 < dt <= lr={etas.first}), got dt={dt}")
    return k


class Fixed(AbstractStepping):
    """Fixed steps: ``substeps`` per SGD step (dt = η_k/substeps), or ``dt`` = lr/k for an integer k with a
    constant lr; default one step of dt = η_k."""

    substeps: int | None = None
    dt: float | None = None

    def __check_init__(self):
        if self.substeps is not None and self.dt is not None:
            raise ValueError("Fixed takes at most one of substeps and dt")
        if self.substeps is not None:
            check_int_range("substeps", self.substeps, 1)
        if self.dt is not None:
            check_positive("dt", self.dt)

    def stepper(self, setup: StepperSetup) -> SteppingPlan:
        """``SDEStepper`` with k = ``_substeps`` solver steps per SGD step, paths on the last axis up to
        ``PATHS_LAST_MAX_DIM``."""
        k = _substeps(setup.etas, self.dt, self.substeps)
        s = setup
        paths_last = s.state_dim <= PATHS_LAST_MAX_DIM
        return SteppingPlan(
            lambda n: SDEStepper(s.sde, s.solver, n, k, s.control, s.stratonovich, s.m, paths_last), k
        )
