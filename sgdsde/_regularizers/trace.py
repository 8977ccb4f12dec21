"""The small-η limit of Damian's regularizer: $R = \\frac14\\operatorname{tr}\\nabla^2 L$."""

from __future__ import annotations

import jax.numpy as jnp

from .._hvp import hessian_trace
from .base import AbstractRegularizer, matrix_free


class HessianTraceRegularizer(AbstractRegularizer):
    """$R(\\theta) = \\frac14\\operatorname{tr}\\nabla^2L(\\theta)$, the η → 0 limit of the tr-log form.

    On the zero-loss set tr∇²L = tr G = (1/n)Σᵢ‖∇fᵢ‖², the sharpness that Li–Wang–Arora's limiting flow
    descends (theory/implicit-regularization.md, REG-2, REG-4). Above ``MAX_DENSE_PARAMS`` parameters tr∇²L is
    summed from d second directional derivatives along the basis vectors, a chunk at a time: exact, no d × d
    matrix, at the cost of d Hessian-vector products (theory/curvature.md, CURV-5).
    """

    @property
    def name(self) -> str:
        return "R_quarter_trace"

    def value(self, problem, theta):
        if matrix_free(problem):
            return self.matrix_free_value(problem, theta)
        return 0.25 * jnp.trace(problem.hessian(theta))

    def matrix_free_value(self, problem, theta):
        """$\\frac14\\sum_j e_j^T\\nabla^2L\\,e_j$, d forward-over-forward products in chunks (CURV-5)."""
        return 0.25 * hessian_trace(problem.loss, theta)
