"""Models linear in the input: f(θ; x) = β(θ)ᵀx, with β = θ (linear regression) or β = u⊙u − v⊙v."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._layout import AbstractLayout
from .._validation import check_int_range, check_positive
from .base import AbstractModel
from .units import Units


class AbstractLinearPredictor(AbstractModel):
    """A model whose output is linear in x: $f(\\theta; x) = \\beta(\\theta)^T x$."""

    @abc.abstractmethod
    def weights(self, theta: Float[Array, " d"]) -> Float[Array, " p"]:
        """The effective linear predictor β(θ)."""

    def output(self, theta, x):
        return jnp.dot(self.weights(theta), x)

    def outputs(self, theta, X):
        return X @ self.weights(theta)


class LinearRegression(AbstractLinearPredictor):
    """Linear regression $f(\\theta; x) = \\theta^T x$: the squared loss is a quadratic with H = XᵀX/n."""

    dim: int

    def __check_init__(self):
        check_int_range("dim", self.dim, 1)

    @property
    def n_params(self) -> int:
        return self.dim

    @property
    def input_dim(self) -> int:
        return self.dim

    def weights(self, theta):
        return theta

    def output_gradients(self, theta, X):
        return jnp.broadcast_to(X.T, (self.dim, X.shape[0])).astype(theta.dtype)

    def param_names(self) -> list[str]:
        return [f"theta_{j}" for j in range(self.dim)]

    def sympy_units(self) -> Units:
        """$f = \\theta^T x$: p units $u = \\theta_j x_j$ (SYM-1)."""
        import sympy as sp

        t, xi = sp.Symbol("theta", real=True), sp.Symbol("xi", real=True)
        each = tuple((k,) for k in range(self.dim))
        return Units(t * xi, (t,), (xi,), (), each, each, ((),) * self.dim)


class DiagonalLinearNetwork(AbstractLinearPredictor):
    """Quadratically parametrised linear model $\\beta = u\\odot u - v\\odot v$ (θ = (u, v)), or
    $\\beta = v\\odot v$ with ``signed=False`` (θ = v; HaoChen et al.'s model). Init scale α: u = v = α𝟙.

    Reference: Woodworth et al. 2020; HaoChen et al. 2021 (theory/models.md, MOD-2).
    """

    dim: int
    alpha: float = 1.0
    signed: bool = True

    def __check_init__(self):
        check_int_range("dim", self.dim, 1)
        check_positive("alpha", self.alpha)

    @property
    def n_params(self) -> int:
        return 2 * self.dim if self.signed else self.dim

    @property
    def input_dim(self) -> int:
        return self.dim

    def weights(self, theta):
        if self.signed:
            u, v = theta[: self.dim], theta[self.dim :]
            return u * u - v * v
        return theta * theta

    def output_gradients(self, theta, X):
        if self.signed:
            u, v = theta[: self.dim], theta[self.dim :]
            return jnp.concatenate([2 * u[:, None] * X.T, -2 * v[:, None] * X.T], axis=0)
        return 2 * theta[:, None] * X.T

    def layout(self) -> AbstractLayout:
        """The signed model's SGD carries (u, v) as two leaves (FMOD-5): the gradient comes out as its two
        halves, with no slices of θ nor their transposes (pads, or a concatenation) at every step."""
        return _PairLayout(self) if self.signed else super().layout()

    def init(self, key=None):
        return jnp.full(self.n_params, self.alpha)

    def param_names(self) -> list[str]:
        if self.signed:
            return [f"u_{j}" for j in range(self.dim)] + [f"v_{j}" for j in range(self.dim)]
        return [f"v_{j}" for j in range(self.dim)]

    def sympy_units(self) -> Units:
        """$f = \\sum_j (u_j^2 - v_j^2) x_j$ (or $\\sum_j v_j^2 x_j$): p units, one per input (SYM-1)."""
        import sympy as sp

        p = self.dim
        u, v = sp.symbols("u_j v_j", real=True)
        xi = sp.Symbol("xi", real=True)
        inputs = tuple((k,) for k in range(p))
        if self.signed:
            return Units(
                (u**2 - v**2) * xi, (u, v), (xi,), (), tuple((k, p + k) for k in range(p)), inputs, ((),) * p
            )
        return Units(v**2 * xi, (v,), (xi,), (), tuple((k,) for k in range(p)), inputs, ((),) * p)


class _PairLayout(AbstractLayout):
    """θ = (u, v) of a signed ``DiagonalLinearNetwork`` as the pair of leaves (…, p), (…, p) (FMOD-5)."""

    model: DiagonalLinearNetwork

    def pack(self, theta):
        p = self.model.dim
        return (theta[..., :p], theta[..., p:])

    def unpack(self, params):
        # materialized, as ParamsLayout's: a reduction of the concatenation stays one reduction
        return jax.lax.optimization_barrier(jnp.concatenate(params, axis=-1))

    def problem(self, problem):
        return eqx.tree_at(lambda p: p.model, problem, _PairModel(self.model))


class _PairModel(AbstractLinearPredictor):
    """A signed ``DiagonalLinearNetwork`` whose θ is the pair (u, v): $\\beta = u\\odot u - v\\odot v$. Only
    SGD's stochastic gradients see it (``_PairLayout.problem``)."""

    model: DiagonalLinearNetwork

    @property
    def n_params(self) -> int:
        return self.model.n_params

    @property
    def input_dim(self) -> int:
        return self.model.dim

    def weights(self, theta):
        u, v = theta
        return u * u - v * v

    def param_names(self) -> list[str]:
        return self.model.param_names()
