"""The squared loss, sgdsde's default: $\\ell = \\frac12 (f - y)^2$."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .base import AbstractLoss

# the squared loss ℓ = ½(f − y)², residual r = f − y
_DRIFT_LATEX = {
    1: r"b(\theta) = -\nabla L(\theta) = -\frac{1}{n}\sum_{i=1}^{n} (f(\theta; x_i) - y_i)\,\nabla_\theta f(\theta; x_i)",
    2: (
        r"b(\theta) = -\nabla\Big(L + \frac{\eta}{4}\|\nabla L\|^2\Big) = -\nabla L - \frac{\eta}{2}\nabla^2 L\,\nabla L,"
        r"\quad \nabla^2 L\, v = \frac1n\sum_i \big(\nabla f_i\,\nabla f_i^T v + r_i \nabla^2 f_i\, v\big)"
    ),
}


class SquaredLoss(AbstractLoss):
    """$\\ell(f, y) = \\frac12 (f - y)^2$, ∂ℓ/∂f = f − y (the residual), ∂²ℓ/∂f² = 1 (LOSS-2)."""

    additive_label_noise = True

    def __call__(self, f, y):
        r = f - y
        return 0.5 * r * r

    def grad_f(self, f, y):
        return f - y

    def hess_f(self, f, y):
        return jnp.ones_like(f)

    # Closed forms with ∂²ℓ = 1, the operations the squared loss has always used (unchanged numbers).

    def residuals(self, f, y):
        return f - y

    def mean(self, f, y):
        r = f - y
        return 0.5 * jnp.mean(r * r)

    def curvatures(self, f, y):
        # real labels share X's dtype (Problem casts both)
        return jnp.ones(y.shape[0], y.dtype)

    def gauss_newton(self, J, f, y):
        return J @ J.T / J.shape[1]

    def trace_gauss_newton(self, J, f, y):
        return jnp.sum(J * J) / J.shape[1]

    def check_labels(self, y, n_outputs):
        y = np.asarray(y)
        if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
            raise ValueError(f"y must be real numbers for the squared loss, got dtype {y.dtype}")
        return y

    def check_outputs(self, n_outputs):
        if n_outputs != 1:
            raise ValueError(f"SquaredLoss needs a one-output model, got {n_outputs} outputs")

    def sympy_expr(self, f, y):
        import sympy as sp

        return sp.Rational(1, 2) * (f - y) ** 2

    def sme_drift_latex(self, order: int) -> str:
        """The SME's drift in the residual form r = f − y."""
        return _DRIFT_LATEX[order]

    def latex(self):
        return r"\ell(f, y) = \tfrac12 (f - y)^2"
