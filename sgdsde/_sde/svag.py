"""SVAG (Li, Malladi, Arora 2021): a discrete simulator that converges to SGD's SDE as l → ∞, at finite η."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._ensemble import AbstractStepper, run_ensemble
from .._noise import AbstractGradientNoise, NoNoise
from .._problem import Problem
from .._schedules import learning_rates
from .._validation import check_int_range


def svag_coefficients(l: int) -> tuple[float, float]:  # noqa: E741 (the paper's name)
    """$a, c = (1 \\pm \\sqrt{2l-1})/2$: a + c = 1 and a² + c² = l (minibatch-noise.md §2(c), §9.3)."""
    r = math.sqrt(2 * l - 1)
    return (1 + r) / 2, (1 - r) / 2


class SVAGStepper(AbstractStepper):
    """$\\theta_{j+1} = \\theta_j - \\frac{\\eta}{l}(a\\,\\tilde g_1 + c\\,\\tilde g_2)$ with two
    independent stochastic
    gradients from the noise model: mean ∇L, covariance lΣ."""

    problem_: Problem
    noise: AbstractGradientNoise
    n_paths: int
    coeffs: jax.Array  # (a, c) as an array leaf, so a sweep over l does not recompile

    @property
    def problem(self):
        return self.problem_

    def init(self, key, theta0):
        k1, k2 = jax.random.split(key)
        n, dt = self.n_paths, theta0.dtype
        return theta0, (
            self.noise.init_state(self.problem_, k1, n, dt),
            self.noise.init_state(self.problem_, k2, n, dt),
        )

    def step(self, carry, k, eta, key):
        theta, (s1, s2) = carry
        k1, k2 = jax.random.split(key)
        grad = jax.vmap(self.noise.gradient, in_axes=(None, 0, 0))
        d1, s1 = self.noise.draw(self.problem_, k1, k, s1, self.n_paths, theta.dtype)
        d2, s2 = self.noise.draw(self.problem_, k2, k, s2, self.n_paths, theta.dtype)
        a, c = self.coeffs[0].astype(theta.dtype), self.coeffs[1].astype(theta.dtype)
        g = a * grad(self.problem_, theta, d1) + c * grad(self.problem_, theta, d2)
        return theta - eta * g, (s1, s2)

    def theta(self, carry):
        return carry[0]


def simulate_svag(
    problem: Problem,
    noise: AbstractGradientNoise | None,
    theta0,
    *,
    lr,
    l: int,  # noqa: E741 (the paper's name)
    n_steps: int,
    key,
    n_paths: int = 1,
    record_every: int | None = None,
    observables=None,
    n_saved_paths: int = 0,
    chunk_size: int | None = None,
    dtype=np.float32,
    progress: bool = False,
    save_to: str | None = None,
) -> Any:
    """SVAG with parameter l: l steps of size η_k/l per SGD step k, gradient $a\\tilde g_1 + c\\tilde g_2$.

    Each SVAG step has drift $(\\eta/l)\\nabla L$ and noise covariance $(\\eta/l)\\,\\eta\\Sigma$: the SDE's
    increments
    over time η/l, so for g ∈ G⁴ the weak error to the SDE is O(1/l) at fixed η (Li, Malladi, Arora 2021,
    Thm; minibatch-noise.md §2(c), §9.3; theory/sde.md, SDE-7). l = 1 is SGD.

    Args:
        lr, n_steps, record_every: SGD's (n_steps SGD steps = l·n_steps SVAG steps; records at SGD steps, on
            the clock $t = \\sum \\eta_k$, so results compare index by index with simulate_sgd/simulate_sde).
        l: integer ≥ 1.
        Others as in simulate_sgd.
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
    noise = NoNoise() if noise is None else noise
    if not isinstance(noise, AbstractGradientNoise):
        raise ValueError(f"noise must be an AbstractGradientNoise or None, got {type(noise).__name__}")
    l = check_int_range("l", l, 1)  # noqa: E741
    n_steps = check_int_range("n_steps", n_steps, 1)
    record_every = n_steps if record_every is None else check_int_range("record_every", record_every, 1)
    if n_steps % record_every:
        raise ValueError(f"record_every must divide n_steps={n_steps}, got {record_every}")
    noise.check(problem)
    problem.check_theta(theta0, "theta0")
    etas = np.repeat(learning_rates(lr, n_steps) / l, l)
    dtype_problem = problem.astype(np.dtype(dtype)) if np.dtype(dtype) != problem.X.dtype else problem
    coeffs = jnp.asarray(svag_coefficients(l))
    res = run_ensemble(
        lambda n: SVAGStepper(dtype_problem, noise, n, coeffs),
        method=f"SVAG(l={l})",
        theta0=theta0,
        n_params=problem.n_params,
        lr=etas,
        n_steps=n_steps * l,
        key=key,
        n_paths=n_paths,
        record_every=record_every * l,
        observables=observables,
        n_saved_paths=n_saved_paths,
        chunk_size=chunk_size,
        dtype=dtype,
        progress=progress,
        save_to=save_to,
        config={"simulator": "svag", "l": l, "noise": repr(noise), "lr": repr(lr)},
    )
    res.steps = res.steps // l  # SGD step index of each record
    return res
