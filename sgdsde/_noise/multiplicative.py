"""Wu et al.'s multiplicative noise: gradient matrix × random per-example weights."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._example_sums import by_chunks, example_gradient_sq_sum
from .._normals import step_normals
from .._validation import check_int_range
from .base import AbstractGradientNoise, AbstractSDENoise
from .minibatch import centred_correction
from .per_example import loss_gradient_combination, loss_gradient_cotangent, weighted_gradient
from .sampling import batch_size_arg

WEIGHTS = ("gaussian_fisher", "gaussian_centred", "bernoulli")


class MultiplicativeNoise(AbstractGradientNoise, AbstractSDENoise):
    """$\\tilde g = \\frac1n\\sum_i m_i\\nabla\\ell_i$ with E mᵢ = 1 (Wu et al. 2020; minibatch-noise.md §5).

    Weights, scaled to match batch size b (theory/noise.md, NOISE-4):
    ``gaussian_fisher`` mᵢ = 1 + s εᵢ, Σ = (s²/n)F;  ``gaussian_centred`` mᵢ = 1 + s(εᵢ − ε̄), Σ = (s²/n)Σ₁;
    with s² = n/b; ``bernoulli`` mᵢ = Bern(p)/p with p = b/n, Σ = ((1−p)/p)(1/n)F.
    """

    batch_size: int = eqx.field(static=True, converter=batch_size_arg)
    weights: str = eqx.field(static=True, default="gaussian_centred")

    def __check_init__(self):
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")

    def check(self, problem):
        check_int_range("batch_size", self.batch_size, 1, problem.n_data)

    def draw(self, problem, key, step, state, n_paths, dtype):
        n = problem.n_data
        if self.weights == "bernoulli":
            p = self.batch_size / n
            bits = jax.random.bernoulli(key, p, (n_paths * n,)).astype(dtype) / p
            return bits.reshape(n_paths, n), state
        eps = step_normals(key, n_paths, n, dtype)
        if self.weights == "gaussian_centred":
            eps = eps - jnp.mean(eps, axis=1, keepdims=True)
        return 1.0 + math.sqrt(n / self.batch_size) * eps, state

    def through_outputs(self) -> bool:
        return True  # one VJP of the outputs (per_example_vjp)

    def gradient(self, problem, theta, draws):
        return weighted_gradient(problem, theta, draws)

    def _scale2(self, problem) -> float:
        """s² with A = s·[∇ℓ_i − κ∇L]_i: (n/b)/n² for Gaussian weights, ((1 − p)/p)/n², p = b/n, for Bernoulli."""
        n, b = problem.n_data, self.batch_size
        if self.weights == "bernoulli":
            p = b / n
            return (1 - p) / p / n**2
        return (n / b) / n**2

    def covariance_factor(self, problem, theta):
        G = problem.loss_gradients(theta)
        s = math.sqrt(self._scale2(problem))
        if self.weights == "gaussian_centred":
            return (G - jnp.mean(G, axis=1, keepdims=True)) * s
        return G * s

    def factor_mv(self, problem, theta, w):
        """$A w = s\\sum_i (w_i - k\\bar w)\\nabla\\ell_i$ (k = 1 centred, else 0): one VJP, no d × n matrix
        (theory/function-models.md, FMOD-2)."""
        if not problem.derivatives.matrix_free:
            return self.covariance_factor(problem, theta) @ w
        s = math.sqrt(self._scale2(problem))
        return s * loss_gradient_combination(problem, theta, w, self.weights == "gaussian_centred")

    def factor_cotangent(self, problem, w):
        """$s\\,(w_i - k\\bar w)\\,\\ell'_i$: ``factor_mv``'s combination as a cotangent of the outputs."""
        if not problem.derivatives.matrix_free:
            return None
        s = math.sqrt(self._scale2(problem))
        c = loss_gradient_cotangent(w, self.weights == "gaussian_centred")
        return lambda out, dl: s * c(out, dl)

    def covariance_diagonal(self, problem, theta):
        """$s^2\\sum_i(\\nabla\\ell_i - k\\nabla L)^{\\circ 2}$; at size by chunks of examples (NOISE-7)."""
        if not by_chunks(problem):
            return super().covariance_diagonal(problem, theta)
        centre = problem.grad(theta) if self.weights == "gaussian_centred" else 0.0
        dl = problem.residuals(theta)
        return example_gradient_sq_sum(problem, theta, [(self._scale2(problem), dl, centre)])

    def noise_dim(self, problem):
        return problem.n_data

    def ito_to_stratonovich(self, problem, theta):
        # Σ_j ∂A_jA_j = s²n·mean_j ∇²ℓ_j∇ℓ_j (minus ∇²L∇L for centred columns) (SME-3)
        s2n = self._scale2(problem) * problem.n_data
        if self.weights == "gaussian_centred":
            return -0.5 * s2n * centred_correction(problem, theta)
        return -0.5 * s2n * problem.mean_jp_loss(theta)

    def latex(self):
        return r"A(\theta) = s\,\big[\nabla\ell_i - \kappa\nabla L\big]_{i=1}^{n}\ \text{(Wu et al.)}"
