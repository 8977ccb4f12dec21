"""Data generators: the sparse-regression teacher and a teacher two-layer network."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._ensemble import to_key
from ._models import TwoLayerNetwork
from ._validation import check_int_range, check_positive


class RegressionData(eqx.Module):
    """Inputs X (n × p), labels y (n,) and the teacher that made them."""

    X: Float[Array, "n p"]
    y: Float[Array, " n"]
    teacher: Float[Array, " q"]


def sparse_regression(key, n_samples: int, dim: int, sparsity: int, noise_std: float = 0.0) -> RegressionData:
    """x ~ N(0, I_d), w* = (1,…,1,0,…,0) with ``sparsity`` ones, y = w*ᵀx + noise_std·ξ.

    HaoChen et al.'s setting (label-noise.md §3): d = 100, n = 40, 5-sparse. ``key``: a JAX key or an
    integer seed, as the simulators take it.
    """
    key = to_key(key)
    n = check_int_range("n_samples", n_samples, 1)
    d = check_int_range("dim", dim, 1)
    k = check_int_range("sparsity", sparsity, 0, d)
    check_positive("noise_std", noise_std, allow_zero=True)
    kx, ke = jax.random.split(key)
    X = jax.random.normal(kx, (n, d))
    w = jnp.zeros(d).at[:k].set(1.0)
    y = X @ w + noise_std * jax.random.normal(ke, (n,))
    return RegressionData(X, y, w)


def teacher_network(
    key, n_samples: int, dim: int, width: int, activation: str = "tanh", noise_std: float = 0.0
) -> RegressionData:
    """x ~ N(0, I_p), y = f_teacher(x) + noise_std·ξ for a random two-layer teacher of the given width
    (``key``: a JAX key or an integer seed)."""
    key = to_key(key)
    n = check_int_range("n_samples", n_samples, 1)
    check_positive("noise_std", noise_std, allow_zero=True)
    net = TwoLayerNetwork(dim, width, activation)
    kx, kt, ke = jax.random.split(key, 3)
    theta = net.init(kt)
    X = jax.random.normal(kx, (n, dim))
    y = net.outputs(theta, X) + noise_std * jax.random.normal(ke, (n,))
    return RegressionData(X, y, theta)
