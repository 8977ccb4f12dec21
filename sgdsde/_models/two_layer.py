"""Two-layer network f(θ; x) = Σⱼ aⱼ φ(wⱼᵀx), width m, activation given by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_range
from .activations import get_activation
from .base import AbstractModel


class TwoLayerNetwork(AbstractModel):
    """$f(\\theta; x) = \\sum_{j=1}^m a_j\\,\\varphi(w_j^T x)$. θ = (vec(W) row-major, a) when the second
    layer trains, θ = vec(W) otherwise (a then fixed to ``second_layer``, default 𝟙/m).

    Reference: theory/models.md (MOD-3).
    """

    dim: int
    width: int
    activation: str = "tanh"
    train_second_layer: bool = True
    second_layer: tuple[float, ...] | None = None

    def __check_init__(self):
        check_int_range("dim", self.dim, 1)
        check_int_range("width", self.width, 1)
        get_activation(self.activation)
        if self.second_layer is not None and len(self.second_layer) != self.width:
            raise ValueError(
                f"second_layer must have length width={self.width}, got {len(self.second_layer)}"
            )

    @property
    def n_params(self) -> int:
        return self.width * self.dim + (self.width if self.train_second_layer else 0)

    @property
    def input_dim(self) -> int:
        return self.dim

    def split(self, theta):
        """(W (m × p), a (m,)) from the flat θ."""
        mp = self.width * self.dim
        W = theta[:mp].reshape(self.width, self.dim)
        if self.train_second_layer:
            a = theta[mp:]
        elif self.second_layer is None:
            a = jnp.full(self.width, 1.0 / self.width, theta.dtype)
        else:
            a = jnp.asarray(self.second_layer, theta.dtype)
        return W, a

    def output(self, theta, x):
        W, a = self.split(theta)
        return jnp.dot(a, get_activation(self.activation)(W @ x))

    def outputs(self, theta, X):
        W, a = self.split(theta)
        return get_activation(self.activation)(X @ W.T) @ a

    def init(self, key=None):
        """W ~ N(0, 1/p), a ~ N(0, 1/m) from ``key`` (default key 0)."""
        key = jax.random.key(0) if key is None else key
        kw, ka = jax.random.split(key)
        W = jax.random.normal(kw, (self.width, self.dim)) / np.sqrt(self.dim)
        parts = [W.ravel()]
        if self.train_second_layer:
            parts.append(jax.random.normal(ka, (self.width,)) / np.sqrt(self.width))
        return jnp.concatenate(parts)

    def param_names(self) -> list[str]:
        names = [f"w_{j}_{k}" for j in range(self.width) for k in range(self.dim)]
        if self.train_second_layer:
            names += [f"a_{j}" for j in range(self.width)]
        return names
