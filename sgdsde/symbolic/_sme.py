"""The stochastic modified equation of SGD: drift, diffusion factor A(θ) and Itô→Stratonovich correction.

$d\\theta = b(\\theta)\\,dt + \\sqrt{\\eta}\\,A(\\theta)\\,dW_t$ with $b = -\\nabla L$ (order 1) or
$-\\nabla(L + \\frac{\\eta}{4}\\|\\nabla L\\|^2)$ (order 2) and $A A^T = \\Sigma$, the covariance of one
step's gradient noise (theory/sme.md). Per-example pieces come from the model's kernels (sympy or autodiff);
sums over the data are JAX means.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .._noise import (
    GaussianNoise,
    LabelNoise,
    MinibatchNoise,
    MultiplicativeNoise,
    NoNoise,
    SphericalGaussianNoise,
)
from .._noise.sampling import check_batch_size, is_full_batch, sampling_scale
from .._validation import check_positive
from ._codegen import DEFAULT_BACKEND
from ._kernels import AbstractKernels, kernels


def _noise_key(noise) -> tuple:
    """(kind, static configuration): what fixes the structure of A(θ); numbers like σ are arguments."""
    if noise is None or isinstance(noise, NoNoise):
        return ("none",)
    if isinstance(noise, MinibatchNoise):
        return ("minibatch", noise.sampling)
    if isinstance(noise, LabelNoise):
        return ("label", noise.sampling)
    if isinstance(noise, MultiplicativeNoise):
        return ("multiplicative", noise.weights)
    if isinstance(noise, SphericalGaussianNoise):
        return ("spherical",)
    if isinstance(noise, GaussianNoise):
        return ("gaussian", noise.factor if callable(noise.factor) else None)
    raise ValueError(f"noise must be one of the sgdsde noise models, got {type(noise).__name__}")


def _noise_defaults(noise) -> dict:
    """The noise model's own numbers, used unless a call overrides them."""
    if isinstance(noise, MinibatchNoise | MultiplicativeNoise):
        return {"batch_size": noise.batch_size}
    if isinstance(noise, LabelNoise):
        return {"sigma": noise.sigma, "batch_size": noise.batch_size}
    if isinstance(noise, SphericalGaussianNoise):
        return {"sigma": noise.sigma}
    if isinstance(noise, GaussianNoise) and not callable(noise.factor):
        return {"factor": noise.factor}
    return {}


def _mean(k: AbstractKernels, name, theta, X, y, v=None):
    return k.mean(name, theta, X, y, v)


def _columns(k: AbstractKernels, name, theta, X, y):
    """Per-example vectors as columns, (d, n)."""
    return k.batched(name)(theta, X, y, jnp.zeros_like(theta)).T


class _Functions:
    """The JAX functions of one (model structure, noise structure, order); built once and cached."""

    def __init__(self, k: AbstractKernels, key: tuple, order: int):
        self.k, self.key, self.order = k, key, order
        self.drift = jax.jit(self._drift)
        self.diffusion_factor = jax.jit(self._diffusion_factor, static_argnames=("batch_size",))
        self.ito_to_stratonovich = jax.jit(self._ito_to_stratonovich, static_argnames=("batch_size",))

    def _drift(self, theta, X, y, eta):
        if self.order == 1:
            return -_mean(self.k, "grad_loss", theta, X, y)
        # ∇(L + (η/4)‖∇L‖²) = ∇L + (η/2)∇²L ∇L: one mean Hessian-vector product.
        g, hg = self.k.grad_and_hvp_of_grad(theta, X, y)
        return -(g + (eta / 2) * hg)

    def _diffusion_factor(self, theta, X, y, eta, sigma=None, batch_size=None, factor=None):
        kind, n, d = self.key[0], X.shape[0], theta.shape[0]
        if kind == "none":
            return jnp.zeros((d, 1), theta.dtype)
        if kind == "spherical":
            return sigma.astype(theta.dtype) * jnp.eye(d, dtype=theta.dtype)
        if kind == "gaussian":
            A = self.key[1](theta) if self.key[1] is not None else factor
            return jnp.asarray(A).astype(theta.dtype)
        if kind == "minibatch":
            c = sampling_scale(self.key[1], batch_size, n)
            return _centred(_columns(self.k, "grad_loss", theta, X, y), c / (n * batch_size))
        if kind == "label":
            B = n if batch_size is None else batch_size
            label = (sigma / math.sqrt(n * B)) * _columns(self.k, "grad_output", theta, X, y)
            if is_full_batch(self.key[1], B, n):
                return label
            c = sampling_scale(self.key[1], B, n)
            sampling = _centred(_columns(self.k, "grad_loss", theta, X, y), c / (n * B))
            return jnp.concatenate([sampling, label], axis=1)
        # multiplicative (Wu et al.): scaled per-example gradients, centred for the "Cov" variant.
        G = _columns(self.k, "grad_loss", theta, X, y)
        s2 = _multiplicative_scale2(self.key[1], batch_size, n)
        return _centred(G, s2) if self.key[1] == "gaussian_centred" else math.sqrt(s2) * G

    def _ito_to_stratonovich(self, theta, X, y, eta, sigma=None, batch_size=None, factor=None):
        # −(η/2) Σ_j (∂A_{·j}/∂θ) A_{·j}. For columns A_j = s(P_j − κP̄): Σ_j ∂A_j A_j
        # = s² n [mean_j J_j P_j − κ J̄ P̄], with J_j P_j = ½∇‖P_j‖² (theory/sme.md, SME-3).
        kind, n = self.key[0], X.shape[0]
        zero = jnp.zeros_like(theta)
        if kind in ("none", "spherical") or (kind == "gaussian" and self.key[1] is None):
            return zero
        if kind == "gaussian":
            dA = jax.jacfwd(self.key[1])(theta)
            return -(eta / 2) * jnp.einsum("ijk,kj->i", dA, self.key[1](theta))

        def centred_loss_term():
            g = _mean(self.k, "grad_loss", theta, X, y)
            return _mean(self.k, "jp_loss", theta, X, y) - _mean(self.k, "hvp_loss", theta, X, y, g)

        if kind == "minibatch":
            c = sampling_scale(self.key[1], batch_size, n)
            return -(eta / 2) * (c / batch_size) * centred_loss_term()
        if kind == "label":
            B = n if batch_size is None else batch_size
            out = -(eta / 2) * (sigma**2 / B) * _mean(self.k, "jp_output", theta, X, y)
            if is_full_batch(self.key[1], B, n):
                return out
            c = sampling_scale(self.key[1], B, n)
            return out - (eta / 2) * (c / B) * centred_loss_term()
        s2n = _multiplicative_scale2(self.key[1], batch_size, n) * n
        if self.key[1] == "gaussian_centred":
            return -(eta / 2) * s2n * centred_loss_term()
        return -(eta / 2) * s2n * _mean(self.k, "jp_loss", theta, X, y)


def _centred(G, scale):
    """$\\sqrt{s}\\,[P_i - \\bar P]_i$ for columns P_i."""
    return math.sqrt(scale) * (G - jnp.mean(G, axis=1, keepdims=True))


def _multiplicative_scale2(weights: str, b: int, n: int) -> float:
    """s² with A = s·[∇ℓ_i] (Wu et al.; minibatch-noise.md §5): (n/b)/n² for Gaussian weights,
    ((1 − p)/p)/n² with p = b/n for Bernoulli weights."""
    if weights == "bernoulli":
        p = b / n
        return (1 - p) / p / n**2
    return (n / b) / n**2


@functools.lru_cache(maxsize=256)
def _functions(k: AbstractKernels, key: tuple, order: int) -> _Functions:
    return _Functions(k, key, order)


class SME:
    """The SME of SGD with a given noise model: $d\\theta = b\\,dt + \\sqrt\\eta A\\,dW$ (theory/sme.md).

    Functions (all pure JAX, jitted once per model/noise structure; vmap them over paths):
        ``drift(theta, X, y, eta)`` → (d,): $-\\nabla L$ (order 1) or
            $-\\nabla L - \\frac\\eta2\\nabla^2L\\nabla L$ (order 2).
        ``diffusion_factor(theta, X, y, eta, **noise)`` → (d, m): A(θ) with $AA^T = \\Sigma(\\theta)$, the
            covariance of ONE step's gradient noise. It does not contain √η (the SDE multiplies by √η); η
            is accepted for a uniform signature.
        ``ito_to_stratonovich(theta, X, y, eta, **noise)`` → (d,): $-\\frac\\eta2\\sum_j(\\partial_\\theta
            A_{\\cdot j})A_{\\cdot j}$, the drift to ADD so that a Stratonovich solver of
            $d\\theta = (b + c)\\,dt + \\sqrt\\eta A\\circ dW$ solves the Itô SME (η included).
        ``**noise``: ``sigma`` (LabelNoise, SphericalGaussianNoise), ``batch_size`` (int, static: it fixes
            the shape), ``factor`` (constant GaussianNoise); defaults are the noise model's own values.

    ``is_symbolic`` is False when the per-example derivatives are JAX autodiff (the model is beyond the
    symbolic size limit, or symbolic=False); ``reason`` says why.
    """

    def __init__(self, k: AbstractKernels, noise, order: int):
        self.kernels, self.noise, self.order = k, noise, order
        self._key = _noise_key(noise)
        self._defaults = _noise_defaults(noise)
        self._fns = _functions(k, self._key, order)

    @property
    def is_symbolic(self) -> bool:
        return self.kernels.is_symbolic

    @property
    def reason(self) -> str:
        return self.kernels.reason

    @property
    def n_params(self) -> int:
        return self.kernels.n_params

    def _check(self, theta, X, y):
        d = self.n_params
        if np.shape(theta) != (d,):
            raise ValueError(f"theta must have shape ({d},) (vmap over paths), got {np.shape(theta)}")
        if np.ndim(X) != 2 or np.shape(y) != (np.shape(X)[0],):
            raise ValueError(f"X must be (n, p) and y (n,), got {np.shape(X)} and {np.shape(y)}")

    def _params(self, X, overrides) -> dict:
        unknown = set(overrides) - {"sigma", "batch_size", "factor"}
        if unknown:
            raise ValueError(f"unknown noise parameters {sorted(unknown)}; valid: sigma, batch_size, factor")
        p = {**self._defaults, **{k: v for k, v in overrides.items() if v is not None}}
        kind, n = self._key[0], np.shape(X)[0]
        if kind in ("minibatch", "multiplicative") or (kind == "label" and p.get("batch_size") is not None):
            check_batch_size(p["batch_size"], n)
        if "sigma" in p:
            if not isinstance(p["sigma"], jax.core.Tracer):
                check_positive("sigma", p["sigma"], allow_zero=True)
            p["sigma"] = jnp.asarray(p["sigma"])
        return p

    def to_sde(self, problem, noise_type: str = "general", **noise):
        """This SME on ``problem``'s data as an ``AbstractSDE`` for ``simulate_sde`` (the generated drift,
        factor and Stratonovich correction; the noise parameters are fixed here)."""
        from .._sde import FunctionSDE

        X, y = problem.X, problem.y
        return FunctionSDE(
            lambda theta, eta: self.drift(theta, X, y, eta),
            lambda theta: self.diffusion_factor(theta, X, y, 1.0, **noise),
            noise_type=noise_type,
            correction=lambda theta, eta: self.ito_to_stratonovich(theta, X, y, eta, **noise),
            problem=problem,
        )

    def drift(self, theta, X, y, eta):
        """$b(\\theta)$: $-\\nabla L$ (order 1), $-\\nabla(L + \\frac\\eta4\\|\\nabla L\\|^2)$ (order 2)
        (SME-1, SME-2)."""
        self._check(theta, X, y)
        return self._fns.drift(theta, X, y, eta)

    def diffusion_factor(self, theta, X, y, eta, **noise):
        """A(θ), d × m, with $A A^T = \\Sigma(\\theta)$ (SME-4); the SDE's diffusion is $\\sqrt\\eta A$."""
        self._check(theta, X, y)
        return self._fns.diffusion_factor(theta, X, y, eta, **self._params(X, noise))

    def ito_to_stratonovich(self, theta, X, y, eta, **noise):
        """$-\\frac\\eta2\\sum_j (\\partial_\\theta A_{\\cdot j}) A_{\\cdot j}$ (SME-3), η included."""
        self._check(theta, X, y)
        return self._fns.ito_to_stratonovich(theta, X, y, eta, **self._params(X, noise))

    def latex(self) -> str:
        """The drift and diffusion in LaTeX, with the per-example derivatives sympy produced."""
        from ._latex import sme_latex

        return sme_latex(self)


def derive_sme(model, noise=None, order: int = 1, *, symbolic="auto", backend: str = DEFAULT_BACKEND) -> SME:
    """Derive SGD's SME for ``model`` and ``noise``: drift, diffusion factor and Stratonovich correction.

    $d\\theta = b(\\theta)dt + \\sqrt\\eta A(\\theta)dW$ (Li, Tai, E 2017/2019; theory/sme.md SME-1..SME-4).

    Args:
        model: an sgdsde model, an ExpressionModel or a SymbolicModel.
        noise: an sgdsde noise model (None: gradient descent, A = 0).
        order: 1 or 2 (weak order of the approximation; order 2 adds $-\\frac\\eta2\\nabla^2L\\nabla L$).
        symbolic: True, False or "auto" (sympy up to the size limit, autodiff beyond; see ``SME.reason``).
        backend: the ``to_jax`` code generator.

    Returns:
        An SME; its functions are cached per (model structure, noise structure, order).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    _noise_key(noise)
    return SME(kernels(model, symbolic, backend), noise, order)
