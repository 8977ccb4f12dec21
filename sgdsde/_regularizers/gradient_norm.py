"""Blanc et al.'s regularizer $\\sum_i \\|\\nabla_\\theta f(\\theta; x_i)\\|^2$."""

from __future__ import annotations

import jax.numpy as jnp

from .._example_sums import output_gradient_sq_norm_sum
from .base import AbstractRegularizer, matrix_free


class OutputGradientNormRegularizer(AbstractRegularizer):
    """$R(\\theta) = \\sum_i \\|\\nabla_\\theta f_i(\\theta)\\|^2 = n\\,\\operatorname{tr}G(\\theta)$ (Blanc et al. 2020).

    On the zero-loss set it is 4n·(¼ tr∇²L): pair it with λ/(4n) to compare with Damian's λR
    (theory/implicit-regularization.md, REG-3). Above ``MAX_DENSE_PARAMS`` parameters the per-example gradients
    are taken a chunk of examples at a time: exact, no d × n matrix (theory/curvature.md, CURV-5).
    """

    @property
    def name(self) -> str:
        return "R_output_gradient_norm"

    def value(self, problem, theta):
        if matrix_free(problem):
            return self.matrix_free_value(problem, theta)
        J = problem.output_gradients(theta)
        return jnp.sum(J * J)

    def matrix_free_value(self, problem, theta):
        """$\\sum_i \\|\\nabla f_i\\|^2$ from per-example gradients, a chunk of examples at a time (CURV-5)."""
        return output_gradient_sq_norm_sum(problem, theta)
