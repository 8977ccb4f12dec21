"""Where the L + λR verdicts measure: θ, and the function β(θ) of a reparametrized linear predictor; and the
coordinates that SGD holds at 0 where θ* is not (stochastic collapse)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from .._models.linear import AbstractLinearPredictor, LinearRegression
from .._problem import Problem

# a coordinate is collapsed when its path mean of |θ_j| is below KAPPA·√λ: a tenth of the size √λ of the
# stationary fluctuations of a coordinate that carries noise (S = λ(2I − ηH)⁻¹ on range H, REG-5)
KAPPA = 0.1


def function_weights(problem: Problem) -> Callable | None:
    """θ ↦ β(θ) when the model is a reparametrized linear predictor $f = \\beta(\\theta)^T x$ (a diagonal
    network: β = v⊙v or u⊙u − v⊙v), else None (for linear regression β = θ: one space)."""
    model = problem.model
    if isinstance(model, AbstractLinearPredictor) and not isinstance(model, LinearRegression):
        return model.weights
    return None


def data_tangent_projector(problem: Problem) -> np.ndarray:
    """$I - X^+X$: the projector onto the tangent space of the zero-loss set {Xβ = y} in β space."""
    X = np.asarray(problem.X, np.float64)
    return np.eye(X.shape[1]) - np.linalg.pinv(X) @ X


@dataclasses.dataclass
class Collapse:
    """Coordinates held at 0 where the prediction is not: $|\\theta^*_j| \\ge 0.1\\sqrt{\\lambda}$ while the
    path mean of $|\\theta_j|$ stays below $0.1\\sqrt{\\lambda}$ at every record of the averaging window
    (κ = 0.1; REG-15). ``since[i]``: the time t of the first record from which coordinate ``indices[i]``
    stays below the threshold to the end of the run."""

    indices: np.ndarray
    theta_star: np.ndarray
    since: np.ndarray
    threshold: float
    n_active: int

    def __len__(self) -> int:
        return len(self.indices)

    def __str__(self) -> str:
        if not len(self.indices):
            return f"none of the {self.n_active} coordinates with |theta*_j| >= {self.threshold:.3g}"
        items = ", ".join(
            f"{j} (theta* = {s:.3g}, since t = {t:.4g})"
            for j, s, t in zip(self.indices, self.theta_star, self.since, strict=True)
        )
        return (
            f"{len(self.indices)} of the {self.n_active} coordinates with |theta*_j| >= {self.threshold:.3g} "
            f"collapsed to 0: {items}"
        )

    def to_dict(self) -> dict:
        return {
            "indices": self.indices.tolist(),
            "theta_star": self.theta_star.tolist(),
            "since": self.since.tolist(),
            "threshold": self.threshold,
            "n_active": self.n_active,
        }


def detect_collapse(abs_mean, times, theta_star, lam: float, window_start: int) -> Collapse:
    """Coordinates collapsed to 0 (REG-15) from the path means of |θ_j| per record.

    Args:
        abs_mean: (records, d) the mean over paths of |θ_j| at each record.
        times: (records,) the records' times t.
        theta_star: (d,) the predicted stationary point.
        lam: λ; the threshold is $0.1\\sqrt{\\lambda}$, κ = 0.1.
        window_start: the first record of the averaging window; a coordinate counts only if it is below the
            threshold at every record from there to the end.
    """
    abs_mean = np.asarray(abs_mean, np.float64)
    times = np.asarray(times, np.float64)
    star = np.asarray(theta_star, np.float64)
    if abs_mean.ndim != 2 or abs_mean.shape != (len(times), len(star)):
        raise ValueError(
            f"abs_mean must have shape (records, d) = ({len(times)}, {len(star)}), got {abs_mean.shape}"
        )
    if not 0 <= window_start < len(times):
        raise ValueError(f"window_start must be a record index in [0, {len(times)}), got {window_start}")
    thr = KAPPA * float(np.sqrt(lam))
    active = np.flatnonzero(np.abs(star) >= thr)
    below = abs_mean < thr
    # length of the trailing run of records below the threshold, per coordinate
    trailing = np.argmin(below[::-1], axis=0)
    trailing = np.where(below.all(axis=0), len(times), trailing)
    first = len(times) - trailing  # first record of that run (len(times): not below at the end)
    idx = np.asarray([j for j in active if first[j] <= window_start], dtype=int)
    return Collapse(idx, star[idx], times[first[idx]], thr, len(active))
