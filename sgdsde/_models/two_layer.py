"""Two-layer network f(θ; x) = Σⱼ aⱼ φ(wⱼᵀx), width m, activation given by name (K outputs: aⱼ ∈ R^K)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_range
from .activations import get_activation
from .base import AbstractModel
from .units import Units


class TwoLayerNetwork(AbstractModel):
    """$f(\\theta; x) = \\sum_{j=1}^m a_j\\,\\varphi(w_j^T x)$. θ = (vec(W) row-major, a) when the second
    layer trains, θ = vec(W) otherwise (a then fixed to ``second_layer``, default 𝟙/m).

    ``n_outputs`` = K > 1 gives a K-output head $f(\\theta; x) = A^T\\varphi(Wx)$ with A (m × K) trained, θ = (vec(W),
    vec(A) row-major): logits for ``CrossEntropyLoss``. Reference: theory/models.md (MOD-3), theory/losses.md.
    """

    dim: int
    width: int
    activation: str = "tanh"
    train_second_layer: bool = True
    second_layer: tuple[float, ...] | None = None
    n_outputs_: int = 1

    def __init__(
        self, dim, width, activation="tanh", train_second_layer=True, second_layer=None, n_outputs=1
    ):
        self.dim, self.width, self.activation = dim, width, activation
        self.train_second_layer, self.second_layer, self.n_outputs_ = (
            train_second_layer,
            second_layer,
            n_outputs,
        )

    def __check_init__(self):
        check_int_range("dim", self.dim, 1)
        check_int_range("width", self.width, 1)
        check_int_range("n_outputs", self.n_outputs_, 1)
        get_activation(self.activation)
        if self.n_outputs_ > 1 and not self.train_second_layer:
            raise ValueError(
                "a K-output head (n_outputs > 1) trains its second layer: train_second_layer=True"
            )
        if self.second_layer is not None and len(self.second_layer) != self.width:
            raise ValueError(
                f"second_layer must have length width={self.width}, got {len(self.second_layer)}"
            )

    @property
    def n_outputs(self) -> int:
        return self.n_outputs_

    @property
    def n_params(self) -> int:
        return self.width * self.dim + (self.width * self.n_outputs_ if self.train_second_layer else 0)

    @property
    def input_dim(self) -> int:
        return self.dim

    def split(self, theta):
        """(W (m × p), a (m,) or A (m × K)) from the flat θ."""
        mp = self.width * self.dim
        W = theta[:mp].reshape(self.width, self.dim)
        if self.train_second_layer:
            a = theta[mp:] if self.n_outputs_ == 1 else theta[mp:].reshape(self.width, self.n_outputs_)
        elif self.second_layer is None:
            a = jnp.full(self.width, 1.0 / self.width, theta.dtype)
        else:
            a = jnp.asarray(self.second_layer, theta.dtype)
        return W, a

    def output(self, theta, x):
        W, a = self.split(theta)
        return get_activation(self.activation)(W @ x) @ a

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
            parts.append(jax.random.normal(ka, (self.width * self.n_outputs_,)) / np.sqrt(self.width))
        return jnp.concatenate(parts)

    def param_names(self) -> list[str]:
        names = [f"w_{j}_{k}" for j in range(self.width) for k in range(self.dim)]
        if self.train_second_layer and self.n_outputs_ == 1:
            names += [f"a_{j}" for j in range(self.width)]
        elif self.train_second_layer:
            names += [f"a_{j}_{k}" for j in range(self.width) for k in range(self.n_outputs_)]
        return names

    def sympy_units(self) -> Units:
        """$f = \\sum_j a_j\\varphi(w_j^T x)$: m units $u = a\\,\\varphi(w^T x)$ (K outputs: m·K units
        $A_{jk}\\varphi(w_j^T x)$ adding to output k; a fixed second layer: a is a constant) (SYM-1)."""
        import sympy as sp

        from .sympy_activations import SYMBOLIC_ACTIVATIONS

        phi = SYMBOLIC_ACTIVATIONS[self.activation]
        p, m, K = self.dim, self.width, self.n_outputs_
        w = tuple(sp.Symbol(f"w_{k}", real=True) for k in range(p))
        xs = tuple(sp.Symbol(f"x_{k}", real=True) for k in range(p))
        a = sp.Symbol("a", real=True)
        u = a * phi(sp.Add(*[wk * xk for wk, xk in zip(w, xs, strict=True)]))
        rows = tuple(tuple(range(j * p, (j + 1) * p)) for j in range(m))
        inputs = (tuple(range(p)),) * m
        if K > 1:
            # unit (j, k) = A_jk φ(w_jᵀx) adds to output k; θ = (vec(W), vec(A)) with A (m × K) row-major
            return Units(
                u,
                (*w, a),
                xs,
                (),
                tuple((*rows[j], m * p + j * K + k) for j in range(m) for k in range(K)),
                (tuple(range(p)),) * (m * K),
                ((),) * (m * K),
                tuple(k for _ in range(m) for k in range(K)),
            )
        if self.train_second_layer:
            return Units(
                u, (*w, a), xs, (), tuple((*rows[j], m * p + j) for j in range(m)), inputs, ((),) * m
            )
        c = [1.0 / m] * m if self.second_layer is None else [float(v) for v in self.second_layer]
        return Units(u, w, xs, (a,), rows, inputs, tuple((cj,) for cj in c))
