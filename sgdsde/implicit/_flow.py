"""Li–Wang–Arora's label-noise limit on the zero-loss manifold Γ: $dY = -\\frac c4\\nabla_\\Gamma\\operatorname{tr}\\nabla^2L(Y)\\,d\\tau$."""

from __future__ import annotations

import dataclasses

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._losses import require_additive_label_noise
from .._observables import trace_gauss_newton
from .._problem import Problem
from .._validation import check_int_range, check_positive
from ._common import check_theta, float64_problem

PROJECTIONS = ("newton", "gradient_flow")
STEP_FRACTIONS = jnp.asarray([1.0, 0.5, 0.25, 0.125, 0.0625])


class ProjectionError(RuntimeError):
    """A projection onto the zero-loss set failed (no interpolating point found near the iterate)."""


@dataclasses.dataclass
class LimitingFlow:
    """Y(τ) on Γ at flow times ``times`` (τ = η²k SGD steps = η·t SDE time), with tr∇²L and L along it."""

    times: np.ndarray
    theta: np.ndarray
    sharpness: np.ndarray
    loss: np.ndarray
    c: float
    projection: str

    def sgd_steps(self, lr: float) -> np.ndarray:
        """The SGD step index k = τ/η² each record corresponds to."""
        return self.times / check_positive("lr", lr) ** 2

    def sde_times(self, lr: float) -> np.ndarray:
        """The SGD/SDE time t = ηk = τ/η each record corresponds to."""
        return self.times / check_positive("lr", lr)


def riemannian_gradient(problem: Problem, theta, g):
    """$P_T g$: remove from g its component in span{∇f_i} (the normal space of Γ = {f_i = y_i})."""
    J = problem.output_gradients(theta)  # d × n
    coef = jnp.linalg.lstsq(J, g)[0]
    return g - J @ coef


def sharpness_drift(problem: Problem, theta, c):
    """$-\\frac c4 P_T\\nabla\\operatorname{tr}G$; on Γ, $P_T\\nabla\\operatorname{tr}\\nabla^2L = P_T\\nabla\\operatorname{tr}G$
    because the residual part $\\frac1n\\sum_i r_i\\operatorname{tr}\\nabla^2 f_i$ has a normal gradient there."""
    g = jax.grad(lambda th: trace_gauss_newton(problem, th))(theta)
    return -0.25 * c * riemannian_gradient(problem, theta, g)


def _newton_projection(problem: Problem, theta, tol, max_iter):
    """Gauss–Newton with minimum-norm steps θ ← θ − J⁺r: lands on Γ, moving only along normals."""

    def cond(state):
        th, i = state
        r = problem.residuals(th)
        return (jnp.max(jnp.abs(r)) > tol) & (i < max_iter)

    def body(state):
        th, i = state
        step = jnp.linalg.lstsq(problem.output_gradients(th).T, problem.residuals(th))[0]
        # far from Γ a full step can overshoot on curved models: take the best of a few halvings
        candidates = th[None, :] - STEP_FRACTIONS[:, None].astype(th.dtype) * step[None, :]
        norms = jax.vmap(lambda c: jnp.sum(problem.residuals(c) ** 2))(candidates)
        return candidates[jnp.argmin(jnp.where(jnp.isfinite(norms), norms, jnp.inf))], i + 1

    th, _ = jax.lax.while_loop(cond, body, (theta, 0))
    return th


def _gradient_flow_projection(problem: Problem, theta, tol, max_iter):
    """Φ(θ) = lim φ(θ, t), dφ/dt = −∇L(φ), integrated (Kvaerno5, adaptive) until it stops moving."""
    term = diffrax.ODETerm(lambda t, y, args: -problem.grad(y))
    event = diffrax.Event(diffrax.steady_state_event(rtol=0.0, atol=tol))
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Kvaerno5(),
        t0=0.0,
        t1=jnp.inf,
        dt0=None,
        y0=theta,
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-13, dtmax=1e6),
        event=event,
        max_steps=max_iter,
        throw=False,
    )
    if sol.ys is None:
        raise AssertionError("diffeqsolve saves y(t1) by default")
    return sol.ys[-1]


@eqx.filter_jit
def _project_newton(problem, theta, tol, max_iter):
    return _newton_projection(problem, theta, tol, max_iter)


def project_to_zero_loss(problem: Problem, theta, tol: float = 1e-10, max_iter: int = 100):
    """The minimum-norm Gauss–Newton projection of θ onto Γ = {f_i = y_i}, or None if it finds no point."""
    require_additive_label_noise(problem.loss_fn, "the zero-loss set {f_i = y_i}")
    th = _project_newton(problem, jnp.asarray(theta), tol, max_iter)
    res = float(jnp.max(jnp.abs(problem.residuals(th))))
    return np.asarray(th) if np.isfinite(res) and res <= 100 * tol else None


@eqx.filter_jit
def _run(problem, theta0, c, h, n_records, record_every, projection, tol, max_iter):
    project = _newton_projection if projection == "newton" else _gradient_flow_projection

    def step(y, _):
        # Heun's method with a projection after each stage (a retraction): order 2 on Γ.
        v0 = sharpness_drift(problem, y, c)
        y1 = project(problem, y + h * v0, tol, max_iter)
        v1 = sharpness_drift(problem, y1, c)
        return project(problem, y + 0.5 * h * (v0 + v1), tol, max_iter), None

    def record(y, _):
        y, _ = jax.lax.scan(step, y, None, length=record_every)
        return y, y

    y0 = project(problem, theta0, tol, max_iter)
    _, ys = jax.lax.scan(record, y0, None, length=n_records)
    ys = jnp.concatenate([y0[None], ys])
    sharp = jax.vmap(lambda th: trace_gauss_newton(problem, th))(ys)
    loss = jax.vmap(problem.loss)(ys)
    return ys, sharp, loss


def limiting_flow(
    problem: Problem,
    theta0,
    *,
    c: float,
    duration: float,
    n_steps: int,
    record_every: int = 1,
    projection: str = "newton",
    tol: float = 1e-11,
    max_iter: int = 200,
) -> LimitingFlow:
    """Integrate Li–Wang–Arora's label-noise limit from Y(0) = Φ(θ₀) on Γ = {θ : f_i(θ) = y_i ∀i}.

    $dY = -\\frac c4\\nabla_\\Gamma \\operatorname{tr}\\nabla^2L(Y)\\,d\\tau$, c = σ²/B, τ = η²k (Heun steps, each
    stage projected back onto Γ).

    Args:
        problem: an interpolating problem (Γ non-empty near θ₀).
        theta0: start; projected onto Γ first.
        c: σ²/B (> 0).
        duration: flow time τ_end.
        n_steps: Heun steps (record_every must divide it).
        record_every: record Y every this many steps.
        projection: "newton" (minimum-norm Gauss–Newton) or "gradient_flow" (Φ, the limit of gradient flow).
        tol: projection stops when max|r_i| ≤ tol (Newton) or the flow speed ≤ tol (gradient flow).
        max_iter: cap on projection iterations (Newton) or ODE steps (gradient flow).

    Returns:
        LimitingFlow; raises ProjectionError if any record is off Γ or non-finite
        (theory/implicit-regularization.md, REG-8).
    """
    require_additive_label_noise(problem.loss_fn, "the label-noise limiting flow on {f_i = y_i}")
    problem = float64_problem(problem)
    th0 = check_theta(problem, theta0, "theta0")
    c = check_positive("c", c)
    duration = check_positive("duration", duration)
    n_steps = check_int_range("n_steps", n_steps, 1)
    record_every = check_int_range("record_every", record_every, 1, n_steps)
    if n_steps % record_every:
        raise ValueError(f"record_every must divide n_steps={n_steps}, got {record_every}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    tol = check_positive("tol", tol)
    max_iter = check_int_range("max_iter", max_iter, 1)
    h = duration / n_steps
    ys, sharp, loss = _run(
        problem, jnp.asarray(th0), c, h, n_steps // record_every, record_every, projection, tol, max_iter
    )
    ys, sharp, loss = np.asarray(ys), np.asarray(sharp), np.asarray(loss)
    res = np.max(np.abs(np.asarray(jax.vmap(problem.residuals)(jnp.asarray(ys)))), axis=1)
    # Newton stops at tol; the gradient-flow projection's residual sits near it once it has stopped moving.
    bad = ~np.isfinite(res) | (res > max(100 * tol, 1e-8))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ProjectionError(
            f"the {projection} projection failed at record {i} (tau = {i * record_every * h:.4g}): "
            f"max |f_i - y_i| = {res[i]:.3g}; is the problem interpolating near theta0?"
        )
    times = np.arange(len(ys)) * record_every * h
    return LimitingFlow(times=times, theta=ys, sharpness=sharp, loss=loss, c=c, projection=projection)
