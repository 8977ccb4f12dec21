"""Back ends of a Problem's derivatives: the per-example quantities the noise models and SDEs are built from.

JAX autodiff of the model is the definition (``Problem(derivatives=None)``); a back end computes the same
quantities another way (the symbolic layer's ``SymbolicDerivatives``: sympy-derived, generated JAX code) so
that one SME serves both, and tests can hold one to the other (theory/sme.md, SME-6).
"""

from __future__ import annotations

import abc

from jaxtyping import Array, Float


class AbstractDerivatives(abc.ABC):
    """Per-example derivatives of $L = \\frac1n\\sum_i \\ell(f(\\theta; x_i), y_i)$ for one problem.

    Instances are static (hashable, compared by identity): they are part of a jitted Problem's structure.
    ``problem`` gives the data (X, y) each method is evaluated on.
    """

    is_symbolic: bool
    reason: str

    @abc.abstractmethod
    def grad(self, problem, theta) -> Float[Array, " d"]:
        """$\\nabla L(\\theta)$."""

    @abc.abstractmethod
    def hvp(self, problem, theta, v) -> Float[Array, " d"]:
        """$\\nabla^2 L(\\theta)\\,v$."""

    @abc.abstractmethod
    def output_gradients(self, problem, theta) -> Float[Array, "d n"]:
        """$[\\nabla f_i]_i$ (d × n)."""

    @abc.abstractmethod
    def loss_gradients(self, problem, theta) -> Float[Array, "d n"]:
        """$[\\nabla \\ell_i]_i$ (d × n)."""

    @abc.abstractmethod
    def mean_jp_loss(self, problem, theta) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i \\nabla^2\\ell_i\\,\\nabla\\ell_i$."""

    @abc.abstractmethod
    def mean_jp_output(self, problem, theta) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i \\nabla^2 f_i\\,\\nabla f_i$."""

    def grad_and_hvp_of_grad(self, problem, theta) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
        """$(\\nabla L, \\nabla^2 L\\,\\nabla L)$; a back end may compute both in one pass."""
        g = self.grad(problem, theta)
        return g, self.hvp(problem, theta, g)

    def latex(self, problem) -> str:
        """The model's lines of ``SME.latex`` (the symbolic back end prints the expressions sympy derived);
        by default a note naming the back end."""
        return rf"\text{{derivatives of {type(problem.model).__name__}: {self.reason}}}"
