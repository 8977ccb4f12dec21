"""Exact first and second moments of SGD and of its SMEs on a quadratic loss with constant noise.

Loss $L = \\frac12(\\theta-\\theta^*)^T H(\\theta-\\theta^*)$, H symmetric, one step's gradient-noise
covariance C
(constant). SGD: $e_{k+1} = (I-\\eta_k H)e_k - \\eta_k\\xi_k$; SME of order o: an OU process with drift matrix
$M = H + \\frac{(o-1)\\eta}{2}H^2$ and diffusion $\\sqrt\\eta\\,C^{1/2}$ (theory/quadratic-ou.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg

from .._schedules import learning_rates
from .._validation import check_int_range, check_positive, check_psd


@dataclasses.dataclass
class Moments:
    """Mean (R, d) and covariance (R, d, d) of θ at ``times`` (and SGD ``steps`` where defined)."""

    times: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    steps: np.ndarray | None = None

    def expectations(self, hessian, theta_star) -> dict[str, np.ndarray]:
        """Exact E of the built-in observables "theta", "sq_norm" ($\\|\\theta\\|^2$) and "loss"."""
        H = np.asarray(hessian, np.float64)
        e = self.mean - np.asarray(theta_star, np.float64)[None]
        return {
            "theta": self.mean,
            "sq_norm": np.einsum("rii->r", self.cov) + np.sum(self.mean**2, axis=1),
            "loss": 0.5 * np.einsum("ij,rji->r", H, self.cov) + 0.5 * np.einsum("ri,ij,rj->r", e, H, e),
        }


def _inputs(hessian, theta_star, noise_cov, theta0):
    H = check_psd("hessian", hessian)
    d = H.shape[0]
    C = check_psd("noise_cov", noise_cov)
    ts = np.asarray(theta_star, np.float64)
    th0 = np.asarray(theta0, np.float64)
    if C.shape != (d, d) or ts.shape != (d,) or th0.shape != (d,):
        raise ValueError(f"noise_cov must be ({d}, {d}) and theta_star, theta0 ({d},) to match hessian")
    return H, C, ts, th0


def sgd_moments(
    hessian, theta_star, noise_cov, theta0, *, lr, n_steps: int, record_every: int = 1
) -> Moments:
    """Exact mean and covariance of SGD by the discrete Lyapunov recursion
    $P_{k+1} = (I-\\eta_kH)P_k(I-\\eta_kH)^T + \\eta_k^2C$, $m_{k+1}-\\theta^* =
    (I-\\eta_kH)(m_k-\\theta^*)$ [QOU-1]."""
    H, C, ts, th0 = _inputs(hessian, theta_star, noise_cov, theta0)
    n_steps = check_int_range("n_steps", n_steps, 1)
    record_every = check_int_range("record_every", record_every, 1)
    if n_steps % record_every:
        raise ValueError(f"record_every must divide n_steps={n_steps}, got {record_every}")
    etas = learning_rates(lr, n_steps)
    d = H.shape[0]
    e, P = th0 - ts, np.zeros((d, d))
    means, covs = [th0.copy()], [P.copy()]
    eye = np.eye(d)
    for k, eta in enumerate(etas):
        F = eye - eta * H
        e = F @ e
        P = F @ P @ F.T + eta**2 * C
        if (k + 1) % record_every == 0:
            means.append(ts + e)
            covs.append(P.copy())
    steps = np.arange(0, n_steps + 1, record_every)
    times = np.concatenate([[0.0], np.cumsum(etas)])[steps]
    return Moments(times=times, mean=np.array(means), cov=np.array(covs), steps=steps)


def sme_drift_matrix(hessian, lr: float, order: int = 1) -> np.ndarray:
    """$M = H$ (order 1) or $H + \\frac\\eta2 H^2$ (order 2: $\\nabla\\frac\\eta4\\|H e\\|^2 = \\frac\\eta2
    H^2 e$)."""
    H = check_psd("hessian", hessian)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    return H if order == 1 else H + 0.5 * lr * H @ H


def sde_moments(hessian, theta_star, noise_cov, theta0, *, lr: float, times, order: int = 1) -> Moments:
    """Exact mean and covariance of the SME $de = -Me\\,dt + \\sqrt\\eta C^{1/2}dW$ at ``times``:
    $m(t) = \\theta^* + e^{-Mt}e_0$, $P(t) = \\int_0^t e^{-Ms}\\,\\eta C\\,e^{-M^Ts}ds = S -
    e^{-Mt}Se^{-M^Tt}$
    with $MS + SM^T = \\eta C$ (M positive definite), else by Van Loan's block exponential [QOU-2]."""
    H, C, ts, th0 = _inputs(hessian, theta_star, noise_cov, theta0)
    eta = check_positive("lr", lr)
    M = sme_drift_matrix(H, eta, order)
    times = np.atleast_1d(np.asarray(times, np.float64))
    if np.any(times < 0) or not np.all(np.isfinite(times)):
        raise ValueError("times must be finite and >= 0")
    d = H.shape[0]
    stable = np.min(np.linalg.eigvalsh(0.5 * (M + M.T))) > 1e-8 * max(1.0, float(np.max(np.abs(M))))
    if stable:
        S = scipy.linalg.solve_continuous_lyapunov(M, eta * C)
    else:
        block = np.zeros((2 * d, 2 * d))
        block[:d, :d], block[:d, d:], block[d:, d:] = M, eta * C, -M.T
    means, covs = [], []
    for t in times:
        phi = scipy.linalg.expm(-M * t)
        means.append(ts + phi @ (th0 - ts))
        if stable:
            # P(t) = S − e^{−Mt} S e^{−Mᵀt}: differentiating gives e^{−Mt}(MS + SMᵀ)e^{−Mᵀt} =
            # e^{−Mt}ηCe^{−Mᵀt}
            P = S - phi @ S @ phi.T
        else:
            # Van Loan (1978): exp(t[[M, ηC], [0, −Mᵀ]]) = [[·, G], [0, e^{−Mᵀt}]] and P(t) = e^{−Mt} G
            P = phi @ scipy.linalg.expm(block * t)[:d, d:]
        covs.append(0.5 * (P + P.T))
    return Moments(times=times, mean=np.array(means), cov=np.array(covs))


def stationary_covariance_sgd(hessian, noise_cov, *, lr: float) -> np.ndarray:
    """S with $S = (I-\\eta H)S(I-\\eta H)^T + \\eta^2 C$ (needs $\\eta\\lambda_{max}(H) < 2$, λ_min > 0)
    [QOU-3]."""
    H, C = check_psd("hessian", hessian), check_psd("noise_cov", noise_cov)
    eta = check_positive("lr", lr)
    F = np.eye(H.shape[0]) - eta * H
    rho = np.max(np.abs(np.linalg.eigvals(F)))
    if rho >= 1:
        raise ValueError(f"SGD has no stationary law: spectral radius of I - lr*H is {rho:.4g} >= 1")
    return scipy.linalg.solve_discrete_lyapunov(F, eta**2 * C)


def stationary_covariance_sde(hessian, noise_cov, *, lr: float, order: int = 1) -> np.ndarray:
    """S with $MS + SM^T = \\eta C$, M the SME drift matrix (needs M positive definite) [QOU-3]."""
    H, C = check_psd("hessian", hessian), check_psd("noise_cov", noise_cov)
    eta = check_positive("lr", lr)
    M = sme_drift_matrix(H, eta, order)
    if np.min(np.linalg.eigvalsh(0.5 * (M + M.T))) <= 0:
        raise ValueError("the SME has no stationary law: its drift matrix is not positive definite")
    return scipy.linalg.solve_continuous_lyapunov(M, eta * C)
