"""A problem: a model, data (X, y) and the squared loss $L(\\theta) = \\frac{1}{2n}\\sum_i (f(\\theta; x_i) - y_i)^2$."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._derivatives import AbstractDerivatives
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
    # None: JAX autodiff of the model (the definition); else a back end such as
    # symbolic.SymbolicDerivatives that computes the same per-example derivatives another way.
    derivatives: object = eqx.field(static=True, default=None)

    def __init__(self, model: AbstractModel, X, y, dtype=None, *, derivatives=None):
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
        if derivatives is not None and not isinstance(derivatives, AbstractDerivatives):
            raise ValueError(
                f"derivatives must be None (autodiff) or an AbstractDerivatives, got {type(derivatives).__name__}"
            )
        self.model, self.X, self.y, self.derivatives = model, X, y, derivatives

    @property
    def n_data(self) -> int:
        return self.X.shape[0]

    @property
    def n_params(self) -> int:
        return self.model.n_params

    def astype(self, dtype) -> Problem:
        return Problem(self.model, self.X, self.y, dtype=dtype, derivatives=self.derivatives)

    def with_derivatives(self, derivatives) -> Problem:
        """The same problem with its derivatives computed by ``derivatives`` (None: autodiff)."""
        return Problem(self.model, self.X, self.y, derivatives=derivatives)

    @property
    def is_symbolic(self) -> bool:
        """Whether the per-example derivatives come from the symbolic layer."""
        return self.derivatives is not None and self.derivatives.is_symbolic

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
        if self.derivatives is not None:
            return self.derivatives.grad(self, theta)
        out, vjp = jax.vjp(self.outputs, theta)
        return vjp((out - self.y) / self.n_data)[0]

    def hvp(self, theta, v) -> Float[Array, " d"]:
        """$\\nabla^2 L(\\theta)\\,v$, one Jacobian-vector product of the gradient."""
        if self.derivatives is not None:
            return self.derivatives.hvp(self, theta, v)
        return jax.jvp(self.grad, (theta,), (v,))[1]

    def grad_and_hvp_of_grad(self, theta) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
        """$(\\nabla L, \\nabla^2 L\\,\\nabla L)$: the two terms of the order-2 SME drift."""
        if self.derivatives is not None:
            return self.derivatives.grad_and_hvp_of_grad(self, theta)
        g = self.grad(theta)
        return g, jax.jvp(self.grad, (theta,), (g,))[1]

    def output_vjp(self, theta, c) -> Float[Array, " d"]:
        """$\\sum_i c_i \\nabla f_i$ (= $J^T c$), without forming J."""
        if self.derivatives is not None:
            return self.output_gradients(theta) @ c
        return jax.vjp(self.outputs, theta)[1](c)[0]

    def loss_vjp(self, theta, c) -> Float[Array, " d"]:
        """$\\sum_i c_i \\nabla \\ell_i$, without forming the gradient matrix."""
        if self.derivatives is not None:
            return self.loss_gradients(theta) @ c
        out, vjp = jax.vjp(self.outputs, theta)
        return vjp(c * (out - self.y))[0]

    def mean_jp_loss(self, theta) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i \\nabla^2\\ell_i\\nabla\\ell_i = \\frac12\\nabla\\frac1n\\sum_i\\|\\nabla\\ell_i\\|^2$."""
        if self.derivatives is not None:
            return self.derivatives.mean_jp_loss(self, theta)
        return jax.grad(lambda t: 0.5 * jnp.mean(jnp.sum(self.loss_gradients(t) ** 2, axis=0)))(theta)

    def mean_jp_output(self, theta) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i \\nabla^2 f_i\\nabla f_i = \\frac12\\nabla\\frac1n\\sum_i\\|\\nabla f_i\\|^2$."""
        if self.derivatives is not None:
            return self.derivatives.mean_jp_output(self, theta)
        return jax.grad(lambda t: 0.5 * jnp.mean(jnp.sum(self.output_gradients(t) ** 2, axis=0)))(theta)

    def hessian(self, theta) -> Float[Array, "d d"]:
        """$\\nabla^2 L(\\theta)$ by autodiff."""
        return jax.hessian(self.loss)(theta)

    def sharpness(self, theta) -> float:
        """$\\lambda_{\\max}(\\nabla^2 L(\\theta))$; GD is locally stable only for η < 2/λ_max."""
        return float(jnp.linalg.eigvalsh(_hessian(self, jnp.asarray(theta)))[-1])

    def output_gradients(self, theta) -> Float[Array, "d n"]:
        """The gradient matrix $J^T = [\\nabla f_1, …, \\nabla f_n]$ (d × n)."""
        if self.derivatives is not None:
            return self.derivatives.output_gradients(self, theta)
        return self.model.output_gradients(theta, self.X)

    def loss_gradients(self, theta) -> Float[Array, "d n"]:
        """Per-example loss gradients $[\\nabla \\ell_i] = [r_i \\nabla f_i]$ (d × n)."""
        if self.derivatives is not None:
            return self.derivatives.loss_gradients(self, theta)
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
