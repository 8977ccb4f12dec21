"""Self-distillation in a reproducing kernel Hilbert space (Mobahi, Farajtabar & Bartlett 2020; DIST-1..6).

Round t fits the previous round's predictions by regularized least squares with the Gram matrix K = V D Vᵀ:
in K's eigenbasis each round multiplies coordinate k by d_k/(d_k + c_t), with a fixed ridge c (the plain form)
or, in Mobahi et al.'s constrained form, the c_t at which the fit spends exactly its loss budget ε; the
predictor's weight concentrates on the top eigenfunctions, and the rounds collapse to the zero predictor once
(1/n)‖y_t‖² ≤ ε. ``train_self_distillation`` runs the same rounds with sgdsde's simulators (a linear model on
features Φ with K = ΦΦᵀ, weight decay c_t/n).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import cast

import jax
import numpy as np
from scipy.optimize import brentq

from .._method import simulate
from .._models import LinearRegression
from .._noise import AbstractGradientNoise
from .._optimizers import Momentum
from .._options import Ensemble, Record
from .._problem import Problem
from .._sgd import SGD
from .._validation import check_int_range, check_positive, check_psd
from ._common import render_table


@dataclasses.dataclass
class DistillationRounds:
    """Rounds t = 1..T of self-distillation, $y_t = K(K + c_tI)^{-1}y_{t-1}$, in K's eigenbasis (DIST-1).

    Attributes (T rounds, n data points; row t = 0 of the (T + 1)-row arrays is the labels y₀):
        eigenvalues: d_k of K, ascending (n,); eigenvectors: V (n, n), K = V diag(d) Vᵀ.
        coefficients: $z_t = V^\\top y_t$ (T + 1, n); predictions: $y_t$ (T + 1, n).
        dual: $\\alpha_t = (K + c_tI)^{-1}y_{t-1}$ (T, n): round t's predictor is $f_t(x) = \\sum_i\\alpha_{t,i}k(x, x_i)$
            (on features Φ with K = ΦΦᵀ its weights are Φᵀα_t); 0 for a collapsed round.
        c: c_t (T,), inf for a collapsed round (its predictor is 0).
        shrinkage: $d_k/(d_k + c_t)$ (T, n), 0 for a collapsed round.
        products: $B_{t,k}$, the product of rounds 1..t's shrinkage factors (T + 1, n), B₀ = 1.
        effective_count: $N_t = \\sum_k B_{t,k}/\\max_j B_{t,j}$ (T + 1,): the number of basis functions the
            predictor still uses, counted relative to the best-kept one (N₀ = n; non-increasing; 0 once
            collapsed) (DIST-5).
        epsilon: the loss budget of the constrained form, None for the plain form.
        collapse_round: the first round t with $\\frac1n\\|y_{t-1}\\|^2 \\le \\varepsilon$ (its predictor and all later
            ones are 0), None if no round up to T collapses or for the plain form (DIST-3).
        collapse_bounds: (lower, upper) on the collapse round from the analysis, ρ = ‖y₀‖/√(nε),
            κ = d_max/d_min: lower = ⌈ρ⌉, upper = ⌈κ(ρ − 1)⌉ + 1 (inf when K is singular); None for the
            plain form (DIST-4).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    coefficients: np.ndarray
    predictions: np.ndarray
    dual: np.ndarray
    c: np.ndarray
    shrinkage: np.ndarray
    products: np.ndarray
    effective_count: np.ndarray
    epsilon: float | None
    collapse_round: int | None
    collapse_bounds: tuple[int, float] | None

    @property
    def rounds(self) -> int:
        return len(self.c)

    @property
    def condition_number(self) -> float:
        """κ = d_max/d_min of K (inf when K is singular)."""
        lo, hi = float(self.eigenvalues[0]), float(self.eigenvalues[-1])
        return hi / lo if lo > 0 else math.inf

    def weights(self, features) -> np.ndarray:
        """$\\theta_t = \\Phi^\\top\\alpha_t$ (T, p): round t's weights of the linear model on features Φ, K = ΦΦᵀ."""
        Phi = np.asarray(features, np.float64)
        if Phi.ndim != 2 or Phi.shape[0] != self.dual.shape[1]:
            raise ValueError(f"features must have shape ({self.dual.shape[1]}, p), got {Phi.shape}")
        return self.dual @ Phi

    def predict(self, cross_gram) -> np.ndarray:
        """$f_t(x) = \\sum_i \\alpha_{t,i}k(x, x_i)$ at new points, from their kernel rows k(x, x_i) (m, n): (T, m)."""
        Kx = np.asarray(cross_gram, np.float64)
        if Kx.ndim != 2 or Kx.shape[1] != self.dual.shape[1]:
            raise ValueError(f"cross_gram must have shape (m, {self.dual.shape[1]}), got {Kx.shape}")
        return self.dual @ Kx.T

    def table(self) -> str:
        rows = [["0 (labels)", "", f"{self.effective_count[0]:.3g}", f"{_sq(self.predictions[0]):.4g}"]]
        for t in range(self.rounds):
            c = "inf (collapsed)" if not np.isfinite(self.c[t]) else f"{self.c[t]:.4g}"
            rows.append(
                [str(t + 1), c, f"{self.effective_count[t + 1]:.3g}", f"{_sq(self.predictions[t + 1]):.4g}"]
            )
        return render_table(["round", "c_t", "effective count", "(1/n)|y_t|^2"], rows)

    def __str__(self) -> str:
        head = "plain form" if self.epsilon is None else f"constrained form, epsilon = {self.epsilon:.4g}"
        lines = [f"self-distillation, {self.rounds} rounds, {head}", self.table()]
        if self.epsilon is not None:
            lo, hi = self.collapse_bounds or (None, None)
            lines.append(f"collapse round {self.collapse_round} (bounds: {lo} <= round <= {hi})")
        return "\n".join(lines)


def _sq(y) -> float:
    return float(np.mean(np.square(y)))


def budget_c(eigenvalues, coefficients, budget: float) -> float:
    """The c > 0 with $\\sum_k (c z_k/(d_k + c))^2 = n\\varepsilon$ (DIST-2): the constrained fit's ridge.

    ``budget`` is nε. The left side increases in c from ‖P₀z‖² (P₀: K's null space) to ‖z‖², so a root exists
    iff ‖P₀z‖² < nε < ‖z‖²; it is bracketed by $s d_{\\min}/(1-s) \\le c \\le s d_{\\max}/(1-s)$, s = √(nε)/‖z‖,
    and found by Brent's method to float64 precision.
    """
    d, z = np.asarray(eigenvalues, np.float64), np.asarray(coefficients, np.float64)

    def h(c: float) -> float:
        return float(np.sum(np.square(c * z / (d + c))) - budget)

    s = math.sqrt(budget) / float(np.linalg.norm(z))
    lo, hi = s * float(d[0]) / (1 - s), s * float(d[-1]) / (1 - s)
    if hi <= 0:  # K = 0: only f = 0, which misses the budget
        lo = 0.0
    elif lo <= 0 or h(lo) > 0:
        lo = hi
        while h(lo) > 0:
            lo /= 2
            if lo < 1e-300:
                lo = 0.0
                break
    if lo <= 0:
        raise ValueError(
            "epsilon is too small: the part of y outside the range of gram alone exceeds the budget "
            "n*epsilon, so no predictor meets it"
        )
    if h(lo) == 0:
        return lo
    while h(hi) < 0:  # the bracket is exact up to rounding; widen against it
        hi *= 2
    root = brentq(h, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500, full_output=False)
    return float(cast(float, root))


def collapse_bounds(y0_norm: float, budget: float, kappa: float) -> tuple[int, float]:
    """(⌈ρ⌉, ⌈κ(ρ − 1)⌉ + 1), ρ = ‖y₀‖/√(nε): the collapse round lies between them (DIST-4, derived).

    Each non-collapsed round moves the predictions by exactly √(nε), so ‖y_t‖ ≥ ‖y_{t−1}‖ − √(nε); and it
    shrinks every coordinate by at least the factor 1 − a_min with a_min ≥ √(nε)/(κ‖y_{t−1}‖), so
    ‖y_t‖ ≤ ‖y_{t−1}‖ − √(nε)/κ. With κ = 1 the two meet: the collapse round is ⌈ρ⌉.
    """
    rho = y0_norm / math.sqrt(budget)
    if rho <= 1:
        return 1, 1.0
    upper = math.ceil(kappa * (rho - 1)) + 1 if math.isfinite(kappa) else math.inf
    lower = math.ceil(rho - 1e-12)  # an integer ρ blurred upwards by rounding must not raise the lower bound
    return lower, float(upper)


def self_distillation(gram, y, *, rounds: int, c=None, epsilon=None) -> DistillationRounds:
    """T rounds of self-distillation in closed form: $z_t = \\operatorname{diag}(d_k/(d_k + c_t))\\,z_{t-1}$ (DIST-1).

    Round t minimises $\\|f(X) - y_{t-1}\\|^2 + c_t\\|f\\|_{\\mathcal{H}}^2$ (sum, not mean, of squares; with the
    mean-squared loss and ridge λ, c = nλ), so $y_t = K(K + c_tI)^{-1}y_{t-1}$. Plain form (``c``): c_t = c.
    Constrained form (``epsilon``, Mobahi et al.): round t is the minimum-norm f with
    $\\frac1n\\|f(X) - y_{t-1}\\|^2 \\le \\varepsilon$: f = 0 if $\\frac1n\\|y_{t-1}\\|^2 \\le \\varepsilon$ (collapse),
    else the ridge fit whose c_t spends the budget exactly (DIST-2, ``budget_c``).

    Args:
        gram: K (n, n), symmetric positive semi-definite (for a linear model on features Φ: ΦΦᵀ).
        y: the labels y₀ (n,).
        rounds: T ≥ 1.
        c: the plain form's ridge, > 0.
        epsilon: the constrained form's budget ε > 0 on the mean squared fit error (give c or epsilon).

    Returns: ``DistillationRounds``. Reference: Mobahi, Farajtabar & Bartlett, NeurIPS 2020.
    """
    K = check_psd("gram", gram)
    n = K.shape[0]
    y0 = np.asarray(y, np.float64)
    if y0.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match gram, got {y0.shape}")
    if not np.all(np.isfinite(y0)):
        raise ValueError("y must be finite")
    T = check_int_range("rounds", rounds, 1)
    if (c is None) == (epsilon is None):
        raise ValueError(
            "give exactly one of c (the plain form's ridge) and epsilon (the constrained form's budget)"
        )
    c_fixed = None if c is None else check_positive("c", c)
    eps = None if epsilon is None else check_positive("epsilon", epsilon)

    d, V = np.linalg.eigh((K + K.T) / 2)
    d = np.maximum(d, 0.0)  # rounding can leave a PSD matrix's zero eigenvalue at −1e-17
    budget = None if eps is None else n * eps
    z = np.empty((T + 1, n))
    z[0] = V.T @ y0
    cs, shrink, dual = np.full(T, math.inf), np.zeros((T, n)), np.zeros((T, n))
    collapse = None
    for t in range(T):
        if c_fixed is not None:
            ct = c_fixed
        else:
            assert budget is not None  # epsilon was given
            if float(np.sum(np.square(z[t]))) <= budget:
                ct = math.inf
                collapse = t + 1 if collapse is None else collapse
            else:
                ct = budget_c(d, z[t], budget)
        if math.isfinite(ct):
            cs[t], shrink[t] = ct, d / (d + ct)
            dual[t] = V @ (z[t] / (d + ct))
        z[t + 1] = shrink[t] * z[t]
    products = np.vstack([np.ones(n), np.cumprod(shrink, axis=0)])
    top = products.max(axis=1)
    count = np.divide(products.sum(axis=1), top, out=np.zeros(T + 1), where=top > 0)
    bounds = None
    if budget is not None:
        kappa = float(d[-1] / d[0]) if d[0] > 0 else math.inf
        bounds = collapse_bounds(float(np.linalg.norm(y0)), budget, kappa)
    return DistillationRounds(
        eigenvalues=d,
        eigenvectors=V,
        coefficients=z,
        predictions=z @ V.T,
        dual=dual,
        c=cs,
        shrinkage=shrink,
        products=products,
        effective_count=count,
        epsilon=eps,
        collapse_round=collapse,
        collapse_bounds=bounds,
    )


@dataclasses.dataclass
class TrainedDistillation:
    """The rounds run by ``SGD`` on the linear model f = θᵀφ (DIST-6).

    Attributes: weights θ_t (T, P, p) and predictions Φθ_t (T + 1, P, n) per path (row 0: the labels), c_t,
    the weight decay c_t/n, the step size per round, n_steps, the noise's name, and ``contraction``: per round, GD's error factor
    $\\max_k|1 - \\eta(d_k + c_t)/n|^{T}$ on span(Φᵀ) (the iterates start at 0 and stay there).
    """

    weights: np.ndarray
    predictions: np.ndarray
    c: np.ndarray
    weight_decay: np.ndarray
    lr: np.ndarray
    n_steps: int
    noise: str
    contraction: np.ndarray


def gd_contraction(features, c, lr: float, n_steps: int) -> float:
    """$\\max_k|1 - \\eta(d_k + c)/n|^{T}$ over K = ΦΦᵀ's eigenvalues d_k: GD's factor on ‖θ_T − θ*‖ from θ₀ = 0."""
    Phi = np.asarray(features, np.float64)
    n = Phi.shape[0]
    d = np.maximum(np.linalg.eigvalsh(Phi @ Phi.T), 0.0)
    d = d[d > 1e-12 * max(float(d[-1]), 1e-300)]  # directions of span(Φᵀ); the null space stays at 0
    rate = float(np.max(np.abs(1 - lr * (d + c) / n))) if d.size else abs(1 - lr * c / n)
    return 0.0 if rate == 0 else math.exp(min(n_steps * math.log(rate), 700.0))


def train_self_distillation(
    features,
    y,
    c: Sequence[float] | np.ndarray,
    *,
    lr: float | Sequence[float] | np.ndarray,
    n_steps: int,
    noise: AbstractGradientNoise | None = None,
    n_paths: int = 1,
    key: int = 0,
) -> TrainedDistillation:
    """Self-distillation by training: round t runs ``SGD(noise, optimizer=Momentum(0, weight_decay=c_t/n))`` (DIST-6).

    The objective of round t is $\\frac1{2n}\\|\\Phi\\theta - y_{t-1}\\|^2 + \\frac{c_t}{2n}\\|\\theta\\|^2$, whose minimiser
    predicts $\\Phi\\theta^* = K(K + c_tI)^{-1}y_{t-1}$ with K = ΦΦᵀ: the closed form's round. Every round starts
    at θ = 0 and its targets are the same path's predictions of the round before; a round with c_t = inf (a
    collapsed round of the constrained form) is the zero predictor and is not trained. Path i of round t draws
    from ``fold_in(key, t·P + i)``.

    Args:
        features: Φ (n, p); y: labels (n,); c: c_t per round (``DistillationRounds.c``), each > 0 or inf.
        lr: the step size, one for all rounds or one per round; n_steps: the steps per round; noise: None (GD) or an sgdsde noise model.
        n_paths: independent paths P (each its own chain of rounds); key: an int seed.
    """
    Phi = np.asarray(features, np.float64)
    if Phi.ndim != 2 or Phi.shape[0] < 1 or Phi.shape[1] < 1:
        raise ValueError(f"features must be a non-empty 2-D array (n, p), got shape {Phi.shape}")
    if not np.all(np.isfinite(Phi)):
        raise ValueError("features must be finite")
    n, p = Phi.shape
    y0 = np.asarray(y, np.float64)
    if y0.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match features, got {y0.shape}")
    cs = np.atleast_1d(np.asarray(c, np.float64))
    if cs.ndim != 1 or cs.size < 1 or np.any(np.isnan(cs)) or np.any(cs <= 0):
        raise ValueError(
            f"c must be a non-empty 1-D sequence of values > 0 (inf: a collapsed round), got {c!r}"
        )
    lrs = np.atleast_1d(np.asarray(lr, np.float64))
    if lrs.ndim != 1 or lrs.size not in (1, cs.size):
        raise ValueError(f"lr must be a number or one per round ({cs.size}), got shape {lrs.shape}")
    lrs = np.array([check_positive("lr", v) for v in np.broadcast_to(lrs, cs.shape)])
    n_steps = check_int_range("n_steps", n_steps, 1)
    n_paths = check_int_range("n_paths", n_paths, 1)
    if noise is not None and not isinstance(noise, AbstractGradientNoise):
        raise ValueError(f"noise must be None or an sgdsde noise model, got {type(noise).__name__}")
    if not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "train_self_distillation needs float64: call jax.config.update('jax_enable_x64', True)"
        )
    T = cs.size
    finite = np.isfinite(cs)
    contraction = np.array(
        [gd_contraction(Phi, ct, e, 1) if ok else 0.0 for ct, e, ok in zip(cs, lrs, finite, strict=True)]
    )
    if np.any(contraction >= 1):
        t = int(np.argmax(contraction >= 1))
        dmax = float(np.linalg.eigvalsh(Phi @ Phi.T)[-1])
        raise ValueError(
            f"lr must be < 2n/(d_max + c_t) = {2 * n / (dmax + cs[t]):.4g} for round {t + 1} to converge "
            f"(d_max: the largest eigenvalue of features @ features.T), got {lrs[t]:.4g}"
        )
    root = jax.random.key(check_int_range("key", key, 0))
    model = LinearRegression(p)
    theta0 = np.zeros(p)
    weights = np.zeros((T, n_paths, p))
    preds = np.zeros((T + 1, n_paths, n))
    preds[0] = y0
    for t in range(T):
        if not np.isfinite(cs[t]):
            continue
        method = SGD(noise, optimizer=Momentum(0.0, weight_decay=cs[t] / n))
        for i in range(n_paths):
            res = simulate(
                method,
                Problem(model, Phi, preds[t, i]),
                theta0,
                lr=float(lrs[t]),
                n_steps=n_steps,
                key=jax.random.fold_in(root, t * n_paths + i),
                ensemble=Ensemble(n_paths=1),
                record=Record(n_saved_paths=1),
            )
            assert res.paths is not None
            weights[t, i] = res.paths[-1, 0]
            preds[t + 1, i] = Phi @ weights[t, i]
    contraction = np.array(
        [
            gd_contraction(Phi, ct, e, n_steps) if ok else 0.0
            for ct, e, ok in zip(cs, lrs, finite, strict=True)
        ]
    )
    return TrainedDistillation(
        weights=weights,
        predictions=preds,
        c=cs,
        weight_decay=cs / n,
        lr=lrs,
        n_steps=n_steps,
        noise="GD" if noise is None else type(noise).__name__,
        contraction=contraction,
    )


def label_noise_rounds_msd(features, c, *, lr: float, n_steps: int, sigma: float) -> np.ndarray:
    """$E\\,\\frac1n\\|\\hat y_t - E\\hat y_t\\|^2$ per round for full-batch label-noise SGD (±σ or Gaussian on all n
    labels, ``LabelNoise(sigma)``), exactly: the rounds are a linear recursion, diagonal in Φ's singular basis (DIST-7).

    With Φ = U diag(s) Wᵀ and θ = Wu (θ starts at 0 and stays in span Φᵀ), round t is, per singular direction,
    $u_{k+1} = a u_k + \\frac{\\eta s}{n}(s u^{(t-1)} + \\xi_k)$ with $a = 1 - \\eta(s^2 + c_t)/n$ and Var ξ = σ², so
    $u^{(t)} = g u^{(t-1)} + \\nu_t$, $g = (1 - a^T)s^2/(s^2 + c_t)$,
    $\\operatorname{Var}\\nu_t = \\frac{(\\eta s\\sigma/n)^2(1 - a^{2T})}{1 - a^2}$, and the MSD is $\\frac1n\\sum s^2\\operatorname{Var}u^{(t)}$.
    The mean is GD's: E ŷ_t equals the GD rounds.
    """
    Phi = np.asarray(features, np.float64)
    if Phi.ndim != 2:
        raise ValueError(f"features must be a 2-D array (n, p), got shape {Phi.shape}")
    n = Phi.shape[0]
    cs = np.atleast_1d(np.asarray(c, np.float64))
    if cs.ndim != 1 or np.any(np.isnan(cs)) or np.any(cs <= 0):
        raise ValueError(f"c must be a 1-D sequence of values > 0 (inf: a collapsed round), got {c!r}")
    lr, sigma = check_positive("lr", lr), check_positive("sigma", sigma, allow_zero=True)
    n_steps = check_int_range("n_steps", n_steps, 1)
    s2 = np.linalg.svd(Phi, compute_uv=False) ** 2
    var = np.zeros_like(s2)
    out = np.zeros(cs.size)
    for t, ct in enumerate(cs):
        if not np.isfinite(ct):
            var = np.zeros_like(s2)
            continue
        a = 1 - lr * (s2 + ct) / n
        if np.any(np.abs(a) >= 1):
            raise ValueError(
                f"lr must be < 2n/(d_max + c_t) = {2 * n / (s2.max() + ct):.4g} for round {t + 1}"
            )
        aT = a**n_steps
        g = (1 - aT) * s2 / (s2 + ct)
        var = g**2 * var + (lr * sigma / n) ** 2 * s2 * (1 - aT**2) / (1 - a**2)
        out[t] = float(np.sum(s2 * var)) / n
    return out
