"""Data generators: the sparse-regression teacher and a teacher two-layer network."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._ensemble import to_key
from ._models import TwoLayerNetwork
from ._validation import check_dtype, check_int_range, check_positive


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


GROUPS = ("P", "Q", "PQ")  # pattern P only, Q only, both


class TwoPatternData(eqx.Module):
    """Li, Wei & Ma's two-pattern distribution, CPU-sized: x = (P block, Q block, 1), y ∈ {±1}; ``group`` is
    0 (P only), 1 (Q only) or 2 (both) per example, absent blocks are 0, the last coordinate is a constant 1
    (the hidden layer's bias). Train and test sets are drawn from the same distribution."""

    X: Float[Array, "n p"]
    y: Float[Array, " n"]
    group: Array
    X_test: Float[Array, "n_test p"]
    y_test: Float[Array, " n_test"]
    group_test: Array
    dim_p: int = eqx.field(static=True)

    @property
    def p_slice(self) -> slice:
        return slice(0, self.dim_p)

    @property
    def q_slice(self) -> slice:
        return slice(self.dim_p, self.dim_p + 2)


def two_pattern_data(
    key,
    n_train: int,
    n_test: int = 3000,
    *,
    proportions=(0.2, 0.2, 0.6),
    dim_p: int = 300,
    margin: float = 0.1,
    p_noise: float = 0.1,
    q_offset: float = 2.0,
    q_radius: float = 1.0,
) -> TwoPatternData:
    """Examples carry pattern P only, Q only or both with ``proportions`` (LLR-1):

    P (hard to fit, easy to generalize): x_P ∈ R^{dim_p}, x_P[0] = y·margin and x_P[1:] ~ N(0, p_noise²):
    linearly separable by e₀ with margin ``margin``, but with dim_p > n a net also fits it through the noise
    coordinates, which does not generalize. Q (easy to fit, needs a non-linear feature): x_Q = (Z, s·r) with
    s = ±1 for y = +1 and (Z, 0) for y = −1 (Z = ``q_offset``, r = ``q_radius``): the −1 point is the midpoint
    of the two +1 points, so no linear classifier separates Q, while a ReLU kink at the offset Z does.
    """
    key = to_key(key)
    n = check_int_range("n_train", n_train, 1)
    nt = check_int_range("n_test", n_test, 1)
    dp = check_int_range("dim_p", dim_p, 2)
    props = np.asarray(proportions, dtype=np.float64)
    if props.shape != (3,) or not np.all(np.isfinite(props)) or np.any(props < 0):
        raise ValueError(
            f"proportions must be 3 non-negative numbers (P only, Q only, both), got {proportions!r}"
        )
    if abs(props.sum() - 1) > 1e-9:
        raise ValueError(f"proportions must sum to 1, got {proportions!r} (sum {props.sum():.6g})")
    for name, v in (("margin", margin), ("q_offset", q_offset), ("q_radius", q_radius)):
        check_positive(name, v)
    check_positive("p_noise", p_noise, allow_zero=True)
    ky, kg, kp, ks = jax.random.split(key, 4)
    total = n + nt
    y = jnp.where(jax.random.bernoulli(ky, 0.5, (total,)), 1.0, -1.0)
    group = jax.random.choice(kg, 3, (total,), p=jnp.asarray(props))
    xp = p_noise * jax.random.normal(kp, (total, dp))
    xp = xp.at[:, 0].set(y * margin)
    s = jnp.where(jax.random.bernoulli(ks, 0.5, (total,)), 1.0, -1.0)
    xq = jnp.stack([jnp.full((total,), q_offset), jnp.where(y > 0, s * q_radius, 0.0)], axis=1)
    has_p = (group == 0) | (group == 2)
    has_q = (group == 1) | (group == 2)
    X = jnp.concatenate(
        [
            jnp.where(has_p[:, None], xp, 0.0),
            jnp.where(has_q[:, None], xq, 0.0),
            jnp.ones((total, 1), xp.dtype),
        ],
        axis=1,
    )
    return TwoPatternData(X[:n], y[:n], group[:n], X[n:], y[n:], group[n:], dp)


class DoubleWellData(eqx.Module):
    """Data on which ``PolynomialCurve(3)`` has exactly two interpolating minima (zero loss at both, so the
    barrier ΔL is the same from either side) with different curvatures: ``minima`` = (θ_sharp, θ_flat),
    their Hessians ``curvatures`` (sharp first)."""

    X: Float[Array, "n 3"]
    y: Float[Array, " n"]
    minima: tuple[float, float] = eqx.field(static=True)
    curvatures: tuple[float, float] = eqx.field(static=True)


def _moment_curve(theta: float) -> np.ndarray:
    return np.array([theta, theta**2, theta**3])


def double_well_data(minima=(-2.0, 0.5), n_samples: int = 12) -> DoubleWellData:
    """Inputs x_i on a circle of radius √2 (equally spaced) in the plane orthogonal to δ = p(θ₁) − p(θ₂), labels
    y_i = x_iᵀp(θ₁) = x_iᵀp(θ₂): the data cannot tell θ₁ from θ₂ (both interpolate), so the loss of
    ``PolynomialCurve(3)`` is $\\frac12\\|P(p(\\theta) - p(\\theta_1))\\|^2$ (P the projector orthogonal to δ; exact for
    n ≥ 3) with minima at both, of curvature $H_j = \\|P p'(\\theta_j)\\|^2$ (THR-8). ``minima`` are ordered
    (sharp, flat) in the result.
    """
    n = check_int_range("n_samples", n_samples, 3)
    m = np.asarray(minima, dtype=np.float64)
    if m.shape != (2,) or not np.all(np.isfinite(m)):
        raise ValueError(f"minima must be two finite numbers (θ₁, θ₂), got {minima!r}")
    if abs(m[0] - m[1]) < 1e-6:
        raise ValueError(f"minima must be two distinct points, got {minima!r}")
    delta = _moment_curve(m[0]) - _moment_curve(m[1])
    delta /= np.linalg.norm(delta)
    # an orthonormal basis (e1, e2) of the plane orthogonal to δ
    basis = np.linalg.svd(delta[None, :])[2][1:]
    angles = 2 * np.pi * np.arange(n) / n
    X = np.sqrt(2) * (np.cos(angles)[:, None] * basis[0] + np.sin(angles)[:, None] * basis[1])
    y = X @ _moment_curve(m[0])
    P = np.eye(3) - np.outer(delta, delta)
    curv = []
    for t in m:
        dp = np.array([1.0, 2 * t, 3 * t**2])
        curv.append(float(dp @ P @ dp))  # the Hessian at an interpolating minimum: ‖P p′‖²
    if min(curv) <= 1e-8 * max(1.0, max(curv)):
        raise ValueError(
            f"minima {tuple(m)} are not both minima: the Hessian there is {curv} (the curve's tangent is parallel "
            "to p(θ₁) − p(θ₂)); choose other points"
        )
    sharp, flat = np.argsort(curv)[::-1]
    return DoubleWellData(
        jnp.asarray(X), jnp.asarray(y), (float(m[sharp]), float(m[flat])), (curv[sharp], curv[flat])
    )


class MatrixSensingData(eqx.Module):
    """Measurements y_i = ⟨A_i, W*⟩ of a low-rank n × n matrix: X holds vec A_i per row (one-hot rows for
    matrix completion, with ``observed`` the (n, n) mask)."""

    X: Float[Array, "m n2"]
    y: Float[Array, " m"]
    W_star: Float[Array, "n n"]
    observed: Array | None


def matrix_sensing_data(key, size: int, rank: int, n_measurements: int, kind: str = "completion"):
    """W* = UVᵀ (U, V n × r Gaussian) scaled to ‖W*‖_F = n (the official deep-matrix-factorization code's
    ground truth); ``kind="completion"``: ``n_measurements`` distinct entries, uniformly without replacement;
    ``"sensing"``: Gaussian A_i with N(0, 1/n²) entries (THR-11)."""
    key = to_key(key)
    n = check_int_range("size", size, 1)
    r = check_int_range("rank", rank, 1, n)
    if kind not in ("completion", "sensing"):
        raise ValueError(f"kind must be 'completion' or 'sensing', got {kind!r}")
    m = check_int_range("n_measurements", n_measurements, 1, n * n if kind == "completion" else None)
    ku, kv, ko = jax.random.split(key, 3)
    W = jax.random.normal(ku, (n, r)) @ jax.random.normal(kv, (n, r)).T
    W = W * (n / jnp.linalg.norm(W))
    if kind == "completion":
        idx = jax.random.choice(ko, n * n, (m,), replace=False)
        X = jax.nn.one_hot(idx, n * n, dtype=W.dtype)
        observed = jnp.zeros(n * n, bool).at[idx].set(True).reshape(n, n)
    else:
        X = jax.random.normal(ko, (m, n * n), W.dtype) / n
        observed = None
    return MatrixSensingData(X, X @ W.reshape(-1), W, observed)


class DigitsData(eqx.Module):
    """Scikit-learn's bundled handwritten digits split into training, validation and test sets: X rows are the
    64 pixels of an 8 × 8 image scaled to [0, 1] (intensity / 16), labels are the classes 0–9 (int32).

    ``y`` holds the training labels after the flips (``flipped`` marks them, ``y_clean`` the true ones);
    ``y_val`` likewise with ``flipped_val``/``y_val_clean`` (no flips unless ``flip_validation``); the test
    labels are always clean.
    """

    X: Float[Array, "n 64"]
    y: Array
    y_clean: Array
    flipped: Array
    X_val: Float[Array, "n_val 64"]
    y_val: Array
    y_val_clean: Array
    flipped_val: Array
    X_test: Float[Array, "n_test 64"]
    y_test: Array
    n_classes: int = eqx.field(static=True, default=10)


N_DIGITS = 1797  # images in sklearn.datasets.load_digits()


def _split_counts(split, n_total: int) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) from fractions summing to ≤ 1 or from counts summing to ≤ n_total."""
    try:
        parts = tuple(split)
    except TypeError:
        raise ValueError(f"split must be three numbers (train, val, test), got {split!r}") from None
    if len(parts) != 3 or any(isinstance(s, (bool, np.bool_, str)) for s in parts):
        raise ValueError(f"split must be three numbers (train, val, test), got {split!r}")
    if all(isinstance(s, (int, np.integer)) for s in parts):
        counts = tuple(int(s) for s in parts)
        if min(counts) < 0 or counts[0] < 1 or sum(counts) > n_total:
            raise ValueError(
                f"split as counts must be non-negative with at least 1 training example and sum to at most "
                f"{n_total}, got {split!r}"
            )
        return counts  # type: ignore[return-value]
    fr = np.asarray(parts, dtype=np.float64)
    if not np.all(np.isfinite(fr)) or np.any(fr < 0) or fr.sum() > 1 + 1e-9:
        raise ValueError(f"split as fractions must be non-negative and sum to at most 1, got {split!r}")
    counts = tuple(int(np.floor(f * n_total + 1e-9)) for f in fr)
    if counts[0] < 1:
        raise ValueError(f"split leaves no training example ({split!r} of {n_total})")
    return counts  # type: ignore[return-value]


def _flip(rng: np.random.Generator, y: np.ndarray, fraction: float, n_classes: int):
    """Exactly round(fraction·n) labels, chosen uniformly, each replaced by a uniformly drawn other class."""
    n = y.shape[0]
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[: int(round(fraction * n))]] = True
    shift = rng.integers(1, n_classes, n, dtype=np.int32)  # 1..K−1: never the true class
    return np.where(mask, (y + shift) % n_classes, y).astype(np.int32), mask


def digits(
    key=None,
    *,
    split=(0.6, 0.2, 0.2),
    flip_fraction: float = 0.0,
    flip_validation: bool = False,
    dtype=None,
) -> DigitsData:
    """Scikit-learn's bundled digits (``sklearn.datasets.load_digits()``: 1,797 8 × 8 images, 10 classes, read
    from the installed package, no download), shuffled and split by ``key``, with optional label flips.

    Features are pixel intensities / 16 ∈ [0, 1] (not standardized: constant border pixels stay 0); labels are
    the classes 0–9. Needs scikit-learn (``pip install 'sgdsde[data]'``).

    Args:
        key: a JAX key or an int seed for the shuffle and the flips (None: seed 0); the same key gives the same
            split and flips.
        split: (train, val, test) as fractions of 1,797 summing to ≤ 1 (each rounded down), or as counts.
        flip_fraction: the fraction in [0, 1] of training labels replaced by a uniformly drawn other class
            (exactly round(fraction · n_train) of them; ``flipped`` marks them).
        flip_validation: flip the same fraction of the validation labels too (a noisy validation set).
        dtype: the features' float dtype (None: JAX's default float).
    """
    key = to_key(0 if key is None else key)
    counts = _split_counts(split, N_DIGITS)
    frac = check_positive("flip_fraction", flip_fraction, allow_zero=True)
    if frac > 1:
        raise ValueError(f"flip_fraction must be in [0, 1], got {flip_fraction!r}")
    if not isinstance(flip_validation, (bool, np.bool_)):
        raise ValueError(f"flip_validation must be True or False, got {flip_validation!r}")
    dt = jnp.result_type(float) if dtype is None else check_dtype(dtype)
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "sgdsde.data.digits needs scikit-learn (its bundled digits): pip install 'sgdsde[data]' or "
            "pip install scikit-learn"
        ) from e
    data, target = load_digits(return_X_y=True)
    # numpy generators seeded by the key's bits: a few permutations of ≤ 1,797 items need no compiled program
    kp, kf, kv = (np.random.default_rng(np.asarray(jax.random.key_data(k))) for k in jax.random.split(key, 3))
    order = kp.permutation(N_DIGITS)
    X_all = np.asarray(data, np.float64)[order] / 16.0
    y_all = np.asarray(target, np.int32)[order]
    n, nv, nt = counts
    sl_v, sl_t = slice(n, n + nv), slice(n + nv, n + nv + nt)
    y, flipped = _flip(kf, y_all[:n], frac, 10)
    if flip_validation:
        y_val, flipped_val = _flip(kv, y_all[sl_v], frac, 10)
    else:
        y_val, flipped_val = y_all[sl_v], np.zeros(nv, bool)
    return DigitsData(
        jnp.asarray(X_all[:n], dt),
        jnp.asarray(y),
        jnp.asarray(y_all[:n]),
        jnp.asarray(flipped),
        jnp.asarray(X_all[sl_v], dt),
        jnp.asarray(y_val),
        jnp.asarray(y_all[sl_v]),
        jnp.asarray(flipped_val),
        jnp.asarray(X_all[sl_t], dt),
        jnp.asarray(y_all[sl_t]),
    )
