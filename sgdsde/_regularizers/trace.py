"""The small-η limit of Damian's regularizer: $R = \\frac14\\operatorname{tr}\\nabla^2 L$."""

from __future__ import annotations

import jax.numpy as jnp

from .base import AbstractRegularizer


class HessianTraceRegularizer(AbstractRegularizer):
    """$R(\\theta) = \\frac14\\operatorname{tr}\\nabla^2L(\\theta)$, the η → 0 limit of the tr-log form.

    On the zero-loss set tr∇²L = tr G = (1/n)Σᵢ‖∇fᵢ‖², the sharpness that Li–Wang–Arora's limiting flow
    descends (theory/implicit-regularization.md, REG-2, REG-4).
    """

    @property
    def name(self) -> str:
        return "R_quarter_trace"

    def value(self, problem, theta):
        return 0.25 * jnp.trace(problem.hessian(theta))
