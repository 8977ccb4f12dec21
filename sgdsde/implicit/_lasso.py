"""The weighted Lasso that label-noise SGD on a diagonal network solves (Pillaud-Vivien et al.; C4)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .._losses import require_additive_label_noise
from .._models import DiagonalLinearNetwork
from .._noise import AbstractGradientNoise
from .._problem import Problem
from .._regularizers import effective_lambda
from .._validation import check_int_range, check_positive


@dataclasses.dataclass
class LassoSolution:
    """β minimising $\\frac1{2n}\\|X\\beta - y\\|^2 + \\sum_j \\lambda_j|\\beta_j|$, with its KKT residual."""

    beta: np.ndarray
    penalties: np.ndarray
    kkt_residual: float
    n_sweeps: int
    nonnegative: bool

    def __str__(self) -> str:
        support = np.flatnonzero(self.beta)
        return (
            f"weighted Lasso: {len(support)} nonzeros at {support.tolist()}, KKT residual "
            f"{self.kkt_residual:.2g}, {self.n_sweeps} sweeps{' (β ≥ 0)' if self.nonnegative else ''}"
        )


def kkt_residual(X, y, beta, penalties, nonnegative: bool = False) -> float:
    """max_j of the KKT violation: |g_j + λ_j sign β_j| on the support, (|g_j| − λ_j)₊ off it,
    g = Xᵀ(Xβ − y)/n (with β ≥ 0, off the support only −g_j − λ_j > 0 violates)."""
    X, y, beta, lam = (np.asarray(a, np.float64) for a in (X, y, beta, penalties))
    g = X.T @ (X @ beta - y) / X.shape[0]
    on = beta != 0
    viol = np.where(
        on, np.abs(g + lam * np.sign(beta)), np.maximum((-g if nonnegative else np.abs(g)) - lam, 0)
    )
    return float(np.max(viol)) if viol.size else 0.0


def weighted_lasso(
    X, y, penalties, *, nonnegative: bool = False, tol: float = 1e-13, max_sweeps: int = 100_000
) -> LassoSolution:
    """Cyclic coordinate descent (float64) for $\\min_\\beta \\frac1{2n}\\|X\\beta - y\\|^2 + \\sum_j\\lambda_j|\\beta_j|$.

    Each coordinate update is the exact soft-threshold; stops when the KKT residual ≤ tol.
    """
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must be a non-empty 2-D array (n, d), got shape {X.shape}")
    n, d = X.shape
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match X, got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    pen = np.asarray(penalties, np.float64)
    if pen.shape not in ((), (d,)):
        raise ValueError(
            f"penalties must be a scalar or have shape ({d},) to match X's columns, got {pen.shape}"
        )
    lam = np.broadcast_to(pen, (d,)).copy()
    if np.any(~np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("penalties must be finite and >= 0")
    check_positive("tol", tol)
    max_sweeps = check_int_range("max_sweeps", max_sweeps, 1)
    col = np.sum(X * X, axis=0) / n
    if np.any(col == 0):
        raise ValueError("X has an all-zero column; its coefficient is not identified")
    beta = np.zeros(d)
    r = y.copy()  # y − Xβ
    sweep = 0  # the loop runs at least once (max_sweeps >= 1)
    for sweep in range(1, max_sweeps + 1):
        for j in range(d):
            rho = X[:, j] @ r / n + col[j] * beta[j]
            new = np.sign(rho) * max(abs(rho) - lam[j], 0.0) / col[j]
            if nonnegative:
                new = max(new, 0.0)
            if new != beta[j]:
                r -= X[:, j] * (new - beta[j])
                beta[j] = new
        if sweep % 10 == 0 or sweep == max_sweeps:
            res = kkt_residual(X, y, beta, lam, nonnegative)
            if res <= tol:
                break
    res = kkt_residual(X, y, beta, lam, nonnegative)
    if res > tol:
        raise RuntimeError(f"weighted_lasso did not converge: KKT residual {res:.3g} > tol {tol:.1g}")
    return LassoSolution(beta=beta, penalties=lam, kkt_residual=res, n_sweeps=sweep, nonnegative=nonnegative)


def label_noise_lasso(
    problem: Problem, noise: AbstractGradientNoise | None, lr: float, *, lam: float | None = None, **kwargs
) -> LassoSolution:
    """The prediction for label-noise SGD on a diagonal network: λ_j = (ησ²/B)(XᵀX/n)_jj (C4).

    For β = u⊙u − v⊙v, ¼tr∇²L = Σ_j D_jj(u_j² + v_j²) ≥ Σ_j D_jj|β_j| with equality when u_jv_j = 0, so
    L + λR over (u, v) is this Lasso over β exactly (∇²fᵢ is traceless). For β = v⊙v (``signed=False``) the
    Lasso with β ≥ 0 is L + (λ/4)tr G; ¼tr∇²L adds (1/2n)Σᵢ rᵢ Σ_j x_ij, an O(λ) change at the solution
    (theory/implicit-regularization.md, REG-10). λ is the noise's own (``noise.effective_lambda``), or ``lam``.
    """
    if not isinstance(problem.model, DiagonalLinearNetwork):
        raise ValueError(f"problem.model must be a DiagonalLinearNetwork, got {type(problem.model).__name__}")
    require_additive_label_noise(problem.loss_fn, "label_noise_lasso (a squared-loss Lasso)")
    if lam is None:
        if noise is None:
            raise ValueError("noise must be an sgdsde noise model when lam is None, got None")
        lam = effective_lambda(noise, lr, problem)
    else:
        lam = check_positive("lam", lam, allow_zero=True)
    X = np.asarray(problem.X, np.float64)
    D = np.sum(X * X, axis=0) / X.shape[0]
    return weighted_lasso(X, problem.y, lam * D, nonnegative=not problem.model.signed, **kwargs)
