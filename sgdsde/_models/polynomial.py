"""A scalar parameter read through the moment curve: f(θ; x) = Σ_k x_k θ^k, a linear model in the learned
features p(θ) = (θ, θ², …, θ^K)."""

from __future__ import annotations

import jax.numpy as jnp

from .._validation import check_int_range
from .base import AbstractModel


class PolynomialCurve(AbstractModel):
    """$f(\\theta; x) = x^T p(\\theta)$, $p(\\theta) = (\\theta, \\theta^2, \\dots, \\theta^K)$, θ ∈ R (d = 1, input dim
    K = ``degree``). The loss is $\\frac12\\|p(\\theta) - t\\|_M^2$ + const with M = XᵀX/n: the squared distance
    from the data's target to the curve, so data can give it several minima of different curvature
    $H = p'(\\theta)^T M p'(\\theta)$ at an interpolating minimum (theory/three-theories.md, THR-8)."""

    degree: int

    def __check_init__(self):
        check_int_range("degree", self.degree, 1)

    @property
    def n_params(self) -> int:
        return 1

    @property
    def input_dim(self) -> int:
        return self.degree

    def features(self, theta):
        """p(θ) = (θ, θ², …, θ^K)."""
        return theta[0] ** jnp.arange(1, self.degree + 1, dtype=theta.dtype)

    def output(self, theta, x):
        return jnp.dot(x, self.features(theta))

    def outputs(self, theta, X):
        return X @ self.features(theta)

    def output_gradients(self, theta, X):
        k = jnp.arange(1, self.degree + 1, dtype=theta.dtype)
        dp = k * theta[0] ** (k - 1)
        return (X @ dp)[None, :]

    def init(self, key=None):
        return jnp.zeros(1)

    def param_names(self) -> list[str]:
        return ["theta"]
