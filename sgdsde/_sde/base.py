"""The SDE contract: $d\\theta = b(\\theta, \\eta)\\,dt + s(\\eta)\\,A(\\theta)\\,dW$ (Itô), with
$s(\\eta) = \\sqrt\\eta$ on the SGD clock (SMEs) and s = 1 for an SDE in its own time units (``FunctionSDE``)."""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._noise.base import NOISE_TYPES


class AbstractSDE(eqx.Module):
    """An Itô SDE: $d\\theta = b(\\theta,\\eta)\\,dt + s(\\eta)\\,A(\\theta)\\,dW_t$, W m-dimensional.

    η is the current learning rate, i.e. the step of time (an argument, so schedules and sweeps reuse one
    compiled simulator). ``noise_scale`` is s(η): $\\sqrt\\eta$ by default, SGD's clock, on which one step's
    gradient-noise covariance ηΣ is spread over time η (the SMEs); an SDE in its own units overrides it to 1.
    ``noise_type`` declares the structure of A that solvers rely on: "additive" (A constant),
    "commutative" ($(\\partial_{b_j} b_k) = (\\partial_{b_k} b_j)$ for all columns) or "general";
    ``simulate_sde`` verifies the declaration at θ₀ before running.
    """

    @abc.abstractmethod
    def drift(self, theta: Float[Array, " d"], eta) -> Float[Array, " d"]:
        """The Itô drift $b(\\theta, \\eta)$."""

    @abc.abstractmethod
    def factor(self, theta: Float[Array, " d"]) -> Float[Array, "d m"]:
        """A(θ), the factor of one step's gradient-noise covariance $\\Sigma = AA^T$."""

    @property
    @abc.abstractmethod
    def noise_type(self) -> str:
        """One of NOISE_TYPES."""

    def factor_mv(self, theta: Float[Array, " d"], w: Float[Array, " m"]) -> Float[Array, " d"]:
        """$A(\\theta)w$; subclasses may compute it without forming A (Euler uses only this product)."""
        return self.factor(theta) @ w

    @property
    def problem(self):
        """The Problem observables are evaluated on (None for an SDE not tied to one)."""
        return None

    def noise_scale(self, eta):
        """s(η), the factor's multiplier in the diffusion: $\\sqrt\\eta$ on the SGD clock (theory/sde.md, SDE-9)."""
        return jnp.sqrt(eta)

    def diffusion(self, theta: Float[Array, " d"], eta) -> Float[Array, "d m"]:
        """The diffusion matrix $s(\\eta)\\,A(\\theta)$ ($\\sqrt\\eta A$ for an SME)."""
        A = self.factor(theta)
        return self.noise_scale(jnp.asarray(eta, A.dtype)) * A

    def stratonovich_correction(self, theta: Float[Array, " d"], eta) -> Float[Array, " d"]:
        """$-\\frac12\\sum_j (\\partial_\\theta \\sigma_{\\cdot j})\\,\\sigma_{\\cdot j}$ with σ = s(η)A:
        added to the Itô drift
        it gives the Stratonovich drift of the same process (by jax.jacfwd; zero for additive noise)."""
        return autodiff_correction(self.factor, self.noise_type, theta, self.noise_scale(eta) ** 2)

    def check_shapes(self, d: int, dtype) -> int:
        """Raise ValueError unless drift(θ, η) is (d,) and factor(θ) is (d, m) for θ of shape (d,) (checked
        by abstract evaluation, nothing runs); return m."""
        theta = jax.ShapeDtypeStruct((d,), dtype)
        eta = jax.ShapeDtypeStruct((), dtype)
        b = jax.eval_shape(self.drift, theta, eta)
        if not isinstance(b, jax.ShapeDtypeStruct) or b.shape != (d,):
            raise ValueError(f"the SDE's drift(theta, eta) must return one array of shape ({d},), got {b}")
        A = jax.eval_shape(self.factor, theta)
        if not isinstance(A, jax.ShapeDtypeStruct) or A.ndim != 2 or A.shape[0] != d or A.shape[1] < 1:
            raise ValueError(
                f"the SDE's factor(theta) must return one array of shape ({d}, m), m >= 1, got {A}"
            )
        return A.shape[1]

    def noise_dim(self, d: int, dtype) -> int:
        """m, the number of Brownian motions."""
        return jax.eval_shape(self.factor, jax.ShapeDtypeStruct((d,), dtype)).shape[1]

    def astype(self, dtype) -> AbstractSDE:
        """The same SDE with its data in ``dtype`` (default: unchanged)."""
        return self


def autodiff_correction(factor, noise_type: str, theta, s2):
    """$-\\frac{s^2}2\\sum_j (\\partial_\\theta A_{\\cdot j})A_{\\cdot j}$ by forward-mode autodiff of the
    factor, s² the squared noise scale (η on the SGD clock)."""
    if noise_type == "additive":
        return jnp.zeros_like(theta)
    A = factor(theta)
    dA = jax.jacfwd(factor)(theta)  # dA[i, j, k] = ∂A_ij/∂θ_k
    return -0.5 * jnp.asarray(s2, A.dtype) * jnp.einsum("ijk,kj->i", dA, A)


def check_noise_type(noise_type: str) -> str:
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
    return noise_type


class FunctionSDE(AbstractSDE):
    """An SDE in its own time units from given JAX functions: drift ``drift(θ, η)`` and diffusion
    ``factor(θ)`` (d × m), so that $dX = \\mathrm{drift}(X,\\eta)\\,dt + \\mathrm{factor}(X)\\,dW$.

    The step of time is the simulator's ``lr`` (η, also passed to ``drift``), and changing it does not change the
    SDE: a drift–diffusion with diffusion coefficient D has ``factor`` $\\sqrt{2D}$ whatever the step (no SGD
    clock √η: that belongs to the SMEs, theory/sde.md SDE-9). To write SGD's SME by hand, fold √η into the
    factor. Optionally the Itô→Stratonovich correction ``correction(θ, η)`` (default: autodiff) and a
    matrix-free ``factor_mv(θ, w)`` = factor(θ)w. ``problem`` (optional) is what observables such as "loss" are
    evaluated on.
    """

    drift_fn: Callable = eqx.field(static=True)
    factor_fn: Callable = eqx.field(static=True)
    factor_mv_fn: Callable | None = eqx.field(static=True)
    noise_type_: str = eqx.field(static=True)
    correction_fn: Callable | None = eqx.field(static=True, default=None)
    problem_: object = None

    def __init__(
        self, drift, factor, *, noise_type: str = "general", correction=None, problem=None, factor_mv=None
    ):
        if not callable(drift) or not callable(factor) or (factor_mv is not None and not callable(factor_mv)):
            raise ValueError("drift and factor must be callables drift(theta, eta) and factor(theta)")
        if correction is not None and not callable(correction):
            raise ValueError("correction must be None or a callable correction(theta, eta)")
        self.drift_fn, self.factor_fn, self.factor_mv_fn = drift, factor, factor_mv
        self.noise_type_ = check_noise_type(noise_type)
        self.correction_fn = correction
        self.problem_ = problem

    @property
    def noise_type(self) -> str:
        return self.noise_type_

    @property
    def problem(self):
        return self.problem_

    def drift(self, theta, eta):
        return self.drift_fn(theta, eta)

    def factor(self, theta):
        return self.factor_fn(theta)

    def factor_mv(self, theta, w):
        return self.factor(theta) @ w if self.factor_mv_fn is None else self.factor_mv_fn(theta, w)

    def noise_scale(self, eta):
        """1: the factor is the diffusion itself, in the SDE's own time units."""
        return jnp.ones_like(eta)

    def stratonovich_correction(self, theta, eta):
        if self.correction_fn is not None:
            return self.correction_fn(theta, eta)
        return autodiff_correction(self.factor, self.noise_type, theta, 1.0)

    def astype(self, dtype):
        if self.problem_ is None:
            return self
        return FunctionSDE(
            self.drift_fn,
            self.factor_fn,
            noise_type=self.noise_type_,
            correction=self.correction_fn,
            problem=self.problem_.astype(dtype),
        )
