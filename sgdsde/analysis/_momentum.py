"""Exact moments of heavy-ball momentum SGD and of its SME on a quadratic loss with constant Gaussian noise
(theory/momentum-sde.md).

Loss $L = \\frac12(\\theta-\\theta^*)^TH(\\theta-\\theta^*)$, stochastic gradient $H(\\theta-\\theta^*) + \\xi$,
ξ ~ N(0, C). The state is z = (θ, m), m the momentum buffer of ``sgdsde.Momentum`` (m₀ = 0, θ₀ given):
both the discrete method and the SME are linear in z, so their means and covariances are exact (recursions,
matrix exponentials, Lyapunov equations). Every function returns the moments of the whole state, θ first.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .._validation import check_int_range, check_positive, check_psd


def _inputs(hessian, noise_cov, lr, beta):
    H = check_psd("hessian", hessian)
    d = H.shape[0]
    C = check_psd("noise_cov", noise_cov)
    if C.shape != (d, d):
        raise ValueError(f"noise_cov must be a ({d}, {d}) matrix to match hessian, got {C.shape}")
    eta = check_positive("lr", lr)
    b = check_positive("beta", beta, allow_zero=True)
    if not b < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    return H, C, eta, b, d


def _vectors(theta_star, theta0, d):
    ts = np.asarray(theta_star, np.float64)
    th0 = np.asarray(theta0, np.float64)
    if ts.shape != (d,) or th0.shape != (d,):
        raise ValueError(
            f"theta_star and theta0 must have shape ({d},) to match hessian, got {ts.shape}, {th0.shape}"
        )
    return ts, th0


def momentum_sgd_matrices(hessian, noise_cov, lr: float, beta: float):
    """(M, c₀, Q) of the discrete recursion $z_{k+1} = Mz_k + c_0\\theta^* + B\\xi_k$, $Q = BCB^T$, with the
    blocks M = [[I − ηH, −ηβI], [H, βI]], c₀ = [ηH; −H], B = [−ηI; I]."""
    H, C, eta, b, d = _inputs(hessian, noise_cov, lr, beta)
    eye = np.eye(d)
    M = np.block([[eye - eta * H, -eta * b * eye], [H, b * eye]])
    c0 = np.vstack([eta * H, -H])
    B = np.vstack([-eta * eye, eye])
    return M, c0, B @ C @ B.T


def momentum_sgd_moments(hessian, noise_cov, theta_star, theta0, lr: float, beta: float, n_steps: int):
    """Mean (2d,) and covariance (2d, 2d) of z = (θ, m) after ``n_steps`` steps of
    $m_{k+1} = \\beta m_k + \\tilde g_k$, $\\theta_{k+1} = \\theta_k - \\eta m_{k+1}$ from (θ₀, 0), by the exact
    recursions $\\mu_{k+1} = M\\mu_k + c$, $S_{k+1} = MS_kM^T + Q$."""
    M, c0, Q = momentum_sgd_matrices(hessian, noise_cov, lr, beta)
    d = M.shape[0] // 2
    ts, th0 = _vectors(theta_star, theta0, d)
    n = check_int_range("n_steps", n_steps, 0)
    mu, S, c = np.concatenate([th0, np.zeros(d)]), np.zeros_like(M), c0 @ ts
    for _ in range(n):
        mu, S = M @ mu + c, M @ S @ M.T + Q
    return mu, S


def momentum_sgd_stationary_cov(hessian, noise_cov, lr: float, beta: float) -> np.ndarray:
    """Stationary covariance (2d, 2d) of z = (θ, m) under momentum SGD: $S = MSM^T + Q$ (discrete Lyapunov
    equation); ValueError unless the recursion contracts (spectral radius of M < 1)."""
    M, _, Q = momentum_sgd_matrices(hessian, noise_cov, lr, beta)
    rho = float(np.max(np.abs(np.linalg.eigvals(M))))
    if not rho < 1:
        raise ValueError(
            f"momentum SGD has no stationary covariance at lr={lr:g}, beta={beta:g}: the spectral radius of its "
            f"recursion matrix is {rho:.6g} >= 1 (stable iff lr*lambda < 2(1 + beta) for every eigenvalue "
            "lambda of the Hessian)"
        )
    return scipy.linalg.solve_discrete_lyapunov(M, Q)


def momentum_sme_matrices(hessian, noise_cov, lr: float, beta: float):
    """(F, f₀, Q) of the SME $dz = (Fz + f_0\\theta^*)\\,dt + G\\,dW$, $Q = GG^T$, on SGD's clock (``MomentumSME``),
    with the blocks F = [[0, −I], [H/η, −(1 − β)I/η]], f₀ = [0; −H/η], Q = [[0, 0], [0, C/η]]."""
    H, C, eta, b, d = _inputs(hessian, noise_cov, lr, beta)
    zero, eye = np.zeros((d, d)), np.eye(d)
    F = np.block([[zero, -eye], [H / eta, -(1 - b) / eta * eye]])
    f0 = np.vstack([zero, -H / eta])
    Q = np.block([[zero, zero], [zero, C / eta]])
    return F, f0, Q


def momentum_sme_moments(hessian, noise_cov, theta_star, theta0, lr: float, beta: float, n_steps: int):
    r"""Mean (2d,) and covariance (2d, 2d) of the momentum SME's z = (θ, m) at time t = n_steps·η from
    (θ₀, 0): over each interval of length η, $\mu \mapsto \Phi\mu + \int_0^\eta e^{Fs}ds\,f$ and
    $S \mapsto \Phi S\Phi^T + \int_0^\eta e^{Fs}Qe^{F^Ts}ds$, $\Phi = e^{F\eta}$ (Van Loan's block
    exponentials over one step, well conditioned whatever t)."""
    F, f0, Q = momentum_sme_matrices(hessian, noise_cov, lr, beta)
    p = F.shape[0]
    d = p // 2
    ts, th0 = _vectors(theta_star, theta0, d)
    n = check_int_range("n_steps", n_steps, 0)
    tau = float(lr)
    aug = np.zeros((p + 1, p + 1))
    aug[:p, :p], aug[:p, p] = F, f0 @ ts
    E = scipy.linalg.expm(aug * tau)
    Phi, shift = E[:p, :p], E[:p, p]
    G = scipy.linalg.expm(np.block([[-F, Q], [np.zeros((p, p)), F.T]]) * tau)
    S_tau = G[p:, p:].T @ G[:p, p:]
    S_tau = (S_tau + S_tau.T) / 2
    mu, S = np.concatenate([th0, np.zeros(d)]), np.zeros((p, p))
    for _ in range(n):
        mu, S = Phi @ mu + shift, Phi @ S @ Phi.T + S_tau
    return mu, S


def momentum_sme_stationary_cov(hessian, noise_cov, lr: float, beta: float) -> np.ndarray:
    """Stationary covariance (2d, 2d) of the momentum SME's z = (θ, m): $FS + SF^T + Q = 0$ (continuous
    Lyapunov equation); ValueError unless F is stable (H positive definite)."""
    F, _, Q = momentum_sme_matrices(hessian, noise_cov, lr, beta)
    alpha = float(np.max(np.linalg.eigvals(F).real))
    if not alpha < 0:
        raise ValueError(
            f"the momentum SME has no stationary covariance: its drift matrix has spectral abscissa {alpha:.6g} "
            ">= 0 (the Hessian must be positive definite)"
        )
    S = scipy.linalg.solve_continuous_lyapunov(F, -Q)
    return (S + S.T) / 2
