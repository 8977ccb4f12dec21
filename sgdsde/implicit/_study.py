"""λ → 0: how fast SGD's and the SDE's late-time means approach the stationary points θ*(λ) of L + λR.

For label-noise strengths λ = ησ²/B over a decade or two (a sweep over σ at fixed η, one compiled program per
simulator), the late-window time average θ̄(λ) of each run is compared with θ*(λ) for Damian's tr-log R and
its small-η limit ¼tr∇²L: the distance ‖θ̄ − θ*‖, and its part along the zero-loss set Γ (the tangent
projection at the point of Γ nearest θ*). A power law d ≈ Cλ^p is fitted to each, with a 95% bootstrap band
from resampling paths (the same resample at every λ: the runs share their key), and the two R are compared at
every λ (theory/implicit-regularization.md, REG-13).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._problem import Problem
from .._validation import check_int_range, check_positive
from ._common import float64_problem, render_table
from ._flow import project_to_zero_loss
from ._prediction import Prediction, predict
from ._verdict import _window

REGULARIZERS = ("R_quarter_trace", "R_trace_log")
N_BOOT = 2000


@dataclasses.dataclass
class PowerFit:
    """d ≈ C λ^p by least squares on log d against log λ, with a 95% bootstrap band for p; ``used`` says which
    λ entered (those whose distance stands above 3× its noise floor)."""

    exponent: float
    low: float
    high: float
    prefactor: float
    used: np.ndarray

    def __str__(self) -> str:
        if not np.isfinite(self.exponent):
            return "no fit (fewer than 2 points above the noise floor)"
        return f"{self.prefactor:.3g}·λ^{self.exponent:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclasses.dataclass
class MethodStudy:
    """One simulator's distances, per regularizer and λ: ``total[R]``/``along[R]`` (L,), their bootstrap
    standard errors, the noise floor √Σ_j SE_j², the fits, and ``closer[i]`` (which R θ̄ is nearer at λ_i: a
    regularizer's name; "inconclusive" when the 95% band of d(¼tr) − d(tr-log) contains 0; "farther than
    apart" when θ̄ is farther from both points than they are from each other, so that its own O(λ) offset
    decides, REG-7)."""

    method: str
    total: dict[str, np.ndarray]
    total_se: dict[str, np.ndarray]
    along: dict[str, np.ndarray]
    along_se: dict[str, np.ndarray]
    floor: np.ndarray
    fits: dict[tuple[str, str], PowerFit]
    closer: list[str]
    difference: np.ndarray  # d(¼tr) − d(tr-log) per λ
    difference_band: np.ndarray  # (L, 2) 95% band
    n_paths: np.ndarray
    drift: np.ndarray | None = None  # ‖θ̄(second half of the window) − θ̄(first half)‖ per λ: still moving?
    drift_se: np.ndarray | None = None
    observable: dict[str, np.ndarray] | None = None  # |E g − g(θ*_R)| per λ (an ``observable`` g given)
    observable_se: dict[str, np.ndarray] | None = None


@dataclasses.dataclass
class ConvergenceStudy:
    """The study: λ values, the predictions θ*(λ) and, per simulator, distances, fits and the R comparison."""

    lams: np.ndarray
    sigmas: np.ndarray
    lr: float
    window: float
    predictions: list[Prediction]
    methods: dict[str, MethodStudy]
    observable_name: str | None = None

    def table(self) -> str:
        parts = []
        for m in self.methods.values():
            header = ["lambda"]
            for reg in REGULARIZERS:
                header += [f"|avg - theta*| {reg}", f"along Γ {reg}"]
            header += ["noise floor", "window drift", "closer R"]
            rows = []
            for i, lam in enumerate(self.lams):
                row = [f"{lam:.4g}"]
                for reg in REGULARIZERS:
                    row.append(_fmt(m.total[reg][i], m.total_se[reg][i]))
                    row.append(_fmt(m.along[reg][i], m.along_se[reg][i]))
                row += [f"{m.floor[i]:.2g}", _fmt(m.drift[i], m.drift_se[i]), m.closer[i]]
                rows.append(row)
            parts.append(
                f"{m.method} (time average over the last {self.window:g} of each run, ± bootstrap SE)"
            )
            parts.append(render_table(header, rows))
            if m.observable is not None:
                g = self.observable_name
                for reg in REGULARIZERS:
                    cells = ", ".join(
                        _fmt(v, s) for v, s in zip(m.observable[reg], m.observable_se[reg], strict=True)
                    )
                    parts.append(f"  |time avg of E[{g}] - {g}(theta*)| for {reg}: {cells}")
            for (reg, kind), fit in m.fits.items():
                parts.append(f"  {m.method} {kind:5s} distance to {reg}: {fit}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        return {
            "lams": self.lams.tolist(),
            "sigmas": self.sigmas.tolist(),
            "lr": self.lr,
            "methods": {
                name: {
                    "fits": {
                        f"{kind}:{reg}": {
                            "exponent": f.exponent,
                            "band": [f.low, f.high],
                            "prefactor": f.prefactor,
                        }
                        for (reg, kind), f in m.fits.items()
                    },
                    "total": {k: v.tolist() for k, v in m.total.items()},
                    "along": {k: v.tolist() for k, v in m.along.items()},
                    "closer": m.closer,
                    "drift": m.drift.tolist(),
                }
                for name, m in self.methods.items()
            },
        }


def _fmt(x: float, se: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4g} ± {se:.2g}"


def _time_averages(result, window: float, halves: bool = False):
    """Per-path time averages of θ over the last ``window`` of the records (N, d), a path that diverged
    dropped; ``halves``: also those over the window's first and second halves."""
    if result.paths is None or result.paths.shape[1] != result.n_paths:
        raise ValueError("convergence_study needs every path saved (record.n_saved_paths = n_paths)")
    start, _ = _window(result, (window, None))
    win = result.paths[start:]
    ok = np.all(np.isfinite(win.mean(axis=0)), axis=1)
    if not halves:
        return win.mean(axis=0)[ok]
    h = max(1, len(win) // 2)
    return win.mean(axis=0)[ok], win[:h].mean(axis=0)[ok], win[h:].mean(axis=0)[ok] if len(win) > 1 else None


def _tangent_projector(problem: Problem, theta_star) -> np.ndarray | None:
    """I − J⁺J at the point of Γ nearest θ* (J the output Jacobian there), or None if Γ is not found."""
    on = project_to_zero_loss(problem, theta_star)
    if on is None:
        return None
    J = np.asarray(jax.jacfwd(problem.outputs)(jnp.asarray(on)))
    return np.eye(problem.n_params) - np.linalg.pinv(J) @ J


def fit_power_law(lams, distances, boot: np.ndarray | None = None, floor=None) -> PowerFit:
    """Fit d = Cλ^p (least squares in log–log); ``boot`` (n_boot, L) bootstrap distances give the 95% band of
    p; λ whose distance is within 3 noise floors (``floor``) of zero are left out."""
    lams, distances = np.asarray(lams, float), np.asarray(distances, float)
    used = np.isfinite(distances) & (distances > 0)
    if floor is not None:
        used &= distances > 3 * np.asarray(floor)
    if used.sum() < 2:
        return PowerFit(np.nan, np.nan, np.nan, np.nan, used)
    x = np.log(lams[used])
    p, c = np.polyfit(x, np.log(distances[used]), 1)
    low = high = np.nan
    if boot is not None:
        b = np.log(np.maximum(boot[:, used], 1e-300))
        xc = x - x.mean()
        slopes = (b - b.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
        low, high = np.percentile(slopes, [2.5, 97.5])
    return PowerFit(float(p), float(low), float(high), float(np.exp(c)), used)


def convergence_study(
    problem: Problem,
    noise,
    theta0,
    *,
    lr: float,
    sigmas: Sequence[float],
    n_steps: int,
    key,
    n_paths: int = 100,
    record_every: int | None = None,
    methods: Mapping[str, Callable] | None = None,
    window: float = 0.5,
    theta_init=None,
    observable: tuple[str, Callable] | None = None,
    dtype=None,
    progress: bool = False,
    **options,
) -> ConvergenceStudy:
    """Run SGD and the SDE to stationarity at each σ (λ = ησ²/B), solve θ*(λ) for both R, and fit how the
    distance of the late time average to θ*(λ) scales with λ.

    Args:
        problem, noise, theta0: the problem, a noise model with a ``sigma`` field and a λ (LabelNoise,
            FullGradientLabelNoise), and the start.
        lr: the constant step size η.
        sigmas: two or more label-noise σ (one λ each), swept as one program per simulator.
        n_steps, key: the length of every run (long enough for the smallest λ) and the key they share.
        n_paths, record_every: paths per λ (all saved: the bootstrap resamples them) and the record interval
            (default n_steps/40).
        methods: name → simulator (default SGD and the SDE: ``{"SGD": simulate_sgd, "SDE": simulate_sde}``);
            ``options`` go to every simulator (e.g. ``stepping=Fixed(substeps=k)`` for the SDE only through a
            ``functools.partial`` in ``methods``).
        window: the late fraction of each run that is averaged.
        theta_init: where the θ*(λ) solves start: an array, a function of the point's noise model, or None
            (the first simulator's late mean at each λ).
        observable: (name, g) with g(problem, θ) scalar: also compare the time average of E[g] with g(θ*(λ))
            (the mean of θ carries a Jensen gap O(Var θ); E[g] for g = uv on the u·v toy is the quantity with a
            closed form, REG-9, REG-13).
        dtype: the runs' dtype (default the problem's); the solves are float64.
    """
    import functools

    from .._options import Ensemble, Output, Record
    from .._sde.simulate import simulate_sde
    from .._sgd import simulate_sgd
    from .._sweep import sweep

    problem64 = float64_problem(problem)
    lr = check_positive("lr", lr)
    if isinstance(sigmas, (str, bytes)) or np.ndim(sigmas) != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a list of at least two noise levels, got {sigmas!r}")
    sigmas = np.asarray([check_positive("sigmas", s) for s in sigmas], float)
    if not dataclasses.is_dataclass(noise) or not hasattr(noise, "sigma"):
        raise ValueError(
            f"noise must have a label-noise sigma (LabelNoise, FullGradientLabelNoise), got {noise!r}"
        )
    window = check_positive("window", window)
    if window > 1:
        raise ValueError(f"window must be in (0, 1], got {window}")
    n_steps = check_int_range("n_steps", n_steps, 2)
    every = (
        max(1, n_steps // 40) if record_every is None else check_int_range("record_every", record_every, 1)
    )
    methods = {"SGD": simulate_sgd, "SDE": simulate_sde} if methods is None else dict(methods)
    noises = [dataclasses.replace(noise, sigma=float(s)) for s in sigmas]
    lams = np.asarray([n.effective_lambda(lr, problem) for n in noises])
    kw = dict(
        n_steps=n_steps,
        key=key,
        ensemble=Ensemble(n_paths=check_int_range("n_paths", n_paths, 2), dtype=dtype),
        record=Record(every=every, observables=["theta"], n_saved_paths=n_paths),
        output=Output(progress=progress),
        **options,
    )
    runs = {}
    for name, sim in methods.items():
        base = sim.func if isinstance(sim, functools.partial) else sim
        extra = dict(sim.keywords) if isinstance(sim, functools.partial) else {}
        runs[name] = sweep(
            base, problem, noise, theta0, grid={"sigma": list(sigmas)}, lr=lr, **kw, **extra
        ).results
    first = next(iter(runs.values()))
    predictions = []
    for i, n in enumerate(noises):
        if theta_init is None:
            start = _time_averages(first[i], window).mean(axis=0)
        else:
            start = theta_init(n) if callable(theta_init) else theta_init
        predictions.append(predict(problem64, n, lr, start))
    stars = {
        reg: [p.points[reg].theta if reg in p.points else None for p in predictions] for reg in REGULARIZERS
    }
    projectors = {
        reg: [None if t is None else _tangent_projector(problem64, t) for t in ts]
        for reg, ts in stars.items()
    }
    rng = np.random.default_rng(0)
    studies = {}
    for name, results in runs.items():
        studies[name] = _study_one(name, results, stars, projectors, lams, window, rng)
        if observable is not None:
            _observable_distances(studies[name], problem64, results, stars, observable[1], window, rng)
    name = None if observable is None else observable[0]
    return ConvergenceStudy(lams, sigmas, lr, window, predictions, studies, name)


def _observable_distances(study: MethodStudy, problem, results, stars, g, window, rng) -> None:
    """|time average of E[g] − g(θ*_R)| per λ with bootstrap SEs over paths."""
    gv = jax.jit(jax.vmap(jax.vmap(lambda th: g(problem, th))))
    study.observable, study.observable_se = {}, {}
    per_lam = []
    for r in results:
        start, _ = _window(r, (window, None))
        vals = np.asarray(gv(jnp.asarray(r.paths[start:], jnp.float64))).mean(axis=0)
        per_lam.append(vals[np.isfinite(vals)])
    for reg in REGULARIZERS:
        d, se = [], []
        for vals, star in zip(per_lam, stars[reg], strict=True):
            if star is None:
                d.append(np.nan)
                se.append(np.nan)
                continue
            target = float(g(problem, jnp.asarray(star)))
            boot = vals[rng.integers(0, len(vals), size=(N_BOOT, len(vals)))].mean(axis=1)
            d.append(abs(vals.mean() - target))
            se.append(float(np.std(boot)))
        study.observable[reg], study.observable_se[reg] = np.asarray(d), np.asarray(se)


def _study_one(name, results, stars, projectors, lams, window, rng) -> MethodStudy:
    L = len(lams)
    parts = [_time_averages(r, window, halves=True) for r in results]
    avgs = [p[0] for p in parts]
    n = min(len(a) for a in avgs)
    drift, drift_se = np.full(L, np.nan), np.full(L, np.nan)
    idx = rng.integers(0, n, size=(N_BOOT, n))  # one resample of path indices for every λ
    means = [a[:n].mean(axis=0) for a in avgs]
    boots = [a[:n][idx].mean(axis=1) for a in avgs]  # (N_BOOT, d) per λ
    floor = np.asarray([np.sqrt(np.sum(a[:n].var(axis=0, ddof=1) / n)) for a in avgs])
    for i, (_, first, second) in enumerate(parts):
        if second is not None:
            delta = second[:n] - first[:n]
            drift[i] = np.linalg.norm(delta.mean(axis=0))
            drift_se[i] = np.std(np.linalg.norm(delta[idx].mean(axis=1), axis=1))
    total, total_se, along, along_se, tb, ab = {}, {}, {}, {}, {}, {}
    for reg in REGULARIZERS:
        t = np.full(L, np.nan)
        a = np.full(L, np.nan)
        tboot = np.full((N_BOOT, L), np.nan)
        aboot = np.full((N_BOOT, L), np.nan)
        for i in range(L):
            star = stars[reg][i]
            if star is None:
                continue
            t[i] = np.linalg.norm(means[i] - star)
            tboot[:, i] = np.linalg.norm(boots[i] - star, axis=1)
            P = projectors[reg][i]
            if P is not None:
                a[i] = np.linalg.norm(P @ (means[i] - star))
                aboot[:, i] = np.linalg.norm((boots[i] - star) @ P.T, axis=1)
        total[reg], along[reg], tb[reg], ab[reg] = t, a, tboot, aboot
        total_se[reg], along_se[reg] = np.nanstd(tboot, axis=0), np.nanstd(aboot, axis=0)
    fits = {}
    for reg in REGULARIZERS:
        fits[(reg, "total")] = fit_power_law(lams, total[reg], tb[reg], floor)
        fits[(reg, "along")] = fit_power_law(lams, along[reg], ab[reg], floor)
    diff = total["R_quarter_trace"] - total["R_trace_log"]
    dboot = tb["R_quarter_trace"] - tb["R_trace_log"]
    band = np.stack([np.nanpercentile(dboot, 2.5, axis=0), np.nanpercentile(dboot, 97.5, axis=0)], axis=1)
    closer = []
    for i in range(L):
        q, tl = stars["R_quarter_trace"][i], stars["R_trace_log"][i]
        apart = np.inf if q is None or tl is None else float(np.linalg.norm(q - tl))
        if not np.isfinite(diff[i]):
            closer.append("-")
        elif min(total["R_quarter_trace"][i], total["R_trace_log"][i]) > apart:
            # θ̄ is farther from both points than they are from each other: its O(λ) offset (REG-7), not the
            # choice of R, decides which is nearer
            closer.append("farther than apart")
        elif band[i, 0] > 0:
            closer.append("R_trace_log")
        elif band[i, 1] < 0:
            closer.append("R_quarter_trace")
        else:
            closer.append("inconclusive")
    return MethodStudy(
        name,
        total,
        total_se,
        along,
        along_se,
        floor,
        fits,
        closer,
        diff,
        band,
        np.asarray([len(a) for a in avgs]),
        drift,
        drift_se,
    )
