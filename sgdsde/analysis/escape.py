"""Exact mean escape times of 1-D diffusions (theory/three-theories.md, THR-6): the reference that SGD's and
the SDE's escape from a minimum are checked against (Eyring–Kramers is only its small-noise asymptote)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._validation import check_int_range


def mean_exit_time(
    drift: Callable[[np.ndarray], np.ndarray],
    diffusion_sq: Callable[[np.ndarray], np.ndarray],
    x0: float,
    target: float,
    lower: float,
    *,
    n_grid: int = 200_001,
) -> float:
    """$T(x_0) = \\int_{x_0}^{b} s(y)\\int_{a}^{y}\\frac{2}{\\sigma^2(z)s(z)}\\,dz\\,dy$, $s = e^{-\\int 2\\mu/\\sigma^2}$: the
    mean first-passage time of the Itô diffusion dX = μ(X)dt + σ(X)dW from x₀ to b = ``target`` > x₀, reflected
    at a = ``lower`` < x₀ (far below the well, where the density is negligible, this is the free problem).

    Computed on a uniform grid of ``n_grid`` points with the trapezoidal rule and the log-scale function
    (no overflow at small noise); the error is O(h²).
    """
    x0, b, a = float(x0), float(target), float(lower)
    if not (np.isfinite(x0) and np.isfinite(b) and np.isfinite(a)) or not a < x0 < b:
        raise ValueError(f"need finite lower < x0 < target, got lower={lower}, x0={x0}, target={target}")
    n = check_int_range("n_grid", n_grid, 101)
    x = np.linspace(a, b, n)
    mu = np.asarray(drift(x), np.float64)
    s2 = np.asarray(diffusion_sq(x), np.float64)
    if mu.shape != x.shape or s2.shape != x.shape:
        raise ValueError("drift and diffusion_sq must map a grid array to an array of the same shape")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(s2))) or np.any(s2 <= 0):
        raise ValueError("diffusion_sq must be finite and > 0 on [lower, target] (and drift finite)")
    h = x[1] - x[0]
    f = 2 * mu / s2
    log_s = -np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) * h / 2)])  # log s(x), s(a) = 1
    # inner(y) = ∫_a^y 2/(σ² s) dz, kept as exp(log_s(y)) · inner(y) = ∫_a^y 2/σ²(z) e^{log_s(y) − log_s(z)} dz
    g = 2 / s2
    inner_scaled = np.zeros(n)  # e^{log_s(x_i)} ∫_a^{x_i} g e^{−log_s}
    for i in range(1, n):
        decay = np.exp(log_s[i] - log_s[i - 1])
        inner_scaled[i] = inner_scaled[i - 1] * decay + h / 2 * (g[i - 1] * decay + g[i])
    i0 = int(np.searchsorted(x, x0))
    seg = inner_scaled[i0 - 1 :] if i0 > 0 else inner_scaled
    xs = x[i0 - 1 :] if i0 > 0 else x
    # ∫_{x0}^{b} s(y)·inner(y) dy = ∫ inner_scaled(y) dy; the first cell is cut at x0 by linear interpolation
    total = np.trapezoid(seg[1:], xs[1:]) if len(xs) > 2 else 0.0
    w = (xs[1] - x0) / h
    first = inner_scaled[i0 - 1] * (1 - w) + inner_scaled[i0] * w if i0 > 0 else inner_scaled[0]
    return float(total + (xs[1] - x0) * (first + seg[1]) / 2)
