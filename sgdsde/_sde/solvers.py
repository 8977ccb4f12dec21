"""Solvers for the SME: which diffrax solver solves which SDE, and a weak order-2 scheme for general noise.

Every solver here is a diffrax ``AbstractSolver`` driven one step at a time with
``terms = MultiTerm(ODETerm(drift), ControlTerm(diffusion, path))``. The table ``SOLVERS`` states each
solver's noise, its weak order and the increments it consumes (its calculus and strong order are read from
diffrax); ``check_solver`` refuses a combination that would solve a different SDE (theory/sde.md, SDE-4).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from diffrax._local_interpolation import LocalLinearInterpolation

from .._noise.base import NoiseType
from .increments import (
    AbstractControl,
    BrownianControl,
    LevyControl,
    Weak2Control,
    WeakIncrement as WeakIncrement,  # PlatenWeak2's control, importable from here
)


class PlatenWeak2(diffrax.AbstractItoSolver):
    """Platen's explicit weak order-2.0 scheme for Itô SDEs with general m-dimensional noise
    (Kloeden & Platen 1992, (15.1.3)); derivative-free, weak order 2, not a strong scheme.

    $Y^+ = Y + \\tfrac12(a(\\bar\\Upsilon)+a)h + \\tfrac14\\sum_j[(b^j(R^j_+)+b^j(R^j_-)+2b^j)\\Delta\\hat W^j + \\sum_{r\\ne j}(b^j(U^r_+)+b^j(U^r_-)-2b^j)\\Delta\\hat W^j] + \\tfrac{1}{4\\sqrt h}\\sum_j[(b^j(R^j_+)-b^j(R^j_-)) ((\\Delta\\hat W^j)^2-h) + \\sum_{r\\ne j}(b^j(U^r_+)-b^j(U^r_-))(\\Delta\\hat W^j\\Delta\\hat W^r+V_{rj})]$,
    with $\\bar\\Upsilon = Y+ah+b\\Delta\\hat W$, $R^j_\\pm = Y+ah\\pm b^j\\sqrt h$, $U^r_\\pm = Y\\pm b^r\\sqrt h$.

    Costs 2 drift and 1 + 4m diffusion evaluations per step (one of each with ``noise="additive"``, where the
    scheme reduces to $Y + \\frac12(a(\\bar\\Upsilon)+a)h + b\\Delta\\hat W$). Its control is a WeakIncrement
    (theory/sde.md, SDE-6).
    """

    noise: str = eqx.field(static=True, default=NoiseType.GENERAL, converter=NoiseType)

    term_structure: ClassVar = diffrax.MultiTerm[tuple[diffrax.AbstractTerm, diffrax.AbstractTerm]]
    interpolation_cls: ClassVar[Callable[..., LocalLinearInterpolation]] = LocalLinearInterpolation

    def order(self, terms):
        raise ValueError("PlatenWeak2 is an SDE solver")

    def strong_order(self, terms):
        return None  # a weak scheme: its increments are not Brownian

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        drift, diffusion = terms.terms
        h = drift.contr(t0, t1)
        inc = diffusion.contr(t0, t1)
        dW = inc.dW
        a = lambda y: drift.vf(t0, y, args)
        b = lambda y: diffusion.vf(t0, y, args)
        a0, b0 = a(y0), b(y0)
        ybar = y0 + a0 * h + b0 @ dW
        y1 = y0 + 0.5 * (a(ybar) + a0) * h
        if self.noise == NoiseType.ADDITIVE:
            return y1 + b0 @ dW, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful
        sq = jnp.sqrt(h)
        m = dW.shape[0]
        cols = jnp.arange(m)
        # b^j at R^j_± (column j only) and the whole b at U^r_±, vmapped over j and r
        bR = lambda s: jax.vmap(lambda j: b(y0 + a0 * h + s * sq * b0[:, j])[:, j])(cols).T  # (d, m)
        bRp, bRm = bR(1.0), bR(-1.0)
        bU = lambda s: jax.vmap(lambda r: b(y0 + s * sq * b0[:, r]))(cols)  # (m, d, m): [r, :, j]
        bUp, bUm = bU(1.0), bU(-1.0)
        off = 1.0 - jnp.eye(m, dtype=dW.dtype)  # r ≠ j
        second = jnp.einsum("rij,rj->i", bUp + bUm - 2 * b0[None], off * dW[None, :])
        M = (dW[:, None] * dW[None, :] + inc.V) * off  # M[r, j] = ΔŴ_r ΔŴ_j + V_rj
        cross = jnp.einsum("rij,rj->i", bUp - bUm, M)
        noise = 0.25 * ((bRp + bRm + 2 * b0) @ dW + second)
        noise = noise + (0.25 / sq) * ((bRp - bRm) @ (dW * dW - h) + cross)
        y1 = y1 + noise
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        drift, diffusion = terms.terms
        return drift.vf(t0, y0, args), diffusion.vf(t0, y0, args)


@dataclasses.dataclass(frozen=True)
class SolverInfo:
    """What a solver assumes beyond its calculus (which diffrax's own AbstractItoSolver /
    AbstractStratonovichSolver declare): the noise it needs, its orders and the increments it eats."""

    solver: type[diffrax.AbstractSolver]  # the diffrax solver class
    noise: NoiseType  # the weakest noise structure it is valid for
    weak_order: float  # diffrax states none (its ``order`` is the ODE order): Kloeden & Platen 1992
    control: type[AbstractControl]  # its natural random input: Brownian, with Lévy areas, or weak-2
    adaptive: bool = False  # has an embedded error estimate, so PID-controlled steps are available

    @property
    def strong_order(self) -> float | None:
        """The strong order the solver itself states (diffrax's ``strong_order``; None for a weak scheme), for
        the noise it is admitted with. diffrax's orders do not read the terms, so none are passed."""
        order = self.solver().strong_order(None)
        return None if order is None else float(order)


# Weak orders are for the noise the solver is admitted with (Kloeden & Platen 1992); strong orders are diffrax's.
SOLVERS: dict[type, SolverInfo] = {
    info.solver: info
    for info in (
        SolverInfo(diffrax.Euler, NoiseType.GENERAL, 1.0, BrownianControl),
        SolverInfo(diffrax.ItoMilstein, NoiseType.COMMUTATIVE, 1.0, BrownianControl),
        SolverInfo(diffrax.StratonovichMilstein, NoiseType.COMMUTATIVE, 1.0, BrownianControl),
        SolverInfo(diffrax.Heun, NoiseType.GENERAL, 1.0, BrownianControl, adaptive=True),
        SolverInfo(diffrax.EulerHeun, NoiseType.GENERAL, 1.0, BrownianControl),
        SolverInfo(diffrax.GeneralShARK, NoiseType.GENERAL, 1.0, LevyControl),
        SolverInfo(diffrax.SPaRK, NoiseType.GENERAL, 1.0, LevyControl, adaptive=True),
        SolverInfo(diffrax.SRA1, NoiseType.ADDITIVE, 2.0, LevyControl, adaptive=True),
        SolverInfo(diffrax.ShARK, NoiseType.ADDITIVE, 2.0, LevyControl, adaptive=True),
        SolverInfo(PlatenWeak2, NoiseType.GENERAL, 2.0, Weak2Control),
    )
}

_RANK = {NoiseType.ADDITIVE: 0, NoiseType.COMMUTATIVE: 1, NoiseType.GENERAL: 2}


def calculus(solver: Any) -> str:
    """ "ito" or "stratonovich", read from diffrax's solver classes (what the solver converges to)."""
    if isinstance(solver, diffrax.AbstractItoSolver):
        return "ito"
    if isinstance(solver, diffrax.AbstractStratonovichSolver):
        return "stratonovich"
    raise ValueError(
        f"solver {type(solver).__name__} declares neither Itô nor Stratonovich calculus (diffrax's "
        "AbstractItoSolver / AbstractStratonovichSolver); an ODE solver does not solve the SME"
    )


def solver_info(solver: Any) -> SolverInfo:
    """The SolverInfo of ``solver`` or a ValueError naming it."""
    calculus(solver)
    info = SOLVERS.get(type(solver))
    if info is None:
        known = ", ".join(sorted(c.__name__ for c in SOLVERS))
        raise ValueError(
            f"solver {type(solver).__name__} is not supported for the SME: its calculus and noise "
            "assumptions are not declared here (ODE solvers converge to a Stratonovich solution without "
            f"saying so); use one of {known}"
        )
    return info


def check_solver(solver: Any, noise_type: str) -> SolverInfo:
    """Raise ValueError when ``solver`` cannot solve an Itô SDE with ``noise_type`` noise (whether it can take
    the increments asked for is the increments option's question: ``AbstractIncrements.control``)."""
    info = solver_info(solver)
    if _RANK[NoiseType(noise_type)] > _RANK[info.noise]:
        raise ValueError(
            f"solver {type(solver).__name__} assumes {info.noise} noise, but this SDE's noise is {noise_type}: "
            "it would converge to a different SDE (use Euler, PlatenWeak2, or a Stratonovich solver such as "
            "Heun/GeneralShARK, whose drift gets the Itô→Stratonovich correction)"
        )
    return info
