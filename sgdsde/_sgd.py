"""Discrete SGD, the ground truth: $\\theta_{k+1} = \\theta_k - \\eta_k\\,\\tilde g_k(\\theta_k)$, N paths at once."""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._ensemble import AbstractStepper, RunPlan, chunk_keys, simulator, to_key
from ._events import event_config, run_events
from ._first_passage import FirstPassage
from ._noise import AbstractGradientNoise, NoNoise
from ._options import Ensemble, Output, Record, check_options
from ._problem import Problem, lambda_max
from ._resetting import Resetting
from ._results import describe
from ._schedules import rates
from ._validation import check_int_range

MAX_PARAMS_FOR_STABILITY_CHECK = 512


def _lambda_max_bound(H: np.ndarray) -> float:
    """An upper bound on the largest eigenvalue of the symmetric matrix H, without LAPACK: Gershgorin's bound
    $\\max_i (H_{ii} + \\sum_{j\\ne i}|H_{ij}|\\,d_j/d_i)$ on D⁻¹HD (the same eigenvalues for any positive d),
    the least over d = 1 and a few power iterations of |H|, which bring it towards ρ(|H|). NaN if H is not
    finite."""
    if not np.all(np.isfinite(H)):
        return float("nan")
    H = (H + H.T) / 2
    A = np.abs(H)
    diag = np.diag(H)
    off = A - np.diag(np.diag(A))
    d = np.ones(len(H))
    best = np.inf
    for _ in range(8):
        best = min(best, float(np.max(diag + (off * d[None, :]).sum(axis=1) / d)))
        d = (A * d[None, :]).sum(axis=1)
        if not np.all(np.isfinite(d)) or d.max() <= 0:
            break
        d = np.maximum(d / d.max(), 1e-30)
    return best


def _warn_if_unstable(problem: Problem, theta0, etas) -> None:
    """Warn when max ηₖ ≥ 2/λ_max(∇²L(θ₀)), GD's local stability limit (skipped above 512 parameters).

    A LAPACK-free upper bound on λ_max settles most runs first: the eigendecomposition of a 200 × 200
    Hessian took 2 ms on an idle 2-core machine but 40-270 ms beside other work (OpenBLAS's threads waiting
    for busy cores), up to a third of a 10,000-path, 200-step label-noise run (scripts/bench_sgd.py). The
    exact λ_max is computed only where the bound cannot rule the warning out, so the warning is the same."""
    if problem.n_params > MAX_PARAMS_FOR_STABILITY_CHECK:
        return
    th = np.asarray(theta0, dtype=np.float64).reshape(-1, problem.n_params)[0]
    th = th.astype(problem.X.dtype)
    H_x = problem.hessian(jnp.asarray(th))  # in X's dtype: the one the exact λ_max below is taken in
    H = np.asarray(H_x, dtype=np.float64)
    slack = 1e-4 * float(np.max(np.abs(H).sum(axis=1)))  # ≥ 1e-4‖H‖₂: the rounding of eigvalsh in X's dtype
    if etas.max() * (_lambda_max_bound(H) + slack) < 2:
        return
    lam = lambda_max(H_x)  # = problem.sharpness(th), without a second Hessian
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
        return self.step_with((theta, state), k, eta, draws)

    def segment_inputs(self, carry, run_key, ks):
        """The draws of steps ks at once (vmapped over the steps) where the noise allows it (``draws_ahead``:
        the same numbers) and carries no sampler state; None otherwise (shuffled epochs, Gaussian draws): the
        draws are then made step by step."""
        theta, state = carry
        if state is not None or not self.noise.draws_ahead():
            return None

        def one(k):
            key = jax.random.fold_in(run_key, k)
            return self.noise.draw(self.problem_, key, k, None, self.n_paths, theta.dtype)

        draws, state = jax.vmap(one)(ks)
        return draws if state is None else None

    def step_with(self, carry, k, eta, draws):
        theta, state = carry
        g = jax.vmap(self.noise.gradient, in_axes=(None, 0, 0))(self.problem_, theta, draws)
        return theta - eta * g, state

    def theta(self, carry):
        return carry[0]

    def with_theta(self, carry, theta):
        return theta, carry[1]


def plan_sgd(
    problem: Problem,
    noise: AbstractGradientNoise | None,
    theta0,
    *,
    lr,
    n_steps: int,
    key,
    ensemble: Ensemble = Ensemble(),
    record: Record = Record(),
    output: Output = Output(),
    resetting: Resetting | None = None,
    first_passage: FirstPassage | None = None,
) -> RunPlan:
    """Simulate N independent runs of discrete SGD as one jitted scan.

    $\\theta_{k+1} = \\theta_k - \\eta_k \\tilde g(\\theta_k)$ with $\\tilde g$ drawn by ``noise`` (None: GD).

    Args:
        problem: model + data + loss.
        noise: a gradient-noise model, or None for full-batch GD.
        theta0: (d,) shared start, or (n_paths, d).
        lr: a float, a schedule (callable of the step), or an array of n_steps step sizes.
        n_steps: number of SGD steps T.
        key: JAX key or int seed; the only source of randomness. The same key gives the same draws whatever
            θ₀ (common random numbers); for independent runs use different keys (``jax.random.split``).
        ensemble: ``Ensemble(n_paths, chunk_size, devices, dtype)``; dtype None is the problem's.
        record: ``Record(every, observables, n_saved_paths)``.
        output: ``Output(save_to, progress, label)``.
        resetting: ``Resetting(rate, checkpoint)``: after step k each path returns to its checkpoint with
            probability rate·η_k (Bae, Song & Jeong's rule; rate = p/η for a per-step probability p).
        first_passage: ``FirstPassage(target | observable, threshold)``: per-path first-passage steps and
            times, and the MFPT, in ``result.first_passage``.

    Returns:
        EnsembleResult on the time grid $t_k = \\sum_{j<k}\\eta_j$ (theory/sgd.md, SGD-1).

    ``plan_sgd`` validates and returns the engine's RunPlan (what a sweep batches); ``simulate_sgd``
    runs it.
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
    noise = NoNoise() if noise is None else noise
    if not isinstance(noise, AbstractGradientNoise):
        raise ValueError(f"noise must be an AbstractGradientNoise or None, got {type(noise).__name__}")
    check_options(ensemble, record, output)
    noise.check(problem)
    problem.check_theta(theta0, "theta0")
    etas = rates(lr, check_int_range("n_steps", n_steps, 1))
    _warn_if_unstable(problem, theta0, etas)
    dtype = ensemble.resolved_dtype(problem.X.dtype)
    same = dtype == problem.X.dtype == problem.y.dtype
    dtype_problem = problem if same else problem.astype(dtype)
    config = {
        "simulator": "sgd",
        "noise": describe(noise),
        "model": describe(problem.model),
        "n_data": problem.n_data,
        "lr": lr if np.ndim(lr) == 0 and not callable(lr) else describe(lr),
    }
    events = run_events(
        problem, problem.n_params, etas, theta0, resetting, first_passage, poisson=False, dtype=dtype
    )
    config.update(event_config(resetting, first_passage))
    return RunPlan(
        lambda n: SGDStepper(dtype_problem, noise, n),
        method=output.label or type(noise).__name__,
        theta0=theta0,
        n_params=problem.n_params,
        lr=etas,
        n_steps=n_steps,
        key=key,
        ensemble=ensemble,
        record=record,
        output=output,
        dtype=dtype,
        config=config,
        events=events,
    )


simulate_sgd = simulator(plan_sgd)


def replay_draws(
    problem: Problem,
    noise: AbstractGradientNoise,
    *,
    n_steps: int,
    key,
    ensemble: Ensemble = Ensemble(),
    paths=None,
):
    """The noise draws simulate_sgd made at steps 0 … n_steps−1 for the given ``paths`` (global indices;
    None: all), replayed from the same key and ensemble (chunking and dtype): a PyTree of the noise's draws
    with leading axes (n_steps, len(paths)), so that step k's stochastic gradient is
    ``noise.gradient(problem, θ_k, draws_k[i])`` exactly as in the run. Draws never depend on θ, so no step is
    re-run; samplers with state (shuffled epochs) are advanced as in the run. Memory O(n_steps·len(paths)·m).

    The draws are the noise's own inputs to ``gradient``, with its scale already applied where the noise
    applies it in ``draw``: ``LabelNoise`` and ``FullGradientLabelNoise`` give (batch indices, ε) with ε the
    label perturbation itself, σ·(±1) or σ·N(0, 1), already multiplied by σ (the residual is f − y − ε);
    ``SphericalGaussianNoise`` gives σξ; ``GaussianNoise`` gives the unscaled ξ ~ N(0, I_m) (its
    ``gradient`` applies the factor A); ``PreactivationNoise`` gives ξ scaled by its σ at that step."""
    if not isinstance(noise, AbstractGradientNoise):
        raise ValueError(f"noise must be an AbstractGradientNoise, got {type(noise).__name__}")
    if not isinstance(ensemble, Ensemble):
        raise ValueError(f"ensemble must be a sgdsde.Ensemble, got {type(ensemble).__name__}")
    n_steps = check_int_range("n_steps", n_steps, 1)
    n_paths, chunk = ensemble.n_paths, ensemble.chunk
    idx = np.arange(n_paths) if paths is None else np.asarray(paths)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or np.any((idx < 0) | (idx >= n_paths)):
        raise ValueError(f"paths must be a 1-D array of path indices in [0, {n_paths}), got {paths!r}")
    noise.check(problem)
    dtype = ensemble.resolved_dtype(problem.X.dtype)
    p = problem if dtype == problem.X.dtype else problem.astype(dtype)
    key = to_key(key)
    wanted = np.unique(idx)  # sorted global indices
    parts = []
    for c in range(math.ceil(n_paths / chunk)):
        lo, hi = c * chunk, min(n_paths, (c + 1) * chunk)
        mine = wanted[(wanted >= lo) & (wanted < hi)] - lo
        if len(mine):
            init_key, run_key, _ = chunk_keys(key, c)
            parts.append(
                _chunk_draws(p, noise, init_key, run_key, n_steps, hi - lo, dtype, jnp.asarray(mine))
            )
    stacked = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=1), *parts)
    position = np.searchsorted(wanted, idx)  # columns of ``stacked`` are ``wanted``, in order
    return jax.tree.map(lambda x: x[:, position], stacked)


@eqx.filter_jit
def _chunk_draws(problem, noise, init_key, run_key, n_steps, n, dtype, keep):
    state = noise.init_state(problem, init_key, n, dtype)

    def one(state, k):
        draws, state = noise.draw(problem, jax.random.fold_in(run_key, k), k, state, n, dtype)
        return state, jax.tree.map(lambda x: x[keep], draws)

    return jax.lax.scan(one, state, jnp.arange(n_steps, dtype=jnp.int32))[1]
