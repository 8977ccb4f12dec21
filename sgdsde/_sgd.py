"""Discrete SGD, the ground truth: $\\theta_{k+1} = \\theta_k - \\eta_k\\,\\tilde g_k(\\theta_k)$, N paths at once."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._ensemble import AbstractStepper, RunPlan, chunk_keys, finite_paths, simulator, to_key
from ._first_passage import FirstPassage
from ._layout import FLAT, AbstractLayout
from ._method import AbstractMethod, check_noise, legacy_plan
from ._noise import AbstractGradientNoise, NoNoise
from ._optimizers import AbstractOptimizer, check_optimizer, check_state
from ._options import Ensemble, Output, Record
from ._problem import Problem
from ._resetting import Resetting
from ._stability import _lambda_max_bound as _lambda_max_bound
from ._validation import check_int_range


class SGDStepper(AbstractStepper):
    """One SGD step for all paths: draws for all paths in the fast layout, then a vmapped gradient; with an
    optimizer, its vmapped update (carry (θ, sampler state, optimizer state)). θ and the optimizer's moments are
    carried in ``layout``'s form (a ``FunctionModel``'s params pytree, FMOD-5), the gradient taken in it; the
    engine sees the flat θ (N, d) through ``theta``/``with_theta``."""

    problem_: Problem
    noise: AbstractGradientNoise
    n_paths: int
    optimizer: AbstractOptimizer | None = None
    layout: AbstractLayout = FLAT
    lockstep: bool = False  # no event restarts a path: the optimizer may update all paths as one (OPT-7)
    absorbs_divergence = True  # θ ← θ − η g̃ (or θ + η u)

    @property
    def problem(self):
        return self.problem_

    def init(self, key, theta0):
        state = self.noise.init_state(self.problem_, key, self.n_paths, theta0.dtype)
        params = self.layout.pack(theta0)
        if self.optimizer is None:
            return params, state
        return params, state, jax.vmap(functools.partial(self.optimizer.init, layout=self.layout))(params)

    def step(self, carry, k, eta, key):
        params, state = carry[:2]
        draws, state = self.noise.draw(self.problem_, key, k, state, self.n_paths, _dtype(params))
        return self.step_with((params, state, *carry[2:]), k, eta, draws)

    def segment_inputs(self, carry, run_key, ks):
        """The draws of steps ks at once (vmapped over the steps) where the noise allows it (``draws_ahead``:
        the same numbers) and carries no sampler state; None otherwise (shuffled epochs, Gaussian draws): the
        draws are then made step by step."""
        params, state = carry[:2]
        if state is not None or not self.noise.draws_ahead():
            return None
        dtype = _dtype(params)

        def one(k):
            key = jax.random.fold_in(run_key, k)
            return self.noise.draw(self.problem_, key, k, None, self.n_paths, dtype)

        draws, state = jax.vmap(one)(ks)
        return draws if state is None else None

    def step_with(self, carry, k, eta, inputs):
        params, state = carry[:2]  # inputs: this step's noise draws
        problem = self.layout.problem(self.problem_)
        g = jax.vmap(self.noise.gradient, in_axes=(None, 0, 0))(problem, params, inputs)
        if self.optimizer is None:
            return jax.tree.map(lambda p, gi: p - eta * gi, params, g), state
        u, opt_state = self.optimizer.update_paths(g, carry[2], params, lockstep=self.lockstep)
        return jax.tree.map(lambda p, ui: p + eta * ui, params, u), state, opt_state

    def theta(self, carry):
        return self.layout.unpack(carry[0])

    def with_theta(self, carry, theta):
        return (self.layout.pack(theta), *carry[1:])

    def path_finite(self, carry):
        leaves = [leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(carry[0])]
        return functools.reduce(jnp.logical_and, [finite_paths(leaf, axis=1) for leaf in leaves])

    @property
    def records(self):
        return () if self.optimizer is None else self.optimizer.records

    def observe(self, carry):
        if self.optimizer is None or not self.optimizer.records:
            return {}
        return jax.vmap(functools.partial(self.optimizer.observe, layout=self.layout))(carry[2])

    def in_lockstep(self):
        return eqx.tree_at(lambda s: s.lockstep, self, True)

    def restart(self, carry, mask):
        if self.lockstep:
            raise ValueError("a stepper in lockstep restarts no path (an event restarts paths)")
        if self.optimizer is None:
            return super().restart(carry, mask)
        fresh = jax.vmap(functools.partial(self.optimizer.init, layout=self.layout))(carry[0])
        pick = lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
        return (*carry[:2], jax.tree.map(pick, fresh, carry[2]))


def _dtype(params):
    return jax.tree.leaves(params)[0].dtype


class SGD(AbstractMethod):
    """Discrete SGD, the ground truth: $\\theta_{k+1} = \\theta_k - \\eta_k \\tilde g(\\theta_k)$ with
    $\\tilde g$ drawn by ``noise`` (None: full-batch GD), on the time grid $t_k = \\sum_{j<k}\\eta_j$
    (theory/sgd.md, SGD-1). The same key gives the same draws whatever θ₀ (common random numbers).

    Args:
        noise: a gradient-noise model, or None for full-batch GD.
        optimizer: None (plain SGD, as above), ``Momentum(...)``, ``RMSprop(...)``, ``Adam(...)`` or an optax
            transformation at unit learning rate: $\\theta_{k+1} = \\theta_k + \\eta_k u_k$ with u_k its
            update of $\\tilde g_k$ (theory/optimizers.md, OPT-1); its state is per path, in the carry.
    """

    noise: AbstractGradientNoise | None = None
    optimizer: AbstractOptimizer | None = None

    def __init__(self, noise: AbstractGradientNoise | None = None, optimizer=None):
        self.noise = check_noise(noise)
        self.optimizer = check_optimizer(optimizer)

    def stepper(self, problem: Problem, n_paths: int) -> SGDStepper:
        noise = NoNoise() if self.noise is None else self.noise
        # the model's own layout where the gradient and the update give the same numbers in it (FMOD-5)
        exact = noise.through_outputs() and (self.optimizer is None or self.optimizer.leafwise())
        return SGDStepper(problem, noise, n_paths, self.optimizer, problem.model.layout() if exact else FLAT)

    def stability_limit(self):
        return (2.0, "GD") if self.optimizer is None else self.optimizer.stability_limit()

    def check_run(self, problem: Problem, theta0, dtype) -> dict:
        if self.optimizer is None:
            return {}
        check_state(self.optimizer, jnp.zeros((problem.n_params,), dtype))
        return {"optimizer": self.optimizer.description(problem.n_params)}

    def label(self) -> str:
        name = type(NoNoise() if self.noise is None else self.noise).__name__
        return name if self.optimizer is None else f"{name}+{self.optimizer.label()}"


def plan_sgd(
    problem: Problem,
    noise: AbstractGradientNoise | None,
    theta0,
    *,
    lr,
    n_steps: int,
    key,
    optimizer=None,
    ensemble: Ensemble = Ensemble(),
    record: Record = Record(),
    output: Output = Output(),
    resetting: Resetting | None = None,
    first_passage: FirstPassage | None = None,
) -> RunPlan:
    """Simulate N independent runs of discrete SGD as one jitted scan: ``simulate(SGD(noise), problem, θ₀,
    ...)`` in the keyword spelling of events.

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
        optimizer: None (SGD), ``Momentum(...)``, ``RMSprop(...)``, ``Adam(...)`` or an optax transformation at
            unit learning rate: ``SGD(noise, optimizer=...)`` (theory/optimizers.md, OPT-1).

    Returns:
        EnsembleResult on the time grid $t_k = \\sum_{j<k}\\eta_j$ (theory/sgd.md, SGD-1).

    ``plan_sgd`` validates and returns the engine's RunPlan (what a sweep batches); ``simulate_sgd``
    runs it.
    """
    method = SGD(check_noise(noise), optimizer)
    return legacy_plan(
        method,
        problem,
        theta0,
        resetting=resetting,
        first_passage=first_passage,
        lr=lr,
        n_steps=n_steps,
        key=key,
        ensemble=ensemble,
        record=record,
        output=output,
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
