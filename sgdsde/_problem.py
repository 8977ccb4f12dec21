"""A problem: a model, data (X, y) and a loss $L(\\theta) = \\frac1n\\sum_i \\ell(f(\\theta; x_i), y_i)$ (squared by
default)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._derivatives import AbstractDerivatives, Autodiff
from ._hvp import POWER_ITERATION_MAX_ITERS, POWER_ITERATION_RTOL, power_iteration_lambda_max
from ._losses import AbstractLoss, SquaredLoss
from ._models import AbstractModel, LinearRegression
from ._validation import check_psd


class Problem(eqx.Module):
    """A model, data and a loss: $L(\\theta) = \\frac1n\\sum_i \\ell(f(\\theta; x_i), y_i)$ (theory/models.md, MOD-1;
    theory/losses.md, LOSS-1), by default the squared loss $\\ell = \\frac12(f - y)^2$.

    ``loss_fn`` is the per-example loss (``SquaredLoss``, ``LogisticLoss`` for y ∈ {±1}, ``CrossEntropyLoss``
    for K-output models and integer classes). ℓ′ = ∂ℓ/∂f is the "residual" of the squared loss. Derivatives
    come from the back end ``derivatives``: ``Autodiff()`` (JAX autodiff, the default) or another back end
    such as the symbolic layer's; the loss owns its data-wide forms (L, ℓ′, ∂²ℓ, G).
    """

    model: AbstractModel
    X: Float[Array, "n p"]
    y: Array
    loss_fn: AbstractLoss
    # Static: part of a jitted Problem's structure (Autodiff() instances are all equal).
    derivatives: AbstractDerivatives = eqx.field(static=True)

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
        model.check_data(X)
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
        derivatives = Autodiff() if derivatives is None else derivatives
        if not isinstance(derivatives, AbstractDerivatives):
            raise ValueError(
                "derivatives must be None or Autodiff() (JAX autodiff, the default) or another "
                f"AbstractDerivatives back end (symbolic.SymbolicDerivatives), got {type(derivatives).__name__}"
            )
        self.model, self.X, self.y, self.loss_fn, self.derivatives = model, X, y, loss, derivatives

    @property
    def n_data(self) -> int:
        return self.X.shape[0]

    @property
    def n_params(self) -> int:
        return self.model.n_params

    @property
    def at_size(self) -> bool:
        """Whether d > ``MAX_DENSE_PARAMS``: no d × d matrix (and, for Autodiff, no d × n matrix) is formed for
        the quantities that have a matrix-free form (read at call time; CURV-5, NOISE-7)."""
        return self.n_params > MAX_DENSE_PARAMS

    def astype(self, dtype) -> Problem:
        """The problem with X (and real y) in ``dtype``; itself when already there (no checks run again: a
        FunctionModel's finite-output check is a forward pass over X)."""
        if np.dtype(dtype) == self.X.dtype:
            return self
        return Problem(
            self.model, self.X, self.y, dtype=dtype, loss=self.loss_fn, derivatives=self.derivatives
        )

    def with_derivatives(self, derivatives) -> Problem:
        """The same problem with its derivatives computed by ``derivatives`` (None: ``Autodiff()``)."""
        return Problem(self.model, self.X, self.y, loss=self.loss_fn, derivatives=derivatives)

    @property
    def is_symbolic(self) -> bool:
        """Whether the per-example derivatives come from the symbolic layer."""
        return self.derivatives.is_symbolic

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

    def residuals(self, theta) -> Array:
        """$\\ell'(f_i, y_i) = \\partial\\ell/\\partial f$ per example: $r_i = f_i - y_i$ for the squared loss."""
        return self.loss_fn.residuals(self.outputs(theta), self.y)

    def loss(self, theta) -> Float[Array, ""]:
        """$L(\\theta) = \\frac1n\\sum_i \\ell(f_i, y_i)$ ($\\frac{1}{2n}\\sum_i r_i^2$ for the squared loss)."""
        return self.loss_fn.mean(self.outputs(theta), self.y)

    def grad(self, theta) -> Float[Array, " d"]:
        """$\\nabla L = \\frac1n J^T \\ell'$ (autodiff: one vector-Jacobian product)."""
        return self.derivatives.grad(self, theta)

    def hvp(self, theta, v) -> Float[Array, " d"]:
        """$\\nabla^2 L(\\theta)\\,v$ (autodiff: one Jacobian-vector product of the gradient)."""
        return self.derivatives.hvp(self, theta, v)

    def grad_and_hvp_of_grad(self, theta) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
        """$(\\nabla L, \\nabla^2 L\\,\\nabla L)$: the two terms of the order-2 SME drift."""
        return self.derivatives.grad_and_hvp_of_grad(self, theta)

    def output_vjp(self, theta, c) -> Float[Array, " d"]:
        """$\\sum_i c_i \\nabla f_i$ (= $J^T c$), without forming J where the back end can."""
        return self.derivatives.output_vjp(self, theta, c)

    def mean_jp_loss(self, theta) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i \\nabla^2\\ell_i\\nabla\\ell_i = \\frac12\\nabla\\frac1n\\sum_i\\|\\nabla\\ell_i\\|^2$."""
        return self.derivatives.mean_jp_loss(self, theta)

    def mean_jp_output(self, theta) -> Float[Array, " d"]:
        """$\\frac1n\\sum_i \\nabla^2 f_i\\nabla f_i = \\frac12\\nabla\\frac1n\\sum_i\\|\\nabla f_i\\|^2$ (summed over
        outputs for K > 1)."""
        return self.derivatives.mean_jp_output(self, theta)

    def hessian(self, theta) -> Float[Array, "d d"]:
        """$\\nabla^2 L(\\theta)$ by autodiff."""
        return jax.hessian(self.loss)(theta)

    def sharpness(self, theta) -> float:
        """$\\lambda_{\\max}(\\nabla^2 L(\\theta))$; GD is locally stable only for η < 2/λ_max. Exact
        (eigenvalues of the Hessian) up to ``MAX_DENSE_PARAMS`` = 512 parameters; above, power iteration on
        Hessian-vector products, no d × d matrix (theory/function-models.md, FMOD-4)."""
        theta = jnp.asarray(theta)
        if self.n_params > MAX_DENSE_PARAMS:
            return float(_power_lambda_max(self, theta.astype(self.X.dtype)))
        return lambda_max(_hessian(self, theta))

    def output_gradients(self, theta) -> Array:
        """The gradient matrix $J^T = [\\nabla f_1, …, \\nabla f_n]$ (d × n; d × n × K for K outputs)."""
        return self.derivatives.output_gradients(self, theta)

    def loss_gradients(self, theta) -> Float[Array, "d n"]:
        """Per-example loss gradients $[\\nabla \\ell_i] = [J_i^T \\ell'_i]$ (d × n; $r_i\\nabla f_i$ for the
        squared loss)."""
        return self.derivatives.loss_gradients(self, theta)

    def loss_curvatures(self, theta) -> Array:
        """$\\partial_f^2\\ell(f_i, y_i)$ per example ((n,), or (n, K, K))."""
        return self.loss_fn.curvatures(self.outputs(theta), self.y)

    def gauss_newton(self, theta) -> Float[Array, "d d"]:
        """The generalized Gauss–Newton matrix $G(\\theta) = \\frac1n\\sum_i J_i^T\\,\\partial_f^2\\ell_i\\,J_i$
        ($\\frac1n\\sum_i \\nabla f_i\\nabla f_i^T$ for the squared loss, = ∇²L on its zero-loss set; LOSS-5)."""
        return self.loss_fn.gauss_newton(self.output_gradients(theta), self.outputs(theta), self.y)

    def trace_gauss_newton(self, theta) -> Float[Array, ""]:
        """$\\operatorname{tr} G(\\theta) = \\frac1n\\sum_i \\operatorname{tr}(J_i^T\\,\\partial_f^2\\ell_i\\,J_i)$, the trace of
        ``gauss_newton`` without forming it ($\\frac1n\\sum_i\\|\\nabla f_i\\|^2$ for the squared loss; LOSS-5)."""
        return self.loss_fn.trace_gauss_newton(self.output_gradients(theta), self.outputs(theta), self.y)


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


# above this many parameters no d × d matrix is formed for λ_max (sharpness, the stability warning)
MAX_DENSE_PARAMS = 512


@eqx.filter_jit
def _power_lambda_max(
    problem, theta, iters: int = POWER_ITERATION_MAX_ITERS, rtol: float = POWER_ITERATION_RTOL
):
    """λ_max(∇²L(θ)) by power iteration on ``problem.hvp`` from a fixed start, at most ``iters`` products (FMOD-4)."""
    hvp = lambda v: problem.hvp(theta, v)
    return power_iteration_lambda_max(hvp, problem.n_params, jax.random.key(0), theta.dtype, iters, rtol)


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
