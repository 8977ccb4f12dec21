"""Cross-entropy of K-class softmax outputs: $\\ell = \\log\\sum_k e^{f_k} - f_y$."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .base import AbstractLoss


class CrossEntropyLoss(AbstractLoss):
    """$\\ell(f, y) = \\log\\sum_k e^{f_k} - f_y$ for logits f ∈ R^K and a class y ∈ {0, …, K−1}:
    ∂ℓ/∂f = softmax(f) − e_y, ∂²ℓ/∂f² = diag(p) − ppᵀ (LOSS-4)."""

    label_kind = "class"
    shift_invariant = True

    def __call__(self, f, y):
        return jax.nn.logsumexp(f) - jnp.take(f, y)

    def grad_f(self, f, y):
        return jax.nn.softmax(f) - jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype)

    def hess_f(self, f, y):
        p = jax.nn.softmax(f)
        return jnp.diag(p) - jnp.outer(p, p)

    def n_classes(self, n_outputs):
        return n_outputs

    def class_label(self, c):
        return c

    def check_labels(self, y, n_outputs):
        y = np.asarray(y)
        if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        if not np.issubdtype(y.dtype, np.integer) or np.any(y < 0) or np.any(y >= n_outputs):
            raise ValueError(f"y must hold integer classes in [0, {n_outputs - 1}] for CrossEntropyLoss")
        return y.astype(np.int32)

    def check_outputs(self, n_outputs):
        if n_outputs < 2:
            raise ValueError(f"CrossEntropyLoss needs a model with K >= 2 outputs, got {n_outputs}")

    def sympy_expr(self, f, y):
        import sympy as sp

        # y is a class index: ℓ as a function of the logits for one fixed class (the symbolic layer
        # instantiates it per class)
        return sp.log(sp.Add(*[sp.exp(fk) for fk in f])) - f[y]

    def latex(self):
        return r"\ell(f, y) = \log\sum_{k=1}^{K} e^{f_k} - f_y"
