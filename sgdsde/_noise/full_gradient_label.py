"""Full gradient plus label noise on B sampled examples (HaoChen et al.'s LNGD; Damian et al.'s and the
weighted-Lasso instances use the same law)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._example_sums import by_chunks, example_gradient_sq_sum
from .._losses import require_additive_label_noise
from .._normals import step_normals
from .._validation import check_positive
from .base import AbstractGradientNoise, AbstractSDENoise, NoiseType
from .minibatch import LABEL_DISTRIBUTIONS
from .per_example import full_gradient_label_gradient, output_gradients_constant
from .sampling import BatchSampler, batch_size_arg, check_batch_size, sampling_name


class FullGradientLabelNoise(AbstractGradientNoise, AbstractSDENoise):
    """$\\tilde g = \\nabla L(\\theta) - \\frac1B\\sum_{b=1}^{B}\\varepsilon_{k,b}\\nabla f_{i_b}(\\theta)$: the exact
    full-batch gradient plus label noise on B sampled examples, ε = ±σ (Rademacher) or N(0, σ²).

    $\\Sigma = \\frac{\\sigma^2}{B}G(\\theta)$ exactly, with or without replacement (no minibatch part: the
    gradient is the full one), $A = \\frac{\\sigma}{\\sqrt{nB}}[\\nabla f_i]_i$ (m = n), λ = ησ²/B
    (theory/noise.md, NOISE-5). HaoChen et al.'s LNGD with step lr and label noise δ on their ¼(y − f)² loss
    is this noise with B = 1, σ = δ, Gaussian ε, at η = lr/2 (NOISE-5).
    """

    sigma: jax.Array
    batch_size: int = eqx.field(static=True, default=1)
    sampling: str = eqx.field(static=True, default="with_replacement", converter=sampling_name)
    distribution: str = eqx.field(static=True, default="rademacher")

    def __init__(self, sigma, batch_size=1, sampling="with_replacement", distribution="rademacher"):
        check_positive("sigma", sigma, allow_zero=True)
        sampling = sampling_name(sampling)
        if sampling == "shuffle":
            raise ValueError("sampling must be 'with_replacement' or 'without_replacement', got 'shuffle'")
        if distribution not in LABEL_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {LABEL_DISTRIBUTIONS}, got {distribution!r}")
        batch_size = batch_size_arg(batch_size)
        # σ is an array leaf, so a sweep over σ reuses the compiled simulator.
        self.sigma = jnp.asarray(float(sigma))
        self.batch_size, self.sampling, self.distribution = batch_size, sampling, distribution

    def check(self, problem):
        require_additive_label_noise(problem.loss_fn, type(self).__name__)
        check_batch_size(self.batch_size, problem.n_data)

    def draw(self, problem, key, step, state, n_paths, dtype):
        kb, ke = jax.random.split(key)
        n, B = problem.n_data, self.batch_size
        idx, _ = BatchSampler(B, self.sampling).draw(n, kb, step, None, n_paths)
        if idx is None:  # B = n without replacement: every example, in order
            idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (n_paths, n))
        if self.distribution == "rademacher":
            eps = jax.random.rademacher(ke, (n_paths * B,), dtype)
        else:
            eps = step_normals(ke, n_paths, B, dtype).reshape(-1)
        return (idx, (self.sigma.astype(dtype) * eps).reshape(n_paths, B)), state

    def draws_ahead(self) -> bool:
        return self.distribution == "rademacher"  # indices and ±σ: exact

    def through_outputs(self) -> bool:
        return True  # one VJP of the outputs (per_example_vjp)

    def gradient(self, problem, theta, draws):
        idx, eps = draws
        return full_gradient_label_gradient(problem, theta, idx, eps, self.batch_size)

    def covariance_factor(self, problem, theta):
        return self._label_scale(problem, theta.dtype) * problem.output_gradients(theta)

    def _label_scale(self, problem, dtype):
        """σ/√(nB), the label columns' scale."""
        return self.sigma.astype(dtype) / math.sqrt(problem.n_data * self.batch_size)

    def factor_mv(self, problem, theta, w):
        return self._label_scale(problem, w.dtype) * problem.output_vjp(theta, w)

    def factor_cotangent(self, problem, w):
        if not problem.derivatives.matrix_free:
            return None
        s = self._label_scale(problem, w.dtype)
        return lambda out, dl: s * w

    def covariance_diagonal(self, problem, theta):
        """$\\frac{\\sigma^2}{nB}\\sum_i(\\nabla f_i)^{\\circ 2}$; at size by chunks of examples (NOISE-7)."""
        if not by_chunks(problem):
            return super().covariance_diagonal(problem, theta)
        ones = jnp.ones(problem.n_data, theta.dtype)
        scale = self.sigma.astype(theta.dtype) ** 2 / (problem.n_data * self.batch_size)
        return example_gradient_sq_sum(problem, theta, [(scale, ones, 0.0)])

    def noise_dim(self, problem):
        return problem.n_data

    def noise_type(self, problem):
        if output_gradients_constant(problem):
            return NoiseType.ADDITIVE  # A = (σ/√(nB))[∇f_i] = (σ/√(nB)) Xᵀ for a linear model
        return AbstractSDENoise.noise_type(self, problem)

    def ito_to_stratonovich(self, problem, theta):
        # columns (σ/√(nB))∇f_i: Σ_j ∂A_jA_j = (σ²/B)·mean_i ∇²f_i∇f_i (SME-3)
        return -0.5 * (self.sigma.astype(theta.dtype) ** 2 / self.batch_size) * problem.mean_jp_output(theta)

    def effective_lambda(self, lr, problem=None) -> float:
        """$\\lambda = \\eta\\sigma^2/B$ (the label-noise covariance (σ²/B)G of LabelNoise; REG-5)."""
        if problem is not None:
            require_additive_label_noise(problem.loss_fn, type(self).__name__)
        return float(lr) * float(self.sigma) ** 2 / self.batch_size

    def latex(self):
        return r"A(\theta) = \frac{\sigma}{\sqrt{nB}}\big[\nabla f_i\big]_{i=1}^{n},\quad A A^T = \frac{\sigma^2}{B} G(\theta)"
