"""Back ends of a Problem's derivatives: the per-example quantities the noise models and SDEs are built from.

JAX autodiff of the model is the definition (``Autodiff()``, every Problem's default); a back end computes the
same quantities another way (the symbolic layer's ``SymbolicDerivatives``: sympy-derived, generated JAX code)
so that one SME serves both, and tests can hold one to the other (theory/sme.md, SME-6).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._example_sums import loss_gradient_sq_norm_mean, output_gradient_sq_norm_sum


class AbstractDerivatives(abc.ABC):
    """Per-example derivatives of $L = \\frac1n\\sum_i \\ell(f(\\theta; x_i), y_i)$ for one problem.

    Instances are static (hashable, compared by identity or by value): they are part of a jitted Problem's
    structure. ``problem`` gives the model, the loss and the data (X, y) each method is evaluated on.
    """

    is_symbolic: bool
    reason: str
    # Whether a product A(θ)w of per-example columns is best taken as one vector–Jacobian product of the
    # model's outputs (autodiff), rather than by forming A from this back end's own per-example derivatives
    # (the symbolic back end: every number of its SME then comes from the generated kernels).
    matrix_free: ClassVar[bool] = False

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

    def output_vjp(self, problem, theta, c) -> Float[Array, " d"]:
        """$\\sum_i c_i \\nabla f_i$ (= $J^T c$; c is (n,) or (n, K)), from the gradient matrix by default."""
        return jnp.tensordot(self.output_gradients(problem, theta), c, axes=c.ndim)


class Autodiff(AbstractDerivatives):
    """JAX autodiff of the model and the loss: the definition every other back end is held to. Gradients and
    products are vector–Jacobian products of the model's outputs, so no d × n matrix is formed for them."""

    is_symbolic = False
    reason = "numeric autodiff"
    matrix_free = True

    # Every instance is the same back end: equal and of one hash, so a jitted Problem compiles once.
    def __eq__(self, other) -> bool:
        return isinstance(other, Autodiff)

    def __hash__(self) -> int:
        return hash(Autodiff)

    def __repr__(self) -> str:
        return "Autodiff()"

    def latex(self, problem) -> str:
        return rf"\text{{numeric (autodiff) derivatives of {type(problem.model).__name__}}}"

    def grad(self, problem, theta):
        """$\\nabla L = \\frac1n J^T \\ell'$, by one vector-Jacobian product."""
        out, vjp = jax.vjp(problem.outputs, theta)
        return vjp(problem.loss_fn.residuals(out, problem.y) / problem.n_data)[0]

    def hvp(self, problem, theta, v):
        """One Jacobian-vector product of the gradient."""
        return jax.jvp(problem.grad, (theta,), (v,))[1]

    def grad_and_hvp_of_grad(self, problem, theta):
        g = problem.grad(theta)
        return g, jax.jvp(problem.grad, (theta,), (g,))[1]

    def output_vjp(self, problem, theta, c):
        return jax.vjp(problem.outputs, theta)[1](c)[0]

    def output_gradients(self, problem, theta):
        return problem.model.output_gradients(theta, problem.X)

    def loss_gradients(self, problem, theta):
        """$[J_i^T \\ell'_i]_i$ ($r_i\\nabla f_i$ for the squared loss)."""
        dl = problem.residuals(theta)
        J = problem.output_gradients(theta)
        if dl.ndim == 2:
            return jnp.einsum("dnk,nk->dn", J, dl)
        return J * dl[None, :]

    def mean_jp_loss(self, problem, theta):
        """$\\frac12\\nabla\\frac1n\\sum_i\\|\\nabla\\ell_i\\|^2$ (at size, by chunks of examples; NOISE-7)."""
        if problem.at_size:
            return 0.5 * jax.grad(lambda t: loss_gradient_sq_norm_mean(problem, t))(theta)
        return jax.grad(lambda t: 0.5 * jnp.mean(jnp.sum(problem.loss_gradients(t) ** 2, axis=0)))(theta)

    def mean_jp_output(self, problem, theta):
        """$\\frac12\\nabla\\frac1n\\sum_i\\|\\nabla f_i\\|^2$ (summed over outputs for K > 1; at size, by chunks
        of examples; NOISE-7)."""
        if problem.at_size:
            n = problem.n_data
            return 0.5 * jax.grad(lambda t: output_gradient_sq_norm_sum(problem, t) / n)(theta)
        return jax.grad(lambda t: 0.5 * jnp.sum(problem.output_gradients(t) ** 2) / problem.n_data)(theta)
