"""Damian et al.'s regularizer $R = -\\frac{1}{2\\eta}\\operatorname{tr}\\log(I - \\frac\\eta2\\nabla^2L)$."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _problem
from .._validation import check_positive
from .base import AbstractRegularizer, hessian_eigenvalues, matrix_free


@jax.custom_jvp
def trace_log_of_hessian(hessian, eta):
    """$-\\frac{1}{2\\eta}\\sum_k \\log(1 - \\frac\\eta2 h_k)$ over the eigenvalues h_k of a symmetric H."""
    h = jnp.linalg.eigvalsh(hessian)
    # Outside η h < 2 the log is undefined: NaN propagates so a traced solve fails visibly.
    return -jnp.sum(jnp.log1p(-0.5 * eta * h)) / (2 * eta)


@trace_log_of_hessian.defjvp
def _trace_log_jvp(primals, tangents):
    # dR = ½ tr[(2I − ηH)^{-1} dH] (label-noise.md C2): exact at repeated eigenvalues, where the
    # eigenvector derivatives that eigvalsh's own rule would differentiate through are singular.
    hessian, eta = primals
    d_hessian, d_eta = tangents
    value = trace_log_of_hessian(hessian, eta)
    eye = jnp.eye(hessian.shape[-1], dtype=hessian.dtype)
    m = 2 * eye - eta * hessian
    tangent = 0.5 * jnp.trace(jnp.linalg.solve(m, d_hessian))
    # ∂R/∂η = −R/η + (1/(2η)) tr[H (2I − ηH)^{-1}], from differentiating the log directly.
    d_value_d_eta = -value / eta + 0.5 * jnp.trace(jnp.linalg.solve(m, hessian)) / eta
    return value, tangent + d_value_d_eta * d_eta


class TraceLogRegularizer(AbstractRegularizer):
    """$R(\\theta) = -\\frac{1}{2\\eta}\\operatorname{tr}\\log(I - \\frac\\eta2\\nabla^2L(\\theta))$ (Damian et al. 2021).

    Per eigenvalue h: h/4 + ηh²/16 + …, so R → ¼ tr∇²L as η → 0 and R → ∞ as λ_max → 2/η, the GD
    stability edge; undefined for η λ_max(∇²L) ≥ 2 (theory/implicit-regularization.md, REG-1, REG-2).

    It needs every eigenvalue of ∇²L (a log-determinant), which has no exact matrix-free form: above
    ``MAX_DENSE_PARAMS`` parameters its value, domain check and observables raise a ValueError instead of forming
    the d × d Hessian (theory/curvature.md, CURV-5).
    """

    eta: jax.Array

    def __init__(self, eta):
        # η as an array leaf: solves at another η reuse the compiled code
        self.eta = jnp.asarray(check_positive("eta", eta))

    @property
    def name(self) -> str:
        return "R_trace_log"

    def value(self, problem, theta):
        _refuse_at_size(problem)
        return trace_log_of_hessian(problem.hessian(theta), self.eta.astype(theta.dtype))

    def observable(self):
        """θ ↦ R(θ) along runs by Cholesky: $R = -\\frac1\\eta\\sum_k\\log C_{kk}$ with $CC^T = I - \\frac\\eta2\\nabla^2L$.

        Cholesky, not eigvalsh: batched over paths it is ~100× faster on CPU (eigvalsh made recording R the
        whole cost of a run, and hung at 64 paths). Outside the domain (Cholesky fails) the value is kept
        finite at d·(−log √eps)/(2η), the bound of R at the stability edge, and ``domain_observable`` records
        where that happened (the engine treats non-finite values as divergence)."""

        def value(problem, theta):
            _refuse_at_size(problem)
            eta = self.eta.astype(theta.dtype)
            diag, inside = _cholesky_diagonal(problem, theta, eta)
            at_edge = theta.shape[0] * (-0.5 * jnp.log(jnp.finfo(theta.dtype).eps)) / (2 * eta)
            r = -jnp.sum(jnp.log(jnp.where(inside, diag, 1.0))) / eta
            return jnp.where(inside, r, at_edge)

        return value

    def domain_observable(self):
        """θ ↦ 1 where η λ_max(∇²L(θ)) < 2 (R defined: I − ηH/2 has a Cholesky factor), else 0; its ensemble
        mean is the defined fraction."""

        def inside(problem, theta):
            _refuse_at_size(problem)
            return _cholesky_diagonal(problem, theta, self.eta.astype(theta.dtype))[1].astype(theta.dtype)

        return inside

    def matrix_free_value(self, problem, theta):
        """Refused: a ValueError (no exact matrix-free form of tr log; CURV-5)."""
        _refuse_at_size(problem, force=True)
        raise AssertionError("unreachable")

    def check_domain(self, problem, theta) -> None:
        problem.check_theta(theta)
        _refuse_at_size(problem)
        h_max = float(np.max(np.asarray(hessian_eigenvalues(problem, jnp.asarray(theta)))))
        if not np.isfinite(h_max):
            raise ValueError("the Hessian at theta is not finite, so the tr-log regularizer is undefined")
        eta = float(self.eta)
        if eta * h_max >= 2:
            raise ValueError(
                f"the tr-log regularizer needs eta * lambda_max(Hessian) < 2 (the GD stability edge); here "
                f"eta={eta:g}, lambda_max={h_max:.6g}, so eta must be < {2 / h_max:.6g}"
            )


def _refuse_at_size(problem, force: bool = False) -> None:
    if force or matrix_free(problem):
        raise ValueError(
            f"R_trace_log (TraceLogRegularizer) needs all d eigenvalues of the d × d Hessian, and has no exact "
            f"matrix-free form: refused at d = {problem.n_params} > MAX_DENSE_PARAMS = {_problem.MAX_DENSE_PARAMS} "
            "parameters; use HessianTraceRegularizer (¼ tr∇²L, its η → 0 limit) or OutputGradientNormRegularizer "
            "at this size"
        )


def _cholesky_diagonal(problem, theta, eta):
    """diag of the Cholesky factor of I − (η/2)∇²L(θ), and whether it exists (the matrix is PD)."""
    hessian = problem.hessian(theta)
    m = jnp.eye(hessian.shape[0], dtype=hessian.dtype) - 0.5 * eta * hessian
    diag = jnp.diagonal(jnp.linalg.cholesky(m))
    return diag, jnp.all(jnp.isfinite(diag) & (diag > 0))
