"""First passage of 1-D drift–diffusion under Poissonian resetting: the closed forms a resetting simulator is
checked against (theory/resetting.md; minibatch-noise.md §7, §9.11)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.optimize

from .._validation import check_positive


def _check(v, D, L):
    if isinstance(v, (str, bytes, bool, np.bool_)) or np.iscomplexobj(v) or np.ndim(v) != 0:
        raise ValueError(f"v must be a finite real number, got {v!r}")
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"v must be a finite real number, got {v!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"v must be a finite real number, got {v!r}")
    return v, check_positive("D", D), check_positive("L", L)


def mfpt_with_resetting(v: float, D: float, L: float, r: float = 0.0) -> float:
    """$T(r) = \\big(e^{L(\\sqrt{v^2 + 4Dr} - v)/(2D)} - 1\\big)/r$, $T(0) = L/v$: the mean first-passage time of
    $dX = -v\\,dt + \\sqrt{2D}\\,dW$ from X = L to 0, reset to L at rate r (RESET-1).

    Args:
        v: drift towards the target (any sign; v ≤ 0 without resetting never arrives on average: inf).
        D: diffusion coefficient (> 0): the variance of X grows like 2Dt.
        L: distance to the target (> 0).
        r: resetting rate per unit time (≥ 0).

    Returns math.inf where T(r) exceeds float64's range (e.g. L(√(v² + 4Dr) − v)/(2D) > 709, a very large rate
    against a strong drift), as it does for v ≤ 0 without resetting.
    """
    v, D, L = _check(v, D, L)
    r = check_positive("r", r, allow_zero=True)
    if r == 0.0:
        return L / v if v > 0 else math.inf
    root = math.sqrt(v * v + 4 * D * r)
    # √(v² + 4Dr) − v without cancellation for v > 0 (small r): 4Dr / (√(v² + 4Dr) + v)
    gap = 4 * D * r / (root + v) if v > 0 else root - v
    exponent = L * gap / (2 * D)
    if exponent > 709.78:  # e^x overflows float64 (log(max float) = 709.78): T is beyond any float
        return math.inf
    T = math.expm1(exponent) / r
    return T


def peclet(v: float, D: float, L: float) -> float:
    """$\\mathrm{Pe} = vL/(2D)$: small-rate resetting shortens the mean first passage iff Pe < 1 (RESET-2)."""
    v, D, L = _check(v, D, L)
    return v * L / (2 * D)


def fpt_moments(v: float, D: float, L: float) -> tuple[float, float]:
    """Mean L/v and variance 2DL/v³ of the first-passage time without resetting (inverse Gaussian, v > 0), so
    CV² = 2D/(vL) = 1/Pe (RESET-2)."""
    v, D, L = _check(v, D, L)
    if v <= 0:
        raise ValueError(f"v must be > 0 for a finite mean first-passage time, got {v}")
    return L / v, 2 * D * L / v**3


class OptimalRate(NamedTuple):
    """The resetting rate r* that minimises T(r), T(r*), and T(0) for comparison (r* = 0: no gain)."""

    rate: float
    mfpt: float
    mfpt_without: float


def optimal_resetting_rate(v: float, D: float, L: float) -> OptimalRate:
    """$r^* = \\arg\\min_{r\\ge0} T(r)$ (RESET-3): positive iff Pe < 1; found by bounded minimisation of
    T(r) in the dimensionless rate ρ = rL²/D over [1e-9, 1e3] on a log scale."""
    v, D, L = _check(v, D, L)
    t0 = mfpt_with_resetting(v, D, L, 0.0)
    if v > 0 and peclet(v, D, L) >= 1:
        return OptimalRate(0.0, t0, t0)
    scale = D / L**2

    def objective(log_rho):
        return math.log(mfpt_with_resetting(v, D, L, scale * math.exp(log_rho)))

    res = scipy.optimize.minimize_scalar(
        objective, bounds=(math.log(1e-9), math.log(1e3)), method="bounded", options={"xatol": 1e-12}
    )
    r_star = scale * float(np.exp(res.x))
    return OptimalRate(r_star, mfpt_with_resetting(v, D, L, r_star), t0)


def latent_gradient_bias(problem, theta, corrupted):
    """$\\nabla L = \\frac1n\\sum_{i\\notin W}\\nabla\\ell_i + \\frac1n\\sum_{i\\in W}\\nabla\\ell_i$: the clean part
    $(1-\\tau)\\nabla R_c$ and the latent gradient bias $\\tau\\nabla R_w$ that the corrupted labels W add (Bae,
    Song & Jeong, Eq. 3; RESET-7). Their sum is ∇L(θ). ``corrupted``: a boolean mask over the training set."""
    import jax.numpy as jnp

    from .._noise.per_example import weighted_gradient

    mask = jnp.asarray(corrupted)
    if mask.shape != (problem.n_data,) or mask.dtype != jnp.bool_:
        raise ValueError(
            f"corrupted must be a boolean mask of shape ({problem.n_data},), got {mask.dtype} {mask.shape}"
        )
    w = mask.astype(problem.X.dtype)
    return weighted_gradient(problem, theta, 1 - w), weighted_gradient(problem, theta, w)
