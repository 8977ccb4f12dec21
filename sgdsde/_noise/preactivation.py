"""Gaussian noise on a two-layer network's pre-activations, annealed: Li, Wei & Ma's proxy for the noise of a
large learning rate (theory/large-lr.md, LLR-3)."""

from __future__ import annotations

from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp

from .._models import TwoLayerNetwork
from .._models.activations import get_activation
from .._normals import step_normals
from .._validation import check_int_range, check_positive
from .base import AbstractGradientNoise
from .sampling import BatchSampler, batch_size_arg, check_batch_size, sampling_name


class PreactivationNoise(AbstractGradientNoise):
    """$\\tilde g = \\nabla_\\theta\\frac1B\\sum_{i\\in\\mathcal B}\\ell\\big(a^T\\varphi(Wx_i + \\sigma_k\\xi_i), y_i\\big)$,
    ξ_i ~ N(0, I_m), σ_k = ``sigma`` before step ``anneal_step`` and ``sigma·anneal_factor`` from then on.

    The minibatch gradient of a two-layer network whose hidden pre-activations carry fresh Gaussian noise at
    every step (the authors' "act-noise" run: noise added before each ReLU, annealed with the step size).
    Its mean is the gradient of the smoothed loss,
    $E\\,\\tilde g = \\nabla_\\theta\\frac1n\\sum_i E_\\xi\\,\\ell\\big(a^T\\varphi(Wx_i + \\sigma_k\\xi), y_i\\big)$: ∇L at
    σ_k = 0 (where it is minibatch noise), biased in general for σ_k > 0. Its covariance has no closed form,
    so it has only the SGD side of the noise contract: it runs in simulate_sgd (and simulate_svag), and the
    SDE refuses it by name.
    """

    sigma: float
    batch_size: int = eqx.field(static=True, converter=batch_size_arg)
    anneal_step: int | None = eqx.field(static=True, default=None)
    anneal_factor: float = 0.0
    sampling: str = eqx.field(static=True, default="with_replacement", converter=sampling_name)

    def __check_init__(self):
        check_positive("sigma", self.sigma, allow_zero=True)
        check_positive("anneal_factor", self.anneal_factor, allow_zero=True)
        if self.anneal_step is not None:
            check_int_range("anneal_step", self.anneal_step, 0)

    def check(self, problem):
        if not isinstance(problem.model, TwoLayerNetwork):
            raise ValueError(
                f"PreactivationNoise needs a TwoLayerNetwork (it perturbs its hidden pre-activations), got "
                f"{type(problem.model).__name__}"
            )
        check_batch_size(self.batch_size, problem.n_data)

    def init_state(self, problem, key, n_paths, dtype):
        return BatchSampler(self.batch_size, self.sampling).init_state(problem.n_data, key, n_paths)

    def sigma_at(self, step, dtype):
        """σ_k for engine step k."""
        sigma = jnp.asarray(self.sigma, dtype)
        if self.anneal_step is None:
            return sigma
        return jnp.where(step < self.anneal_step, sigma, sigma * jnp.asarray(self.anneal_factor, dtype))

    def draw(self, problem, key, step, state, n_paths, dtype):
        k_idx, k_xi = jax.random.split(key)
        idx, state = BatchSampler(self.batch_size, self.sampling).draw(
            problem.n_data, k_idx, step, state, n_paths
        )
        B = problem.n_data if idx is None else self.batch_size
        width = cast(TwoLayerNetwork, problem.model).width  # check() requires a TwoLayerNetwork
        xi = step_normals(k_xi, n_paths, B * width, dtype).reshape(n_paths, B, width) * self.sigma_at(
            step, dtype
        )
        if idx is None:
            idx = jnp.broadcast_to(jnp.arange(problem.n_data, dtype=jnp.int32), (n_paths, B))
        return (idx, xi), state

    def gradient(self, problem, theta, draws):
        idx, xi = draws
        model = cast(TwoLayerNetwork, problem.model)  # check() requires it
        phi = get_activation(model.activation)
        xb, yb = problem.X[idx], problem.y[idx]

        def batch_loss(th):
            W, a = model.split(th)
            out = phi(xb @ W.T + xi) @ a
            return jnp.mean(jax.vmap(problem.loss_fn)(out, yb))

        return jax.grad(batch_loss)(theta)
