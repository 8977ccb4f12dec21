"""A problem: a model, data (X, y) and the squared loss $L(\\theta) = \\frac{1}{2n}\\sum_i (f(\\theta; x_i) - y_i)^2$."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._models import AbstractModel, LinearRegression
from ._validation import check_psd


class Problem(eqx.Module):
    """Squared-loss regression: $L(\\theta) = \\frac{1}{2n}\\sum_i (f_i(\\theta) - y_i)^2$ (theory/models.md, MOD-1).

    Per-example loss ℓᵢ = ½ rᵢ², residual rᵢ = fᵢ(θ) − yᵢ. Everything here is JAX autodiff; the symbolic
    layer must reproduce it.
    """

    model: AbstractModel
    X: Float[Array, "n p"]
    y: Float[Array, " n"]

    def __init__(self, model: AbstractModel, X, y, dtype=None):
        X = jnp.asarray(X, dtype)
        y = jnp.asarray(y, dtype)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (n, p), got shape {X.shape}")
        if X.shape[1] != model.input_dim:
            raise ValueError(f"X must have {model.input_dim} columns (the model's input dim), got {X.shape}")
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
        if X.shape[0] < 1:
            raise ValueError("X must hold at least one example")
        if not (np.all(np.isfinite(np.asarray(X))) and np.all(np.isfinite(np.asarray(y)))):
            raise ValueError("X and y must be finite")
        self.model, self.X, self.y = model, X, y

    @property
    def n_data(self) -> int:
        return self.X.shape[0]

    @property
    def n_params(self) -> int:
        return self.model.n_params

    def astype(self, dtype) -> Problem:
        return Problem(self.model, self.X, self.y, dtype=dtype)

    def check_theta(self, theta, name: str = "theta") -> None:
        """Raise unless θ's last axis has length d."""
        shape = np.shape(theta)
        if len(shape) == 0 or shape[-1] != self.n_params:
            raise ValueError(f"{name} must have last dimension {self.n_params} (the model's d), got {shape}")

    def outputs(self, theta) -> Float[Array, " n"]:
        """$f_i(\\theta)$ for all i."""
        return self.model.outputs(theta, self.X)

    def residuals(self, theta) -> Float[Array, " n"]:
        """$r_i = f_i(\\theta) - y_i$."""
        return self.outputs(theta) - self.y

    def loss(self, theta) -> Float[Array, ""]:
        """$L(\\theta) = \\frac{1}{2n}\\sum_i r_i^2$."""
        r = self.residuals(theta)
        return 0.5 * jnp.mean(r * r)

    def grad(self, theta) -> Float[Array, " d"]:
        """$\\nabla L = \\frac1n J^T r$, by one vector-Jacobian product."""
        out, vjp = jax.vjp(self.outputs, theta)
        return vjp((out - self.y) / self.n_data)[0]

    def hessian(self, theta) -> Float[Array, "d d"]:
        """$\\nabla^2 L(\\theta)$ by autodiff."""
        return jax.hessian(self.loss)(theta)

    def sharpness(self, theta) -> float:
        """$\\lambda_{\\max}(\\nabla^2 L(\\theta))$; GD is locally stable only for η < 2/λ_max."""
        return float(jnp.linalg.eigvalsh(_hessian(self, jnp.asarray(theta)))[-1])

    def output_gradients(self, theta) -> Float[Array, "d n"]:
        """The gradient matrix $J^T = [\\nabla f_1, …, \\nabla f_n]$ (d × n)."""
        return self.model.output_gradients(theta, self.X)

    def loss_gradients(self, theta) -> Float[Array, "d n"]:
        """Per-example loss gradients $[\\nabla \\ell_i] = [r_i \\nabla f_i]$ (d × n)."""
        return self.output_gradients(theta) * self.residuals(theta)[None, :]

    def gauss_newton(self, theta) -> Float[Array, "d d"]:
        """$G(\\theta) = \\frac1n \\sum_i \\nabla f_i \\nabla f_i^T$ (= ∇²L on the zero-loss set)."""
        J = self.output_gradients(theta)
        return J @ J.T / self.n_data

    def batch_gradient(self, theta, idx=None, label_noise=None) -> Float[Array, " d"]:
        """$\\frac1B\\sum_{b}(f_{i_b} - y_{i_b} - \\varepsilon_b)\\nabla f_{i_b}$ for batch indices ``idx``
        (None: the full batch, without gathering)."""
        xb, yb = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        out, vjp = jax.vjp(lambda th: self.model.outputs(th, xb), theta)
        r = out - yb
        if label_noise is not None:
            r = r - label_noise
        return vjp(r / xb.shape[0])[0]

    def weighted_gradient(self, theta, weights) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i m_i \\nabla\\ell_i$ for per-example weights m (Wu et al.'s multiplicative form)."""
        out, vjp = jax.vjp(self.outputs, theta)
        return vjp(weights * (out - self.y) / self.n_data)[0]


@eqx.filter_jit
def _hessian(problem, theta):
    return problem.hessian(theta)


def quadratic_problem(hessian, theta_star, dtype=None) -> Problem:
    """The quadratic loss $L = \\frac12(\\theta-\\theta^*)^T H (\\theta-\\theta^*)$ as linear regression.

    Rows X = √d Λ^{1/2} Qᵀ from H = QΛQᵀ, y = Xθ*, so XᵀX/d = H exactly (theory/models.md, MOD-1b).
    Gaussian noise is the natural noise for it; minibatch noise would depend on this choice of rows.
    """
    H = check_psd("hessian", hessian)
    ts = np.asarray(theta_star, dtype=np.float64)
    d = H.shape[0]
    if ts.shape != (d,):
        raise ValueError(f"theta_star must have shape ({d},) to match hessian, got {ts.shape}")
    lam, Q = np.linalg.eigh((H + H.T) / 2)
    X = np.sqrt(d) * (np.sqrt(np.clip(lam, 0, None))[:, None] * Q.T)
    return Problem(LinearRegression(d), X, X @ ts, dtype=dtype)
