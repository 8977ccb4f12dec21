"""Implicit regularizers of SGD from the model's kernels: tr∇²L, tr G, Blanc's, Damian's, modified losses.

theory/regularizers.md (SREG-1 … SREG-8). Each function takes (θ, X, y[, η]) and is pure JAX.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .._losses import AbstractLoss, SquaredLoss
from ._codegen import DEFAULT_BACKEND
from ._kernels import AbstractKernels, kernels
from ._latex import regularizer_latex


class Regularizers:
    """The implicit regularizers of one model, from its per-example kernels (sympy or autodiff).

    ``is_symbolic`` is False when the kernels are autodiff (see ``reason``).
    """

    def __init__(self, k: AbstractKernels):
        self.kernels = k

    @property
    def is_symbolic(self) -> bool:
        return self.kernels.is_symbolic

    @property
    def reason(self) -> str:
        return self.kernels.reason

    def _m(self, name, theta, X, y, v=None):
        return self.kernels.mean(name, theta, X, y, v)

    def loss(self, theta, X, y):
        """$L = \\frac1n\\sum_i \\ell(f_i, y_i)$ ($\\frac{1}{2n}\\sum_i r_i^2$ for the squared loss)."""
        return self._m("loss", theta, X, y)

    def grad(self, theta, X, y):
        """$\\nabla L$."""
        return self._m("grad_loss", theta, X, y)

    def hessian(self, theta, X, y):
        """$\\nabla^2 L$ (d × d), assembled from d mean Hessian-vector products: for small models."""
        eye = jnp.eye(theta.shape[0], dtype=theta.dtype)
        return jax.vmap(lambda e: self._m("hvp_loss", theta, X, y, e))(eye)

    def trace_hessian(self, theta, X, y):
        """$\\operatorname{tr}\\nabla^2 L = \\frac1n\\sum_i(\\ell''_i\\|\\nabla f_i\\|^2 + \\ell'_i\\Delta f_i)$ (SREG-5; K
        outputs: LOSS-7)."""
        return self._m("trace_hessian_loss", theta, X, y)

    def grad_trace_hessian(self, theta, X, y):
        """$\\nabla\\operatorname{tr}\\nabla^2 L$ (SREG-5)."""
        return self._m("grad_trace_hessian_loss", theta, X, y)

    def trace_gauss_newton(self, theta, X, y):
        """$\\operatorname{tr} G = \\frac1n\\sum_i\\|\\nabla f_i\\|^2$ (= tr∇²L at zero loss; SREG-5), squared
        loss only: for another loss G carries ∂²ℓ (``Problem.gauss_newton``)."""
        self._squared_only("trace_gauss_newton")
        return self._m("sqnorm_grad_output", theta, X, y)

    def grad_trace_gauss_newton(self, theta, X, y):
        """$\\nabla\\operatorname{tr} G = \\frac2n\\sum_i \\nabla^2 f_i\\nabla f_i$ (squared loss)."""
        self._squared_only("grad_trace_gauss_newton")
        return 2 * self._m("jp_output", theta, X, y)

    def _squared_only(self, what: str) -> None:
        loss = self.kernels.loss
        if not isinstance(loss, SquaredLoss):
            raise ValueError(
                f"{what}: (1/n)Σ‖∇f_i‖² is tr G only for the squared loss, not {type(loss).__name__}; use "
                "blanc (Σ‖∇f_i‖², by definition) or trace_hessian"
            )

    def blanc(self, theta, X, y):
        """Blanc et al.'s $\\sum_i\\|\\nabla f_i\\|^2 = n\\operatorname{tr}G$ (sum, no 1/n; SREG-5)."""
        return X.shape[0] * self.trace_gauss_newton(theta, X, y)

    def _eigh(self, theta, X, y):
        H = self.hessian(theta, X, y)
        return jnp.linalg.eigh((H + H.T) / 2)

    def damian(self, theta, X, y, eta):
        """$R = -\\frac1{2\\eta}\\operatorname{tr}\\log(I - \\frac\\eta2\\nabla^2L)$, exact from the d × d
        Hessian; +inf where $\\lambda_{\\max}(\\nabla^2 L) \\ge 2/\\eta$ (Damian et al. 2021; SREG-1)."""
        h = self._eigh(theta, X, y)[0]
        z = 1 - (eta / 2) * h
        safe = jnp.where(z > 0, z, 1.0)
        terms = jnp.where(z > 0, -jnp.log(safe), jnp.inf)
        return jnp.sum(terms) / (2 * eta)

    def damian_series(self, theta, X, y, eta, order: int = 4):
        """$\\sum_{k=1}^{K}\\frac{\\eta^{k-1}}{2^{k+1}k}\\operatorname{tr}(\\nabla^2L)^k$ with K = ``order``
        (SREG-2)."""
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        h = self._eigh(theta, X, y)[0]
        return sum(eta ** (k - 1) * jnp.sum(h**k) / (2 ** (k + 1) * k) for k in range(1, order + 1))

    def damian_gradient(self, theta, X, y, eta):
        """$\\nabla R = \\frac12\\nabla^3L[(2I - \\eta\\nabla^2L)^{-1}]$ with the third derivative from the
        kernel $\\nabla(v^T\\nabla^2\\ell\\,v)$ along the Hessian's eigenvectors (SREG-4)."""
        h, Q = self._eigh(theta, X, y)
        s = 1 / (2 - eta * h)
        # Row k: ∇_θ(q_kᵀ∇²L q_k) with the eigenvector q_k held fixed.
        third = jax.vmap(lambda q: self._m("grad_quadform_loss", theta, X, y, q))(Q.T)
        return 0.5 * (s @ third)

    def gd_modified_loss(self, theta, X, y, eta):
        """Barrett & Dherin's $L + \\frac\\eta4\\|\\nabla L\\|^2$ (SREG-7); its gradient is −(SME-2 drift)."""
        g = self.grad(theta, X, y)
        return self.loss(theta, X, y) + (eta / 4) * jnp.dot(g, g)

    def smith_modified_loss(self, theta, X, y, eta, batches):
        """Smith et al.'s $L + \\frac{\\eta}{4m}\\sum_k\\|\\nabla\\hat L_k\\|^2$ for one epoch's partition
        ``batches`` (m × B indices) of shuffled SGD (SREG-8)."""
        batches = jnp.asarray(batches)
        if batches.ndim != 2:
            raise ValueError(f"batches must be an (m, B) array of example indices, got shape {batches.shape}")
        G = self.kernels.batched("grad_loss")(theta, X, y, jnp.zeros_like(theta))  # (n, d)
        gk = jnp.mean(G[batches], axis=1)  # (m, d)
        return self.loss(theta, X, y) + (eta / (4 * batches.shape[0])) * jnp.sum(gk * gk)

    def smith_expected_modified_loss(self, theta, X, y, eta, batch_size: int):
        """Smith et al.'s loss averaged over uniformly random partitions into batches of B:
        $L + \\frac\\eta4\\|\\nabla L\\|^2 + \\frac{n-B}{n-1}\\frac{\\eta}{4B}\\Gamma$,
        $\\Gamma = \\frac1n\\sum_i\\|\\nabla\\ell_i - \\nabla L\\|^2$ (minibatch-noise.md §3; SREG-8)."""
        n = X.shape[0]
        G = self.kernels.batched("grad_loss")(theta, X, y, jnp.zeros_like(theta))
        g = jnp.mean(G, axis=0)
        gamma = jnp.mean(jnp.sum((G - g[None, :]) ** 2, axis=1))
        c = (n - batch_size) / (n - 1) if n > 1 else 0.0
        return self.gd_modified_loss(theta, X, y, eta) + c * eta / (4 * batch_size) * gamma

    def latex(self, name: str) -> str:
        """LaTeX of regularizer ``name`` (trace_hessian, damian, …) with the model's derivatives."""
        return regularizer_latex(self, name)


@functools.lru_cache(maxsize=64)
def _regularizers(k: AbstractKernels) -> Regularizers:
    return Regularizers(k)


def derive_regularizers(
    model, *, symbolic="auto", backend: str = DEFAULT_BACKEND, loss: AbstractLoss | None = None
) -> Regularizers:
    """The implicit regularizers of ``model`` under ``loss`` (default squared; cached per model structure and
    loss); see Regularizers."""
    return _regularizers(kernels(model, symbolic, backend, loss))
