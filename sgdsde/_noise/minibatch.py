"""Minibatch sampling noise, optionally with label noise on each sampled example."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._validation import check_positive
from .base import AbstractGradientNoise
from .sampling import BatchSampler, check_batch_size, check_sampling, is_full_batch, sampling_scale

LABEL_DISTRIBUTIONS = ("rademacher", "gaussian")


def centred_factor(problem, theta, scale):
    """$\\sqrt{s}\\,[\\nabla\\ell_i - \\nabla L]_i$; with s = c/(nB) its square is the minibatch covariance
    $c\\,\\Sigma_1/B$, with $\\Sigma_1 = \\frac1n\\sum_i(\\nabla\\ell_i-\\nabla L)(\\nabla\\ell_i-\\nabla L)^T$ (minibatch-noise.md §5, §10)."""
    G = problem.loss_gradients(theta)
    return math.sqrt(scale) * (G - jnp.mean(G, axis=1, keepdims=True))


class MinibatchNoise(AbstractGradientNoise):
    """SGD's own noise: $\\tilde g = \\frac1B\\sum_{i\\in\\mathcal B_k}\\nabla\\ell_i$.

    $\\Sigma = \\frac{c}{B}\\Sigma_1$ with c = 1 with replacement and c = (n−B)/(n−1) for a uniform B-subset
    or shuffled epochs (minibatch-noise.md §5, §9.1; theory/noise.md, NOISE-1).
    """

    batch_size: int = eqx.field(static=True)
    sampling: str = eqx.field(static=True, default="with_replacement")

    def __check_init__(self):
        check_sampling(self.sampling)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")

    @property
    def sampler(self) -> BatchSampler:
        return BatchSampler(self.batch_size, self.sampling)

    def check(self, problem):
        check_batch_size(self.batch_size, problem.n_data)

    def init_state(self, problem, key, n_paths, dtype):
        return self.sampler.init_state(problem.n_data, key, n_paths)

    def draw(self, problem, key, step, state, n_paths, dtype):
        return self.sampler.draw(problem.n_data, key, step, state, n_paths)

    def gradient(self, problem, theta, draws):
        return problem.batch_gradient(theta, draws)

    def covariance_factor(self, problem, theta):
        n, B = problem.n_data, self.batch_size
        return centred_factor(problem, theta, sampling_scale(self.sampling, B, n) / (n * B))


class LabelNoise(AbstractGradientNoise):
    """Label noise on each sampled example: $\\tilde g = \\frac1B\\sum_{i\\in\\mathcal B_k}(f_i - y_i -
    \\varepsilon_{k,i})\\nabla f_i$, ε = ±σ (Rademacher) or N(0, σ²).

    $\\Sigma = \\Sigma_{\\rm minibatch} + \\frac{\\sigma^2}{B} G(\\theta)$ at every θ (label-noise.md C9;
    theory/noise.md, NOISE-2). ``batch_size=None`` is the full batch (HaoChen et al.'s LNGD, Damian's B = n).
    """

    sigma: jax.Array
    batch_size: int | None = eqx.field(static=True, default=None)
    sampling: str = eqx.field(static=True, default="without_replacement")
    distribution: str = eqx.field(static=True, default="rademacher")

    def __init__(self, sigma, batch_size=None, sampling="without_replacement", distribution="rademacher"):
        check_positive("sigma", sigma, allow_zero=True)
        check_sampling(sampling)
        if distribution not in LABEL_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {LABEL_DISTRIBUTIONS}, got {distribution!r}")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be an integer >= 1 or None (full batch), got {batch_size!r}")
        # σ is an array leaf, so a sweep over σ reuses the compiled simulator.
        self.sigma = jnp.asarray(float(sigma))
        self.batch_size, self.sampling, self.distribution = batch_size, sampling, distribution

    def batch(self, problem) -> int:
        return problem.n_data if self.batch_size is None else self.batch_size

    def sampler(self, problem) -> BatchSampler:
        return BatchSampler(self.batch(problem), self.sampling)

    def check(self, problem):
        check_batch_size(self.batch(problem), problem.n_data)

    def init_state(self, problem, key, n_paths, dtype):
        return self.sampler(problem).init_state(problem.n_data, key, n_paths)

    def draw(self, problem, key, step, state, n_paths, dtype):
        kb, ke = jax.random.split(key)
        idx, state = self.sampler(problem).draw(problem.n_data, kb, step, state, n_paths)
        shape = (n_paths, self.batch(problem))
        if self.distribution == "rademacher":
            eps = jax.random.rademacher(ke, (shape[0] * shape[1],), dtype)
        else:
            eps = jax.random.normal(ke, (shape[0] * shape[1],), dtype)
        return (idx, (self.sigma.astype(dtype) * eps).reshape(shape)), state

    def gradient(self, problem, theta, draws):
        idx, eps = draws
        return problem.batch_gradient(theta, idx, eps)

    def covariance_factor(self, problem, theta):
        n, B = problem.n_data, self.batch(problem)
        label = (self.sigma / math.sqrt(n * B)) * problem.output_gradients(theta)
        if is_full_batch(self.sampling, B, n):
            return label
        sampling = centred_factor(problem, theta, sampling_scale(self.sampling, B, n) / (n * B))
        return jnp.concatenate([sampling, label], axis=1)
