"""Gradient noise with an affine covariance factor $A(\\theta) = q + P\\theta$, and the quadratic form of a
linear problem: together they close SGD's and the SME's first two moments exactly (theory/quadratic-ou.md,
QOU-4, QOU-5).

On a linear model every per-example gradient is affine in θ, so the factor of minibatch noise (any sampling
that is Markov in θ), label noise, Wu et al.'s multiplicative noise and Gaussian noise is affine, and
$E\\,\\Sigma(\\theta) = A(m)A(m)^T + \\sum_j P_j\\,\\mathrm{Cov}\\,\\theta\\,P_j^T$ depends on the first two
moments only.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._noise import AbstractGradientNoise, AbstractSDENoise, require_sde_side
from .._noise.gaussian import psd_factor
from .._problem import Problem


@dataclasses.dataclass(frozen=True, eq=False)
class AffineNoise:
    """One step's gradient noise with covariance $\\Sigma(\\theta) = A(\\theta)A(\\theta)^T$,
    $A(\\theta)_{ij} = q_{ij} + \\sum_k P_{ijk}\\theta_k$ (column j: $q_j + P_j\\theta$, $P_j = P_{:,j,:}$).

    Attributes:
        P: (d, m, d) array, $P_{ijk} = \\partial A_{ij}/\\partial\\theta_k$ (the layout of ``jax.jacfwd``).
        q: (d, m) array, A(0).
    Build it from any sgdsde noise model on a linear problem with ``AffineNoise.from_noise``, or from a
    constant covariance with ``AffineNoise.constant`` [QOU-4].
    """

    P: np.ndarray
    q: np.ndarray

    def __post_init__(self):
        q = np.asarray(self.q, np.float64)
        if q.ndim != 2 or q.shape[1] < 1:
            raise ValueError(f"q must be a (d, m) array with m >= 1, got shape {q.shape}")
        P = np.asarray(self.P, np.float64)
        d, m = q.shape
        if P.shape != (d, m, d):
            raise ValueError(f"P must have shape (d, m, d) = {(d, m, d)} to match q {q.shape}, got {P.shape}")
        if not (np.all(np.isfinite(P)) and np.all(np.isfinite(q))):
            raise ValueError("P and q must be finite")
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "q", q)

    @property
    def dim(self) -> int:
        """d, the number of parameters."""
        return self.q.shape[0]

    @property
    def n_noise(self) -> int:
        """m, the number of noise columns (Brownian motions)."""
        return self.q.shape[1]

    @property
    def is_constant(self) -> bool:
        return not np.any(self.P)

    @classmethod
    def constant(cls, covariance) -> AffineNoise:
        """Constant noise $\\Sigma = C$: P = 0, q a factor of C (Cholesky, or eigh if C is singular)."""
        q = psd_factor("covariance", covariance)
        d, m = q.shape
        return cls(np.zeros((d, m, d)), q)

    @classmethod
    def from_noise(cls, problem: Problem, noise: AbstractSDENoise, *, rtol: float = 1e-9, seed: int = 0):
        """P and q of ``noise.covariance_factor(problem, θ)`` by forward-mode autodiff in float64: q = A(0),
        P = ∂A/∂θ.

        Affinity is verified at two random θ (scales 1 and 10) to relative ``rtol``: a nonlinear model (or a
        noise whose factor is not affine) raises ValueError naming ``noise``, as does a noise with sampler
        state across steps (shuffled epochs), for which SGD is not a Markov chain in θ.
        """
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
        if not isinstance(noise, AbstractGradientNoise):
            raise ValueError(f"noise must be a sgdsde gradient-noise model, got {type(noise).__name__}")
        require_sde_side(noise, "AffineNoise.from_noise")
        noise.check(problem)
        d = problem.n_params
        with jax.enable_x64(True):
            p64 = problem.astype(jnp.float64)
            if noise.init_state(p64, jax.random.key(0), 1, jnp.float64) is not None:
                raise ValueError(
                    "noise carries sampler state from step to step (e.g. sampling='shuffle': epochs without "
                    "replacement), so SGD is not a Markov chain in theta and its moments do not close; use "
                    "sampling='with_replacement' or 'without_replacement'"
                )

            def factor(theta):
                return noise.covariance_factor(p64, theta)

            zero = jnp.zeros(d, jnp.float64)
            q = np.asarray(factor(zero), np.float64)
            P = np.asarray(jax.jacfwd(factor)(zero), np.float64)
            affine = cls(P, q)
            rng = np.random.default_rng(seed)
            for scale in (1.0, 10.0):
                theta = scale * rng.normal(size=d)
                got = np.asarray(factor(jnp.asarray(theta)), np.float64)
                lin = np.einsum("ijk,k->ij", P, theta)
                ref = max(float(np.max(np.abs(got))), float(np.max(np.abs(q)) + np.max(np.abs(lin))), 1e-300)
                dev = float(np.max(np.abs(got - q - lin))) / ref
                if not dev <= rtol:
                    raise ValueError(
                        "noise's covariance factor is not affine in theta on this problem (a nonlinear model?): "
                        f"max|A(theta) - A(0) - (dA/dtheta) theta| / max|A| = {dev:.3g} > rtol={rtol:g} at a "
                        f"random theta of scale {scale:g}"
                    )
            # the moment recursions also need a quadratic loss (a linear model): ∇²L the same everywhere
            rng = np.random.default_rng(seed + 1)
            H0 = np.asarray(jax.hessian(p64.loss)(jnp.zeros(d, jnp.float64)))
            H1 = np.asarray(jax.hessian(p64.loss)(jnp.asarray(rng.normal(size=d))))
            if not np.allclose(H0, H1, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(H0))))):
                raise ValueError(
                    f"problem's loss is not quadratic in theta ({type(problem.model).__name__} is not linear in "
                    "its parameters): SGD's moments do not close; AffineNoise needs a linear model"
                )
        return affine

    def factor(self, theta) -> np.ndarray:
        """$A(\\theta) = q + P\\theta$, (d, m)."""
        return self.q + np.einsum("ijk,k->ij", self.P, np.asarray(theta, np.float64))

    def covariance(self, theta) -> np.ndarray:
        """$\\Sigma(\\theta) = A(\\theta)A(\\theta)^T$."""
        A = self.factor(theta)
        return A @ A.T

    def expected_covariance(self, mean, cov) -> np.ndarray:
        """$E\\,\\Sigma(\\theta) = A(m)A(m)^T + \\sum_j P_j\\,V P_j^T$ for θ with mean m and covariance V (any law)."""
        A = self.factor(mean)
        return A @ A.T + np.einsum(
            "ajk,kl,bjl->ab", self.P, np.asarray(cov, np.float64), self.P, optimize=True
        )

    def shift(self, theta0) -> AffineNoise:
        """The same noise as a function of e = θ − θ₀: $A(\\theta_0 + e) = A(\\theta_0) + Pe$."""
        return AffineNoise(self.P, self.factor(theta0))

    def kron(self) -> np.ndarray:
        """$K = \\sum_j P_j \\otimes P_j$ (d² × d²): the matrix of $V \\mapsto \\sum_j P_jVP_j^T$ on row-major vec."""
        d = self.dim
        return np.einsum("ajk,bjl->abkl", self.P, self.P, optimize=True).reshape(d * d, d * d)

    def mean_coupling(self) -> np.ndarray:
        """The matrix (d² × d) of $m \\mapsto \\sum_j (P_jm\\,q_j^T + q_j\\,m^TP_j^T)$ on row-major vec."""
        d = self.dim
        X = np.einsum("ajk,bj->abk", self.P, self.q)
        return (X + X.transpose(1, 0, 2)).reshape(d * d, d)


class QuadraticForm(NamedTuple):
    """$L(\\theta) = L^* + \\frac12(\\theta-\\theta^*)^TH(\\theta-\\theta^*)$."""

    hessian: np.ndarray
    theta_star: np.ndarray
    min_loss: float


def quadratic_form(problem: Problem, *, rtol: float = 1e-9, seed: int = 0) -> QuadraticForm:
    """H, the minimum-norm minimiser θ* and L* of a problem with a quadratic loss (a linear model):
    $\\nabla L(\\theta) = H\\theta - b$, $\\theta^* = H^+b$ (for linear regression H = XᵀX/n, b = Xᵀy/n).

    The gradient's affinity is verified at two random θ to relative ``rtol`` (ValueError naming ``problem``).
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
    d = problem.n_params
    with jax.enable_x64(True):
        p64 = problem.astype(jnp.float64)
        H = np.asarray(p64.hessian(jnp.zeros(d, jnp.float64)), np.float64)
        H = 0.5 * (H + H.T)
        b = -np.asarray(p64.grad(jnp.zeros(d, jnp.float64)), np.float64)
        rng = np.random.default_rng(seed)
        for scale in (1.0, 10.0):
            theta = scale * rng.normal(size=d)
            got = np.asarray(p64.grad(jnp.asarray(theta)), np.float64)
            ref = max(
                float(np.max(np.abs(got))), float(np.max(np.abs(H @ theta)) + np.max(np.abs(b))), 1e-300
            )
            dev = float(np.max(np.abs(got - H @ theta + b))) / ref
            if not dev <= rtol:
                raise ValueError(
                    f"problem's loss is not quadratic in theta (a nonlinear model?): the gradient deviates from "
                    f"H theta - b by {dev:.3g} (relative) > rtol={rtol:g}"
                )
        theta_star = np.linalg.lstsq(H, b, rcond=None)[0]
        min_loss = float(p64.loss(jnp.asarray(theta_star)))
    return QuadraticForm(H, theta_star, min_loss)
