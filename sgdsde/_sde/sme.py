"""Li–Tai–E stochastic modified equations of SGD, numerically from the Problem and its noise model."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from .._models import LinearRegression
from .._noise import (
    AbstractGradientNoise,
    GaussianNoise,
    LabelNoise,
    MinibatchNoise,
    NoNoise,
    SphericalGaussianNoise,
)
from .._noise.sampling import is_full_batch, sampling_scale
from .._problem import Problem
from .base import AbstractSDE


def structural_noise_type(problem: Problem, noise: AbstractGradientNoise) -> str:
    """ "additive" where A(θ) cannot depend on θ by construction, else "commutative" (one noise or one
    parameter dimension) or "general"."""
    if isinstance(noise, (NoNoise, SphericalGaussianNoise)):
        return "additive"
    if isinstance(noise, GaussianNoise) and not callable(noise.factor):
        return "additive"
    if (
        isinstance(noise, LabelNoise)
        and isinstance(problem.model, LinearRegression)
        and is_full_batch(noise.sampling, noise.batch(problem), problem.n_data)
    ):
        return "additive"  # A = (σ/√(nB)) Xᵀ for a linear model and the full batch
    d = problem.n_params
    m = jax.eval_shape(
        lambda th: noise.covariance_factor(problem, th), jax.ShapeDtypeStruct((d,), problem.X.dtype)
    ).shape[1]
    return "commutative" if min(d, m) == 1 else "general"


class SME(AbstractSDE):
    """Li–Tai–E's SME of SGD (Itô): $d\\theta = -\\nabla\\big(L + \\tfrac{(o-1)\\eta}{4}\\|\\nabla
    L\\|^2\\big)dt +
    \\sqrt\\eta\\,A(\\theta)\\,dW$, order o ∈ {1, 2}, with A = ``noise.covariance_factor`` (Σ = AAᵀ).

    Order 1 is a weak order-1 approximation of SGD on t = kη, order 2 a weak order-2 one (Li, Tai, E 2019;
    minibatch-noise.md §1; theory/sde.md, SDE-1, SDE-2). The order-2 drift uses one Hessian-vector product.
    """

    problem_: Problem
    noise: AbstractGradientNoise
    order: int = eqx.field(static=True, default=1)
    noise_type_: str = eqx.field(static=True, default="")
    # [√(c/(nB)), σ/√(nB)]: the batch-size-dependent scales of the minibatch and label-noise columns, as an
    # array leaf so that factor_mv (and a sweep over B with Euler) does not depend on the static batch size
    mv_scales: jax.Array | None = None

    def __init__(self, problem: Problem, noise: AbstractGradientNoise | None = None, order: int = 1):
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
        noise = NoNoise() if noise is None else noise
        if not isinstance(noise, AbstractGradientNoise):
            raise ValueError(f"noise must be an AbstractGradientNoise or None, got {type(noise).__name__}")
        if order not in (1, 2) or isinstance(order, bool):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        noise.check(problem)
        self.problem_, self.noise, self.order = problem, noise, order
        self.noise_type_ = structural_noise_type(problem, noise)
        self.mv_scales = None
        if isinstance(noise, (MinibatchNoise, LabelNoise)):
            n = problem.n_data
            B = noise.batch_size if isinstance(noise, MinibatchNoise) else noise.batch(problem)
            sigma = float(noise.sigma) if isinstance(noise, LabelNoise) else 0.0
            scale = sampling_scale(noise.sampling, B, n) / (n * B)
            self.mv_scales = jnp.asarray([math.sqrt(scale), sigma / math.sqrt(n * B)])

    @property
    def problem(self):
        return self.problem_

    @property
    def noise_type(self) -> str:
        return self.noise_type_

    def drift(self, theta, eta):
        g = self.problem_.grad(theta)
        if self.order == 1:
            return -g
        # ∇(η/4 ‖∇L‖²) = (η/2) ∇²L ∇L, one Hessian-vector product
        _, hg = jax.jvp(self.problem_.grad, (theta,), (g,))
        return -(g + 0.5 * jnp.asarray(eta, g.dtype) * hg)

    def factor(self, theta):
        return self.noise.covariance_factor(self.problem_, theta)

    def factor_mv(self, theta, w):
        """A(θ)w with one vector–Jacobian product for minibatch and label noise, whose columns are
        $\\sqrt{c/(nB)}\\,r_i(\\nabla f_i - \\ldots)$ (centred) and $\\frac{\\sigma}{\\sqrt{nB}}\\nabla
        f_i$: $Aw = J^T$-vjp of
        a weighted residual. Equal to ``factor(θ) @ w`` (tests/test_sde.py)."""
        noise, problem = self.noise, self.problem_
        if self.mv_scales is None:
            return self.factor(theta) @ w
        n = problem.n_data
        s_batch, s_label = self.mv_scales[0].astype(w.dtype), self.mv_scales[1].astype(w.dtype)
        out, vjp = jax.vjp(problem.outputs, theta)
        if isinstance(noise, LabelNoise) and is_full_batch(noise.sampling, noise.batch(problem), n):
            return vjp(s_label * w)[0]
        w_s = w[:n]
        # (G − ḡ1ᵀ)w = Σ_i r_i(w_i − w̄)∇f_i, G = [r_i ∇f_i] the per-example loss gradients
        c = s_batch * (out - problem.y) * (w_s - jnp.mean(w_s))
        if isinstance(noise, LabelNoise):
            c = c + s_label * w[n:]
        return vjp(c)[0]

    def euler_form(self) -> SME:
        """This SME for a solver that uses only ``drift`` and ``factor_mv`` (Euler): the noise's static batch
        size is replaced by a canonical one with the same structure (m, full batch or not), so a sweep over B
        reuses one compiled simulator; ``factor`` of the result is not meaningful."""
        noise, n = self.noise, self.problem_.n_data
        if self.mv_scales is None or n == 1:
            return self
        if isinstance(noise, MinibatchNoise):
            canonical = MinibatchNoise(1, noise.sampling)
        elif is_full_batch(noise.sampling, noise.batch(self.problem_), n):
            canonical = LabelNoise(0.0, None, noise.sampling, noise.distribution)
        else:
            canonical = LabelNoise(0.0, 1, noise.sampling, noise.distribution)
        return eqx.tree_at(lambda s: s.noise, self, canonical)

    def astype(self, dtype):
        if self.problem_.X.dtype == dtype and self.problem_.y.dtype == dtype:
            return self
        return eqx.tree_at(lambda s: s.problem_, self, self.problem_.astype(dtype))
