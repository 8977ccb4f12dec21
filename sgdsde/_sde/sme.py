"""Li–Tai–E stochastic modified equations of SGD, numerically from the Problem and its noise model."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._models import LinearRegression
from .._noise import AbstractGradientNoise, GaussianNoise, LabelNoise, NoNoise, SphericalGaussianNoise
from .._noise.sampling import is_full_batch
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

    def astype(self, dtype):
        if self.problem_.X.dtype == dtype:
            return self
        return SME(self.problem_.astype(dtype), self.noise, self.order)
