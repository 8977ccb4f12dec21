"""Theory 3, SGD follows a regularized gradient flow: the modified losses of GD (Barrett & Dherin) and of
shuffled SGD (Smith, Dherin, Barrett & De), and their gradient flows (theory/three-theories.md, THR-4..5)."""

from __future__ import annotations

import itertools
import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .._problem import Problem
from .._validation import check_dtype, check_int_range, check_positive

KINDS = ("plain", "gd", "smith")


def modified_loss(problem: Problem, theta, eta: float, kind: str = "gd", batch_size: int | None = None):
    """$L$ ("plain"), $L + \\frac\\eta4\\|\\nabla L\\|^2$ ("gd"), or Smith et al.'s loss averaged over random
    partitions into batches of B ("smith"): $L + \\frac\\eta4\\|\\nabla L\\|^2 + \\frac{n-B}{n-1}\\frac{\\eta}{4B}\\Gamma$,
    $\\Gamma = \\frac1n\\sum_i\\|\\nabla\\ell_i - \\nabla L\\|^2$ (the numeric twin of the symbolic layer's
    ``gd_modified_loss`` / ``smith_expected_modified_loss``)."""
    loss = problem.loss(theta)
    if kind == "plain":
        return loss
    g = problem.grad(theta)
    out = loss + (eta / 4) * jnp.dot(g, g)
    if kind == "gd":
        return out
    n, B = problem.n_data, batch_size
    G = problem.loss_gradients(theta)  # (d, n)
    gamma = jnp.mean(jnp.sum((G - g[:, None]) ** 2, axis=0))
    return out + ((n - B) / (n - 1) if n > 1 else 0.0) * eta / (4 * B) * gamma


def modified_flow(
    problem: Problem,
    theta0,
    t1: float,
    eta: float,
    kind: str = "gd",
    *,
    batch_size: int | None = None,
    rtol: float = 1e-12,
    atol: float = 1e-14,
) -> np.ndarray:
    """θ(t1) of the gradient flow $\\dot\\theta = -\\nabla\\tilde L(\\theta)$ of ``modified_loss`` from θ₀, by
    diffrax's Tsit5 with a PID controller at the given tolerances (float64)."""
    check_dtype(np.float64)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    t1 = check_positive("t1", t1)
    eta = check_positive("eta", eta)
    if kind == "smith":
        if batch_size is None:
            raise ValueError("kind='smith' needs batch_size")
        batch_size = check_int_range("batch_size", batch_size, 1, problem.n_data)
    problem.check_theta(theta0, "theta0")
    p64 = problem.astype(jnp.float64)
    grad = jax.grad(lambda th: modified_loss(p64, th, eta, kind, batch_size))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: -grad(y)),
        diffrax.Tsit5(),
        0.0,
        t1,
        min(t1, eta) / 4,
        jnp.asarray(theta0, jnp.float64),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=1_000_000,
    )
    return np.asarray(sol.ys[-1])


MAX_SEQUENCES = 100_000


def _sequences(n: int, batch_size: int, sampling: str) -> np.ndarray:
    """Every equally likely batch sequence of one epoch (m = n/B steps): (count, m, B) indices."""
    m = n // batch_size
    if sampling == "shuffle":
        count = math.factorial(n)
        if count > MAX_SEQUENCES:
            raise ValueError(
                f"exact enumeration of shuffled epochs needs n! = {count} orderings (> {MAX_SEQUENCES})"
            )
        perms = np.array(list(itertools.permutations(range(n))))
        return perms[:, : m * batch_size].reshape(len(perms), m, batch_size)
    if sampling == "with_replacement":
        count = n ** (m * batch_size)
        if count > MAX_SEQUENCES:
            raise ValueError(f"exact enumeration needs n^(mB) = {count} sequences (> {MAX_SEQUENCES})")
        seqs = np.array(list(itertools.product(range(n), repeat=m * batch_size)))
        return seqs.reshape(len(seqs), m, batch_size)
    raise ValueError(f"sampling must be 'shuffle' or 'with_replacement', got {sampling!r}")


def expected_epoch(
    problem: Problem, theta0, eta: float, batch_size: int, sampling: str = "shuffle"
) -> np.ndarray:
    """$\\mathbb E[\\theta_m]$ after one epoch of m = n/B SGD steps from θ₀, exactly: the average over every
    equally likely batch sequence (all n! orderings for shuffling, all n^{mB} draws with replacement;
    small n only), in float64. The reference THR-5's order tests compare the modified flows against."""
    check_dtype(np.float64)
    eta = check_positive("eta", eta)
    batch_size = check_int_range("batch_size", batch_size, 1, problem.n_data)
    if problem.n_data % batch_size:
        raise ValueError(
            f"batch_size must divide n = {problem.n_data} for an epoch of whole batches, got {batch_size}"
        )
    problem.check_theta(theta0, "theta0")
    p64 = problem.astype(jnp.float64)
    seqs = jnp.asarray(_sequences(problem.n_data, batch_size, sampling))

    def one(seq):
        def step(th, idx):
            return th - eta * p64.batch_gradient(th, idx), None

        return jax.lax.scan(step, jnp.asarray(theta0, jnp.float64), seq)[0]

    return np.asarray(jnp.mean(jax.vmap(one)(seqs), axis=0))
