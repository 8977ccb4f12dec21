"""Did a run converge to the predicted stationary point of L + λR? Distances with standard errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from .._losses import require_additive_label_noise
from .._problem import Problem
from .._regularizers.base import matrix_free
from .._results import EnsembleResult, describe
from .._validation import check_positive
from ._common import float64_problem, fmt, render_table
from ._flow import STEP_FRACTIONS, project_to_zero_loss
from ._prediction import ABS_THETA_KEY, BETA_KEY, DOMAIN_KEY, Prediction
from ._spaces import Collapse, detect_collapse, function_weights

KNOWN = ("theta", "loss", "R_trace_log", "R_quarter_trace", DOMAIN_KEY, BETA_KEY, ABS_THETA_KEY)


@dataclasses.dataclass
class Distance:
    """‖θ̄ − θ*‖ and its noise floor $\\sqrt{\\sum_j \\mathrm{SE}_j^2}$ (the distance a perfect match would show)."""

    value: float
    floor: float

    def __str__(self) -> str:
        return fmt(self.value, self.floor)


@dataclasses.dataclass
class MethodVerdict:
    """One run's statistics against the prediction, and its verdict."""

    method: str
    n_paths: int
    diverged: int
    window: tuple[float, float]
    late_mean: np.ndarray | None
    late_se: np.ndarray | None
    time_avg: np.ndarray | None
    time_avg_se: np.ndarray | None
    se_kind: str
    distance_late: dict[str, Distance]
    distance_avg: dict[str, Distance]
    distance_on_manifold: dict[str, Distance]
    drift: Distance | None
    scalars: dict[str, tuple[float, float]]
    along: dict[str, np.ndarray]
    times: np.ndarray
    verdict: str
    statistic: str
    better_regularizer: str
    better_statistic: str
    # β = model.weights(θ) of a reparametrized linear predictor (observable "beta" recorded): the time average
    # of E[β] against β(θ*), reported beside the θ verdict (REG-15)
    distance_beta: dict[str, Distance] = dataclasses.field(default_factory=dict)
    collapse: Collapse | None = None  # coordinates held at 0 where θ* is not (REG-15)


@dataclasses.dataclass
class ConvergenceReport:
    """Verdicts of several runs (SGD, SDE, …) against one Prediction; ``table()`` prints them side by side."""

    prediction: Prediction
    verdicts: list[MethodVerdict]
    k: float
    tol: float
    tol_is_default: bool = True

    def __getitem__(self, method: str) -> MethodVerdict:
        for v in self.verdicts:
            if v.method == method:
                return v
        raise KeyError(method)

    @property
    def tested(self) -> bool:
        """Whether any run was compared with the prediction (not every run diverged or lacks θ)."""
        return any(v.time_avg is not None for v in self.verdicts)

    def table(self) -> str:
        pred = self.prediction
        primary = pred.primary if pred.points else None
        extra = sorted({k for v in self.verdicts for k in v.scalars if k not in ("loss",) + KNOWN})
        header = ["method", "N", "L", "R_trace_log", "R_quarter_trace", *extra]
        header += [
            f"|avg - theta*| in theta ({primary})",
            "on zero-loss set",
            "late drift",
            "verdict",
            "closer R",
        ]
        rows = []
        for name, p in pred.points.items():
            row = [f"prediction ({name})", "-", fmt(p.loss)]
            row += [
                fmt(p.reg_value) if name == "R_trace_log" else "",
                fmt(p.reg_value) if name != "R_trace_log" else "",
            ]
            rows.append(row + [""] * len(extra) + ["0", "0", "-", p.kind, ""])
        for v in self.verdicts:
            sc = lambda key, v=v: (
                "n/a"
                if key not in v.scalars
                else fmt(*v.scalars[key])
                if v.n_paths > 1
                else fmt(v.scalars[key][0])
            )
            dist = str(v.distance_avg[primary]) if primary in v.distance_avg else "n/a"
            on_gamma = str(v.distance_on_manifold[primary]) if primary in v.distance_on_manifold else "n/a"
            row = [v.method, str(v.n_paths), sc("loss"), sc("R_trace_log"), sc("R_quarter_trace")]
            row += [sc(k) for k in extra]
            row += [dist, on_gamma, str(v.drift) if v.drift else "n/a", v.verdict, v.better_regularizer]
            rows.append(row)
        lines = [
            f"lambda = {pred.lam:.4g} (lr = {pred.lr:g}); values are late-window means ± standard errors; "
            f"converged means |avg - theta*| <= tol + k*floor, measured in theta (the parameters), with "
            f"tol = {self.tol:.3g}"
            + (" = sqrt(lambda)*max(1, |theta*|)" if self.tol_is_default else " (given)")
            + f", k = {self.k:g}",
            render_table(header, rows),
        ]
        for name, why in pred.failures.items():
            lines.append(f"NO PREDICTION for {name}: {why}")
        if not self.tested:
            lines.append(
                "PREDICTION UNTESTED: no run gave a time average of theta (diverged or not recorded); the "
                "points above are solves of L + lambda R, not a statement about these runs"
            )
        single = [v.method for v in self.verdicts if v.n_paths == 1]
        if single:
            lines.append(f"{', '.join(single)}: 1 path, no standard error (the ± columns are not errors)")
        for v in self.verdicts:
            lines.append(f"{v.method}: {v.statistic}; {v.better_statistic}")
            if primary in v.distance_beta:
                lines.append(
                    f"{v.method}: in beta = weights(theta), |time avg of E[beta] - beta(theta*({primary}))| = "
                    f"{v.distance_beta[primary]} (± noise floor; reported, no verdict in beta)"
                )
            if v.collapse is not None:
                lines.append(f"{v.method}: collapse: {v.collapse}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        """JSON-ready summary (arrays as lists)."""

        def conv(x):
            if isinstance(x, np.ndarray):
                return x.tolist()
            if isinstance(x, dict):
                return {k: conv(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [conv(v) for v in x]
            if dataclasses.is_dataclass(x) and not isinstance(x, type):
                return conv(dataclasses.asdict(x))
            if isinstance(x, (np.floating, np.integer)):
                return x.item()
            return x

        pred = {
            "lam": self.prediction.lam,
            "lr": self.prediction.lr,
            "noise": self.prediction.noise,
            "points": {k: conv(p.to_dict()) for k, p in self.prediction.points.items()},
            "failures": self.prediction.failures,
        }
        return {
            "prediction": pred,
            "k": self.k,
            "tol": self.tol,
            "measured_in": "theta",
            "prediction_tested": self.tested,
            "verdicts": [conv(v) for v in self.verdicts],
        }


def check_convergence(
    problem: Problem,
    results: EnsembleResult | Sequence[EnsembleResult] | Mapping[str, EnsembleResult],
    prediction: Prediction,
    *,
    window: float | None = None,
    t_range: tuple[float, float] | None = None,
    k: float = 3.0,
    tol: float | None = None,
) -> ConvergenceReport:
    """Compare each run's late-time mean and time average of θ with the predicted stationary point(s).

    The verdict is measured in θ (the parameters). For a reparametrized linear predictor whose runs record
    "beta" (``regularizer_observables(lr, problem=problem)``), the distance of the time average of E[β] to
    β(θ*) is reported beside it, and coordinates held at 0 where θ* is not are listed (from "abs_theta", or
    from the paths when all are saved; REG-15).

    A run converged iff $\\|\\bar\\theta - \\theta^*\\| \\le \\mathrm{tol} + k\\,\\sqrt{\\sum_j \\mathrm{SE}_j^2}$
    for the time average θ̄ over the last ``window`` of records (its SE from per-path time averages when
    every path was saved, else the conservative bound mean-of-SEs, valid under any correlation in time).

    Args:
        problem: the problem the runs solved.
        results: EnsembleResults recording the observable "theta" (``regularizer_observables(lr)`` gives θ,
            L and both R); a dict names them, else their ``method`` does.
        prediction: from ``predict``.
        window: fraction of the run (last records) to average over, in (0, 1]; default 0.5.
        t_range: (t0, t1) instead of ``window``: average over the records with t0 ≤ t ≤ t1 (e.g. one phase
            of a step-decay schedule, ``Phase.t_range``).
        k: standard errors allowed.
        tol: the theory's slack on the location; default √λ·max(1, ‖θ*‖), Damian et al.'s γ = Õ(√λ) (the
            mean of θ is offset from θ* by O(λ) normal to the zero-loss set with a problem-dependent
            constant, REG-7, so a λ-sized tol can reject runs that sit still at the right place).

    Returns:
        ConvergenceReport (theory/implicit-regularization.md, REG-7).
    """
    problem = float64_problem(problem)
    if not isinstance(prediction, Prediction):
        raise ValueError(f"prediction must be a Prediction (from predict), got {type(prediction).__name__}")
    if window is not None and t_range is not None:
        raise ValueError("give at most one of window and t_range")
    if t_range is None:
        window = check_positive("window", 0.5 if window is None else window)
        if window > 1:
            raise ValueError(f"window must be in (0, 1], got {window}")
    else:
        if np.shape(t_range) != (2,) or not (np.all(np.isfinite(t_range)) and t_range[0] <= t_range[1]):
            raise ValueError(f"t_range must be (t0, t1) with finite t0 <= t1, got {t_range!r}")
        t_range = (float(t_range[0]), float(t_range[1]))
    k = check_positive("k", k)
    if isinstance(results, EnsembleResult):
        items = [(results.method, results)]
    elif isinstance(results, Mapping):
        items = list(results.items())
    elif isinstance(results, Sequence) and not isinstance(results, str):
        items = [(getattr(r, "method", str(i)), r) for i, r in enumerate(results)]
    else:
        raise ValueError(
            f"results must be an EnsembleResult, a list or a dict of them, got {type(results).__name__}"
        )
    if not items:
        raise ValueError("results is empty: give at least one EnsembleResult")
    for name, r in items:
        if not isinstance(r, EnsembleResult):
            raise ValueError(f"results[{name!r}] must be an EnsembleResult, got {type(r).__name__}")
        _check_same_problem(problem, name, r)
    if not prediction.points:
        raise ValueError(f"the prediction has no stationary point to compare with: {prediction.failures}")
    theta_star = prediction.point().theta
    tol_default = tol is None
    tol_value: float = (
        np.sqrt(prediction.lam) * max(1.0, float(np.linalg.norm(theta_star)))
        if tol is None
        else check_positive("tol", tol, allow_zero=True)
    )
    verdicts = [_verdict(problem, name, r, prediction, (window, t_range), k, tol_value) for name, r in items]
    return ConvergenceReport(
        prediction=prediction, verdicts=verdicts, k=k, tol=tol_value, tol_is_default=tol_default
    )


def _distance(m, se, target) -> Distance:
    return Distance(float(np.linalg.norm(m - target)), float(np.sqrt(np.sum(se * se))))


def _check_same_problem(problem, name, r: EnsembleResult) -> None:
    """Refuse a result that records θ of another dimension, or whose saved configuration names another model
    or data size (results saved before the configuration held them pass on θ's shape alone)."""
    if "theta" in r.mean and np.shape(r.mean["theta"])[-1] != problem.n_params:
        raise ValueError(
            f"results[{name!r}] records theta of dimension {np.shape(r.mean['theta'])[-1]}, but the problem "
            f"has d = {problem.n_params}: these results come from another problem"
        )
    cfg = r.config or {}
    if "n_data" in cfg and int(cfg["n_data"]) != problem.n_data:
        raise ValueError(
            f"results[{name!r}] ran on n = {cfg['n_data']} examples, the problem has {problem.n_data}: "
            "these results come from another problem"
        )
    if "model" in cfg and cfg["model"] not in (describe(problem.model), repr(problem.model)):
        raise ValueError(f"results[{name!r}] ran on model {cfg['model']}, not {problem.model!r}")


def _window(r: EnsembleResult, window) -> tuple[int, int]:
    """Record indices [start, stop) of the averaging window: the last fraction, or the records in t_range."""
    fraction, t_range = window
    n_rec = len(r.steps)
    if t_range is None:
        return min(n_rec - 1, int(np.floor((n_rec - 1) * (1 - fraction)))), n_rec
    inside = np.flatnonzero((r.times >= t_range[0] - 1e-12) & (r.times <= t_range[1] + 1e-12))
    if len(inside) == 0:
        raise ValueError(
            f"t_range {t_range} holds no record of {r.method!r} (records at t in [{r.times[0]:.4g}, "
            f"{r.times[-1]:.4g}])"
        )
    return int(inside[0]), int(inside[-1]) + 1


def _scalar_summaries(r: EnsembleResult, sl: slice) -> tuple[dict, dict]:
    """Each scalar observable's (time average over the window, its SE) and its whole mean curve."""
    scalars, along = {}, {}
    for key in r.observables:
        if np.ndim(r.mean[key][0]) == 0:
            se = r.stderr(key)
            along[key] = r.mean[key]
            # conservative SE of a time average: the mean of per-record SEs (bounds any correlation)
            scalars[key] = (float(np.mean(r.mean[key][sl])), float(np.mean(se[sl])))
    if DOMAIN_KEY in scalars and scalars[DOMAIN_KEY][0] < 1 and "R_trace_log" in scalars:
        scalars["R_trace_log"] = (np.nan, np.nan)  # undefined on some paths: not a number to show
    return scalars, along


def _theta_distances(problem, r: EnsembleResult, prediction: Prediction, start: int, last: int) -> dict:
    """θ's late mean and window average with their SEs, and their distances to each predicted point (in θ,
    and along the zero-loss set), and the drift over the window: MethodVerdict's fields."""
    sl = slice(start, last + 1)
    mean = r.mean["theta"]
    se = r.stderr("theta")
    late_mean, late_se = mean[last], se[last]
    time_avg = np.mean(mean[sl], axis=0)
    if r.paths is not None and r.paths.shape[1] == r.n_paths and r.n_paths > 1:
        per_path = np.mean(r.paths[sl], axis=0)
        avg_se, se_kind = np.std(per_path, axis=0, ddof=1) / np.sqrt(r.n_paths), "per-path time averages"
    else:
        avg_se, se_kind = np.mean(se[sl], axis=0), "bound: mean of per-record SEs"
    d_late = {n: _distance(late_mean, late_se, p.theta) for n, p in prediction.points.items()}
    d_avg = {n: _distance(time_avg, avg_se, p.theta) for n, p in prediction.points.items()}
    # the location along Γ is what the theory fixes at leading order (REG-7, REG-8); the floor is kept
    # conservative (the projection's Jacobian P_T only shrinks the noise)
    d_gamma = {}
    project = project_matrix_free if matrix_free(problem) else project_to_zero_loss
    avg_on = project(problem, time_avg)
    for n, p in prediction.points.items():
        star_on = project(problem, p.theta)
        if avg_on is not None and star_on is not None:
            d_gamma[n] = Distance(float(np.linalg.norm(avg_on - star_on)), d_avg[n].floor)
    # a still-moving run shows a drift well above its floor even when its average happens to be close
    drift = _distance(mean[last] - mean[start], np.sqrt(se[last] ** 2 + se[start] ** 2), 0.0)
    return dict(
        late_mean=late_mean,
        late_se=late_se,
        time_avg=time_avg,
        time_avg_se=avg_se,
        se_kind=se_kind,
        distance_late=d_late,
        distance_avg=d_avg,
        distance_on_manifold=d_gamma,
        drift=drift,
    )


def _verdict(problem, name, r: EnsembleResult, prediction: Prediction, window, k, tol) -> MethodVerdict:
    start, stop = _window(r, window)
    sl = slice(start, stop)
    last = stop - 1
    scalars, along = _scalar_summaries(r, sl)
    fields: dict[str, Any] = dict(  # MethodVerdict's fields, filled in below
        method=name,
        n_paths=r.n_paths,
        diverged=r.diverged,
        window=(float(r.times[start]), float(r.times[last])),
        late_mean=None,
        late_se=None,
        time_avg=None,
        time_avg_se=None,
        se_kind="",
        distance_late={},
        distance_avg={},
        distance_on_manifold={},
        drift=None,
        scalars=scalars,
        along=along,
        times=r.times,
        better_regularizer="n/a",
        better_statistic="",
    )
    message = r.divergence_message()  # None iff no path diverged
    if message is not None:
        return MethodVerdict(**fields, verdict="DIVERGED", statistic=message)
    if "theta" not in r.mean:
        return MethodVerdict(
            **fields,
            verdict="no theta recorded",
            statistic="record the observable 'theta' (regularizer_observables(lr)) to get a verdict",
        )
    th = _theta_distances(problem, r, prediction, start, last)
    primary = prediction.primary
    d_beta, collapse = _beta_and_collapse(problem, r, prediction, sl)
    d = th["distance_avg"][primary]
    bound = tol + k * d.floor
    ok = d.value <= bound
    verdict = "converged" if ok else "NOT converged"
    statistic = (
        f"in theta, |time avg - theta*({primary})| = {d.value:.4g} {'<=' if ok else '>'} tol + k*floor = "
        f"{tol:.3g} + {k:g}*{d.floor:.2g}; window t in [{r.times[start]:.4g}, {r.times[last]:.4g}], "
        f"SE from {th['se_kind']}; drift over the window {th['drift']}"
    )
    if ok:
        better, better_stat = _compare_regularizers(th["time_avg"], th["time_avg_se"], prediction, k)
    else:
        better, better_stat = "n/a", "no R comparison for a run that did not converge"
    fields.update(
        th, better_regularizer=better, better_statistic=better_stat, distance_beta=d_beta, collapse=collapse
    )
    if collapse is not None and len(collapse):
        statistic += f"; {len(collapse)} coordinates collapsed to 0 where theta* is not (REG-15)"
    statistic += _relaxation_note(prediction, r, window, last, ok)
    return MethodVerdict(**fields, verdict=verdict, statistic=statistic)


def _relaxation_note(prediction: Prediction, r: EnsembleResult, window, last: int, ok: bool) -> str:
    """How many relaxation times 1/μ of L + λR at θ* (μ its smallest Hessian eigenvalue, REG-13) the run had
    before the window's end: from the run's start, or from the phase's start with ``t_range``. Fewer than 3
    cannot settle at θ*, whatever the noise: NOT converged then means "not yet there"."""
    point = prediction.point()
    mu = float(np.min(point.hessian_eigenvalues)) if point.kind == "minimum" else 0.0
    if not mu > 0:
        return ""
    t_range = window[1]
    t0 = float(t_range[0]) if t_range is not None else float(r.times[0])
    n_relax = (float(r.times[last]) - t0) * mu
    note = (
        f"; the run had t = {float(r.times[last]) - t0:.4g} = {n_relax:.3g} relaxation times 1/mu = {1 / mu:.4g} "
        f"of L + lambda R at theta* ({'since the phase began' if t_range is not None else 'since its start'})"
    )
    if not ok and n_relax < 3:
        note += ": too short to settle at theta* (NOT converged here means not yet there, not elsewhere)"
    return note


def _beta_and_collapse(problem, r: EnsembleResult, prediction: Prediction, sl: slice):
    """β-space distances (the "beta" observable of a reparametrized linear predictor) and the coordinates
    collapsed to 0 (from "abs_theta", else from the paths when every path is saved), REG-15."""
    weights = function_weights(problem)
    d_beta = {}
    if weights is not None and BETA_KEY in r.mean:
        bm, bse = r.mean[BETA_KEY], r.stderr(BETA_KEY)
        # conservative SE of a time average: the mean of per-record SEs (bounds any correlation)
        b_avg, b_se = np.mean(bm[sl], axis=0), np.mean(bse[sl], axis=0)
        for n, p in prediction.points.items():
            d_beta[n] = _distance(b_avg, b_se, np.asarray(weights(p.theta)))
    if ABS_THETA_KEY in r.mean:
        abs_mean = r.mean[ABS_THETA_KEY]
    elif r.paths is not None and r.paths.shape[1] == r.n_paths:
        abs_mean = np.nanmean(np.abs(r.paths), axis=1)
    else:
        return d_beta, None
    star = prediction.point().theta
    return d_beta, detect_collapse(abs_mean, r.times, star, prediction.lam, sl.start)


def _compare_regularizers(m, se, prediction: Prediction, k) -> tuple[str, str]:
    """Which stationary point is closer: the signed offset of θ̄ from their bisecting hyperplane.

    $s = \\langle \\bar\\theta - \\frac{a+b}{2}, u\\rangle$ with $u = (a-b)/\\|a-b\\|$ (a: tr-log, b: ¼ tr), so
    $d_b^2 - d_a^2 = 2\\|a-b\\|\\,s$; its SE $\\sum_j |u_j|\\,\\mathrm{SE}_j$ holds under any correlation.
    """
    pts = prediction.points
    if not ("R_trace_log" in pts and "R_quarter_trace" in pts):
        return "n/a", "both tr-log and quarter-trace points are needed to compare them"
    a, b = pts["R_trace_log"].theta, pts["R_quarter_trace"].theta
    gap = float(np.linalg.norm(a - b))
    if gap == 0:
        return "n/a", "the tr-log and quarter-trace points coincide"
    nearest = float(min(np.linalg.norm(m - a), np.linalg.norm(m - b)))
    if nearest > gap:
        # the mean's own O(λ) normal offset (REG-7) then dwarfs the tr-log/¼tr difference: no conclusion
        return "inconclusive", (
            f"the run sits {nearest:.3g} from the nearer point, more than the {gap:.3g} between the tr-log and "
            "quarter-trace points, so which R it matches is not resolved (REG-7)"
        )
    u = (a - b) / gap
    s = float(np.dot(m - 0.5 * (a + b), u))
    s_se = float(np.sum(np.abs(u) * se))
    z = s / s_se if s_se > 0 else np.inf * np.sign(s)
    who = "tr-log" if z > k else "quarter-trace" if z < -k else "indistinguishable"
    stat = (
        f"offset toward tr-log from the bisector of the two points = {s:.3g} ± {s_se:.2g} (z = {z:.2f}; "
        f"the points are {gap:.3g} apart) -> {who}"
    )
    return who, stat


def _min_norm_step(problem: Problem, theta):
    """$J^T(JJ^T)^{+}r$, the minimum-norm solution s of Js = r (J: the n outputs' Jacobian, r: the residuals), by
    CG in R^n on c ↦ J(J^Tc), one VJP then one JVP of the outputs: no d × n Jacobian (CURV-5)."""
    r, vjp = jax.vjp(problem.outputs, theta)
    r = problem.loss_fn.residuals(r, problem.y)
    matvec = lambda c: jax.jvp(problem.outputs, (theta,), vjp(c))[1]  # noqa: E731
    op = lx.FunctionLinearOperator(
        matvec, jax.eval_shape(lambda: r), tags=(lx.symmetric_tag, lx.positive_semidefinite_tag)
    )
    c = lx.linear_solve(op, r, lx.CG(rtol=1e-13, atol=0.0, max_steps=10 * r.size + 10), throw=False).value
    return vjp(c)[0]


@eqx.filter_jit
def _project_matrix_free(problem: Problem, theta, tol, max_iter):
    """Gauss–Newton with minimum-norm steps θ ← θ − J⁺r (the dense projection's iteration, ``_flow``), each step
    by ``_min_norm_step``."""

    def cond(state):
        th, i = state
        return (jnp.max(jnp.abs(problem.residuals(th))) > tol) & (i < max_iter)

    def body(state):
        th, i = state
        step = _min_norm_step(problem, th)
        candidates = th[None, :] - STEP_FRACTIONS[:, None].astype(th.dtype) * step[None, :]
        norms = jax.vmap(lambda c: jnp.sum(problem.residuals(c) ** 2))(candidates)
        return candidates[jnp.argmin(jnp.where(jnp.isfinite(norms), norms, jnp.inf))], i + 1

    th, _ = jax.lax.while_loop(cond, body, (theta, 0))
    return th


def project_matrix_free(problem: Problem, theta, tol: float = 1e-10, max_iter: int = 100):
    """``project_to_zero_loss`` above ``MAX_DENSE_PARAMS`` parameters: the same minimum-norm Gauss–Newton
    projection onto Γ = {f_i = y_i}, its steps by CG on JJᵀ (CURV-5); None if it finds no point."""
    require_additive_label_noise(problem.loss_fn, "the zero-loss set {f_i = y_i}")
    th = _project_matrix_free(problem, jnp.asarray(theta), tol, max_iter)
    res = float(jnp.max(jnp.abs(problem.residuals(th))))
    return np.asarray(th) if np.isfinite(res) and res <= 100 * tol else None
