"""Discrete SGD, the ground truth: $\\theta_{k+1} = \\theta_k - \\eta_k\\,\\tilde g_k(\\theta_k)$, N paths at once."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np

from ._ensemble import AbstractStepper, run_ensemble
from ._noise import AbstractGradientNoise, NoNoise
from ._problem import Problem
from ._schedules import learning_rates
from ._validation import check_int_range

MAX_PARAMS_FOR_STABILITY_CHECK = 512


def _warn_if_unstable(problem: Problem, theta0, etas) -> None:
    """Warn when max ηₖ ≥ 2/λ_max(∇²L(θ₀)), GD's local stability limit (skipped above 512 parameters)."""
    if problem.n_params > MAX_PARAMS_FOR_STABILITY_CHECK:
        return
    th = np.asarray(theta0, dtype=np.float64).reshape(-1, problem.n_params)[0]
    lam = problem.sharpness(th.astype(problem.X.dtype))
    if lam > 0 and etas.max() * lam >= 2:
        warnings.warn(
            f"lr = {etas.max():.4g} is at or past the GD stability limit 2/λ_max(∇²L(θ₀)) = {2 / lam:.4g}; "
            "the run may diverge (divergence is detected and reported)",
            RuntimeWarning,
            stacklevel=3,
        )


class SGDStepper(AbstractStepper):
    """One SGD step for all paths: draws for all paths in the fast layout, then a vmapped gradient."""

    problem_: Problem
    noise: AbstractGradientNoise
    n_paths: int

    @property
    def problem(self):
        return self.problem_

    def init(self, key, theta0):
        return theta0, self.noise.init_state(self.problem_, key, self.n_paths, theta0.dtype)

    def step(self, carry, k, eta, key):
        theta, state = carry
        draws, state = self.noise.draw(self.problem_, key, k, state, self.n_paths, theta.dtype)
        g = jax.vmap(self.noise.gradient, in_axes=(None, 0, 0))(self.problem_, theta, draws)
        return theta - eta * g, state

    def theta(self, carry):
        return carry[0]


def simulate_sgd(
    problem: Problem,
    noise: AbstractGradientNoise | None,
    theta0,
    *,
    lr,
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
    label: str | None = None,
    devices=None,
) -> Any:
    """Simulate N independent runs of discrete SGD as one jitted scan.

    $\\theta_{k+1} = \\theta_k - \\eta_k \\tilde g(\\theta_k)$ with $\\tilde g$ drawn by ``noise`` (None: GD).

    Args:
        problem: model + data + squared loss.
        noise: a gradient-noise model, or None for full-batch GD.
        theta0: (d,) shared start, or (n_paths, d).
        lr: a float, a schedule (callable of the step), or an array of n_steps step sizes.
        n_steps: number of SGD steps T.
        key: JAX key or int seed; the only source of randomness.
        n_paths: ensemble size N.
        record_every: record observables every k steps (k divides T); default: start and end only.
        observables: names of built-ins or a mapping name → f(problem, θ); default loss and ‖θ‖².
        n_saved_paths: keep θ of this many whole paths at each record.
        chunk_size: paths per jitted call (memory O(chunk·d)); default all at once.
        dtype: float32 or float64 (needs jax_enable_x64).
        progress: print a progress line on stderr.
        save_to: path prefix; finished chunks are saved there (npz + json) as they complete.
        label: method name in reports.
        devices: None (one device), an int k (the first k of jax.devices()) or a list of devices: each
            chunk's paths are sharded across them (n_paths and chunk_size multiples of their number); the
            same key gives the same numbers as on one device, up to the order of the statistics' sums.

    Returns:
        EnsembleResult on the time grid $t_k = \\sum_{j<k}\\eta_j$ (theory/sgd.md, SGD-1).
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
    noise = NoNoise() if noise is None else noise
    if not isinstance(noise, AbstractGradientNoise):
        raise ValueError(f"noise must be an AbstractGradientNoise or None, got {type(noise).__name__}")
    noise.check(problem)
    problem.check_theta(theta0, "theta0")
    _warn_if_unstable(problem, theta0, learning_rates(lr, check_int_range("n_steps", n_steps, 1)))
    same = np.dtype(dtype) == problem.X.dtype == problem.y.dtype
    dtype_problem = problem if same else problem.astype(np.dtype(dtype))
    config = {
        "simulator": "sgd",
        "noise": repr(noise),
        "model": repr(problem.model),
        "n_data": problem.n_data,
        "lr": lr if np.ndim(lr) == 0 and not callable(lr) else repr(lr),
    }
    return run_ensemble(
        lambda n: SGDStepper(dtype_problem, noise, n),
        method=label or type(noise).__name__,
        theta0=theta0,
        n_params=problem.n_params,
        lr=lr,
        n_steps=n_steps,
        key=key,
        n_paths=n_paths,
        record_every=record_every,
        observables=observables,
        n_saved_paths=n_saved_paths,
        chunk_size=chunk_size,
        dtype=dtype,
        progress=progress,
        save_to=save_to,
        config=config,
        devices=devices,
    )
