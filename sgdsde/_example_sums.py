"""Sums over the examples of per-example gradient terms, a chunk of examples at a time (``chunked_sum``): what the
noise models' diagonal covariances, their Itô→Stratonovich corrections and Blanc et al.'s regularizer need at
size, with no d × n matrix: memory O(CHUNK·d) (theory/noise.md, NOISE-7)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._hvp import chunked_sum


def _inputs(problem, theta):
    return problem.X.astype(theta.dtype)


def example_gradient_sq_sum(problem, theta, terms) -> Float[Array, " d"]:
    """$\\sum_t w_t\\sum_i (J_i^T c^t_i - \\mathrm{centre}_t)^{\\circ 2}$, elementwise, for ``terms`` = ((w_t, c^t,
    centre_t), …): $c^t_i$ row i of $c^t$ ((n,) or (n, K)), every term of one example from one linearization of
    its outputs (NOISE-7)."""
    X = _inputs(problem, theta)

    def one(i):
        _, vjp = jax.vjp(lambda t: problem.model.output(t, X[i]), theta)
        sq = [w * (vjp(c[i].astype(theta.dtype))[0] - centre) ** 2 for w, c, centre in terms]
        return functools.reduce(jnp.add, sq)

    return chunked_sum(one, problem.n_data)


def loss_gradient_sq_norm_mean(problem, theta) -> Float[Array, ""]:
    """$\\frac1n\\sum_i \\|\\nabla\\ell_i\\|^2$, each $\\nabla\\ell_i$ by autodiff of one example's loss: differentiable
    in θ (half its gradient is $\\frac1n\\sum_i\\nabla^2\\ell_i\\nabla\\ell_i$; NOISE-7)."""
    X = _inputs(problem, theta)

    def one(i):
        g = jax.grad(lambda t: problem.loss_fn(problem.model.output(t, X[i]), problem.y[i]))(theta)
        return jnp.sum(g * g)

    return chunked_sum(one, problem.n_data) / problem.n_data


def output_gradient_sq_norm_sum(problem, theta) -> Float[Array, ""]:
    """$\\sum_i \\|\\nabla f_i\\|^2$ (summed over the K outputs), a chunk of examples at a time (CURV-5, NOISE-7)."""
    X = _inputs(problem, theta)

    def one(i):
        g = jax.jacrev(problem.model.output)(theta, X[i])  # (d,) or (K, d)
        return jnp.sum(g * g)

    return chunked_sum(one, problem.n_data)


def by_chunks(problem) -> bool:
    """Whether per-example sums are taken by chunks of examples: above ``MAX_DENSE_PARAMS`` parameters with
    autodiff derivatives (a symbolic back end forms its own per-example matrices; NOISE-7)."""
    return problem.at_size and problem.derivatives.matrix_free
