"""The SDE contract: $dy = b(y, \\eta)\\,dt + s(\\eta)\\,A(y)\\,dW$ (Itô) in a state y ∈ R^p that holds θ ∈ R^d
(y = θ by default; (θ, momentum) for an optimizer's SDE), with $s(\\eta) = \\sqrt\\eta$ on the SGD clock (SMEs)
and s = 1 for an SDE in its own time units (``FunctionSDE``)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._noise.base import NOISE_TYPES, NoiseType

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

    The state beyond θ: an SDE may live in y ∈ R^p, p = ``state_dim(d)`` ≥ d (an optimizer's SDE carries θ and
    its momentum). ``init_state`` maps one path's θ₀ to y₀, ``theta_of`` projects y to θ (what observables,
    divergence, events and saved paths read) and ``with_theta`` replaces θ in y keeping the rest (what a reset
    of the parameters does). drift, factor, factor_mv and the correction act on y. The defaults (p = d, y = θ)
    are every SGD SME's (theory/momentum-sde.md, MSDE-1).
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
        """A ``NoiseType`` (a str enum: a subclass may return the plain string naming one)."""

    def factor_mv(self, theta: Float[Array, " d"], w: Float[Array, " m"]) -> Float[Array, " d"]:
        """$A(\\theta)w$; subclasses may compute it without forming A (Euler uses only this product)."""
        return self.factor(theta) @ w

    def euler_increment(
        self, theta: Float[Array, " d"], eta, dt, w: Float[Array, " m"]
    ) -> Float[Array, " d"]:
        """Euler's increment $b(\\theta, \\eta)\\,\\Delta t + s(\\eta)A(\\theta)w$ for the Brownian increment w
        over Δt = ``dt`` (what the Euler stepper adds to θ; an SDE may compute it at once, SDE-10)."""
        return self.drift(theta, eta) * dt + self.noise_scale(eta).astype(w.dtype) * self.factor_mv(theta, w)

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

    def state_dim(self, d: int) -> int:
        """p, the dimension of the state y for θ ∈ R^d (default d: the state is θ)."""
        return d

    def init_state(self, theta: Float[Array, " d"]) -> Float[Array, " p"]:
        """y₀ of one path from its θ₀ (default: θ₀ itself)."""
        return theta

    def theta_of(self, y: Float[Array, " p"]) -> Float[Array, " d"]:
        """θ of one path's state y (default: y itself)."""
        return y

    def with_theta(self, y: Float[Array, " p"], theta: Float[Array, " d"]) -> Float[Array, " p"]:
        """One path's state with its θ part replaced by ``theta`` and the rest kept (default: ``theta``)."""
        return theta

    @property
    def records(self) -> tuple[str, ...]:
        """Names of the per-path scalars of the state beyond θ that runs record (``observe``; default none)."""
        return ()

    def observe(self, y: Float[Array, " p"]) -> dict[str, Float[Array, ""]]:
        """Per-path scalars of one path's state beyond θ (an optimizer SDE's momentum norm: the discrete
        optimizer's own records, by the same names)."""
        return {}

    def check_shapes(self, d: int, dtype) -> int:
        """Raise ValueError unless, with p = state_dim(d), init_state maps (d,) to (p,), theta_of (p,) to (d,),
        with_theta ((p,), (d,)) to (p,), drift(y, η) is (p,) and factor(y) is (p, m) (checked by abstract
        evaluation, nothing runs); return m."""
        p = self.state_dim(d)
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < d:
            raise ValueError(f"the SDE's state_dim({d}) must be an int p >= {d}, got {p!r}")
        arg = "theta" if p == d else "y"  # the state's name in the messages
        theta = jax.ShapeDtypeStruct((d,), dtype)
        y = jax.ShapeDtypeStruct((p,), dtype)
        eta = jax.ShapeDtypeStruct((), dtype)
        for name, fn, args, want in (
            ("init_state(theta)", self.init_state, (theta,), (p,)),
            ("theta_of(y)", self.theta_of, (y,), (d,)),
            ("with_theta(y, theta)", self.with_theta, (y, theta), (p,)),
            (f"drift({arg}, eta)", self.drift, (y, eta), (p,)),
        ):
            out = jax.eval_shape(fn, *args)
            if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != want:
                raise ValueError(
                    f"the SDE's {name} must return one array of shape {want} (theta in R^{d}, state in "
                    f"R^{p}), got {out}"
                )
        A = jax.eval_shape(self.factor, y)
        if not isinstance(A, jax.ShapeDtypeStruct) or A.ndim != 2 or A.shape[0] != p or A.shape[1] < 1:
            raise ValueError(
                f"the SDE's factor({arg}) must return one array of shape ({p}, m), m >= 1, got {A}"
            )
        return A.shape[1]

    def noise_dim(self, d: int, dtype) -> int:
        """m, the number of Brownian motions (for θ ∈ R^d)."""
        return jax.eval_shape(self.factor, jax.ShapeDtypeStruct((self.state_dim(d),), dtype)).shape[1]

    def astype(self, dtype) -> AbstractSDE:
        """The same SDE with its data in ``dtype`` (default: unchanged)."""
        return self


class AbstractAugmentedSDE(AbstractSDE):
    """An SDE in y = (θ, z): the problem's θ ∈ R^d first, then the z ∈ R^{p−d} an optimizer carries (its
    momentum, its moment estimates), zero at the start as optax's. A subclass gives ``extra_dim(d)``."""

    @abc.abstractmethod
    def extra_dim(self, d: int) -> int:
        """p − d, the size of z."""

    def _d(self) -> int:
        problem = self.problem
        if problem is None:
            raise ValueError(f"{type(self).__name__} needs its problem to split its state into (theta, z)")
        return problem.n_params

    def state_dim(self, d: int) -> int:
        return d + self.extra_dim(d)

    def init_state(self, theta):
        """(θ₀, 0)."""
        return jnp.concatenate([theta, jnp.zeros((self.extra_dim(theta.shape[0]),), theta.dtype)])

    def theta_of(self, y):
        return y[: self._d()]

    def rest_of(self, y):
        """z of one path's state."""
        return y[self._d() :]

    def with_theta(self, y, theta):
        return jnp.concatenate([theta, self.rest_of(y)])


def autodiff_correction(factor, noise_type: str, theta, s2):
    """$-\\frac{s^2}2\\sum_j (\\partial_\\theta A_{\\cdot j})A_{\\cdot j}$ by forward-mode autodiff of the
    factor, s² the squared noise scale (η on the SGD clock)."""
    if noise_type == NoiseType.ADDITIVE:
        return jnp.zeros_like(theta)
    A = factor(theta)
    dA = jax.jacfwd(factor)(theta)  # dA[i, j, k] = ∂A_ij/∂θ_k
    return -0.5 * jnp.asarray(s2, A.dtype) * jnp.einsum("ijk,kj->i", dA, A)


def check_noise_type(noise_type: str) -> NoiseType:
    """The declared structure as a ``NoiseType`` (ValueError naming the valid values otherwise)."""
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
    return NoiseType(noise_type)


class FunctionSDE(AbstractSDE):
    """An SDE in its own time units from given JAX functions: drift ``drift(θ, η)`` and diffusion
    ``factor(θ)`` (d × m), so that $dX = \\mathrm{drift}(X,\\eta)\\,dt + \\mathrm{factor}(X)\\,dW$.

    The step of time is the simulator's ``lr`` (η, also passed to ``drift``), and changing it does not change the
    SDE: a drift–diffusion with diffusion coefficient D has ``factor`` $\\sqrt{2D}$ whatever the step (no SGD
    clock √η: that belongs to the SMEs, theory/sde.md SDE-9). To write SGD's SME by hand, fold √η into the
    factor. Optionally the Itô→Stratonovich correction ``correction(θ, η)`` (default: autodiff) and a
    matrix-free ``factor_mv(θ, w)`` = factor(θ)w. ``problem`` (optional) is what observables such as "loss" are
    evaluated on.

    A state beyond θ (optional): ``theta_dim=d`` and ``state_dim=p`` (p ≥ d) make the state y ∈ R^p with θ its
    first d coordinates; ``init_state(θ)`` (default: θ followed by p − d zeros) gives one path's y₀, and
    the functions above act on y.

    ``params`` (optional): a mapping name → real number or array, passed to every function as its last
    argument (``drift(θ, η, params)``, ``factor(θ, params)``, ``factor_mv(θ, w, params)``,
    ``correction(θ, η, params)``). Its entries are traced, not baked into the program: another value reuses the
    compiled simulator, and ``sgdsde.sweep`` varies them by name in one program (e.g. a drift v).
    """

    drift_fn: Callable = eqx.field(static=True)
    factor_fn: Callable = eqx.field(static=True)
    factor_mv_fn: Callable | None = eqx.field(static=True)
    noise_type_: NoiseType = eqx.field(static=True)
    correction_fn: Callable | None = eqx.field(static=True, default=None)
    problem_: Problem | None = None
    params: dict | None = None
    theta_dim: int | None = eqx.field(static=True, default=None)
    state_dim_: int | None = eqx.field(static=True, default=None)
    init_state_fn: Callable | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        drift,
        factor,
        *,
        noise_type: str = NoiseType.GENERAL,
        correction=None,
        problem=None,
        factor_mv=None,
        params=None,
        theta_dim: int | None = None,
        state_dim: int | None = None,
        init_state=None,
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
        self.theta_dim, self.state_dim_ = _check_state_dims(theta_dim, state_dim)
        if init_state is not None and (self.theta_dim is None or not callable(init_state)):
            raise ValueError(
                "init_state must be a callable init_state(theta) -> y, given with theta_dim= and state_dim="
            )
        self.init_state_fn = init_state

    @property
    def noise_type(self) -> NoiseType:
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
            theta_dim=self.theta_dim,
            state_dim=self.state_dim_,
            init_state=self.init_state_fn,
        )
        return FunctionSDE(self.drift_fn, self.factor_fn, **{**kw, **changes})

    @property
    def problem(self) -> Problem | None:
        return self.problem_

    def state_dim(self, d: int) -> int:
        if self.theta_dim is None or self.state_dim_ is None:
            return d
        if d != self.theta_dim:
            raise ValueError(
                f"theta0 has d={d} parameters, but this FunctionSDE has theta_dim={self.theta_dim}"
            )
        return self.state_dim_

    def init_state(self, theta):
        if self.theta_dim is None or self.state_dim_ is None:
            return theta
        if self.init_state_fn is not None:
            return self.init_state_fn(*self._args(theta))
        return jnp.concatenate([theta, jnp.zeros((self.state_dim_ - theta.shape[0],), theta.dtype)])

    def theta_of(self, y):
        return y if self.theta_dim is None else y[: self.theta_dim]

    def with_theta(self, y, theta):
        return theta if self.theta_dim is None else jnp.concatenate([theta, y[self.theta_dim :]])

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


def _check_state_dims(theta_dim, state_dim) -> tuple[int | None, int | None]:
    """(theta_dim, state_dim): both None, or ints 1 <= theta_dim <= state_dim (ValueError naming them)."""
    if theta_dim is None and state_dim is None:
        return None, None
    ok = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1
    if not (ok(theta_dim) and ok(state_dim)) or state_dim < theta_dim:  # pyright: ignore[reportOptionalOperand]
        raise ValueError(
            "theta_dim and state_dim must be given together as ints 1 <= theta_dim <= state_dim, got "
            f"theta_dim={theta_dim!r}, state_dim={state_dim!r}"
        )
    return int(theta_dim), int(state_dim)  # pyright: ignore[reportArgumentType]


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
