"""Exact mean escape times of 1-D diffusions (theory/three-theories.md, THR-6): the reference that SGD's and
the SDE's escape from a minimum are checked against (Eyring–Kramers is only its small-noise asymptote)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._noise import require_sde_side
from .._validation import check_int_range, check_positive


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
    mean first-passage time of the Itô diffusion dX = μ(X)dt + σ(X)dW from x₀ to b = ``target``, reflected
    at a = ``lower`` on the other side of x₀ (far beyond the well, where the density is negligible, this is the
    free problem). With target < x₀ < lower the problem is mirrored (x → −x).

    Computed on a uniform grid of ``n_grid`` points with the trapezoidal rule and the log-scale function
    (no overflow at small noise); the error is O(h²).
    """
    x0, b, a = float(x0), float(target), float(lower)
    if not (np.isfinite(x0) and np.isfinite(b) and np.isfinite(a)) or not (a < x0 < b or b < x0 < a):
        raise ValueError(
            f"need finite lower < x0 < target (or target < x0 < lower), got lower={lower}, x0={x0}, target={target}"
        )
    if b < x0:  # mirror: Y = −X has drift −μ(−y) and the same σ²
        return mean_exit_time(
            lambda y: -np.asarray(drift(-y)), lambda y: diffusion_sq(-y), -x0, -b, -a, n_grid=n_grid
        )
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
    # inner(y) = ∫_a^y 2/(σ² s) dz, kept as inner_scaled(y) = e^{log_s(y)} inner(y) = Σ_j c_j e^{log_s(y) − log_s(x_j)}
    # (trapezoid weights c_j > 0), summed in log space: no overflow at small noise
    g = 2 / s2
    c = np.full(n, h) * g
    c[0] = c[0] / 2
    log_terms = np.log(c) - log_s
    log_cum = np.logaddexp.accumulate(log_terms)
    # the trapezoid rule counts the right end of each cell with weight h/2: remove the other half of point i
    inner_scaled = np.exp(log_s + log_cum) - h / 2 * g
    inner_scaled[0] = 0.0
    i0 = int(np.searchsorted(x, x0))
    seg = inner_scaled[i0 - 1 :] if i0 > 0 else inner_scaled
    xs = x[i0 - 1 :] if i0 > 0 else x
    # ∫_{x0}^{b} s(y)·inner(y) dy = ∫ inner_scaled(y) dy; the first cell is cut at x0 by linear interpolation
    total = np.trapezoid(seg[1:], xs[1:]) if len(xs) > 2 else 0.0
    w = (xs[1] - x0) / h
    first = inner_scaled[i0 - 1] * (1 - w) + inner_scaled[i0] * w if i0 > 0 else inner_scaled[0]
    return float(total + (xs[1] - x0) * (first + seg[1]) / 2)


def eyring_kramers_time(
    drift: Callable[[np.ndarray], np.ndarray],
    diffusion_sq: Callable[[np.ndarray], np.ndarray],
    minimum: float,
    saddle: float,
    *,
    n_grid: int = 20_001,
) -> float:
    """$\\tau \\approx \\frac{2\\pi}{\\sqrt{U''(a)|U''(b)|}}\\sqrt{\\frac{D(b)}{D(a)}}\\exp\\int_a^b\\frac{U'}{D}$, U′ = −μ,
    D = σ²/2: the Eyring–Kramers escape time from the minimum a over the saddle b with state-dependent noise
    (the small-noise limit of ``mean_exit_time`` to a point past b; theory/three-theories.md, THR-6, THR-9).
    Isotropic D: (2π/√(U″_a|U″_b|)) e^{ΔU/D}. The curvatures are central differences of the drift."""
    a, b = float(minimum), float(saddle)
    if not (np.isfinite(a) and np.isfinite(b)) or a == b:
        raise ValueError(f"minimum and saddle must be distinct finite points, got {minimum}, {saddle}")
    n = check_int_range("n_grid", n_grid, 101)
    h = 1e-5 * max(1.0, abs(b - a))

    def curvature(x):
        return -float((np.asarray(drift(np.array([x + h]))) - np.asarray(drift(np.array([x - h]))))[0]) / (
            2 * h
        )

    ua, ub = curvature(a), curvature(b)
    if not (ua > 0 and ub < 0):
        raise ValueError(
            f"minimum must be a minimum and saddle a maximum of U (U'' = {ua:.4g} at {a}, {ub:.4g} at {b})"
        )
    y = np.linspace(a, b, n)
    D = np.asarray(diffusion_sq(y), np.float64) / 2
    if np.any(D <= 0) or not np.all(np.isfinite(D)):
        raise ValueError("diffusion_sq must be finite and > 0 between the minimum and the saddle")
    exponent = np.trapezoid(-np.asarray(drift(y), np.float64) / D, y)
    return float(2 * np.pi / np.sqrt(ua * -ub) * np.sqrt(D[-1] / D[0]) * np.exp(exponent))


def sme_coefficients(problem, noise, lr: float):
    """(μ, σ²) of the order-1 SME of a one-parameter problem,
    $d\\theta = -L'(\\theta)dt + \\sqrt{\\eta\\Sigma(\\theta)}\\,dW$,
    as numpy functions of a grid (Σ from the noise model itself: the same
    covariance simulate_sde integrates), for ``mean_exit_time`` and ``eyring_kramers_time``."""
    if problem.n_params != 1:
        raise ValueError(
            f"sme_coefficients needs a one-parameter problem (d = 1), got d = {problem.n_params}"
        )
    lr = check_positive("lr", lr)
    require_sde_side(noise, "sme_coefficients")
    p64 = problem.astype(jnp.float64)
    noise.check(p64)
    grad = jax.vmap(lambda t: p64.grad(t[None])[0])
    cov = jax.vmap(lambda t: noise.covariance(p64, t[None])[0, 0])

    def drift(x):
        return -np.asarray(grad(jnp.asarray(np.atleast_1d(x), jnp.float64)))

    def diffusion_sq(x):
        return lr * np.asarray(cov(jnp.asarray(np.atleast_1d(x), jnp.float64)))

    return drift, diffusion_sq
