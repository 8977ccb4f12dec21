"""A two-layer network with a normalization layer on its hidden pre-activations (batch normalization's
affine form), whose output uses fixed (moving) statistics; the mini-batch-statistics forward that batch
normalization trains with is a method the noise model ``BatchNormNoise`` calls (theory/normalization.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_range, check_positive
from .activations import get_activation
from .base import AbstractModel


def _floats(name: str, value, width: int, *, nonnegative: bool = False) -> tuple[float, ...]:
    arr = np.asarray(value, np.float64).reshape(-1) if value is not None else np.zeros(0)
    if arr.shape != (width,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be {width} finite numbers (one per hidden unit), got {value!r:.80}")
    if nonnegative and np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 (a variance per hidden unit), got {arr}")
    return tuple(float(v) for v in arr)


class NormalizedTwoLayerNetwork(AbstractModel):
    """$f(\\theta; x) = \\sum_{j=1}^m a_j\\,\\varphi\\big(\\gamma_j\\frac{w_j^Tx - \\mu_j}{\\sqrt{s_j^2 + \\varepsilon}} + \\beta_j\\big)$
    with fixed (moving) statistics μ, s² and θ = (vec(W) row-major, γ, β, a), d = m(p + 3).

    This is the network evaluated with its moving statistics (batch normalization at test time, and the
    model of the Problem: $L(\\theta)$ is its loss). Training with mini-batch statistics replaces μ_j, s_j²
    by the batch's mean and (biased) variance of $w_j^Tx$ (``batch_outputs``), so one example's output depends
    on the others in its batch; ``BatchNormNoise`` draws that gradient (theory/normalization.md, NORM-1).

    Args:
        dim: p, the input dimension.
        width: m, the number of hidden units.
        mean, var: the moving statistics μ, s² (m each; default 0 and 1), e.g. a pretrained network's
            population statistics (``population_statistics``).
        activation: φ by name (``ACTIVATIONS``).
        eps: ε > 0 in the normalization.
    """

    dim: int
    width: int
    mean: tuple[float, ...]
    var: tuple[float, ...]
    activation: str = "tanh"
    eps: float = 1e-5

    def __init__(self, dim, width, mean=None, var=None, activation="tanh", eps=1e-5):
        width_ = check_int_range("width", width, 1)
        self.dim, self.width, self.activation = dim, width, activation
        self.mean = _floats("mean", np.zeros(width_) if mean is None else mean, width_)
        self.var = _floats("var", np.ones(width_) if var is None else var, width_, nonnegative=True)
        self.eps = check_positive("eps", eps)

    def __check_init__(self):
        check_int_range("dim", self.dim, 1)
        check_int_range("width", self.width, 1)
        get_activation(self.activation)

    @property
    def n_params(self) -> int:
        return self.width * (self.dim + 3)

    @property
    def input_dim(self) -> int:
        return self.dim

    def split(self, theta):
        """(W (m × p), γ (m,), β (m,), a (m,)) from the flat θ."""
        mp, m = self.width * self.dim, self.width
        W = theta[:mp].reshape(m, self.dim)
        return W, theta[mp : mp + m], theta[mp + m : mp + 2 * m], theta[mp + 2 * m :]

    def _normalize(self, theta, H, mean, var):
        _, gamma, beta, _ = self.split(theta)
        row = lambda v: v.reshape((1,) * (H.ndim - 1) + (-1,))  # per unit, along H's last axis
        return row(gamma) * (H - row(mean)) / row(jnp.sqrt(var + self.eps)) + row(beta)

    def _moving(self, theta, H):
        dt = H.dtype
        return self._normalize(theta, H, jnp.asarray(self.mean, dt), jnp.asarray(self.var, dt))

    def _batch(self, theta, H):
        mu = jnp.mean(H, axis=0, keepdims=True)
        return self._normalize(theta, H, mu[0], jnp.mean((H - mu) ** 2, axis=0))

    def output(self, theta, x):
        W, _, _, a = self.split(theta)
        return get_activation(self.activation)(self._moving(theta, W @ x)) @ a

    def outputs(self, theta, X):
        W, _, _, a = self.split(theta)
        return get_activation(self.activation)(self._moving(theta, X @ W.T)) @ a

    def batch_outputs(self, theta, Xb, use_batch=None):
        """The outputs of a batch Xb (B × p) in training mode: unit j normalized by the batch's own mean and
        biased variance of $w_j^Tx_b$ where ``use_batch[j]`` (default: every unit, batch normalization),
        by the moving statistics elsewhere (StochNorm's per-unit choice)."""
        W, _, _, a = self.split(theta)
        H = Xb @ W.T
        if use_batch is None:
            Z = self._batch(theta, H)
        else:
            Z = jnp.where(use_batch[None, :], self._batch(theta, H), self._moving(theta, H))
        return get_activation(self.activation)(Z) @ a

    def population_statistics(self, theta, X) -> tuple[np.ndarray, np.ndarray]:
        """(μ, s²): the mean and biased variance of the pre-activations $w_j^Tx$ over the rows of X."""
        W, _, _, _ = self.split(jnp.asarray(theta))
        H = np.asarray(jnp.asarray(X) @ W.T, np.float64)
        return H.mean(axis=0), H.var(axis=0)

    def with_statistics(self, mean, var) -> NormalizedTwoLayerNetwork:
        """The same network with moving statistics (μ, s²)."""
        return NormalizedTwoLayerNetwork(self.dim, self.width, mean, var, self.activation, self.eps)

    def init(self, key=None):
        """W ~ N(0, 1/p), γ = 1, β = 0, a ~ N(0, 1/m) from ``key`` (default key 0)."""
        key = jax.random.key(0) if key is None else key
        kw, ka = jax.random.split(key)
        W = jax.random.normal(kw, (self.width, self.dim)) / np.sqrt(self.dim)
        a = jax.random.normal(ka, (self.width,)) / np.sqrt(self.width)
        return jnp.concatenate([W.ravel(), jnp.ones(self.width), jnp.zeros(self.width), a])

    def param_names(self) -> list[str]:
        m = self.width
        names = [f"w_{j}_{k}" for j in range(m) for k in range(self.dim)]
        return (
            names
            + [f"gamma_{j}" for j in range(m)]
            + [f"beta_{j}" for j in range(m)]
            + [f"a_{j}" for j in range(m)]
        )
