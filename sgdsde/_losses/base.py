"""The loss contract: a per-example loss ℓ(f, y) of the model's output f and the label y, its derivatives in
f, the labels it accepts, and its sympy form for the symbolic layer."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

# any loss ℓ(f, y) (K outputs: J_i = ∂f/∂θ is K × d; LOSS-1, LOSS-7)
_GENERAL_DRIFT_LATEX = {
    1: r"b(\theta) = -\nabla L(\theta) = -\frac{1}{n}\sum_{i=1}^{n} J_i^T\,\partial_f\ell\big(f(\theta; x_i), y_i\big),\quad J_i = \partial_\theta f(\theta; x_i)",
    2: (
        r"b(\theta) = -\nabla L - \frac{\eta}{2}\nabla^2 L\,\nabla L,"
        r"\quad \nabla^2 L\, v = \frac1n\sum_i \Big(J_i^T\,\partial_f^2\ell_i\,J_i v + \sum_k \partial_{f_k}\ell_i\,\nabla^2 f_{ik}\, v\Big)"
    ),
}


class AbstractLoss(eqx.Module):
    """$L(\\theta) = \\frac1n\\sum_i \\ell(f(\\theta; x_i), y_i)$ (theory/losses.md, LOSS-1).

    f is a scalar for a one-output model and a (K,) vector for K outputs. ``grad_f`` and ``hess_f`` are the
    derivatives in f, in closed form in the final classes (autodiff by default); ``label_kind`` says what a
    label is: "real" (regression), "binary" (y ∈ {−1, +1}) or "class" (an integer in 0..K−1).
    """

    label_kind: ClassVar[str] = "real"
    # ℓ(f + c𝟙, y) = ℓ(f, y) for every c (softmax logits): the symbolic layer evaluates it at f − max f
    shift_invariant: ClassVar[bool] = False
    # ℓ′(f, y + ε) = ℓ′(f, y) − ε: additive label noise y + ε is the gradient noise −ε∇f (the squared loss
    # only). LabelNoise and FullGradientLabelNoise need it; a loss without it refuses them by name.
    additive_label_noise: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, f, y) -> Float[Array, ""]:
        """ℓ(f, y) for one example."""

    def grad_f(self, f, y):
        """$\\partial_f \\ell(f, y)$ (shape of f)."""
        return jax.grad(self.__call__)(f, y)

    def hess_f(self, f, y):
        """$\\partial_f^2 \\ell(f, y)$ (a scalar, or K × K)."""
        return jax.hessian(self.__call__)(f, y)

    # The data-wide forms a Problem uses: f is (n,) or (n, K), y (n,); J the gradient matrix (d × n, or
    # d × n × K). A final class overrides them with a cheaper closed form of the same value.

    def residuals(self, f, y) -> Array:
        """$\\ell'(f_i, y_i) = \\partial_f\\ell$ per example ((n,) or (n, K))."""
        return jax.vmap(self.grad_f)(f, y)

    def mean(self, f, y) -> Float[Array, ""]:
        """$L = \\frac1n\\sum_i \\ell(f_i, y_i)$."""
        return jnp.mean(jax.vmap(self)(f, y))

    def curvatures(self, f, y) -> Array:
        """$\\partial_f^2\\ell(f_i, y_i)$ per example ((n,), or (n, K, K))."""
        return jax.vmap(self.hess_f)(f, y)

    def gauss_newton(self, J, f, y) -> Float[Array, "d d"]:
        """$G = \\frac1n\\sum_i J_i^T\\,\\partial_f^2\\ell_i\\,J_i$ (LOSS-5)."""
        h = self.curvatures(f, y)
        if J.ndim == 3:
            return jnp.einsum("dnk,nkl,enl->de", J, h, J) / J.shape[1]
        return (J * h[None, :]) @ J.T / J.shape[1]

    def trace_gauss_newton(self, J, f, y) -> Float[Array, ""]:
        """$\\operatorname{tr} G$ without forming G (LOSS-5)."""
        h = self.curvatures(f, y)
        if J.ndim == 3:
            return jnp.einsum("dnk,nkl,dnl->", J, h, J) / J.shape[1]
        return jnp.sum(J * J * h[None, :]) / J.shape[1]

    def n_classes(self, n_outputs: int) -> int:
        """How many label values a flip can choose from (0 for real labels)."""
        return 0

    def class_label(self, c: int) -> int:
        """The label of class index c (classification losses)."""
        raise ValueError(f"{type(self).__name__} has real-valued labels, not classes")

    @abc.abstractmethod
    def check_labels(self, y, n_outputs: int) -> np.ndarray:
        """y validated for this loss and a model with ``n_outputs`` outputs (ValueError naming y)."""

    @abc.abstractmethod
    def check_outputs(self, n_outputs: int) -> None:
        """Raise ValueError unless the model's number of outputs fits this loss."""

    @abc.abstractmethod
    def sympy_expr(self, f, y) -> Any:
        """ℓ as a sympy expression of the output symbol(s) f and the label symbol y."""

    def sme_drift_latex(self, order: int) -> str:
        """The SME's drift of ``order`` (1 or 2) written for this loss (``SME.latex``): any loss's ∂ℓ form."""
        return _GENERAL_DRIFT_LATEX[order]

    @abc.abstractmethod
    def latex(self) -> str:
        """ℓ(f, y) in LaTeX."""


def require_additive_label_noise(loss: AbstractLoss, what: str) -> None:
    """Raise ValueError naming ``what`` unless ``loss`` defines additive label noise y + ε (the squared loss:
    ℓ′(f, y + ε) = ℓ′(f, y) − ε, and its zero-loss set is {f_i = y_i}); label noise on class labels is a flip."""
    if not loss.additive_label_noise:
        raise ValueError(
            f"{what} is defined for real labels with additive label noise y + ε (the squared loss), not for "
            f"{type(loss).__name__} (labels {loss.label_kind}); for classification use LabelFlipNoise"
        )
