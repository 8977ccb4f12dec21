"""The noise contract: how SGD's stochastic gradient is drawn, and its covariance factor A(θ)."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._problem import Problem


class AbstractGradientNoise(eqx.Module):
    """A model of SGD's gradient noise: $\\tilde g(\\theta) = \\nabla L(\\theta) + \\xi$, $E\\xi = 0$,
    $\\mathrm{Cov}\\,\\xi = \\Sigma(\\theta) = A(\\theta)A(\\theta)^T$.

    Randomness is split from the maths so ensembles draw fast: ``draw`` makes the random numbers of one
    step for all N paths at once (flat draws, reshaped: the fast layout of ../performance.md), and
    ``gradient`` turns one path's draws into its stochastic gradient, deterministically.
    """

    def check(self, problem: Problem) -> None:
        """Raise ValueError if this noise does not fit ``problem`` (e.g. batch larger than n)."""

    def init_state(self, problem: Problem, key, n_paths: int, dtype) -> PyTree:
        """Sampler state carried across steps (shuffled epochs keep their permutation); None if none."""
        return None

    @abc.abstractmethod
    def draw(self, problem: Problem, key, step, state, n_paths: int, dtype) -> tuple[PyTree, Any]:
        """Random numbers of one step for all paths (leading axis N), and the new state."""

    @abc.abstractmethod
    def gradient(self, problem: Problem, theta: Float[Array, " d"], draws: PyTree) -> Float[Array, " d"]:
        """The stochastic gradient $\\tilde g(\\theta)$ of one path given its draws."""

    @abc.abstractmethod
    def covariance_factor(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, "d m"]:
        """A(θ) with $\\Sigma(\\theta) = A A^T$, the covariance of one step's gradient noise."""

    def covariance(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, "d d"]:
        """$\\Sigma(\\theta) = A(\\theta)A(\\theta)^T$."""
        A = self.covariance_factor(problem, theta)
        return A @ A.T


class NoNoise(AbstractGradientNoise):
    """Full-batch gradient descent: $\\tilde g = \\nabla L$, Σ = 0."""

    def draw(self, problem, key, step, state, n_paths, dtype):
        return jnp.zeros((n_paths, 0), dtype), state

    def gradient(self, problem, theta, draws):
        return problem.grad(theta)

    def covariance_factor(self, problem, theta):
        return jnp.zeros((problem.n_params, 1), theta.dtype)
