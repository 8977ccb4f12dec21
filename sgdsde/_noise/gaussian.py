"""Gaussian gradient noise with a given covariance (constant or θ-dependent), and spherical noise."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._normals import step_normals
from .._validation import check_positive, check_psd
from .base import AbstractGradientNoise, AbstractSDENoise, NoiseType


def psd_factor(name: str, covariance) -> np.ndarray:
    """A factor A with A Aᵀ = C for a constant PSD C (Cholesky, or eigh for a singular C), checked once."""
    C = check_psd(name, covariance)
    try:
        return np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        lam, Q = np.linalg.eigh(C)
        return Q * np.sqrt(np.clip(lam, 0, None))[None, :]


class GaussianNoise(AbstractGradientNoise, AbstractSDENoise):
    """$\\tilde g = \\nabla L(\\theta) + A(\\theta)\\xi$, ξ ~ N(0, I_m): Σ = A Aᵀ (theory/noise.md, NOISE-3).

    Give either ``covariance`` (constant d × d PSD, factored once) or ``factor`` (a constant d × m array,
    or a function θ ↦ A(θ)).
    """

    factor: jax.Array | Callable
    n_noise: int = eqx.field(static=True)

    def __init__(self, covariance=None, *, factor=None):
        if (covariance is None) == (factor is None):
            raise ValueError("GaussianNoise needs exactly one of covariance= or factor=")
        if covariance is not None:
            A = psd_factor("covariance", covariance)
            self.factor, self.n_noise = jnp.asarray(A), A.shape[1]
        elif callable(factor):
            self.factor, self.n_noise = factor, -1
        else:
            A = np.asarray(factor)
            if A.ndim != 2 or not np.all(np.isfinite(A)):
                raise ValueError(f"factor must be a finite 2-D array (d × m), got shape {A.shape}")
            self.factor, self.n_noise = jnp.asarray(A), A.shape[1]

    def check(self, problem):
        d = problem.n_params
        A = self.covariance_factor(problem, problem.model.init().astype(problem.X.dtype))
        if A.ndim != 2 or A.shape[0] != d:
            raise ValueError(f"the noise factor must have shape ({d}, m) to match the model, got {A.shape}")

    def _m(self, problem) -> int:
        if self.n_noise >= 0:
            return self.n_noise
        theta = jax.ShapeDtypeStruct((problem.n_params,), problem.X.dtype)
        factor = cast(Callable, self.factor)  # n_noise < 0: the factor is a callable
        return jax.eval_shape(factor, theta).shape[1]

    def draw(self, problem, key, step, state, n_paths, dtype):
        m = self._m(problem)
        return step_normals(key, n_paths, m, dtype), state

    def gradient(self, problem, theta, draws):
        return problem.grad(theta) + self.covariance_factor(problem, theta) @ draws

    def covariance_factor(self, problem, theta):
        A = self.factor(theta) if callable(self.factor) else self.factor
        return A.astype(theta.dtype)

    def noise_dim(self, problem):
        return self._m(problem)

    def noise_type(self, problem):
        if not callable(self.factor):
            return NoiseType.ADDITIVE
        return AbstractSDENoise.noise_type(self, problem)

    def latex(self):
        if callable(self.factor):
            return r"A(\theta) = \text{the given factor function},\ A A^T = \Sigma(\theta)"
        return r"A = \text{the given constant factor},\ A A^T = \Sigma"


class SphericalGaussianNoise(AbstractGradientNoise, AbstractSDENoise):
    """$\\tilde g = \\nabla L(\\theta) + \\sigma\\xi$, ξ ~ N(0, I_d): Σ = σ²I (HaoChen et al.'s SGLD;
    theory/noise.md, NOISE-3)."""

    sigma: jax.Array

    def __init__(self, sigma):
        check_positive("sigma", sigma, allow_zero=True)
        self.sigma = jnp.asarray(float(sigma))

    def draw(self, problem, key, step, state, n_paths, dtype):
        d = problem.n_params
        xi = step_normals(key, n_paths, d, dtype)
        return self.sigma.astype(dtype) * xi, state

    def gradient(self, problem, theta, draws):
        return problem.grad(theta) + draws

    def covariance_factor(self, problem, theta):
        return self.sigma.astype(theta.dtype) * jnp.eye(problem.n_params, dtype=theta.dtype)

    def factor_mv(self, problem, theta, w):
        """$A w = \\sigma w$, without the d × d identity."""
        return self.sigma.astype(w.dtype) * w

    def covariance_diagonal(self, problem, theta):
        """$\\sigma^2\\mathbf 1$, without the d × d identity."""
        return jnp.full_like(theta, self.sigma.astype(theta.dtype) ** 2)

    def noise_dim(self, problem):
        return problem.n_params

    def noise_type(self, problem):
        return NoiseType.ADDITIVE

    def latex(self):
        return r"A(\theta) = \sigma I_d"
