"""The regularizer contract: a scalar R(θ) of a Problem, differentiable, with a domain check."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float

from .._problem import Problem


def matrix_free(problem: Problem) -> bool:
    """Whether ``problem`` is above ``MAX_DENSE_PARAMS`` parameters, where no d × d matrix is formed (the switch
    of ``Problem.sharpness`` and the stability check, read at call time; CURV-5)."""
    return problem.at_size


class AbstractRegularizer(eqx.Module):
    """An implicit regularizer $R(\\theta)$ of a problem; label-noise SGD tracks stationary points of L + λR.

    ``value`` is JAX-traceable (jit, grad, hessian); outside its domain it returns NaN or inf, and the eager
    ``check_domain`` raises a ValueError saying why (theory/implicit-regularization.md, REG-1).
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short name used as an observable key and in reports."""

    @abc.abstractmethod
    def value(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, ""]:
        """$R(\\theta)$."""

    def matrix_free_value(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, ""]:
        """$R(\\theta)$ without a d × d (or d × n) array, what solves above ``MAX_DENSE_PARAMS`` parameters use; by
        default ``value`` (a regularizer of one's own is taken to be matrix-free; the built-ins override it, or
        raise a ValueError where no exact matrix-free form exists; CURV-5)."""
        return self.value(problem, theta)

    def grad(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, " d"]:
        """$\\nabla R(\\theta)$ by autodiff."""
        return jax.grad(lambda th: self.value(problem, th))(theta)

    def check_domain(self, problem: Problem, theta) -> None:
        """Raise ValueError if R is undefined at θ (default: defined everywhere)."""
        problem.check_theta(theta)

    def observable(self):
        """θ ↦ R(θ) as an observable for ``simulate_sgd(observables={...})``."""
        return lambda problem, theta: self.value(problem, theta)

    def __call__(self, problem: Problem, theta) -> float:
        """R(θ) as a float, after the domain check (eager convenience, compiled once per shape)."""
        self.check_domain(problem, theta)
        return float(np.asarray(_value(self, problem, jax.numpy.asarray(theta))))


@eqx.filter_jit
def _value(regularizer: AbstractRegularizer, problem: Problem, theta):
    return regularizer.value(problem, theta)


@eqx.filter_jit
def hessian_eigenvalues(problem: Problem, theta):
    """Eigenvalues of ∇²L(θ), compiled (op-by-op Hessians are slow)."""
    return jax.numpy.linalg.eigvalsh(problem.hessian(theta))
