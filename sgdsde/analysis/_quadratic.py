"""Exact first and second moments of SGD and of its SMEs on a quadratic loss with constant or affine noise.

Loss $L = L^* + \\frac12(\\theta-\\theta^*)^T H(\\theta-\\theta^*)$, H symmetric; one step's gradient noise
has covariance C (constant: a (d, d) matrix) or $\\Sigma(\\theta) = A(\\theta)A(\\theta)^T$ with A affine
(an ``AffineNoise``: any noise model on a linear model). SGD: $e_{k+1} = (I-\\eta_k H)e_k - \\eta_k\\xi_k$;
SME of order o: drift $-M e$ with $M = H + \\frac{(o-1)\\eta}{2}H^2$ and diffusion $\\sqrt\\eta\\,A(\\theta)$
(theory/quadratic-ou.md, QOU-1..5).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from .._schedules import learning_rates
from .._validation import check_int_range, check_positive, check_psd
from ._affine import AffineNoise


@dataclasses.dataclass
class Moments:
    """Mean (R, d) and covariance (R, d, d) of θ at ``times`` (and SGD ``steps`` where defined)."""

    times: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    steps: np.ndarray | None = None

    def expectations(self, hessian, theta_star, min_loss: float = 0.0) -> dict[str, np.ndarray]:
        """Exact E of the built-in observables "theta", "sq_norm" ($\\|\\theta\\|^2$) and "loss" (for
        $L = L^* + \\frac12 e^THe$; ``min_loss`` is L*, e.g. ``quadratic_form(problem).min_loss``)."""
        H = np.asarray(hessian, np.float64)
        e = self.mean - np.asarray(theta_star, np.float64)[None]
        return {
            "theta": self.mean,
            "sq_norm": np.einsum("rii->r", self.cov) + np.sum(self.mean**2, axis=1),
            "loss": float(min_loss)
            + 0.5 * np.einsum("ij,rji->r", H, self.cov)
            + 0.5 * np.einsum("ri,ij,rj->r", e, H, e),
        }


def _noise_input(noise_cov, d: int) -> np.ndarray | AffineNoise:
    """A constant (d, d) covariance C (checked PSD) or an AffineNoise on d parameters."""
    if isinstance(noise_cov, AffineNoise):
        if noise_cov.dim != d:
            raise ValueError(
                f"noise_cov must act on d={d} parameters to match hessian, got an AffineNoise of d={noise_cov.dim}"
            )
        return noise_cov
    C = check_psd("noise_cov", noise_cov)
    if C.shape != (d, d):
        raise ValueError(
            f"noise_cov must be a ({d}, {d}) matrix or an AffineNoise to match hessian, got {C.shape}"
        )
    return C


def _inputs(hessian, theta_star, noise_cov, theta0):
    H = check_psd("hessian", hessian)
    d = H.shape[0]
    noise = _noise_input(noise_cov, d)
    ts = np.asarray(theta_star, np.float64)
    th0 = np.asarray(theta0, np.float64)
    if ts.shape != (d,) or th0.shape != (d,):
        raise ValueError(
            f"theta_star and theta0 must have shape ({d},) to match hessian, got {ts.shape}, {th0.shape}"
        )
    return H, noise, ts, th0


def _check_finite(mo: Moments, what: str) -> Moments:
    if not (np.all(np.isfinite(mo.mean)) and np.all(np.isfinite(mo.cov))):
        bad = int(np.argmin(np.all(np.isfinite(mo.cov.reshape(len(mo.cov), -1)), axis=1)))
        raise FloatingPointError(
            f"the exact {what} moments overflowed by record {bad} (t = {mo.times[bad]:.4g}): its second moment "
            "grows without bound at this lr (see stationary_covariance_* for the stability radius)"
        )
    return mo


def sgd_moments(
    hessian, theta_star, noise_cov, theta0, *, lr, n_steps: int, record_every: int = 1
) -> Moments:
    """Exact mean and covariance of SGD, $m_{k+1} - \\theta^* = (I-\\eta_kH)(m_k-\\theta^*)$,
    $V_{k+1} = (I-\\eta_kH)V_k(I-\\eta_kH)^T + \\eta_k^2\\,E\\,\\Sigma(\\theta_k)$, for any schedule [QOU-1, QOU-4].

    Args:
        hessian, theta_star: the loss $L^* + \\frac12(\\theta-\\theta^*)^TH(\\theta-\\theta^*)$ (e.g. from
            ``quadratic_form(problem)``).
        noise_cov: one step's gradient-noise covariance: a constant (d, d) PSD matrix C, or an AffineNoise
            ($E\\Sigma(\\theta) = A(m)A(m)^T + \\sum_jP_jVP_j^T$: exact for any noise with conditional mean 0
            and covariance Σ(θ), e.g. minibatch SGD on linear regression via ``AffineNoise.from_noise``).
        theta0: (d,) deterministic start.
        lr: float, schedule or array of n_steps step sizes.
        n_steps, record_every: steps, and the recording stride (divides n_steps).
    Returns:
        Moments at steps 0, record_every, …, n_steps.
    """
    H, noise, ts, th0 = _inputs(hessian, theta_star, noise_cov, theta0)
    n_steps = check_int_range("n_steps", n_steps, 1)
    record_every = check_int_range("record_every", record_every, 1)
    if n_steps % record_every:
        raise ValueError(f"record_every must divide n_steps={n_steps}, got {record_every}")
    etas = learning_rates(lr, n_steps)
    d = H.shape[0]
    e, P = th0 - ts, np.zeros((d, d))
    means, covs = [th0.copy()], [P.copy()]
    eye = np.eye(d)
    affine = isinstance(noise, AffineNoise)
    with np.errstate(over="ignore", invalid="ignore"):  # an unstable recursion is reported by _check_finite
        for k, eta in enumerate(etas):
            # ξ_k has conditional mean 0, so E Σ(θ_k) at the pre-step moments is all the noise adds
            C = noise.expected_covariance(ts + e, P) if affine else noise
            F = eye - eta * H
            e = F @ e
            P = F @ P @ F.T + eta**2 * C
            if (k + 1) % record_every == 0:
                means.append(ts + e)
                covs.append(P.copy())
    steps = np.arange(0, n_steps + 1, record_every)
    times = np.concatenate([[0.0], np.cumsum(etas)])[steps]
    return _check_finite(Moments(times=times, mean=np.array(means), cov=np.array(covs), steps=steps), "SGD")


def svag_moments(
    hessian,
    theta_star,
    noise_cov,
    theta0,
    *,
    lr,
    l: int,  # noqa: E741 (the paper's name)
    n_steps: int,
    record_every: int = 1,
) -> Moments:
    """Exact mean and covariance of SVAG with parameter l: SGD with step η_k/l taken l times per SGD step k
    and one-step covariance l·Σ(θ) (a g̃₁ + c g̃₂ with a + c = 1, a² + c² = l), on SGD's clock [SDE-7, QOU-1].

    Args:
        hessian, theta_star, noise_cov, theta0: as in ``sgd_moments`` (an AffineNoise factor is scaled by √l).
        lr: SGD's float, schedule or array of n_steps step sizes.
        l: integer ≥ 1 (l = 1 is SGD).
        n_steps, record_every: SGD steps (l·n_steps SVAG steps) and the recording stride in SGD steps.

    Returns:
        Moments at SGD steps 0, record_every, …, n_steps (``steps`` in SGD steps, ``times`` t_k = Σ_{j<k}η_j),
        index by index comparable with ``simulate_svag`` and ``sgd_moments``.
    """
    l = check_int_range("l", l, 1)  # noqa: E741
    n_steps = check_int_range("n_steps", n_steps, 1)
    record_every = check_int_range("record_every", record_every, 1)
    if n_steps % record_every:
        raise ValueError(f"record_every must divide n_steps={n_steps}, got {record_every}")
    d = np.shape(hessian)[0] if np.ndim(hessian) == 2 else 0
    noise = _noise_input(noise_cov, d)
    scaled = (
        AffineNoise(np.sqrt(l) * noise.P, np.sqrt(l) * noise.q)
        if isinstance(noise, AffineNoise)
        else l * noise
    )
    etas = np.repeat(learning_rates(lr, n_steps) / l, l)
    mo = sgd_moments(
        hessian, theta_star, scaled, theta0, lr=etas, n_steps=n_steps * l, record_every=record_every * l
    )
    if mo.steps is None:
        raise AssertionError("sgd_moments records the steps of its moments")
    return dataclasses.replace(mo, steps=mo.steps // l)


def sme_drift_matrix(hessian, lr: float, order: int = 1) -> np.ndarray:
    """$M = H$ (order 1) or $H + \\frac\\eta2 H^2$ (order 2:
    $\\nabla\\frac\\eta4\\|H e\\|^2 = \\frac\\eta2 H^2 e$)."""
    H = check_psd("hessian", hessian)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    return H if order == 1 else H + 0.5 * lr * H @ H


def _covariance_generator(M: np.ndarray, noise: AffineNoise, eta: float) -> np.ndarray:
    """The matrix (d² × d²) of $V \\mapsto -MV - VM^T + \\eta\\sum_jP_jVP_j^T$ on row-major vec."""
    eye = np.eye(M.shape[0])
    return -(np.kron(M, eye) + np.kron(eye, M)) + eta * noise.kron()


def _affine_generator(M, noise: AffineNoise, ts, eta: float) -> np.ndarray:
    """G with $\\dot z = Gz$ for $z = (Ee, \\mathrm{vec}\\,Eee^T, 1)$ under
    $de = -Me\\,dt + \\sqrt\\eta(A(\\theta^*) + Pe)\\,dW$ [QOU-5]."""
    d = M.shape[0]
    ne = noise.shift(ts)
    n = d + d * d
    G = np.zeros((n + 1, n + 1))
    G[:d, :d] = -M
    G[d:n, d:n] = _covariance_generator(M, ne, eta)
    G[d:n, :d] = eta * ne.mean_coupling()
    G[d:n, n] = eta * (ne.q @ ne.q.T).ravel()
    return G


def _z_to_moments(z, d: int, ts):
    r"""(mean, covariance) from $z = (Ee, \mathrm{vec}\,Eee^T, 1)$."""
    m, S = z[:d], z[d : d + d * d].reshape(d, d)
    V = S - np.outer(m, m)
    return ts + m, 0.5 * (V + V.T)


def _constant_noise_flow(M, eta: float, C, h: float):
    """$\\Phi = e^{-Mh}$ and the covariance the noise adds over time h, $\\int_0^h e^{-Ms}\\eta C e^{-Ms}ds$,
    in M's eigenbasis: $\\tilde C_{ij}(1-e^{-(\\lambda_i+\\lambda_j)h})/(\\lambda_i+\\lambda_j)$ [QOU-2].
    No $e^{+Mt}$ factor appears, so large h and a singular H (variance growing like ηCh on the null space)
    stay exact."""
    lam, Q = np.linalg.eigh(0.5 * (M + M.T))
    Ct = Q.T @ (eta * C) @ Q
    a = lam[:, None] + lam[None, :]
    w = np.where(a == 0, h, -np.expm1(-a * h) / np.where(a == 0, 1.0, a))
    P = Q @ (Ct * w) @ Q.T
    return (Q * np.exp(-lam * h)) @ Q.T, 0.5 * (P + P.T)


def _sde_moments_at_times(H, noise, ts, th0, eta, times, order) -> Moments:
    """Constant lr: the moments at arbitrary times from t = 0, each in one piece."""
    M = sme_drift_matrix(H, eta, order)
    d = H.shape[0]
    means, covs = [], []
    if isinstance(noise, AffineNoise):
        G = _affine_generator(M, noise, ts, eta)
        e0 = th0 - ts
        z0 = np.concatenate([e0, np.outer(e0, e0).ravel(), [1.0]])
        for t in times:
            # Al-Mohy & Higham's action of the exponential: no (d² + d + 1)² exponential is formed
            z = scipy.sparse.linalg.expm_multiply(G * t, z0) if t > 0 else z0
            m, V = _z_to_moments(z, d, ts)
            means.append(m)
            covs.append(V)
    else:
        for t in times:
            phi, P = _constant_noise_flow(M, eta, noise, t)
            means.append(ts + phi @ (th0 - ts))
            covs.append(P)
    return Moments(times=times, mean=np.array(means), cov=np.array(covs))


def _sde_moments_on_sgd_clock(H, noise, ts, th0, etas, order, record_every) -> Moments:
    r"""Any schedule: the SME on $[t_k, t_{k+1}]$ has the constant η_k (diffusion $\sqrt{\eta_k}$, and M(η_k)
    at order 2), so the moments are composed step by step, each step exactly; steps with the same η share
    one flow."""
    d = H.shape[0]
    affine = isinstance(noise, AffineNoise)
    flows: dict[float, tuple] = {}
    e = th0 - ts
    z = np.concatenate([e, np.outer(e, e).ravel(), [1.0]])
    P = np.zeros((d, d))
    means, covs = [th0.copy()], [P.copy()]
    for k, eta in enumerate(etas):
        eta = float(eta)
        if eta not in flows:
            M = sme_drift_matrix(H, eta, order)
            flows[eta] = (
                (scipy.linalg.expm(_affine_generator(M, noise, ts, eta) * eta),)
                if affine
                else _constant_noise_flow(M, eta, noise, eta)
            )
        if affine:
            z = flows[eta][0] @ z
        else:
            phi, Pn = flows[eta]
            e, P = phi @ e, phi @ P @ phi.T + Pn
        if (k + 1) % record_every == 0:
            m, V = _z_to_moments(z, d, ts) if affine else (ts + e, 0.5 * (P + P.T))
            means.append(m)
            covs.append(V)
    steps = np.arange(0, len(etas) + 1, record_every)
    times = np.concatenate([[0.0], np.cumsum(etas)])[steps]
    return Moments(times=times, mean=np.array(means), cov=np.array(covs), steps=steps)


def sde_moments(
    hessian,
    theta_star,
    noise_cov,
    theta0,
    *,
    lr,
    times=None,
    order: int = 1,
    n_steps: int | None = None,
    record_every: int = 1,
) -> Moments:
    """Exact mean and covariance of the SME $de = -Me\\,dt + \\sqrt\\eta A(\\theta)dW$.

    Constant noise (C a matrix): $m(t) = \\theta^* + e^{-Mt}e_0$, $P(t) = \\int_0^te^{-Ms}\\eta Ce^{-Ms}ds$, in
    M's eigenbasis (any PSD H) [QOU-2]. Affine noise (an AffineNoise): $(E e, E ee^T)$ solve a linear ODE of
    size d + d², solved by its exponential [QOU-5].

    Either ``times`` (lr a constant float; any times ≥ 0 on SGD's clock t = kη), or ``n_steps`` (lr a float,
    schedule or array of n_steps step sizes, as in ``sgd_moments``): then the moments at
    $t_k = \\sum_{j<k} \\eta_j$ for k = 0, record_every, …, n_steps, the SME having η_k on $[t_k, t_{k+1}]$
    (SDE-1), composed
    exactly step by step.
    """
    H, noise, ts, th0 = _inputs(hessian, theta_star, noise_cov, theta0)
    if (times is None) == (n_steps is None):
        raise ValueError("give exactly one of times (a constant lr) and n_steps (any lr, on SGD's clock)")
    if times is None:
        n_steps = check_int_range("n_steps", n_steps, 1)
        record_every = check_int_range("record_every", record_every, 1)
        if n_steps % record_every:
            raise ValueError(f"record_every must divide n_steps={n_steps}, got {record_every}")
        etas = learning_rates(lr, n_steps)
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        with np.errstate(over="ignore", invalid="ignore"):  # an unstable flow is reported by _check_finite
            return _check_finite(
                _sde_moments_on_sgd_clock(H, noise, ts, th0, etas, order, record_every), "SME"
            )
    eta = check_positive("lr", lr)
    times = np.atleast_1d(np.asarray(times, np.float64))
    if times.ndim != 1 or np.any(times < 0) or not np.all(np.isfinite(times)):
        raise ValueError("times must be a 1-D array of finite values >= 0")
    with np.errstate(over="ignore", invalid="ignore"):  # an unstable generator is reported by _check_finite
        return _check_finite(_sde_moments_at_times(H, noise, ts, th0, eta, times, order), "SME")


def _stationary_noise(noise: AffineNoise, theta_star, d: int) -> AffineNoise:
    """The noise around the stationary mean θ*: $A(\\theta^* + e) = A(\\theta^*) + Pe$."""
    if theta_star is None:
        if not noise.is_constant:
            raise ValueError("theta_star is required when noise_cov is an AffineNoise that depends on theta")
        return noise
    ts = np.asarray(theta_star, np.float64)
    if ts.shape != (d,):
        raise ValueError(f"theta_star must have shape ({d},) to match hessian, got {ts.shape}")
    return noise.shift(ts)


def _stable_solve(A: np.ndarray, rhs: np.ndarray, d: int) -> np.ndarray | None:
    """V with A vec V = rhs, or None if the second-moment dynamics are unstable.

    A is I − T (T = F⊗F + η²Σ_j P_j⊗P_j, a positive map) or −L (L = −M⊗I − I⊗M + ηΣ_j P_j⊗P_j, resolvent
    positive). For such maps ρ(T) < 1, resp. α(L) < 0, holds iff A vec W = vec I has a positive definite
    solution W (Schneider 1965; Damm 2004, ch. 3): one extra right-hand side instead of the O(d⁶) eigenvalues
    of a d² × d² matrix. The noise term only raises ρ and α, so stability here also makes the mean converge.
    """
    try:
        X = np.linalg.solve(A, np.stack([rhs, np.eye(d).ravel()], axis=1))
    except np.linalg.LinAlgError:
        return None
    W = X[:, 1].reshape(d, d)
    if not np.all(np.isfinite(X)) or np.min(np.linalg.eigvalsh(0.5 * (W + W.T))) <= 0:
        return None
    V = X[:, 0].reshape(d, d)
    return 0.5 * (V + V.T)


def stationary_covariance_sgd(hessian, noise_cov, *, lr: float, theta_star=None) -> np.ndarray:
    """Stationary covariance V of SGD (mean θ*): $V = (I-\\eta H)V(I-\\eta H)^T + \\eta^2C$ [QOU-3], or with
    affine noise $V = FVF^T + \\eta^2(A(\\theta^*)A(\\theta^*)^T + \\sum_jP_jVP_j^T)$, $F = I - \\eta H$ [QOU-4].

    Needs the recursion to contract: ρ(I − ηH) < 1 (constant C), or a spectral radius < 1 of
    $V \\mapsto FVF^T + \\eta^2\\sum_jP_jVP_j^T$ (affine; multiplicative noise can break it even when
    ηλ_max < 2); else ValueError. ``theta_star`` (the minimiser) is required for θ-dependent affine noise.
    """
    H = check_psd("hessian", hessian)
    d = H.shape[0]
    noise = _noise_input(noise_cov, d)
    eta = check_positive("lr", lr)
    F = np.eye(d) - eta * H
    if isinstance(noise, AffineNoise):
        ne = _stationary_noise(noise, theta_star, d)
        T = np.kron(F, F) + eta**2 * ne.kron()
        V = _stable_solve(np.eye(d * d) - T, eta**2 * (ne.q @ ne.q.T).ravel(), d)
        if V is None:
            rho = float(np.max(np.abs(np.linalg.eigvals(T))))
            raise ValueError(
                f"SGD has no stationary second moment at lr={eta:g}: the spectral radius of its second-moment "
                f"recursion V -> F V F^T + lr^2 sum_j P_j V P_j^T (F = I - lr*H) is {rho:.6g} >= 1"
            )
        return V
    rho = np.max(np.abs(np.linalg.eigvals(F)))
    if rho >= 1:
        raise ValueError(f"SGD has no stationary law: spectral radius of I - lr*H is {rho:.4g} >= 1")
    return scipy.linalg.solve_discrete_lyapunov(F, eta**2 * noise)


def stationary_covariance_sde(
    hessian, noise_cov, *, lr: float, order: int = 1, theta_star=None
) -> np.ndarray:
    """Stationary covariance V of the SME (mean θ*): $MV + VM^T = \\eta C$ [QOU-3], or with affine noise
    $MV + VM^T = \\eta(A(\\theta^*)A(\\theta^*)^T + \\sum_jP_jVP_j^T)$ [QOU-5]; M the SME drift matrix.

    Needs M positive definite (constant C), or a negative spectral abscissa of
    $V \\mapsto -MV - VM^T + \\eta\\sum_jP_jVP_j^T$ (affine); else ValueError.
    """
    H = check_psd("hessian", hessian)
    d = H.shape[0]
    noise = _noise_input(noise_cov, d)
    eta = check_positive("lr", lr)
    M = sme_drift_matrix(H, eta, order)
    if isinstance(noise, AffineNoise):
        ne = _stationary_noise(noise, theta_star, d)
        L = _covariance_generator(M, ne, eta)
        V = _stable_solve(-L, eta * (ne.q @ ne.q.T).ravel(), d)
        if V is None:
            alpha = float(np.max(np.linalg.eigvals(L).real))
            raise ValueError(
                f"the SME has no stationary second moment at lr={eta:g}: its second-moment generator "
                f"V -> -M V - V M^T + lr sum_j P_j V P_j^T has spectral abscissa {alpha:.6g} >= 0"
            )
        return V
    if np.min(np.linalg.eigvalsh(0.5 * (M + M.T))) <= 0:
        raise ValueError("the SME has no stationary law: its drift matrix is not positive definite")
    return scipy.linalg.solve_continuous_lyapunov(M, eta * noise)
