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


class NoisyLabelData(eqx.Module):
    """A training set whose labels were flipped once (``corrupted`` marks them; ``y_clean`` the teacher's),
    a clean validation set and a clean test set."""

    X: Float[Array, "n p"]
    y: Float[Array, " n"]
    y_clean: Float[Array, " n"]
    corrupted: Array
    X_val: Float[Array, "n_val p"]
    y_val: Float[Array, " n_val"]
    X_test: Float[Array, "n_test p"]
    y_test: Float[Array, " n_test"]
    teacher: Float[Array, " p"]


def noisy_teacher_classification(
    key, n_train: int, dim: int, flip_rate: float, n_val: int = 1000, n_test: int = 5000
) -> NoisyLabelData:
    """x ~ N(0, I_p), y = sign(w*ᵀx) ∈ {±1} with w* ~ N(0, I_p)/√p; each training label is flipped once,
    independently with probability ``flip_rate`` ∈ [0, 1) (symmetric noise with two classes). Validation
    and test labels are clean. The setting of Bae, Song & Jeong's mechanism, CPU-sized (theory/resetting.md,
    RESET-7)."""
    key = to_key(key)
    n = check_int_range("n_train", n_train, 1)
    p = check_int_range("dim", dim, 1)
    nv, nt = check_int_range("n_val", n_val, 1), check_int_range("n_test", n_test, 1)
    tau = check_positive("flip_rate", flip_rate, allow_zero=True)
    if tau >= 1:
        raise ValueError(f"flip_rate must be in [0, 1), got {flip_rate!r}")
    kw, kx, kf = jax.random.split(key, 3)
    w = jax.random.normal(kw, (p,)) / jnp.sqrt(p)
    X = jax.random.normal(kx, (n + nv + nt, p))
    y = jnp.where(X @ w >= 0, 1.0, -1.0)
    flip = jax.random.uniform(kf, (n,)) < tau
    y_train = jnp.where(flip, -y[:n], y[:n])
    return NoisyLabelData(
        X[:n], y_train, y[:n], flip, X[n : n + nv], y[n : n + nv], X[n + nv :], y[n + nv :], w
    )
