"""The SDE contract: $d\\theta = b(\\theta, \\eta)\\,dt + s(\\eta)\\,A(\\theta)\\,dW$ (Itô), with
$s(\\eta) = \\sqrt\\eta$ on the SGD clock (SMEs) and s = 1 for an SDE in its own time units (``FunctionSDE``)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._noise.base import NOISE_TYPES

if TYPE_CHECKING:
    from .._problem import Problem


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
    def problem(self) -> Problem | None:
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

    ``params`` (optional): a mapping name → real number or array, passed to every function as its last
    argument (``drift(θ, η, params)``, ``factor(θ, params)``, ``factor_mv(θ, w, params)``,
    ``correction(θ, η, params)``). Its entries are traced, not baked into the program: another value reuses the
    compiled simulator, and ``sgdsde.sweep`` varies them by name in one program (e.g. a drift v).
    """

    drift_fn: Callable = eqx.field(static=True)
    factor_fn: Callable = eqx.field(static=True)
    factor_mv_fn: Callable | None = eqx.field(static=True)
    noise_type_: str = eqx.field(static=True)
    correction_fn: Callable | None = eqx.field(static=True, default=None)
    problem_: Problem | None = None
    params: dict | None = None

    def __init__(
        self,
        drift,
        factor,
        *,
        noise_type: str = "general",
        correction=None,
        problem=None,
        factor_mv=None,
        params=None,
    ):
        if not callable(drift) or not callable(factor) or (factor_mv is not None and not callable(factor_mv)):
            raise ValueError("drift and factor must be callables drift(theta, eta) and factor(theta)")
        if correction is not None and not callable(correction):
            raise ValueError("correction must be None or a callable correction(theta, eta)")
        self.drift_fn, self.factor_fn, self.factor_mv_fn = drift, factor, factor_mv
        self.noise_type_ = check_noise_type(noise_type)
        self.correction_fn = correction
        self.problem_ = problem
        self.params = None if params is None else _check_params(params)

    @property
    def noise_type(self) -> str:
        return self.noise_type_

    def _args(self, *args):
        return args if self.params is None else (*args, self.params)

    def with_params(self, **values) -> FunctionSDE:
        """The same SDE with the named ``params`` entries replaced (ValueError for a name it does not have)."""
        unknown = sorted(set(values) - set(self.params or {}))
        if unknown or self.params is None:
            raise ValueError(
                f"params: this FunctionSDE has no entries {unknown}; it has {sorted(self.params or {})}"
            )
        return self._rebuild(params={**self.params, **values})

    def _rebuild(self, **changes) -> FunctionSDE:
        kw = dict(
            noise_type=self.noise_type_,
            correction=self.correction_fn,
            problem=self.problem_,
            factor_mv=self.factor_mv_fn,
            params=self.params,
        )
        return FunctionSDE(self.drift_fn, self.factor_fn, **{**kw, **changes})

    @property
    def problem(self) -> Problem | None:
        return self.problem_

    def drift(self, theta, eta):
        return self.drift_fn(*self._args(theta, eta))

    def factor(self, theta):
        return self.factor_fn(*self._args(theta))

    def factor_mv(self, theta, w):
        return (
            self.factor(theta) @ w if self.factor_mv_fn is None else self.factor_mv_fn(*self._args(theta, w))
        )

    def noise_scale(self, eta):
        """1: the factor is the diffusion itself, in the SDE's own time units."""
        return jnp.ones_like(eta)

    def stratonovich_correction(self, theta, eta):
        if self.correction_fn is not None:
            return self.correction_fn(*self._args(theta, eta))
        return autodiff_correction(self.factor, self.noise_type, theta, 1.0)

    def astype(self, dtype):
        """The problem's data and the floating ``params`` in ``dtype``."""
        if self.problem_ is None and self.params is None:
            return self
        params = self.params
        if params is not None:
            params = {
                k: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v for k, v in params.items()
            }
        problem = None if self.problem_ is None else self.problem_.astype(dtype)
        return self._rebuild(problem=problem, params=params)


def _check_params(params) -> dict:
    """name → finite real array (NumPy, so that the run casts it to its dtype), else ValueError naming it."""
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValueError(f"params must be a dict name -> real number or array, got {params!r}")
    out = {}
    for k, v in params.items():
        if isinstance(v, (str, bytes, bool, np.bool_)) or np.iscomplexobj(v):
            raise ValueError(f"params[{k!r}] must be a real number or array, got {v!r}")
        try:
            arr = np.asarray(v, dtype=np.float64) if not isinstance(v, jax.Array) else np.asarray(v)
        except (TypeError, ValueError):
            raise ValueError(f"params[{k!r}] must be a real number or array, got {v!r}") from None
        if arr.dtype == object or not np.all(np.isfinite(arr)):
            raise ValueError(f"params[{k!r}] must be finite, got {v!r}")
        out[k] = arr
    return out
