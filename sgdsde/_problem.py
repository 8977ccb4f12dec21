"""A problem: a model, data (X, y) and a loss $L(\\theta) = \\frac1n\\sum_i \\ell(f(\\theta; x_i), y_i)$ (squared by
default)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._derivatives import AbstractDerivatives
from ._losses import AbstractLoss, SquaredLoss
from ._models import AbstractModel, LinearRegression
from ._validation import check_psd


class Problem(eqx.Module):
    """A model, data and a loss: $L(\\theta) = \\frac1n\\sum_i \\ell(f(\\theta; x_i), y_i)$ (theory/models.md, MOD-1;
    theory/losses.md, LOSS-1), by default the squared loss $\\ell = \\frac12(f - y)^2$.

    ``loss_fn`` is the per-example loss (``SquaredLoss``, ``LogisticLoss`` for y ∈ {±1}, ``CrossEntropyLoss``
    for K-output models and integer classes). ℓ′ = ∂ℓ/∂f is the "residual" of the squared loss. Derivatives
    are JAX autodiff unless ``derivatives`` gives another back end (the symbolic layer's).
    """

    model: AbstractModel
    X: Float[Array, "n p"]
    y: Array
    loss_fn: AbstractLoss
    # None: JAX autodiff of the model (the definition); else a back end such as
    # symbolic.SymbolicDerivatives that computes the same per-example derivatives another way.
    derivatives: object = eqx.field(static=True, default=None)

    def __init__(self, model: AbstractModel, X, y, dtype=None, *, loss=None, derivatives=None):
        if not isinstance(model, AbstractModel):
            raise ValueError(f"model must be an sgdsde model, got {type(model).__name__}")
        loss = SquaredLoss() if loss is None else loss
        if not isinstance(loss, AbstractLoss):
            raise ValueError(
                f"loss must be an sgdsde loss (SquaredLoss, LogisticLoss, …), got {type(loss).__name__}"
            )
        loss.check_outputs(model.n_outputs)
        X = _real_array("X", X, dtype)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (n, p), got shape {X.shape}")
        if X.shape[1] != model.input_dim:
            raise ValueError(f"X must have {model.input_dim} columns (the model's input dim), got {X.shape}")
        if X.shape[0] < 1:
            raise ValueError("X must hold at least one example")
        if loss.label_kind == "class":
            y = jnp.asarray(loss.check_labels(np.asarray(y), model.n_outputs))
        else:
            y = _real_array(
                "y", y, X.dtype if dtype is None and jnp.issubdtype(X.dtype, jnp.floating) else dtype
            )
            loss.check_labels(np.asarray(y), model.n_outputs)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
        if not (np.all(np.isfinite(np.asarray(X))) and np.all(np.isfinite(np.asarray(y)))):
            raise ValueError("X and y must be finite")
        if derivatives is not None and not isinstance(derivatives, AbstractDerivatives):
            raise ValueError(
                f"derivatives must be None (autodiff) or an AbstractDerivatives, got {type(derivatives).__name__}"
            )
        self.model, self.X, self.y, self.loss_fn, self.derivatives = model, X, y, loss, derivatives

    @property
    def n_data(self) -> int:
        return self.X.shape[0]

    @property
    def n_params(self) -> int:
        return self.model.n_params

    def astype(self, dtype) -> Problem:
        return Problem(
            self.model, self.X, self.y, dtype=dtype, loss=self.loss_fn, derivatives=self.derivatives
        )

    def with_derivatives(self, derivatives) -> Problem:
        """The same problem with its derivatives computed by ``derivatives`` (None: autodiff)."""
        return Problem(self.model, self.X, self.y, loss=self.loss_fn, derivatives=derivatives)

    @property
    def is_symbolic(self) -> bool:
        """Whether the per-example derivatives come from the symbolic layer."""
        return self.derivatives is not None and self.derivatives.is_symbolic

    def check_theta(self, theta, name: str = "theta") -> None:
        """Raise unless θ's last axis has length d."""
        try:
            shape = np.shape(theta)
        except ValueError:
            raise ValueError(f"{name} must be a real array, got a ragged sequence") from None
        if isinstance(theta, (str, bytes)) or np.iscomplexobj(theta):
            raise ValueError(f"{name} must be a real array, got {type(theta).__name__} {theta!r:.60}")
        if len(shape) == 0 or shape[-1] != self.n_params:
            raise ValueError(f"{name} must have last dimension {self.n_params} (the model's d), got {shape}")

    def outputs(self, theta) -> Array:
        """$f_i(\\theta)$ for all i ((n,), or (n, K) for K outputs)."""
        return self.model.outputs(theta, self.X)

    def loss_derivative(self, out, y) -> Array:
        """ℓ′(f_i, y_i) per example (the residual f − y for the squared loss)."""
        if isinstance(self.loss_fn, SquaredLoss):
            return out - y  # the same operations as always: unchanged numbers for the default loss
        return jax.vmap(self.loss_fn.grad_f)(out, y)

    def residuals(self, theta) -> Array:
        """$\\ell'(f_i, y_i) = \\partial\\ell/\\partial f$ per example: $r_i = f_i - y_i$ for the squared loss."""
        return self.loss_derivative(self.outputs(theta), self.y)

    def loss(self, theta) -> Float[Array, ""]:
        """$L(\\theta) = \\frac1n\\sum_i \\ell(f_i, y_i)$ ($\\frac{1}{2n}\\sum_i r_i^2$ for the squared loss)."""
        if isinstance(self.loss_fn, SquaredLoss):
            r = self.outputs(theta) - self.y
            return 0.5 * jnp.mean(r * r)
        return jnp.mean(jax.vmap(self.loss_fn)(self.outputs(theta), self.y))

    def grad(self, theta) -> Float[Array, " d"]:
        """$\\nabla L = \\frac1n J^T \\ell'$, by one vector-Jacobian product."""
        if self.derivatives is not None:
            return self.derivatives.grad(self, theta)
        out, vjp = jax.vjp(self.outputs, theta)
        return vjp(self.loss_derivative(out, self.y) / self.n_data)[0]

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
            return jnp.tensordot(self.output_gradients(theta), c, axes=c.ndim)
        return jax.vjp(self.outputs, theta)[1](c)[0]

    def loss_vjp(self, theta, c) -> Float[Array, " d"]:
        """$\\sum_i c_i \\nabla \\ell_i$, without forming the gradient matrix."""
        if self.derivatives is not None:
            return self.loss_gradients(theta) @ c
        out, vjp = jax.vjp(self.outputs, theta)
        dl = self.loss_derivative(out, self.y)
        return vjp(c.reshape(c.shape + (1,) * (dl.ndim - 1)) * dl)[0]

    def mean_jp_loss(self, theta) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i \\nabla^2\\ell_i\\nabla\\ell_i = \\frac12\\nabla\\frac1n\\sum_i\\|\\nabla\\ell_i\\|^2$."""
        if self.derivatives is not None:
            return self.derivatives.mean_jp_loss(self, theta)
        return jax.grad(lambda t: 0.5 * jnp.mean(jnp.sum(self.loss_gradients(t) ** 2, axis=0)))(theta)

    def mean_jp_output(self, theta) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i \\nabla^2 f_i\\nabla f_i = \\frac12\\nabla\\frac1n\\sum_i\\|\\nabla f_i\\|^2$ (summed over
        outputs for K > 1)."""
        if self.derivatives is not None:
            return self.derivatives.mean_jp_output(self, theta)
        return jax.grad(lambda t: 0.5 * jnp.sum(self.output_gradients(t) ** 2) / self.n_data)(theta)

    def hessian(self, theta) -> Float[Array, "d d"]:
        """$\\nabla^2 L(\\theta)$ by autodiff."""
        return jax.hessian(self.loss)(theta)

    def sharpness(self, theta) -> float:
        """$\\lambda_{\\max}(\\nabla^2 L(\\theta))$; GD is locally stable only for η < 2/λ_max."""
        return lambda_max(_hessian(self, jnp.asarray(theta)))

    def output_gradients(self, theta) -> Array:
        """The gradient matrix $J^T = [\\nabla f_1, …, \\nabla f_n]$ (d × n; d × n × K for K outputs)."""
        if self.derivatives is not None:
            return self.derivatives.output_gradients(self, theta)
        return self.model.output_gradients(theta, self.X)

    def loss_gradients(self, theta) -> Float[Array, "d n"]:
        """Per-example loss gradients $[\\nabla \\ell_i] = [J_i^T \\ell'_i]$ (d × n; $r_i\\nabla f_i$ for the
        squared loss)."""
        if self.derivatives is not None:
            return self.derivatives.loss_gradients(self, theta)
        dl = self.residuals(theta)
        J = self.output_gradients(theta)
        if dl.ndim == 2:
            return jnp.einsum("dnk,nk->dn", J, dl)
        return J * dl[None, :]

    def loss_curvatures(self, theta) -> Array:
        """$\\partial_f^2\\ell(f_i, y_i)$ per example ((n,), or (n, K, K))."""
        if isinstance(self.loss_fn, SquaredLoss):
            return jnp.ones(self.n_data, self.X.dtype)
        return jax.vmap(self.loss_fn.hess_f)(self.outputs(theta), self.y)

    def gauss_newton(self, theta) -> Float[Array, "d d"]:
        """The generalized Gauss–Newton matrix $G(\\theta) = \\frac1n\\sum_i J_i^T\\,\\partial_f^2\\ell_i\\,J_i$
        ($\\frac1n\\sum_i \\nabla f_i\\nabla f_i^T$ for the squared loss, = ∇²L on its zero-loss set; LOSS-5)."""
        J = self.output_gradients(theta)
        if isinstance(self.loss_fn, SquaredLoss):
            return J @ J.T / self.n_data
        h = self.loss_curvatures(theta)
        if J.ndim == 3:
            return jnp.einsum("dnk,nkl,enl->de", J, h, J) / self.n_data
        return (J * h[None, :]) @ J.T / self.n_data

    def trace_gauss_newton(self, theta) -> Float[Array, ""]:
        """$\\operatorname{tr} G(\\theta) = \\frac1n\\sum_i \\operatorname{tr}(J_i^T\\,\\partial_f^2\\ell_i\\,J_i)$, the trace of
        ``gauss_newton`` without forming it ($\\frac1n\\sum_i\\|\\nabla f_i\\|^2$ for the squared loss; LOSS-5)."""
        J = self.output_gradients(theta)
        if isinstance(self.loss_fn, SquaredLoss):
            return jnp.sum(J * J) / self.n_data
        h = self.loss_curvatures(theta)
        if J.ndim == 3:
            return jnp.einsum("dnk,nkl,dnl->", J, h, J) / self.n_data
        return jnp.sum(J * J * h[None, :]) / self.n_data

    def batch_gradient(self, theta, idx=None, label_noise=None, labels=None) -> Float[Array, " d"]:
        """$\\frac1B\\sum_{b}\\ell'(f_{i_b}, \\tilde y_b)\\nabla f_{i_b}$ for batch indices ``idx`` (None: the full
        batch, without gathering), labels ``labels`` in place of y (label flips), and for the squared loss
        additive label noise ε: ℓ′ = f − y − ε."""
        xb, yb = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        if labels is not None:
            yb = labels
        out, vjp = jax.vjp(lambda th: self.model.outputs(th, xb), theta)
        r = self.loss_derivative(out, yb)
        if label_noise is not None:
            r = r - label_noise
        return vjp(r / xb.shape[0])[0]

    def weighted_gradient(self, theta, weights) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i m_i \\nabla\\ell_i$ for per-example weights m (Wu et al.'s multiplicative form)."""
        out, vjp = jax.vjp(self.outputs, theta)
        dl = self.loss_derivative(out, self.y)
        return vjp(weights.reshape(weights.shape + (1,) * (dl.ndim - 1)) * dl / self.n_data)[0]


def _real_array(name: str, value, dtype) -> Array:
    """A real floating array (integers converted to the default float), else ValueError naming it."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real numeric array, got a string")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real numeric array, got {type(value).__name__}") from None
    if (
        np.iscomplexobj(arr)
        or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool)
        or arr.dtype == bool
    ):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if dtype is None and not np.issubdtype(arr.dtype, np.floating):
        dtype = jnp.result_type(float)  # integer data: the default float type
    return jnp.asarray(value, dtype)


@eqx.filter_jit
def _hessian(problem, theta):
    return problem.hessian(theta)


def lambda_max(H) -> float:
    """The largest eigenvalue of a symmetric H (``Problem.sharpness`` of its Hessian)."""
    return float(jnp.linalg.eigvalsh(H)[-1])


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
