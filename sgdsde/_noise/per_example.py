"""The per-example family's parts: a stochastic gradient $\\sum_i c_i\\nabla f_i$ whose coefficients come from
the drawn rows (a batch), labels (flips) and per-example terms (additive label noise ε, multiplicative weights
m), always by one vector–Jacobian product of the model's outputs per step. Minibatch, label, label-flip,
full-gradient label and multiplicative noise are built from these functions."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.extend.core import Var
from jaxtyping import Array, Float

from .._problem import Problem


def per_example_vjp(
    problem: Problem, theta, coefficients: Callable[[Array], Array], rows=None, labels=None
) -> Float[Array, " d"]:
    """$\\sum_b c_b\\nabla f_{i_b}(\\theta)$ with $c = $ ``coefficients``$(\\ell'(f_{i_b}, \\tilde y_b))$: one VJP.

    Args:
        problem: the problem (model, data, loss).
        theta: the parameters (d,).
        coefficients: maps the loss derivatives ℓ′ of the rows ((B,) or (B, K)) to the VJP's cotangent.
        rows: example indices (B,); None: every example in order, without gathering.
        labels: labels ỹ (B,) in place of the rows' own (label flips); None: the rows' labels.
    """
    xb, yb = (problem.X, problem.y) if rows is None else (problem.X[rows], problem.y[rows])
    if labels is not None:
        yb = labels
    out, vjp = jax.vjp(lambda th: problem.model.outputs(th, xb), theta)
    return vjp(coefficients(problem.loss_fn.residuals(out, yb)))[0]


def outputs_vjp(problem: Problem, theta, cotangent: Callable[[Array, Array], Array]) -> Float[Array, " d"]:
    """$J(\\theta)^T c(f, \\ell')$ over all n examples, the cotangent c a function of the outputs f and the loss
    derivatives ℓ′(f, y): one forward pass and one VJP, whatever c combines (the fused Euler step, SDE-10)."""
    out, vjp = jax.vjp(lambda th: problem.model.outputs(th, problem.X), theta)
    return vjp(cotangent(out, problem.loss_fn.residuals(out, problem.y)))[0]


def batch_gradient(problem: Problem, theta, rows=None, label_noise=None, labels=None) -> Float[Array, " d"]:
    """$\\frac1B\\sum_{b}\\big(\\ell'(f_{i_b}, \\tilde y_b) - \\varepsilon_b\\big)\\nabla f_{i_b}$: the minibatch gradient of
    the rows (None: the full batch), with labels ``labels`` (flips) and additive label noise ε
    (``label_noise``; for the squared loss ℓ′(f, y + ε) = f − y − ε)."""
    B = problem.n_data if rows is None else rows.shape[0]
    if label_noise is None:
        return per_example_vjp(problem, theta, lambda dl: dl / B, rows, labels)
    return per_example_vjp(problem, theta, lambda dl: (dl - label_noise) / B, rows, labels)


def weighted_gradient(problem: Problem, theta, weights) -> Float[Array, " d"]:
    """$\\frac1n\\sum_i m_i \\nabla\\ell_i$ for per-example weights m (Wu et al.'s multiplicative form)."""

    def coefficients(dl):
        return weights.reshape(weights.shape + (1,) * (dl.ndim - 1)) * dl / problem.n_data

    return per_example_vjp(problem, theta, coefficients)


def output_gradients_constant(problem: Problem) -> bool:
    """Whether the model's output gradients $\\nabla f_i$ cannot depend on θ (a model linear in θ), read from
    the traced program of ``model.output_gradients``: no operation on θ reaches its result. Then columns
    $c\\nabla f_i$ (label noise) make an additive SDE noise. Structural, never numerical: a model whose
    gradients merely happen to agree at two points is not linear."""
    theta = jax.ShapeDtypeStruct((problem.n_params,), problem.X.dtype)
    X = jax.ShapeDtypeStruct(problem.X.shape, problem.X.dtype)
    jaxpr = jax.make_jaxpr(problem.model.output_gradients)(theta, X).jaxpr
    reached = {jaxpr.invars[0]}
    for eqn in jaxpr.eqns:
        if any(isinstance(v, Var) and v in reached for v in eqn.invars):
            reached.update(eqn.outvars)
    return not any(isinstance(v, Var) and v in reached for v in jaxpr.outvars)


def full_gradient_label_gradient(problem: Problem, theta, rows, eps, batch_size: int) -> Float[Array, " d"]:
    """$\\nabla L - \\frac1B\\sum_b \\varepsilon_b\\nabla f_{i_b}$ in one VJP over all examples:
    $\\frac1n\\sum_i\\big(\\ell'_i - \\frac nB\\sum_{b: i_b = i}\\varepsilon_b\\big)\\nabla f_i$."""
    n = problem.n_data
    noise = jnp.zeros(n, eps.dtype).at[rows].add(eps) * (n / batch_size)
    return per_example_vjp(problem, theta, lambda dl: (dl - noise) / n)


def loss_gradient_combination(problem: Problem, theta, w, centred: bool) -> Float[Array, " d"]:
    """$\\sum_i (w_i - \\bar w)\\nabla\\ell_i$ (``centred``) or $\\sum_i w_i\\nabla\\ell_i$: the product of the
    per-example loss-gradient matrix $[\\nabla\\ell_i]_i$ (or its centred form $[\\nabla\\ell_i - \\nabla L]_i$) with
    w ∈ R^n, by one VJP (theory/function-models.md, FMOD-2)."""
    return outputs_vjp(problem, theta, loss_gradient_cotangent(w, centred))


def loss_gradient_cotangent(w, centred: bool) -> Callable[[Array, Array], Array]:
    """The cotangent $c_i = (w_i - \\bar w)\\,\\ell'_i$ (``centred``) or $w_i\\ell'_i$ of
    ``loss_gradient_combination``, as a function of (f, ℓ′)."""
    c = w - jnp.mean(w) if centred else w
    return lambda out, dl: c.reshape(c.shape + (1,) * (dl.ndim - 1)) * dl
