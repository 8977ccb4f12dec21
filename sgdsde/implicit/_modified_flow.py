"""Theory 3, SGD follows a regularized gradient flow: the modified losses of GD (Barrett & Dherin) and of
shuffled SGD (Smith, Dherin, Barrett & De), and their gradient flows (theory/three-theories.md, THR-4..5)."""

from __future__ import annotations

import itertools
import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .._noise.per_example import batch_gradient
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
    if batch_size is None:
        raise ValueError("kind='smith' needs batch_size")
    n, B = problem.n_data, batch_size
    G = problem.loss_gradients(theta)  # (d, n)
    gamma = jnp.mean(jnp.sum((G - g[:, None]) ** 2, axis=0))
    return out + ((n - B) / (n - 1) if n > 1 else 0.0) * eta / (4 * B) * gamma


def _modified_args(problem: Problem, theta0, eta, kind: str, batch_size) -> tuple:
    """``modified_loss``'s arguments (the float64 problem, η as a float64 array, kind, B) after checking kind,
    η, batch_size and θ₀ (ValueError naming them). η is an array so that one compiled solve serves every η."""
    check_dtype(np.float64)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    eta = check_positive("eta", eta)
    if kind == "smith":
        if batch_size is None:
            raise ValueError("kind='smith' needs batch_size")
        batch_size = check_int_range("batch_size", batch_size, 1, problem.n_data)
    problem.check_theta(theta0, "theta0")
    return problem.astype(jnp.float64), jnp.asarray(eta, jnp.float64), kind, batch_size


# module-level functions of (θ, args): the solvers' compiled code is cached across calls and step sizes η
def _modified_grad(theta, args):
    """$\\nabla\\tilde L(\\theta)$ for args = ``_modified_args(...)``."""
    p64, eta, kind, batch_size = args
    return jax.grad(lambda th: modified_loss(p64, th, eta, kind, batch_size))(theta)


def _flow_field(t, theta, args):
    return -_modified_grad(theta, args)


@eqx.filter_jit
def _modified_hessian(theta, args):
    p64, eta, kind, batch_size = args
    return jax.hessian(lambda th: modified_loss(p64, th, eta, kind, batch_size))(theta)


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
    t1 = check_positive("t1", t1)
    args = _modified_args(problem, theta0, eta, kind, batch_size)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_flow_field),
        diffrax.Tsit5(),
        0.0,
        jnp.asarray(t1, jnp.float64),
        jnp.asarray(min(t1, float(eta)) / 4, jnp.float64),
        jnp.asarray(theta0, jnp.float64),
        args=args,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=1_000_000,
    )
    if sol.ys is None:
        raise AssertionError("diffeqsolve saves y(t1) by default")
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


def _epoch_setup(problem: Problem, eta: float, batch_size: int, sampling: str):
    check_dtype(np.float64)
    eta = check_positive("eta", eta)
    batch_size = check_int_range("batch_size", batch_size, 1, problem.n_data)
    if problem.n_data % batch_size:
        raise ValueError(
            f"batch_size must divide n = {problem.n_data} for an epoch of whole batches, got {batch_size}"
        )
    return eta, jnp.asarray(_sequences(problem.n_data, batch_size, sampling))


def _epoch_mean(theta0, args):
    """E[θ_m | θ₀], the average of the epoch over the sequences ``seqs`` (args = (problem, η, seqs))."""
    p64, eta, seqs = args

    def one(seq):
        def step(th, idx):
            return th - eta * batch_gradient(p64, th, idx), None

        return jax.lax.scan(step, theta0, seq)[0]

    return jnp.mean(jax.vmap(one)(seqs), axis=0)


_epoch_mean_jit = eqx.filter_jit(_epoch_mean)


def _epoch_residual(theta, args):
    return _epoch_mean(theta, args) - theta


def expected_epoch(
    problem: Problem, theta0, eta: float, batch_size: int, sampling: str = "shuffle"
) -> np.ndarray:
    """$\\mathbb E[\\theta_m]$ after one epoch of m = n/B SGD steps from θ₀, exactly: the average over every
    equally likely batch sequence (all n! orderings for shuffling, all n^{mB} draws with replacement;
    small n only), in float64. The reference THR-5's order tests compare the modified flows against."""
    eta, seqs = _epoch_setup(problem, eta, batch_size, sampling)
    problem.check_theta(theta0, "theta0")
    args = (problem.astype(jnp.float64), jnp.asarray(eta, jnp.float64), seqs)
    return np.asarray(_epoch_mean_jit(jnp.asarray(theta0, jnp.float64), args))


def _newton(fn, args, theta0, what: str, tol: float) -> np.ndarray:
    """A root of fn(θ, args) by Newton's method from θ₀ (``fn`` a module-level function: compiled once)."""
    sol = optx.root_find(
        fn,
        optx.Newton(rtol=tol, atol=tol),
        jnp.asarray(theta0, jnp.float64),
        args,
        max_steps=200,
        throw=False,
    )
    root = np.asarray(sol.value)
    if sol.result != optx.RESULTS.successful or not np.all(np.isfinite(root)):
        raise RuntimeError(f"Newton's method did not converge to {what} from theta0")
    return root


def epoch_fixed_point(
    problem: Problem, theta0, eta: float, batch_size: int, sampling: str = "shuffle", *, tol: float = 1e-13
) -> np.ndarray:
    """The fixed point θ̄ = E[θ_m | θ₀ = θ̄] of the exactly averaged epoch map (``expected_epoch``), by Newton's
    method from θ₀: where the mean iterate settles (minibatch-noise.md §9.8; THR-7)."""
    eta, seqs = _epoch_setup(problem, eta, batch_size, sampling)
    problem.check_theta(theta0, "theta0")
    args = (problem.astype(jnp.float64), jnp.asarray(eta, jnp.float64), seqs)
    return _newton(_epoch_residual, args, theta0, "a fixed point of the epoch map", tol)


def modified_loss_argmin(
    problem: Problem,
    theta0,
    eta: float,
    kind: str = "gd",
    *,
    batch_size: int | None = None,
    tol: float = 1e-13,
) -> np.ndarray:
    """The stationary point of ``modified_loss`` nearest θ₀ along Newton's method ($\\nabla\\tilde L = 0$),
    checked to be a minimum (positive definite Hessian of $\\tilde L$)."""
    args = _modified_args(problem, theta0, eta, kind, batch_size)
    root = _newton(_modified_grad, args, theta0, f"a stationary point of the {kind!r} modified loss", tol)
    if np.linalg.eigvalsh(np.asarray(_modified_hessian(jnp.asarray(root), args)))[0] <= 0:
        raise RuntimeError(
            f"the stationary point of the {kind!r} modified loss found from theta0 is not a minimum"
        )
    return root
