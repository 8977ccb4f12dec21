"""Deep matrix factorization (Arora, Cohen, Hu & Luo 2019): W = W_N ⋯ W_1, read through linear measurements
f(θ; A) = ⟨A, W⟩ (matrix sensing; one-hot A is matrix completion)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._validation import check_int_range, check_positive
from .base import AbstractModel


def _shape_arg(shape) -> tuple[int, int]:
    if isinstance(shape, (tuple, list)):
        if len(shape) != 2:
            raise ValueError(f"shape must be n or (rows, cols), got {shape!r}")
        return check_int_range("shape", shape[0], 1), check_int_range("shape", shape[1], 1)
    n = check_int_range("shape", shape, 1)
    return n, n


class DeepMatrixFactorization(AbstractModel):
    """$f(\\theta; A) = \\langle A, W_N\\cdots W_1\\rangle$ for an m × k end-to-end matrix (``shape`` = n for n × n,
    or (m, k)), hidden width h (default max(m, k)): W_1 is h × k, W_2…W_{N−1} are h × h, W_N is m × h; θ is the
    layers flattened in order, the input is vec A (length mk). ``init`` is balanced (W_{j+1}ᵀW_{j+1} = W_jW_jᵀ)
    with every singular value of W equal to ``scale`` (``balanced``) (theory/three-theories.md, THR-11).
    """

    shape: tuple[int, int] = eqx.field(static=True, converter=_shape_arg)
    depth: int = eqx.field(static=True)
    scale: float = 1e-3
    hidden: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        check_int_range("depth", self.depth, 1)
        check_positive("scale", self.scale)
        if self.hidden is not None:
            check_int_range("hidden", self.hidden, min(self.shape))

    @property
    def dims(self) -> tuple[int, ...]:
        """(k, h, …, h, m): layer j maps dims[j−1] → dims[j]."""
        m, k = self.shape
        h = max(m, k) if self.hidden is None else self.hidden
        return (k, *([h] * (self.depth - 1)), m)

    @property
    def n_params(self) -> int:
        d = self.dims
        return sum(d[j + 1] * d[j] for j in range(self.depth))

    @property
    def input_dim(self) -> int:
        return self.shape[0] * self.shape[1]

    def layers(self, theta) -> list[jax.Array]:
        """[W_1, …, W_N]."""
        d, out, i = self.dims, [], 0
        for j in range(self.depth):
            size = d[j + 1] * d[j]
            out.append(theta[i : i + size].reshape(d[j + 1], d[j]))
            i += size
        return out

    def end_to_end(self, theta) -> jax.Array:
        """W = W_N ⋯ W_1 (m × k)."""
        Ws = self.layers(theta)
        out = Ws[0]
        for W in Ws[1:]:
            out = W @ out
        return out

    def output(self, theta, x):
        return jnp.dot(x, self.end_to_end(theta).reshape(-1))

    def outputs(self, theta, X):
        return X @ self.end_to_end(theta).reshape(-1)

    def init(self, key=None):
        """Balanced, every singular value of W equal to ``scale``."""
        return self.balanced(jnp.full(min(self.shape), self.scale), key)

    def balanced(self, singular_values, key=None):
        """A balanced θ whose product has the given r = min(m, k) singular values: W_j = U_{j+1} diag(σ^{1/N})
        U_jᵀ with random orthonormal r-frames U_1 (in R^k), …, U_{N+1} (in R^m), so W_{j+1}ᵀW_{j+1} = W_jW_jᵀ
        exactly and W = U_{N+1} diag σ U_1ᵀ."""
        r = min(self.shape)
        s = jnp.asarray(singular_values)
        if s.shape != (r,) or not bool(jnp.all(s >= 0)):
            raise ValueError(f"singular_values must be {r} numbers >= 0, got shape {s.shape}")
        key = jax.random.key(0) if key is None else key
        d = s ** (1 / self.depth)
        frames = []
        for j, dim in enumerate(self.dims):
            q, rr = jnp.linalg.qr(jax.random.normal(jax.random.fold_in(key, j), (dim, r), s.dtype))
            frames.append(q * jnp.sign(jnp.diagonal(rr))[None, :])  # Haar-distributed r-frame
        return jnp.concatenate(
            [((frames[j + 1] * d[None, :]) @ frames[j].T).reshape(-1) for j in range(self.depth)]
        )

    def param_names(self) -> list[str]:
        d = self.dims
        return [f"W{j + 1}_{a}_{b}" for j in range(self.depth) for a in range(d[j + 1]) for b in range(d[j])]
