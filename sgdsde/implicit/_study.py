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
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._method import AbstractMethod
from .._noise import AbstractGradientNoise, require_sde_side
from .._options import Ensemble, Output, Record
from .._problem import Problem
from .._sde.simulate import SDE, simulate_sde
from .._sde.svag import simulate_svag
from .._sgd import SGD, simulate_sgd
from .._sweep import sweep
from .._validation import check_int_range, check_positive
from ._common import float64_problem, render_table
from ._flow import project_to_zero_loss
from ._prediction import Prediction, predict
from ._spaces import Collapse, data_tangent_projector, detect_collapse, function_weights
from ._verdict import _window

REGULARIZERS = ("R_quarter_trace", "R_trace_log")
N_BOOT = 2000
RELAX_EFOLDS = 3.0
MAX_AUTO_STEPS = 50_000_000


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
        return (
            f"{self.prefactor:.3g}·λ^{self.exponent:.3f} [{self.low:.3f}, {self.high:.3f}] "
            f"({int(self.used.sum())} of {len(self.used)} λ above 3 noise floors)"
        )


@dataclasses.dataclass
class MethodStudy:
    """One simulator's distances, per regularizer and λ, in θ: ``total[R]``/``along[R]`` (L,), their bootstrap
    standard errors, the noise floor √Σ_j SE_j², the fits; the same in β for a reparametrized linear
    predictor (``total_beta`` …, fits "β total"/"β along"); the coordinates collapsed to 0 (``collapse``);
    and ``closer[i]`` (which R θ̄ is nearer at λ_i: a
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
    drift: np.ndarray  # ‖θ̄(second half of the window) − θ̄(first half)‖ per λ: still moving?
    drift_se: np.ndarray
    observable: dict[str, np.ndarray] | None = None  # |E g − g(θ*_R)| per λ (an ``observable`` g given)
    observable_se: dict[str, np.ndarray] | None = None
    observable_mean: np.ndarray | None = None  # the time average of E g per λ, and its bootstrap SE
    observable_mean_se: np.ndarray | None = None
    # β space (a reparametrized linear predictor, β = model.weights(θ)): the time average of E[β(θ)] against
    # β(θ*), in total and along {Xβ = y}; the same keys, SEs and fits ("β total", "β along") as in θ
    total_beta: dict[str, np.ndarray] | None = None
    total_beta_se: dict[str, np.ndarray] | None = None
    along_beta: dict[str, np.ndarray] | None = None
    along_beta_se: dict[str, np.ndarray] | None = None
    floor_beta: np.ndarray | None = None
    collapse: list[Collapse] | None = None  # per λ: coordinates held at 0 where θ*(λ) is not (REG-15)


@dataclasses.dataclass
class ConvergenceStudy:
    """The study: λ values, the predictions θ*(λ) and, per simulator, distances, fits and the R comparison;
    ``n_steps`` and ``horizon`` say how long the runs were and why (REG-13)."""

    lams: np.ndarray
    sigmas: np.ndarray
    lr: float
    window: float
    predictions: list[Prediction]
    methods: dict[str, MethodStudy]
    observable_name: str | None = None
    n_steps: int | None = None
    horizon: str = ""
    relax_time: float = float("nan")  # 1/μ, μ the slowest rate of ∇²(L + λR) at θ*(λ) over the λ

    def table(self) -> str:
        parts = []
        if self.horizon:
            parts.append(f"horizon: {self.horizon}")
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
                f"{m.method} (time average over the last {self.window:g} of each run, ± bootstrap SE), in theta"
            )
            parts.append(render_table(header, rows))
            if m.total_beta is not None:
                tb_se, ab, ab_se, fb = m.total_beta_se, m.along_beta, m.along_beta_se, m.floor_beta
                if tb_se is None or ab is None or ab_se is None or fb is None:
                    raise AssertionError("_beta_distances sets the beta fields together")
                header = ["lambda"]
                for reg in REGULARIZERS:
                    header += [f"|avg beta - beta*| {reg}", f"along Xb=y {reg}"]
                header += ["noise floor"]
                rows = []
                for i, lam in enumerate(self.lams):
                    row = [f"{lam:.4g}"]
                    for reg in REGULARIZERS:
                        row.append(_fmt(m.total_beta[reg][i], tb_se[reg][i]))
                        row.append(_fmt(ab[reg][i], ab_se[reg][i]))
                    rows.append(row + [f"{fb[i]:.2g}"])
                parts.append(
                    f"{m.method} in beta = the model's weights(theta) (time average of E[beta], the mean "
                    "predictor, against beta(theta*))"
                )
                parts.append(render_table(header, rows))
            if m.observable is not None:
                o_se, o_mean, o_mean_se = m.observable_se, m.observable_mean, m.observable_mean_se
                if o_se is None or o_mean is None or o_mean_se is None:
                    raise AssertionError("_observable_distances sets the observable fields together")
                g = self.observable_name
                means = ", ".join(_fmt(v, s) for v, s in zip(o_mean, o_mean_se, strict=True))
                parts.append(f"  time avg of E[{g}]: {means}")
                for reg in REGULARIZERS:
                    cells = ", ".join(_fmt(v, s) for v, s in zip(m.observable[reg], o_se[reg], strict=True))
                    parts.append(f"  |time avg of E[{g}] - {g}(theta*)| for {reg}: {cells}")
            for (reg, kind), fit in m.fits.items():
                space = "beta" if kind.startswith("β") else "theta"
                parts.append(f"  {m.method} {kind.removeprefix('β '):5s} distance in {space} to {reg}: {fit}")
            if m.collapse is not None:
                for lam, c in zip(self.lams, m.collapse, strict=True):
                    if c is not None:
                        parts.append(f"  {m.method} collapse at lambda = {lam:.4g}: {c}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        def fits(m):
            return {
                f"{kind}:{reg}": {
                    "exponent": f.exponent,
                    "band": [f.low, f.high],
                    "prefactor": f.prefactor,
                    "used": f.used.tolist(),
                }
                for (reg, kind), f in m.fits.items()
            }

        def arrays(d):
            return None if d is None else {k: v.tolist() for k, v in d.items()}

        return {
            "lams": self.lams.tolist(),
            "sigmas": self.sigmas.tolist(),
            "lr": self.lr,
            "n_steps": self.n_steps,
            "horizon": self.horizon,
            "relax_time": self.relax_time,
            "methods": {
                name: {
                    "fits": fits(m),
                    "total": arrays(m.total),
                    "along": arrays(m.along),
                    "total_beta": arrays(m.total_beta),
                    "along_beta": arrays(m.along_beta),
                    "collapse": None if m.collapse is None else [c.to_dict() for c in m.collapse],
                    "closer": m.closer,
                    "drift": m.drift.tolist(),
                }
                for name, m in self.methods.items()
            },
        }


def _fmt(x: float, se: float) -> str:
    return "-" if not np.isfinite(x) else f"{x:.4g} ± {se:.2g}"


def _time_averages(result, window: float) -> np.ndarray:
    """Per-path time averages of θ over the last ``window`` of the records (N, d), a path that diverged
    dropped."""
    win = _window_paths(result, window)
    ok = np.all(np.isfinite(win.mean(axis=0)), axis=1)
    return win.mean(axis=0)[ok]


def _time_averages_halves(result, window: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``_time_averages``, and those over the window's first and second halves (None: a one-record window)."""
    win = _window_paths(result, window)
    ok = np.all(np.isfinite(win.mean(axis=0)), axis=1)
    h = max(1, len(win) // 2)
    return win.mean(axis=0)[ok], win[:h].mean(axis=0)[ok], win[h:].mean(axis=0)[ok] if len(win) > 1 else None


def _window_paths(result, window: float) -> np.ndarray:
    """The saved paths (records, N, d) in the averaging window."""
    if result.paths is None or result.paths.shape[1] != result.n_paths:
        raise ValueError("convergence_study needs every path saved (record.n_saved_paths = n_paths)")
    start, _ = _window(result, (window, None))
    return result.paths[start:]


def _beta_averages(result, window: float, weights) -> np.ndarray:
    """Per-path time averages of β(θ) over the window (N, p), diverged paths dropped: the mean predictor."""
    win = _window_paths(result, window)
    beta = np.asarray(jax.jit(jax.vmap(jax.vmap(weights)))(jnp.asarray(win, jnp.float64)))
    avg = beta.mean(axis=0)
    return avg[np.all(np.isfinite(avg), axis=1)]


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


def _horizon(
    n_steps: int | None, predictions: list, lr: float, relax_efolds: float
) -> tuple[int, str, float]:
    """(n_steps, the sentence that says how it was chosen, the relaxation time 1/μ): ``relax_efolds`` times
    1/μ of L + λR at θ*(λ) when n_steps is None (REG-13), else the given one with its ratio to 1/μ."""
    relax_time = _relaxation_time(predictions)
    if n_steps is None:
        if not np.isfinite(relax_time):
            raise ValueError(
                "n_steps=None: no θ*(λ) is a strict minimum of L + λR (no positive slowest rate), so the "
                f"theory gives no time scale; give n_steps ({[p.failures for p in predictions]})"
            )
        n_steps = max(2, int(np.ceil(relax_efolds * relax_time / lr)))
        if n_steps > MAX_AUTO_STEPS:
            raise ValueError(
                f"n_steps=None: {relax_efolds:g} relaxation times 1/mu = {relax_time:.4g} of L + lambda R need "
                f"{n_steps} steps at lr = {lr:g}, more than {MAX_AUTO_STEPS}; give n_steps (or larger sigmas: "
                "mu grows with lambda)"
            )
        horizon = (
            f"n_steps = {n_steps} (t = {lr * n_steps:.4g}) = {relax_efolds:g} relaxation times 1/mu = "
            f"{relax_time:.4g}, mu = the smallest eigenvalue of the Hessian of L + lambda R at theta*(lambda) "
            "over the lambda (chosen by the study)"
        )
    else:
        horizon = f"n_steps = {n_steps} (t = {lr * n_steps:.4g}, given)" + (
            f" = {lr * n_steps / relax_time:.3g} relaxation times 1/mu = {relax_time:.4g}"
            if np.isfinite(relax_time)
            else ""
        )
    return n_steps, horizon, relax_time


def convergence_study(
    problem: Problem,
    noise: AbstractGradientNoise,
    theta0,
    *,
    lr: float,
    sigmas: Sequence[float],
    n_steps: int | None = None,
    key,
    n_paths: int = 100,
    record_every: int | None = None,
    methods: Mapping[str, AbstractMethod | Callable] | None = None,
    window: float = 0.5,
    theta_init=None,
    observable: tuple[str, Callable] | None = None,
    dtype=None,
    progress: bool = False,
    relax_efolds: float = RELAX_EFOLDS,
    **options,
) -> ConvergenceStudy:
    """Run SGD and the SDE to stationarity at each σ (λ = ησ²/B), solve θ*(λ) for both R, and fit how the
    distance of the late time average to θ*(λ) scales with λ.

    Args:
        problem, noise, theta0: the problem, a noise model with a ``sigma`` field and a λ (LabelNoise,
            FullGradientLabelNoise), and the start.
        lr: the constant step size η.
        sigmas: two or more label-noise σ (one λ each), swept as one program per simulator.
        n_steps, key: the length of every run and the key they share. ``n_steps=None`` (needs ``theta_init``)
            chooses it from the theory's time scale: ``relax_efolds`` (default 3) relaxation times 1/μ, μ the
            smallest eigenvalue of ∇²(L + λR) at θ*(λ) over the λ (the slowest rate of gradient flow on
            L + λR near θ*, in t = ηk; REG-13); the study reports it.
        n_paths, record_every: paths per λ (all saved: the bootstrap resamples them) and the record interval
            (default n_steps/40).
        methods: name → method (default ``{"SGD": sgdsde.SGD(), "SDE": sgdsde.SDE()}``): each method's noise
            is set to ``noise`` at every σ, its other fields kept (e.g. ``SDE(stepping=Fixed(substeps=4))``).
            A simulator (``simulate_sgd``, or a ``functools.partial`` of one) is still accepted; ``options`` go
            to every run.
        window: the late fraction of each run that is averaged.
        theta_init: where the θ*(λ) solves start: an array, a function of the point's noise model, or None
            (the first simulator's late mean at each λ).
        observable: (name, g) with g(problem, θ) scalar: also compare the time average of E[g] with g(θ*(λ))
            (the mean of θ carries a Jensen gap O(Var θ); E[g] for g = uv on the u·v toy is the quantity with a
            closed form, REG-9, REG-13).
        dtype: the runs' dtype (default the problem's); the solves are float64.

    Distances are measured in θ and, for a reparametrized linear predictor (a diagonal network), also in
    β = model.weights(θ) (the time average of E[β], against β(θ*)); coordinates held at 0 where θ*(λ) is not
    are reported per λ (REG-15).
    """
    problem64 = float64_problem(problem)
    lr = check_positive("lr", lr)
    sigma_values, window, relax_efolds, n_steps, methods = _check_study_arguments(
        noise, sigmas, window, relax_efolds, n_steps, theta_init, methods
    )
    noises = [dataclasses.replace(noise, sigma=float(s)) for s in sigma_values]
    lams = np.asarray(
        [require_sde_side(n, "convergence_study").effective_lambda(lr, problem) for n in noises]
    )
    predictions = []
    if theta_init is not None:
        for n in noises:
            start = theta_init(n) if callable(theta_init) else theta_init
            predictions.append(predict(problem64, n, lr, start))
    n_steps, horizon, relax_time = _horizon(n_steps, predictions, lr, relax_efolds)
    every = (
        max(1, n_steps // 40) if record_every is None else check_int_range("record_every", record_every, 1)
    )
    kw: dict[str, Any] = dict(  # keyword arguments of every run
        n_steps=n_steps,
        key=key,
        ensemble=Ensemble(n_paths=check_int_range("n_paths", n_paths, 2), dtype=dtype),
        record=Record(every=every, observables=["theta"], n_saved_paths=n_paths),
        output=Output(progress=progress),
        **options,
    )
    runs = {
        name: _sweep_sigma(sim, problem, noise, theta0, sigma_values, lr, kw) for name, sim in methods.items()
    }
    first = next(iter(runs.values()))
    if theta_init is None:
        for i, n in enumerate(noises):
            predictions.append(predict(problem64, n, lr, _time_averages(first[i], window).mean(axis=0)))
        relax_time = _relaxation_time(predictions)
        if np.isfinite(relax_time):
            horizon += f" = {lr * n_steps / relax_time:.3g} relaxation times 1/mu = {relax_time:.4g}"
    stars = {
        reg: [p.points[reg].theta if reg in p.points else None for p in predictions] for reg in REGULARIZERS
    }
    projectors = {
        reg: [None if t is None else _tangent_projector(problem64, t) for t in ts]
        for reg, ts in stars.items()
    }
    weights = function_weights(problem64)
    primary = [p.point().theta if p.points else None for p in predictions]
    rng = np.random.default_rng(0)
    studies = {}
    for name, results in runs.items():
        studies[name] = _study_one(name, results, stars, projectors, lams, window, rng)
        if weights is not None:
            _beta_distances(studies[name], problem64, results, stars, weights, lams, window, rng)
        studies[name].collapse = [
            None if star is None else _collapse(r, star, lam, window)
            for r, star, lam in zip(results, primary, lams, strict=True)
        ]
        if observable is not None:
            _observable_distances(studies[name], problem64, results, stars, observable[1], window, rng)
    name = None if observable is None else observable[0]
    return ConvergenceStudy(
        lams, sigma_values, lr, window, predictions, studies, name, n_steps, horizon, float(relax_time)
    )


def _check_study_arguments(noise, sigmas, window, relax_efolds, n_steps, theta_init, methods):
    """``convergence_study``'s arguments checked (ValueError naming the argument): the σ values, the window,
    the e-folds, n_steps and the methods (default SGD and SDE)."""
    if isinstance(sigmas, (str, bytes)) or np.ndim(sigmas) != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a list of at least two noise levels, got {sigmas!r}")
    sigma_values = np.asarray([check_positive("sigmas", s) for s in sigmas], float)
    if not dataclasses.is_dataclass(noise) or isinstance(noise, type) or not hasattr(noise, "sigma"):
        raise ValueError(
            f"noise must have a label-noise sigma (LabelNoise, FullGradientLabelNoise), got {noise!r}"
        )
    window = check_positive("window", window)
    if window > 1:
        raise ValueError(f"window must be in (0, 1], got {window}")
    relax_efolds = check_positive("relax_efolds", relax_efolds)
    if n_steps is not None:
        n_steps = check_int_range("n_steps", n_steps, 2)
    elif theta_init is None:
        raise ValueError(
            "n_steps=None chooses the horizon from θ*(λ), which needs theta_init (an array or a function of "
            "the point's noise model); give theta_init or n_steps"
        )
    if methods is not None and (not isinstance(methods, Mapping) or not methods):
        raise ValueError(
            f"methods must be a non-empty dict name -> method (e.g. {{'SGD': sgdsde.SGD()}}), got {methods!r}"
        )
    methods = {"SGD": SGD(), "SDE": SDE()} if methods is None else dict(methods)
    for name, m in methods.items():
        base = m.func if isinstance(m, functools.partial) else m
        if not isinstance(base, AbstractMethod) and base not in (simulate_sgd, simulate_sde, simulate_svag):
            raise ValueError(
                f"methods[{name!r}] must be a method (sgdsde.SGD(), SDE(...), SVAG(l=...)) or a simulator, got "
                f"{type(m).__name__}"
            )
    return sigma_values, window, relax_efolds, n_steps, methods


def _sweep_sigma(sim, problem, noise, theta0, sigma_values, lr, kw) -> list:
    """One method's (or simulator's) runs at each σ, swept as one program."""
    grid = {"sigma": list(sigma_values)}
    if isinstance(sim, AbstractMethod):  # the study's noise in the method, its other fields as given
        method = eqx.tree_at(lambda m: m.noise, sim, noise, is_leaf=lambda x: x is None)
        return sweep(method, problem, theta0, grid=grid, lr=lr, **kw).results
    base = sim.func if isinstance(sim, functools.partial) else sim
    extra = dict(sim.keywords) if isinstance(sim, functools.partial) else {}
    return sweep(base, problem, noise, theta0, grid=grid, lr=lr, **kw, **extra).results


def _relaxation_time(predictions: list[Prediction]) -> float:
    """1/μ with μ the smallest Hessian eigenvalue of L + λR at the primary θ*(λ), over the λ (nan if none is
    a strict minimum)."""
    rates = [
        float(np.min(p.point().hessian_eigenvalues))
        for p in predictions
        if p.points and p.point().kind == "minimum"
    ]
    rates = [r for r in rates if r > 0]
    return 1.0 / min(rates) if rates else float("nan")


def _collapse(result, theta_star, lam: float, window: float) -> Collapse:
    """REG-15 on one run: the path means of |θ_j| at every record (every path saved)."""
    if result.paths is None or result.paths.shape[1] != result.n_paths:
        raise ValueError("convergence_study needs every path saved (record.n_saved_paths = n_paths)")
    paths = np.asarray(result.paths, np.float64)
    ok = np.all(np.isfinite(paths), axis=(0, 2))
    start, _ = _window(result, (window, None))
    return detect_collapse(np.abs(paths[:, ok]).mean(axis=1), result.times, theta_star, lam, start)


def _beta_distances(study: MethodStudy, problem, results, stars, weights, lams, window, rng) -> None:
    """The θ-space study repeated in β: per-path time averages of β(θ_t) against β(θ*), along {Xβ = y}."""
    avgs = [_beta_averages(r, window, weights) for r in results]
    bstars = {
        reg: [None if t is None else np.asarray(weights(jnp.asarray(t))) for t in ts]
        for reg, ts in stars.items()
    }
    P = data_tangent_projector(problem)
    projectors = {reg: [P] * len(ts) for reg, ts in stars.items()}
    d = _distances(avgs, bstars, projectors, len(lams), rng)
    study.total_beta, study.total_beta_se = d["total"], d["total_se"]
    study.along_beta, study.along_beta_se = d["along"], d["along_se"]
    study.floor_beta = d["floor"]
    for reg in REGULARIZERS:
        study.fits[(reg, "β total")] = fit_power_law(lams, d["total"][reg], d["tboot"][reg], d["floor"])
        study.fits[(reg, "β along")] = fit_power_law(lams, d["along"][reg], d["aboot"][reg], d["floor"])


def _distances(avgs, stars, projectors, L: int, rng) -> dict:
    """‖ā − a*‖ and ‖P(ā − a*)‖ per regularizer and λ from per-path time averages ``avgs`` (one (N_i, p) array
    per λ), with bootstrap over paths (one resample of path indices shared by every λ) and the noise floor."""
    n = min(len(a) for a in avgs)
    idx = rng.integers(0, n, size=(N_BOOT, n))
    means = [a[:n].mean(axis=0) for a in avgs]
    boots = [a[:n][idx].mean(axis=1) for a in avgs]
    floor = np.asarray([np.sqrt(np.sum(a[:n].var(axis=0, ddof=1) / n)) for a in avgs])
    # name -> {regularizer: per-λ array}, and "floor": the per-λ floor
    out: dict[str, Any] = {k: {} for k in ("total", "total_se", "along", "along_se", "tboot", "aboot")}
    for reg in REGULARIZERS:
        t, a = np.full(L, np.nan), np.full(L, np.nan)
        tboot, aboot = np.full((N_BOOT, L), np.nan), np.full((N_BOOT, L), np.nan)
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
        out["total"][reg], out["along"][reg], out["tboot"][reg], out["aboot"][reg] = t, a, tboot, aboot
        out["total_se"][reg], out["along_se"][reg] = np.nanstd(tboot, axis=0), np.nanstd(aboot, axis=0)
    out["floor"] = floor
    return out


def _observable_distances(study: MethodStudy, problem, results, stars, g, window, rng) -> None:
    """|time average of E[g] − g(θ*_R)| per λ with bootstrap SEs over paths."""
    gv = jax.jit(jax.vmap(jax.vmap(lambda th: g(problem, th))))
    study.observable, study.observable_se = {}, {}
    per_lam = []
    for r in results:
        start, _ = _window(r, (window, None))
        vals = np.asarray(gv(jnp.asarray(r.paths[start:], jnp.float64))).mean(axis=0)
        per_lam.append(vals[np.isfinite(vals)])
    study.observable_mean = np.asarray([v.mean() for v in per_lam])
    study.observable_mean_se = np.asarray([v.std(ddof=1) / np.sqrt(len(v)) for v in per_lam])
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
    parts = [_time_averages_halves(r, window) for r in results]
    avgs = [p[0] for p in parts]
    n = min(len(a) for a in avgs)
    drift, drift_se = np.full(L, np.nan), np.full(L, np.nan)
    d = _distances(avgs, stars, projectors, L, rng)
    total, total_se, along, along_se = d["total"], d["total_se"], d["along"], d["along_se"]
    tb, ab, floor = d["tboot"], d["aboot"], d["floor"]
    idx = rng.integers(0, n, size=(N_BOOT, n))
    for i, (_, first, second) in enumerate(parts):
        if second is not None:
            delta = second[:n] - first[:n]
            drift[i] = np.linalg.norm(delta.mean(axis=0))
            drift_se[i] = np.std(np.linalg.norm(delta[idx].mean(axis=1), axis=1))
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
