"""Stationary points of $L + \\lambda R$: a float64 optimistix solve with residual and Hessian inertia."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .._problem import Problem
from .._regularizers import AbstractRegularizer
from .._validation import check_int_range, check_positive
from ._common import check_theta, float64_problem, fmt, render_table


class StationaryPointError(RuntimeError):
    """The solve for ∇(L + λR) = 0 did not converge; ``result`` holds what it reached (not a prediction)."""

    def __init__(self, message: str, result: StationaryPoint):
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class StationaryPoint:
    """A point θ with $\\nabla(L + \\lambda R)(\\theta) \\approx 0$, its residual and the inertia of ∇²(L + λR).

    ``kind`` is "minimum", "degenerate minimum" (flat directions, none negative), "saddle" or "maximum";
    ``converged`` is False when the residual exceeds ``gtol`` or the solve left R's domain: then θ is
    where the solver stopped, not a prediction.
    """

    theta: np.ndarray
    regularizer: str
    lam: float
    objective: float
    loss: float
    reg_value: float
    residual: float
    gtol: float
    inertia: tuple[int, int, int]
    hessian_eigenvalues: np.ndarray
    converged: bool
    n_steps: int
    message: str = ""

    @property
    def kind(self) -> str:
        pos, neg, zero = self.inertia
        if neg == 0:
            return "minimum" if zero == 0 else "degenerate minimum"
        return "maximum" if pos == 0 and zero == 0 else "saddle"

    def table(self) -> str:
        status = "converged" if self.converged else f"NOT CONVERGED (not a prediction): {self.message}"
        rows = [
            ["regularizer", self.regularizer],
            ["lambda", fmt(self.lam)],
            ["L + lambda R", fmt(self.objective)],
            ["L", fmt(self.loss)],
            ["R", fmt(self.reg_value)],
            ["|grad(L + lambda R)|", f"{self.residual:.3g} (tol {self.gtol:.1g})"],
            ["inertia (+, -, 0)", f"{self.inertia} -> {self.kind}"],
            ["solver steps", str(self.n_steps)],
            ["status", status],
        ]
        return render_table(["stationary point", "value"], rows)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind
        return d


def _objective(theta, args):
    problem, regularizer, lam = args
    return problem.loss(theta) + lam * regularizer.value(problem, theta)


def _objective_grad(theta, args):
    return jax.grad(_objective)(theta, args)


def objective_function(problem: Problem, regularizer: AbstractRegularizer, lam: float):
    """θ ↦ L(θ) + λR(θ), JAX-traceable."""
    return lambda theta: problem.loss(theta) + lam * regularizer.value(problem, theta)


@eqx.filter_jit
def _derivatives(problem, regularizer, lam, theta):
    """‖∇F‖, the eigenvalues of ∇²F, L and R at θ, in one compiled call."""
    F = objective_function(problem, regularizer, lam)
    e = jnp.linalg.eigvalsh(jax.hessian(F)(theta))
    return jnp.linalg.norm(jax.grad(F)(theta)), e, problem.loss(theta), regularizer.value(problem, theta)


@eqx.filter_jit
def _grad_norm(problem, regularizer, lam, theta):
    return jnp.linalg.norm(jax.grad(objective_function(problem, regularizer, lam))(theta))


def stationary_point(
    problem: Problem,
    regularizer: AbstractRegularizer,
    lam: float,
    theta_init,
    *,
    method: str = "bfgs+newton",
    gtol: float = 1e-9,
    max_steps: int = 2000,
    zero_tol: float = 1e-9,
    on_failure: str = "raise",
) -> StationaryPoint:
    """Solve $\\nabla(L + \\lambda R)(\\theta) = 0$ near ``theta_init`` in float64.

    Args:
        problem: the problem (cast to float64).
        regularizer: an ``AbstractRegularizer`` (its domain is checked at θ_init and at the solution).
        lam: λ ≥ 0 (for label noise, ``effective_lambda``: ησ²/B).
        theta_init: starting point (d,).
        method: "bfgs+newton" (BFGS descent on L + λR, then Newton on the gradient: lands on minima),
            "newton" (Newton root find from θ_init: may land on saddles) or "bfgs".
        gtol: convergence when ‖∇(L + λR)‖₂ ≤ gtol.
        max_steps: per solver stage.
        zero_tol: eigenvalues of ∇²(L + λR) with |e| ≤ zero_tol·max(1, max|e|) count as zero.
        on_failure: "raise" (StationaryPointError) or "flag" (return with ``converged=False``).

    Returns:
        StationaryPoint (theory/implicit-regularization.md, REG-6).
    """
    problem = float64_problem(problem)
    if not isinstance(regularizer, AbstractRegularizer):
        raise ValueError(f"regularizer must be an AbstractRegularizer, got {type(regularizer).__name__}")
    lam = check_positive("lam", lam, allow_zero=True)
    th0 = check_theta(problem, theta_init, "theta_init")
    if method not in ("bfgs+newton", "newton", "bfgs"):
        raise ValueError(f"method must be 'bfgs+newton', 'newton' or 'bfgs', got {method!r}")
    gtol = check_positive("gtol", gtol)
    max_steps = check_int_range("max_steps", max_steps, 1)
    zero_tol = check_positive("zero_tol", zero_tol)
    if on_failure not in ("raise", "flag"):
        raise ValueError(f"on_failure must be 'raise' or 'flag', got {on_failure!r}")
    regularizer.check_domain(problem, th0)

    # module-level functions with (problem, R, λ) as arguments: repeated solves reuse the compiled solver
    args = (problem, regularizer, jnp.asarray(lam))
    theta = jnp.asarray(th0)
    n_steps = 0
    # A tight Cauchy tolerance so BFGS gets close enough for Newton's quadratic phase.
    rtol, atol = 1e-12, 1e-14
    if method in ("bfgs+newton", "bfgs"):
        sol = optx.minimise(
            _objective, optx.BFGS(rtol=rtol, atol=atol), theta, args, max_steps=max_steps, throw=False
        )
        theta, n_steps = sol.value, n_steps + int(sol.stats["num_steps"])
    if method in ("bfgs+newton", "newton") and np.all(np.isfinite(np.asarray(theta))):
        sol = optx.root_find(
            _objective_grad, optx.Newton(rtol=rtol, atol=atol), theta, args, max_steps=max_steps, throw=False
        )
        # Newton polishes a good point; if it wanders off (a non-finite step), keep the better of the two.
        gn = lambda y: _finite_or_inf(_grad_norm(problem, regularizer, args[2], y))
        if np.all(np.isfinite(np.asarray(sol.value))) and gn(sol.value) <= gn(theta):
            theta = sol.value
        n_steps += int(sol.stats["num_steps"])
    return _finish(problem, regularizer, lam, theta, gtol, zero_tol, n_steps, on_failure)


def _finite_or_inf(x) -> float:
    v = float(x)
    return v if np.isfinite(v) else np.inf


def _finish(problem, regularizer, lam, theta, gtol, zero_tol, n_steps, on_failure) -> StationaryPoint:
    theta_np = np.asarray(theta, np.float64)
    message = ""
    finite = bool(np.all(np.isfinite(theta_np)))
    residual = np.inf
    if finite:
        try:
            regularizer.check_domain(problem, theta_np)
        except ValueError as err:
            message = f"the solve left the regularizer's domain: {err}"
    else:
        message = "the solve produced a non-finite point"
    if finite and not message:
        res, eig, loss, reg = _derivatives(problem, regularizer, jnp.asarray(lam), jnp.asarray(theta_np))
        residual, eig, loss, reg = _finite_or_inf(res), np.asarray(eig), float(loss), float(reg)
        is_zero = np.abs(eig) <= zero_tol * max(1.0, float(np.max(np.abs(eig))))
        inertia = (int(np.sum((eig > 0) & ~is_zero)), int(np.sum((eig < 0) & ~is_zero)), int(np.sum(is_zero)))
    else:
        eig, inertia, loss, reg = np.full(theta_np.shape, np.nan), (0, 0, 0), np.nan, np.nan
    converged = not message and residual <= gtol
    if not converged and not message:
        message = f"|grad(L + lambda R)| = {residual:.3g} > gtol = {gtol:.1g} after {n_steps} solver steps"
    result = StationaryPoint(
        theta=theta_np,
        regularizer=regularizer.name,
        lam=lam,
        objective=loss + lam * reg if finite else np.nan,
        loss=loss,
        reg_value=reg,
        residual=residual,
        gtol=gtol,
        inertia=inertia,
        hessian_eigenvalues=eig,
        converged=converged,
        n_steps=n_steps,
        message=message,
    )
    if not converged and on_failure == "raise":
        raise StationaryPointError(
            f"stationary_point({regularizer.name}, lam={lam:g}) failed: {message}", result
        )
    return result
