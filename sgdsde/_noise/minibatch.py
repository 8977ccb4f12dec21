"""Minibatch sampling noise, optionally with label noise on each sampled example."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp

from .._example_sums import by_chunks, example_gradient_sq_sum
from .._losses import require_additive_label_noise
from .._normals import step_normals
from .._validation import check_positive
from .base import AbstractGradientNoise, AbstractSDENoise, NoiseType
from .per_example import batch_gradient, output_gradients_constant, outputs_vjp
from .sampling import (
    BatchSampler,
    batch_size_arg,
    check_batch_size,
    is_full_batch,
    sampling_name,
    sampling_scale,
)

LABEL_DISTRIBUTIONS = ("rademacher", "gaussian")


def centred_factor(problem, theta, scale):
    """$\\sqrt{s}\\,[\\nabla\\ell_i - \\nabla L]_i$; with s = c/(nB) its square is the minibatch covariance
    $c\\,\\Sigma_1/B$, with $\\Sigma_1 = \\frac1n\\sum_i(\\nabla\\ell_i-\\nabla L)(\\nabla\\ell_i-\\nabla L)^T$ (minibatch-noise.md §5, §10)."""
    G = problem.loss_gradients(theta)
    return math.sqrt(scale) * (G - jnp.mean(G, axis=1, keepdims=True))


def centred_correction(problem, theta):
    """$\\frac1n\\sum_j \\partial(\\nabla\\ell_j - \\nabla L)(\\nabla\\ell_j - \\nabla L) = \\frac1n\\sum_j \\nabla^2\\ell_j\\nabla\\ell_j - \\nabla^2 L\\nabla L$:
    the Itô→Stratonovich sum of centred columns, per
    unit scale² · n (theory/sme.md, SME-3)."""
    return problem.mean_jp_loss(theta) - problem.hvp(theta, problem.grad(theta))


class CentredLabelProduct(AbstractSDENoise):
    """The matrix-free product A(θ)w of minibatch/label noise with its batch-size-dependent scales as array
    leaves [√(c/(nB)), σ/√(nB)]: $Aw = \\sum_i \\big(s_b\\,\\ell'_i (w_i - \\bar w) + s_\\sigma w_{n+i}\\big)\\nabla f_i$,
    one vector–Jacobian product. The Euler form of MinibatchNoise and LabelNoise (SDE side only: it never
    draws): a sweep over B reuses one compiled simulator."""

    scales: jax.Array
    sampling_columns: bool = eqx.field(static=True)
    label_columns: bool = eqx.field(static=True)

    def covariance_factor(self, problem, theta):
        # A's columns as the products A e_j (a check and a fallback; Euler uses factor_mv alone)
        eye = jnp.eye(self.noise_dim(problem), dtype=theta.dtype)
        return jax.vmap(lambda e: self.factor_mv(problem, theta, e), out_axes=1)(eye)

    def noise_dim(self, problem):
        return problem.n_data * (int(self.sampling_columns) + int(self.label_columns))

    def covariance_diagonal(self, problem, theta):
        """$s_b^2\\sum_i(\\nabla\\ell_i - \\nabla L)^{\\circ 2} + s_\\sigma^2\\sum_i(\\nabla f_i)^{\\circ 2}$ by chunks of
        examples: no d × n matrix (NOISE-7)."""
        s_batch, s_label = self.scales[0].astype(theta.dtype), self.scales[1].astype(theta.dtype)
        terms = []
        if self.sampling_columns:
            terms.append((s_batch**2, problem.residuals(theta), problem.grad(theta)))
        if self.label_columns:
            terms.append((s_label**2, jnp.ones(problem.n_data, theta.dtype), 0.0))
        return example_gradient_sq_sum(problem, theta, terms)

    def factor_cotangent(self, problem, w):
        n = problem.n_data
        s_batch, s_label = self.scales[0].astype(w.dtype), self.scales[1].astype(w.dtype)

        def coefficients(out, dl):
            if not self.sampling_columns:
                return s_label * w
            # (G − ḡ1ᵀ)w = Σ_i (w_i − w̄) J_iᵀℓ'_i, G = [J_iᵀℓ'_i] the per-example loss gradients, ℓ' = ∂ℓ/∂f
            # the loss's own derivative (the residual f − y only for the squared loss; (n, K) for K outputs)
            w_s = w[:n]
            c = (s_batch * (w_s - jnp.mean(w_s))).reshape((n,) + (1,) * (dl.ndim - 1)) * dl
            if self.label_columns:
                c = c + s_label * w[n:]
            return c

        return coefficients

    def factor_mv(self, problem, theta, w):
        return outputs_vjp(problem, theta, self.factor_cotangent(problem, w))

    def latex(self):
        return r"A(\theta)w,\ \text{matrix-free}"


def _product(problem, sampling_scale_: float, sigma, batch: int, sampling: bool, label: bool):
    n = problem.n_data
    s_batch = math.sqrt(sampling_scale_ / (n * batch))
    if isinstance(sigma, jax.core.Tracer):
        scales = jnp.stack([jnp.asarray(s_batch, sigma.dtype), sigma / math.sqrt(n * batch)])
    else:  # in float64 on the host, as the scales were always computed
        scales = jnp.asarray([s_batch, float(sigma) / math.sqrt(n * batch)])
    return CentredLabelProduct(scales, sampling, label)


class MinibatchNoise(AbstractGradientNoise, AbstractSDENoise):
    """SGD's own noise: $\\tilde g = \\frac1B\\sum_{i\\in\\mathcal B_k}\\nabla\\ell_i$.

    $\\Sigma = \\frac{c}{B}\\Sigma_1$ with c = 1 with replacement and c = (n−B)/(n−1) for a uniform B-subset
    or shuffled epochs (minibatch-noise.md §5, §9.1; theory/noise.md, NOISE-1).
    """

    batch_size: int = eqx.field(static=True, converter=batch_size_arg)
    sampling: str = eqx.field(static=True, default="with_replacement", converter=sampling_name)

    @property
    def sampler(self) -> BatchSampler:
        return BatchSampler(self.batch_size, self.sampling)

    def check(self, problem):
        check_batch_size(self.batch_size, problem.n_data)

    def init_state(self, problem, key, n_paths, dtype):
        return self.sampler.init_state(problem.n_data, key, n_paths)

    def draw(self, problem, key, step, state, n_paths, dtype):
        return self.sampler.draw(problem.n_data, key, step, state, n_paths)

    def draws_ahead(self) -> bool:
        return True  # indices only

    def through_outputs(self) -> bool:
        return True  # one VJP of the outputs (per_example_vjp)

    def gradient(self, problem, theta, draws):
        return batch_gradient(problem, theta, draws)

    def covariance_factor(self, problem, theta):
        n, B = problem.n_data, self.batch_size
        return centred_factor(problem, theta, sampling_scale(self.sampling, B, n) / (n * B))

    def _scale(self, problem) -> float:
        return sampling_scale(self.sampling, self.batch_size, problem.n_data)

    def factor_mv(self, problem, theta, w):
        if not problem.derivatives.matrix_free:
            return self.covariance_factor(problem, theta) @ w
        return self.euler_form(problem).factor_mv(problem, theta, w)

    def factor_cotangent(self, problem, w):
        if not problem.derivatives.matrix_free:
            return None
        return self.euler_form(problem).factor_cotangent(problem, w)

    def covariance_diagonal(self, problem, theta):
        if not by_chunks(problem):
            return super().covariance_diagonal(problem, theta)
        return self.euler_form(problem).covariance_diagonal(problem, theta)

    def noise_dim(self, problem):
        return problem.n_data

    def ito_to_stratonovich(self, problem, theta):
        # Σ_j ∂A_j A_j = (c/(nB))·n·[mean_j ∇²ℓ_j∇ℓ_j − ∇²L∇L] for the centred columns (SME-3)
        return -0.5 * (self._scale(problem) / self.batch_size) * centred_correction(problem, theta)

    def euler_form(self, problem):
        if not problem.derivatives.matrix_free:
            return self
        return _product(problem, self._scale(problem), 0.0, self.batch_size, True, False)

    def latex(self):
        return (
            r"A(\theta) = \sqrt{\frac{c}{nB}}\,\big[\nabla\ell_i - \nabla L\big]_{i=1}^{n},\quad c = 1\ "
            r"\text{(with replacement)},\ \frac{n-B}{n-1}\ \text{(without)}"
        )


class LabelNoise(AbstractGradientNoise, AbstractSDENoise):
    """Label noise on each sampled example,
    $\\tilde g = \\frac1B\\sum_{i\\in\\mathcal B_k}(f_i - y_i - \\varepsilon_{k,i})\\nabla f_i$,
    ε = ±σ (Rademacher) or N(0, σ²).

    $\\Sigma = \\Sigma_{\\rm minibatch} + \\frac{\\sigma^2}{B} G(\\theta)$ at every θ (label-noise.md C9;
    theory/noise.md, NOISE-2). ``batch_size=None`` is the full batch (HaoChen et al.'s LNGD, Damian's B = n).
    """

    sigma: jax.Array
    batch_size: int | None = eqx.field(static=True, default=None)
    sampling: str = eqx.field(static=True, default="without_replacement", converter=sampling_name)
    distribution: str = eqx.field(static=True, default="rademacher")

    def __init__(self, sigma, batch_size=None, sampling="without_replacement", distribution="rademacher"):
        check_positive("sigma", sigma, allow_zero=True)
        sampling = sampling_name(sampling)
        if distribution not in LABEL_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {LABEL_DISTRIBUTIONS}, got {distribution!r}")
        batch_size = batch_size_arg(batch_size, allow_none=True)
        # σ is an array leaf, so a sweep over σ reuses the compiled simulator.
        self.sigma = jnp.asarray(float(sigma))
        self.batch_size, self.sampling, self.distribution = batch_size, sampling, distribution

    def batch(self, problem) -> int:
        return problem.n_data if self.batch_size is None else self.batch_size

    def sampler(self, problem) -> BatchSampler:
        return BatchSampler(self.batch(problem), self.sampling)

    def check(self, problem):
        require_additive_label_noise(problem.loss_fn, type(self).__name__)
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
            eps = step_normals(ke, shape[0], shape[1], dtype).reshape(-1)
        return (idx, (self.sigma.astype(dtype) * eps).reshape(shape)), state

    def draws_ahead(self) -> bool:
        return self.distribution == "rademacher"  # indices and ±σ: exact

    def through_outputs(self) -> bool:
        return True  # one VJP of the outputs (per_example_vjp)

    def gradient(self, problem, theta, draws):
        idx, eps = draws
        return batch_gradient(problem, theta, idx, eps)

    def covariance_factor(self, problem, theta):
        n, B = problem.n_data, self.batch(problem)
        label = (self.sigma / math.sqrt(n * B)) * problem.output_gradients(theta)
        if is_full_batch(self.sampling, B, n):
            return label
        sampling = centred_factor(problem, theta, sampling_scale(self.sampling, B, n) / (n * B))
        return jnp.concatenate([sampling, label], axis=1)

    def _full(self, problem) -> bool:
        return is_full_batch(self.sampling, self.batch(problem), problem.n_data)

    def factor_mv(self, problem, theta, w):
        if not problem.derivatives.matrix_free:
            return self.covariance_factor(problem, theta) @ w
        return self.euler_form(problem).factor_mv(problem, theta, w)

    def factor_cotangent(self, problem, w):
        if not problem.derivatives.matrix_free:
            return None
        return self.euler_form(problem).factor_cotangent(problem, w)

    def covariance_diagonal(self, problem, theta):
        if not by_chunks(problem):
            return super().covariance_diagonal(problem, theta)
        return self.euler_form(problem).covariance_diagonal(problem, theta)

    def noise_dim(self, problem):
        return problem.n_data * (1 if self._full(problem) else 2)

    def noise_type(self, problem):
        if self._full(problem) and output_gradients_constant(problem):
            return (
                NoiseType.ADDITIVE
            )  # A = (σ/√(nB))[∇f_i] = (σ/√(nB)) Xᵀ for a linear model and the full batch
        return AbstractSDENoise.noise_type(self, problem)

    def ito_to_stratonovich(self, problem, theta):
        # label columns (σ/√(nB))∇f_i: Σ_j ∂A_jA_j = (σ²/B)·mean_i ∇²f_i∇f_i; plus the sampling part (SME-3)
        B = self.batch(problem)
        out = -0.5 * (self.sigma.astype(theta.dtype) ** 2 / B) * problem.mean_jp_output(theta)
        if self._full(problem):
            return out
        c = sampling_scale(self.sampling, B, problem.n_data)
        return out - 0.5 * (c / B) * centred_correction(problem, theta)

    def effective_lambda(self, lr, problem=None) -> float:
        """$\\lambda = \\eta\\sigma^2/B$ (B = n for the full batch; label-noise.md §1(d); REG-5)."""
        if self.batch_size is None and problem is None:
            raise ValueError("problem is needed for a full-batch LabelNoise (B = n)")
        if problem is not None:
            require_additive_label_noise(problem.loss_fn, type(self).__name__)
        return float(lr) * float(self.sigma) ** 2 / self.batch(problem)

    def euler_form(self, problem):
        if not problem.derivatives.matrix_free:
            return self
        n, B, full = problem.n_data, self.batch(problem), self._full(problem)
        scale = 0.0 if full else sampling_scale(self.sampling, B, n)
        return _product(problem, scale, self.sigma, B, not full, True)

    def latex(self):
        return (
            r"A(\theta) = \Big[\sqrt{\tfrac{c}{nB}}\,\big[\nabla\ell_i - \nabla L\big]_i,\ "
            r"\frac{\sigma}{\sqrt{nB}}\big[\nabla f_i\big]_i\Big],\quad A A^T = \Sigma_{\rm mb} + \frac{\sigma^2}{B} G(\theta)"
        )
