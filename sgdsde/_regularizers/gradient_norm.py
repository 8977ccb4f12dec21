"""Blanc et al.'s regularizer $\\sum_i \\|\\nabla_\\theta f(\\theta; x_i)\\|^2$."""

from __future__ import annotations

import jax.numpy as jnp

from .base import AbstractRegularizer


class OutputGradientNormRegularizer(AbstractRegularizer):
    """$R(\\theta) = \\sum_i \\|\\nabla_\\theta f_i(\\theta)\\|^2 = n\\,\\operatorname{tr}G(\\theta)$ (Blanc et al. 2020).

    On the zero-loss set it is 4n·(¼ tr∇²L): pair it with λ/(4n) to compare with Damian's λR
    (theory/implicit-regularization.md, REG-3).
    """

    @property
    def name(self) -> str:
        return "R_output_gradient_norm"

    def value(self, problem, theta):
        J = problem.output_gradients(theta)
        return jnp.sum(J * J)
