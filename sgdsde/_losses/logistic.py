"""The logistic loss for binary labels y ∈ {−1, +1}: $\\ell = \\log(1 + e^{-yf})$."""

from __future__ import annotations

import jax
import numpy as np

from .base import AbstractLoss


class LogisticLoss(AbstractLoss):
    """$\\ell(f, y) = \\log(1 + e^{-yf})$, y ∈ {−1, +1}: ∂ℓ/∂f = −yσ(−yf), ∂²ℓ/∂f² = σ(f)σ(−f) (LOSS-3).

    Computed as softplus(−yf), finite for any f.
    """

    label_kind = "binary"

    def __call__(self, f, y):
        return jax.nn.softplus(-y * f)

    def grad_f(self, f, y):
        return -y * jax.nn.sigmoid(-y * f)

    def hess_f(self, f, y):
        return jax.nn.sigmoid(f) * jax.nn.sigmoid(-f)

    def n_classes(self, n_outputs):
        return 2

    def class_label(self, c):
        return 2 * c - 1  # class 0 ↔ y = −1, class 1 ↔ y = +1

    def check_labels(self, y, n_outputs):
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.isin(y, (-1, 1))):
            raise ValueError("y must hold labels in {-1, +1} for LogisticLoss")
        return y

    def check_outputs(self, n_outputs):
        if n_outputs != 1:
            raise ValueError(f"LogisticLoss needs a one-output model, got {n_outputs} outputs")

    def sympy_expr(self, f, y):
        import sympy as sp

        return sp.log(1 + sp.exp(-y * f))

    def latex(self):
        return r"\ell(f, y) = \log\big(1 + e^{-yf}\big),\quad y \in \{-1, +1\}"
