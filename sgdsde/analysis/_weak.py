"""Weak errors between two ensembles (or an ensemble and exact moments), and fitted convergence orders."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.stats

from .._results import EnsembleResult


@dataclasses.dataclass
class WeakError:
    """$e_r = E g(x_{k_r}) - E g(X_{t_{k_r}})$ per record r, with its Monte Carlo standard error.

    ``error[name]`` and ``stderr[name]`` have shape (R, *obs_shape); ``max_error(name)`` is the weak error
    $\\max_r |e_r|$ of the Li–Tai–E definition (max over records and components).
    """

    times: np.ndarray
    error: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]

    def max_error(self, name: str, skip_first: bool = True) -> tuple[float, float]:
        """($\\max_r |e_r|$, standard error at the maximising record and component)."""
        e = np.abs(self.error[name])
        se = self.stderr[name]
        if skip_first and e.shape[0] > 1:
            e, se = e[1:], se[1:]
        i = int(np.argmax(e))
        return float(e.reshape(-1)[i]), float(se.reshape(-1)[i])

    def final(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(error, standard error) at the last record."""
        return self.error[name][-1], self.stderr[name][-1]


def _stats(x, names):
    if isinstance(x, EnsembleResult):
        return x.times, {n: x.mean[n] for n in names}, {n: x.stderr(n) for n in names}
    if isinstance(x, tuple) and len(x) == 2:  # (times, {name: exact values})
        times, vals = x
        vals = {n: np.asarray(vals[n], np.float64) for n in names}
        return np.asarray(times, np.float64), vals, {n: np.zeros_like(v) for n, v in vals.items()}
    raise ValueError("weak_error takes EnsembleResults or (times, {name: exact values}) pairs")


def _check_survivors(reference, approximation, allow: bool) -> None:
    """Refuse to compare survivor-only means when the two ensembles lost different paths to divergence: the
    difference would mix the dynamics with a selection effect."""
    lost = [x.diverged if isinstance(x, EnsembleResult) else 0 for x in (reference, approximation)]
    if not allow and lost[0] != lost[1]:
        raise ValueError(
            f"the two ensembles lost different numbers of paths to divergence ({lost[0]} vs {lost[1]}): their "
            "means are over different survivors, so their difference is not a weak error; pass "
            "allow_different_survivors=True to compare them anyway"
        )


def weak_error(
    reference, approximation, observables=None, *, rtol: float = 1e-9, allow_different_survivors: bool = False
) -> WeakError:
    """$E g(\\text{reference}) - E g(\\text{approximation})$ at each common record, standard errors added in
    quadrature (independent ensembles; an upper bound for positively correlated ones).

    Args:
        reference: usually the SGD EnsembleResult, or (times, {name: exact values}) from sgdsde.analysis.
        approximation: usually the SDE EnsembleResult (or an exact pair).
        observables: names to compare (default: those both have).
        rtol: relative tolerance for the two time grids to coincide.
        allow_different_survivors: compare ensembles that lost different numbers of paths to divergence
            (their means are over different survivors); refused by default.
    """
    names_ref = set(reference.mean) if isinstance(reference, EnsembleResult) else set(reference[1])
    names_app = (
        set(approximation.mean) if isinstance(approximation, EnsembleResult) else set(approximation[1])
    )
    common = sorted(names_ref & names_app)
    names = common if observables is None else list(observables)
    missing = [n for n in names if n not in names_ref or n not in names_app]
    if missing or not names:
        raise ValueError(f"observables {missing or names} are not recorded by both; common ones: {common}")
    _check_survivors(reference, approximation, allow_different_survivors)
    t1, m1, s1 = _stats(reference, names)
    t2, m2, s2 = _stats(approximation, names)
    if t1.shape != t2.shape or not np.allclose(
        t1, t2, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(t1))))
    ):
        raise ValueError(f"the two results are not on the same time grid ({t1.shape} vs {t2.shape} records)")
    err = {n: np.asarray(m1[n], np.float64) - np.asarray(m2[n], np.float64) for n in names}
    se = {n: np.sqrt(np.asarray(s1[n]) ** 2 + np.asarray(s2[n]) ** 2) for n in names}
    return WeakError(times=t1, error=err, stderr=se)


@dataclasses.dataclass
class OrderFit:
    """log|e| = log C + p log h fitted by (weighted) least squares; [lower, upper] is the ``confidence``
    band of p."""

    order: float
    constant: float
    lower: float
    upper: float
    confidence: float

    def __str__(self) -> str:
        return f"order {self.order:.3f} [{self.lower:.3f}, {self.upper:.3f}] ({100 * self.confidence:.0f}%)"


def fit_order(step_sizes, errors, stderr=None, *, confidence: float = 0.95) -> OrderFit:
    """Slope of log|error| against log(step size), with a confidence band.

    Without ``stderr`` the band comes from the fit's residuals (Student t, n − 2 dof; exact errors).
    With Monte Carlo standard errors, points are weighted by $(|e|/\\mathrm{se})^2$ (delta method for
    log|e|) and the band is the larger of the residual-based and the propagated-error band.
    """
    h = np.asarray(step_sizes, np.float64)
    e = np.abs(np.asarray(errors, np.float64))
    if h.ndim != 1 or h.shape != e.shape or h.size < 3:
        raise ValueError("step_sizes and errors must be 1-D of the same length >= 3")
    if np.any(h <= 0) or np.any(e <= 0) or not np.all(np.isfinite(e)) or not np.all(np.isfinite(h)):
        raise ValueError("step_sizes and errors must be finite and > 0 (an error of 0 has no logarithm)")
    if np.unique(h).size < 2:
        raise ValueError(f"step_sizes must hold at least 2 distinct values to fit a slope, got {h.tolist()}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x, y = np.log(h), np.log(e)
    if stderr is None:
        w = np.ones_like(x)
    else:
        se = np.asarray(stderr, np.float64)
        if se.shape != e.shape or np.any(se < 0):
            raise ValueError("stderr must be >= 0 and shaped like errors")
        sig = np.maximum(se / e, 1e-12)
        w = 1 / sig**2
    X = np.stack([np.ones_like(x), x], axis=1)
    WX = X * w[:, None]
    cov_unscaled = np.linalg.inv(X.T @ WX)
    beta = cov_unscaled @ (WX.T @ y)
    resid = y - X @ beta
    dof = x.size - 2
    s2 = float(np.sum(w * resid**2) / dof) if dof > 0 else 0.0
    tq = scipy.stats.t.ppf(0.5 + confidence / 2, dof) if dof > 0 else np.inf
    half = tq * np.sqrt(s2 * cov_unscaled[1, 1])
    if stderr is not None:
        half = max(half, scipy.stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(cov_unscaled[1, 1]))
    return OrderFit(
        order=float(beta[1]),
        constant=float(np.exp(beta[0])),
        lower=float(beta[1] - half),
        upper=float(beta[1] + half),
        confidence=confidence,
    )
