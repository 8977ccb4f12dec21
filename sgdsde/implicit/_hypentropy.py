"""Kernel vs rich: the limit of gradient flow on a diagonal linear network from scale α (Woodworth et al.
2020; theory/three-theories.md, THR-1..3): β_α = argmin Q_α(β) subject to Xβ = y."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .._validation import check_dtype, check_positive


def hypentropy(beta, alpha: float) -> float:
    """$Q_\\alpha(\\beta) = \\alpha^2\\sum_i q(\\beta_i/\\alpha^2)$, $q(z) = 2 - \\sqrt{4 + z^2} + z\\,\\mathrm{arcsinh}(z/2)$."""
    a2 = check_positive("alpha", alpha) ** 2
    z = np.asarray(beta, np.float64) / a2
    return float(a2 * np.sum(2 - np.sqrt(4 + z * z) + z * np.arcsinh(z / 2)))


@dataclasses.dataclass
class KernelRichLimit:
    """β_α = 2α² sinh(Xᵀν) with X β_α = y (the KKT point of min Q_α s.t. Xβ = y); ``kkt_gap`` = ‖Xβ − y‖∞
    (stationarity holds by construction), ``continuation`` the α values solved on the way."""

    beta: np.ndarray
    nu: np.ndarray
    alpha: float
    kkt_gap: float
    continuation: list[float]

    def __str__(self) -> str:
        return (
            f"kernel-rich limit at alpha={self.alpha:g}: |beta|_1 = {np.abs(self.beta).sum():.4g}, "
            f"KKT gap {self.kkt_gap:.2g} after {len(self.continuation)} continuation steps"
        )


def _residual(nu, args):
    X, y, two_a2 = args
    return X @ (two_a2 * jnp.sinh(X.T @ nu)) - y


def kernel_rich_limit(X, y, alpha: float, *, tol: float = 1e-12, factor: float = 2.0) -> KernelRichLimit:
    """Solve $X\\,2\\alpha^2\\sinh(X^T\\nu) = y$ for ν (optimistix Newton) and return β_α = 2α² sinh(Xᵀν).

    Newton from the min-ℓ2 start overflows at small α (seeds-001-003-004.md B.3), so the solve follows α down
    from a scale α₀ where sinh is linear to 1e-3 (‖Xᵀν₀‖∞ ≤ 0.05, ν₀ the kernel-regime solution) by steps of
    ``factor``, each Newton solve starting from the last. Needs X of full row rank (an interpolating β) and
    float64.
    """
    check_dtype(np.float64)
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    alpha = check_positive("alpha", alpha)
    if not (math.isfinite(factor) and factor > 1):
        raise ValueError(f"factor must be > 1, got {factor!r}")
    n, d = X.shape
    K = X @ X.T
    if np.linalg.matrix_rank(K) < n:
        raise ValueError(f"X must have full row rank (n = {n} ≤ d = {d} and independent rows) to interpolate")
    base = np.linalg.solve(K, y)  # ν₀·2α² in the kernel regime: 2α² XXᵀν = y
    a0 = max(alpha, math.sqrt(np.max(np.abs(X.T @ base)) / (2 * 0.05)))
    alphas = [a0]
    while alphas[-1] / factor > alpha:
        alphas.append(alphas[-1] / factor)
    if alphas[-1] != alpha:
        alphas.append(alpha)
    nu = jnp.asarray(base / (2 * a0 * a0))
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    solver = optx.Newton(rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(y)))))
    for a in alphas:
        sol = optx.root_find(
            _residual, solver, nu, args=(Xj, yj, jnp.asarray(2 * a * a)), max_steps=200, throw=False
        )
        if sol.result != optx.RESULTS.successful:
            raise RuntimeError(
                f"kernel_rich_limit: Newton failed at alpha={a:g} on the way to {alpha:g}: {sol.result}"
            )
        nu = sol.value
    beta = np.asarray(2 * alpha * alpha * jnp.sinh(Xj.T @ nu))
    gap = float(np.max(np.abs(X @ beta - y)))
    return KernelRichLimit(beta, np.asarray(nu), alpha, gap, alphas)


def min_l2_interpolant(X, y) -> np.ndarray:
    """argmin ‖β‖₂ s.t. Xβ = y: Xᵀ(XXᵀ)⁻¹y, the α → ∞ (kernel) limit."""
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    return X.T @ np.linalg.solve(X @ X.T, y)


def min_l1_interpolant(X, y) -> np.ndarray:
    """argmin ‖β‖₁ s.t. Xβ = y by the linear program over β = p − m, p, m ≥ 0: the α → 0 (rich) limit."""
    import scipy.optimize

    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    d = X.shape[1]
    res = scipy.optimize.linprog(
        np.ones(2 * d), A_eq=np.hstack([X, -X]), b_eq=y, bounds=[(0, None)] * (2 * d), method="highs"
    )
    if res.status != 0:
        raise RuntimeError(f"min_l1_interpolant: the linear program failed: {res.message}")
    return res.x[:d] - res.x[d:]
