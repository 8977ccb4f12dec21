"""Deep matrix factorization (Arora, Cohen, Hu & Luo 2019): W = W_N ⋯ W_1, read through linear measurements
f(θ; A) = ⟨A, W⟩ (matrix sensing; one-hot A is matrix completion)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._validation import check_int_range, check_positive
from .base import AbstractModel


class DeepMatrixFactorization(AbstractModel):
    """$f(\\theta; A) = \\langle A, W_N\\cdots W_1\\rangle$, θ = (vec W_1, …, vec W_N), every W_j of size n × n; the
    input is vec A (length n²). ``init`` is balanced (W_{j+1}ᵀW_{j+1} = W_jW_jᵀ): W_j = scale^{1/N}·Q_j with
    random orthogonal Q_j, so the end-to-end W = scale·Q (‖W‖_F = scale·√n) (theory/three-theories.md, THR-11).
    """

    size: int
    depth: int
    scale: float = 1e-3

    def __check_init__(self):
        check_int_range("size", self.size, 1)
        check_int_range("depth", self.depth, 1)
        check_positive("scale", self.scale)

    @property
    def n_params(self) -> int:
        return self.depth * self.size**2

    @property
    def input_dim(self) -> int:
        return self.size**2

    def layers(self, theta) -> jax.Array:
        """(N, n, n): W_1, …, W_N."""
        return theta.reshape(self.depth, self.size, self.size)

    def end_to_end(self, theta) -> jax.Array:
        """W = W_N ⋯ W_1."""
        Ws = self.layers(theta)
        out = Ws[0]
        for j in range(1, self.depth):
            out = Ws[j] @ out
        return out

    def output(self, theta, x):
        return jnp.dot(x, self.end_to_end(theta).reshape(-1))

    def outputs(self, theta, X):
        return X @ self.end_to_end(theta).reshape(-1)

    def init(self, key=None):
        """Balanced, W = scale·Q: ``balanced`` with every singular value equal to ``scale``."""
        return self.balanced(jnp.full(self.size, self.scale), key)

    def balanced(self, singular_values, key=None):
        """A balanced θ whose product has the given singular values: W_j = U_{j+1} diag(σ^{1/N}) U_jᵀ with
        random orthogonal U_1, …, U_{N+1} (so W_{j+1}ᵀW_{j+1} = W_jW_jᵀ exactly and W = U_{N+1} diag σ U_1ᵀ)."""
        s = jnp.asarray(singular_values)
        if s.shape != (self.size,) or not bool(jnp.all(s >= 0)):
            raise ValueError(f"singular_values must be {self.size} numbers >= 0, got shape {s.shape}")
        key = jax.random.key(0) if key is None else key
        g = jax.random.normal(key, (self.depth + 1, self.size, self.size), s.dtype)
        q, r = jnp.linalg.qr(g)
        U = q * jnp.sign(jnp.diagonal(r, axis1=1, axis2=2))[:, None, :]  # Haar-distributed orthogonal
        d = s ** (1 / self.depth)
        return jnp.stack([(U[j + 1] * d[None, :]) @ U[j].T for j in range(self.depth)]).reshape(-1)

    def param_names(self) -> list[str]:
        n = self.size
        return [f"W{j + 1}_{a}{b}" for j in range(self.depth) for a in range(n) for b in range(n)]
