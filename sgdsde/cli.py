"""`sgdsde`: the main job. By default, the flagship of the label-noise papers (HaoChen et al.'s sparse
regression with a quadratically parametrised model): GD, label-noise SGD and spherical-Gaussian-noise GD side
by side, with ensemble means ± standard errors, a figure of test error against steps, and saved results."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import numpy as np

if TYPE_CHECKING:  # annotations only: the functions below import the package where they use it
    from sgdsde._results import EnsembleResult
    from sgdsde.implicit import ConvergenceReport, Prediction

DEFAULTS = dict(
    model="hadamard",
    methods="gd,label,sde,spherical",
    verdict=True,
    dim=100,
    n_samples=40,
    sparsity=5,
    alpha=1.0,
    lr=0.01,
    sigma=None,
    gaussian_sigma=0.01,
    batch_size=None,
    steps=120_000,
    paths=100,
    record_every=3000,
    seed=0,
    out="sgdsde-out",
    dtype="float32",
    checkpoint_every=1,
    sweep_lams="0.005,0.01,0.02,0.04",
    sweep_steps="auto",
)

MODELS = ("hadamard", "diagonal", "linear", "two-layer")
METHODS = ("gd", "label", "sde", "spherical", "minibatch")


@dataclass
class MethodReport:
    name: str
    result: EnsembleResult
    rows: dict  # column -> (mean, standard error)


def build_problem(model: str, dim: int, n_samples: int, sparsity: int, alpha: float, seed: int):
    """The problem, its teacher and the observables the report prints."""
    import jax
    import jax.numpy as jnp

    import sgdsde as sd

    key = jax.random.key(seed)
    if model == "two-layer":
        width = max(2, sparsity)
        # one teacher: the first n points train, the next 1,000 measure test error
        data = sd.data.teacher_network(key, n_samples + 1000, dim, width, "tanh")
        Xt, yt = data.X[n_samples:], data.y[n_samples:]
        net = sd.TwoLayerNetwork(dim, 2 * width, "tanh")
        problem = sd.Problem(net, data.X[:n_samples], data.y[:n_samples])

        def test_error(p, th):
            # the held-out data are float64: promote θ explicitly (what implicit promotion did)
            r = p.model.outputs(th.astype(Xt.dtype), Xt) - yt
            return jnp.mean(r * r)

        obs = {
            "train loss": lambda p, th: p.loss(th),
            "test error": test_error,
            "|theta|^2": lambda p, th: jnp.sum(th * th),
        }
        return problem, net.init(jax.random.key(seed + 1)), obs
    data = sd.data.sparse_regression(key, n_samples, dim, sparsity)
    if model == "hadamard":
        net = sd.DiagonalLinearNetwork(dim, alpha, signed=False)
    elif model == "diagonal":
        net = sd.DiagonalLinearNetwork(dim, alpha, signed=True)
    else:
        net = sd.LinearRegression(dim)
    problem = sd.Problem(net, data.X, data.y)
    w = data.teacher

    def test_error(p, th):
        # w* is float64: promote β explicitly (what implicit promotion did)
        e = p.model.weights(th).astype(w.dtype) - w
        return jnp.sum(e * e)

    obs = {
        "train loss": lambda p, th: p.loss(th),
        "|beta - w*|^2": test_error,
        "|beta|_1": lambda p, th: jnp.sum(jnp.abs(p.model.weights(th))),
    }
    return problem, net.init(), obs


def noise_for(method: str, sigma: float, gaussian_sigma: float, batch_size: int):
    import sgdsde as sd

    if method == "gd":
        return None
    if method in ("label", "sde"):
        return sd.LabelNoise(sigma, batch_size, "without_replacement")
    if method == "spherical":
        return sd.SphericalGaussianNoise(gaussian_sigma)
    if method == "minibatch":
        return sd.MinibatchNoise(batch_size, "with_replacement")
    raise ValueError(f"methods must be among {METHODS}, got {method!r}")


@dataclass
class JobReport:
    """What the main job found: per-method rows, and the theory's prediction with its verdict."""

    config: dict
    methods: list[MethodReport]
    prediction: Prediction | None = None
    verdict: ConvergenceReport | None = None
    theory_error: str | None = None


def _methods(cfg) -> list[str]:
    """The comma-separated ``methods`` option as a list."""
    return [m.strip() for m in cfg["methods"].split(",") if m.strip()]


def _configure(kwargs) -> tuple[dict, list[str]]:
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown options {unknown} (known: {sorted(DEFAULTS)})")
    cfg = dict(DEFAULTS, **kwargs)
    if cfg["model"] not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {cfg['model']!r}")
    if not isinstance(cfg["methods"], str):
        raise ValueError(f"methods (--methods) must be a comma-separated string, got {cfg['methods']!r}")
    methods = _methods(cfg)
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods must be among {METHODS}, got {m!r}")
    if not methods:
        raise ValueError(f"methods must name at least one of {METHODS}")
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise ValueError(f"methods (--methods) names {twice} more than once, got {cfg['methods']!r}")
    seed = cfg["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed (--seed) must be an integer >= 0, got {seed!r}")
    if not isinstance(cfg["out"], (str, os.PathLike)) or os.fspath(cfg["out"]).strip() == "":
        raise ValueError(f"out (--out) must name a folder, got {cfg['out']!r}")
    import jax

    # The stationary-point solves run in float64 whatever dtype the simulations use.
    jax.config.update("jax_enable_x64", True)
    return cfg, methods


def run(progress: bool = True, resume: bool = False, **kwargs) -> JobReport:
    """Run the configured methods, then the prediction (stationary point of L + λR) and the verdict; write
    the figure, each run's arrays + JSON, and a summary to ``out``. Each run checkpoints every
    ``checkpoint_every`` records; ``resume``: reload the methods ``out``/summary.json lists as finished and
    continue the others from their checkpoints (bit for bit as if never interrupted)."""
    cfg, methods = _configure(kwargs)
    make_out(cfg["out"])
    import sgdsde as sd
    from sgdsde.implicit import regularizer_observables

    problem, theta0, obs = build_problem(
        cfg["model"], cfg["dim"], cfg["n_samples"], cfg["sparsity"], cfg["alpha"], cfg["seed"]
    )
    # Defaults: full batch (HaoChen et al.'s LNGD) and σ = √B, so that the label-noise covariance σ²G/B = G
    # equals HaoChen's δ = 1 label noise on one example per step, and λ = ησ²/B = η.
    if cfg["batch_size"] is None:
        cfg["batch_size"] = problem.n_data
    if cfg["sigma"] is None:
        cfg["sigma"] = float(np.sqrt(cfg["batch_size"]))
    noises = {m: noise_for(m, cfg["sigma"], cfg["gaussian_sigma"], cfg["batch_size"]) for m in methods}
    for noise in noises.values():
        if noise is not None:
            noise.check(problem)
    theory = cfg["verdict"] and ("label" in methods or "sde" in methods)
    observables = regularizer_observables(cfg["lr"], obs, problem=problem) if theory else obs
    reports = []
    finished: list[str] = []
    done_before = _finished_methods(cfg["out"]) if resume else []
    _write_summary(JobReport(cfg, reports), finished)  # a record of the job from the start
    for m in methods:
        simulate = sd.simulate_sde if m == "sde" else sd.simulate_sgd
        try:
            if m in done_before:
                res = sd.EnsembleResult.load(os.path.join(cfg["out"], f"run_{m}"))
            else:
                res = simulate(
                    problem,
                    noises[m],
                    theta0,
                    lr=cfg["lr"],
                    n_steps=cfg["steps"],
                    key=cfg["seed"] + 1,
                    ensemble=sd.Ensemble(
                        n_paths=1 if noises[m] is None else cfg["paths"], dtype=np.dtype(cfg["dtype"])
                    ),
                    record=sd.Record(every=cfg["record_every"], observables=observables),
                    output=sd.Output(
                        save_to=os.path.join(cfg["out"], f"run_{m}"),
                        progress=progress,
                        label=_label(m, cfg),
                        checkpoint_every=cfg["checkpoint_every"],
                        resume=True if resume else None,
                    ),
                )
        except KeyboardInterrupt:
            # the finished methods' results are on disk: say so in summary.json, so --reload reports them
            _write_summary(JobReport(cfg, reports), finished)
            raise
        rows = {name: tuple(float(v) for v in res.final(name)) for name in obs}
        reports.append(MethodReport(_label(m, cfg), res, rows))
        finished.append(m)
        _write_summary(JobReport(cfg, reports), finished)
    job = JobReport(cfg, reports)
    if theory:
        _theory(job, problem, noises, methods)
    _write_summary(job, finished)
    _figure(job, list(obs)[1])
    return job


def run_sweep(progress: bool = True, **kwargs):
    """The λ → 0 convergence study of the configured problem: label-noise SGD and its SDE at each λ of
    ``sweep_lams`` (σ = √(λB/η)), one compiled sweep each, against the stationary points θ*(λ) of L + λR
    (implicit.convergence_study); writes ``out``/sweep.json and sweep.png."""
    cfg, _ = _configure(kwargs)
    make_out(cfg["out"])
    from sgdsde.implicit import convergence_study

    problem, theta0, _ = build_problem(
        cfg["model"], cfg["dim"], cfg["n_samples"], cfg["sparsity"], cfg["alpha"], cfg["seed"]
    )
    if cfg["batch_size"] is None:
        cfg["batch_size"] = problem.n_data
    try:
        lams = [float(v) for v in str(cfg["sweep_lams"]).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"sweep_lams must be comma-separated numbers, got {cfg['sweep_lams']!r}") from None
    if len(lams) < 2 or not all(np.isfinite(v) and v > 0 for v in lams):
        raise ValueError(f"sweep_lams must hold at least two positive numbers, got {cfg['sweep_lams']!r}")
    sigmas = [float(np.sqrt(lam * cfg["batch_size"] / cfg["lr"])) for lam in lams]
    steps = str(cfg["sweep_steps"]).strip()
    if steps != "auto" and not (steps.isdigit() and int(steps) >= 2):
        raise ValueError(f"sweep_steps must be 'auto' or an integer >= 2, got {cfg['sweep_steps']!r}")
    noise = noise_for("label", 1.0, cfg["gaussian_sigma"], cfg["batch_size"])
    if noise is None:  # "label" always has a noise model
        raise AssertionError("noise_for('label', ...) gave no noise model")
    noise.check(problem)
    study = convergence_study(
        problem,
        noise,
        theta0,
        lr=cfg["lr"],
        sigmas=sigmas,
        n_steps=None if steps == "auto" else int(steps),
        key=cfg["seed"] + 1,
        n_paths=cfg["paths"],
        record_every=cfg["record_every"],
        theta_init=lambda n: lasso_seed(problem, n, cfg["lr"]),
        dtype=np.dtype(cfg["dtype"]),
        progress=progress,
    )
    from sgdsde._results import atomic_write, dump_json, package_versions

    record = {"config": cfg, "versions": package_versions(), "study": study.to_dict()}
    atomic_write(
        os.path.join(cfg["out"], "sweep.json"),
        lambda f: dump_json(record, f, indent=2),
        binary=False,
        what="--out",
    )
    _sweep_figure(study, os.path.join(cfg["out"], "sweep.png"))
    return study


def _pyplot():
    """matplotlib's pyplot on the Agg back end, or None with a note when it is not installed (figures are the
    optional ``figures`` extra: ``pip install "sgdsde[figures]"``)."""
    try:
        import matplotlib
    except ImportError:
        print(
            'matplotlib is not installed: the figure is skipped (pip install "sgdsde[figures]")',
            file=sys.stderr,
        )
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sweep_figure(study, path: str) -> None:
    plt = _pyplot()
    if plt is None:
        return
    first = study.methods[next(iter(study.methods))]
    kinds = ("total", "along") + (("total_beta",) if first.total_beta is not None else ())
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.2), sharey=True)
    for ax, kind in zip(axes, kinds, strict=True):
        for name, m in study.methods.items():
            for reg, style in (("R_trace_log", "o-"), ("R_quarter_trace", "s--")):
                d = getattr(m, kind)[reg]
                se = getattr(m, f"{kind}_se")[reg]
                ok = np.isfinite(d) & (d > 0)
                if ok.any():
                    ax.errorbar(study.lams[ok], d[ok], 2 * se[ok], fmt=style, ms=4, label=f"{name}, {reg}")
        floor = first.floor_beta if kind == "total_beta" else first.floor
        ax.plot(study.lams, floor, "k:", lw=1, label="noise floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("λ = ησ²/B")
        ax.set_title(
            {
                "total": "|time avg − θ*(λ)| in θ",
                "along": "… along the zero-loss set",
                "total_beta": "|time avg of E[β] − β(θ*(λ))| in β",
            }[kind]
        )
    axes[0].set_ylabel("distance (± 2 bootstrap s.e.)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def lasso_seed(problem, noise, lr: float):
    """An independent start for the L + λR solves on a diagonal network: the weighted Lasso that L + λR
    reduces to (C4), lifted to θ; None for other models."""
    import sgdsde as sd
    from sgdsde.implicit import label_noise_lasso

    if not isinstance(problem.model, sd.DiagonalLinearNetwork):
        return None
    beta = np.asarray(label_noise_lasso(problem, noise, lr).beta)
    if problem.model.signed:
        return np.concatenate([np.sqrt(np.maximum(beta, 0)), np.sqrt(np.maximum(-beta, 0))]) + 1e-3
    return np.sqrt(np.maximum(beta, 0)) + 1e-3


def _theory(job: JobReport, problem, noises, methods, saved: dict | None = None) -> None:
    """Predict the stationary point of L + λR for the label-noise runs and give the verdict on them; a
    prediction ``saved`` in summary.json for this configuration is used instead of solving again."""
    from sgdsde.implicit import check_convergence, predict

    cfg = job.config
    label = noises["label"] if "label" in noises else noises["sde"]
    runs = {r.name: r.result for r, m in zip(job.methods, methods, strict=True) if m in ("label", "sde")}
    try:
        prediction = _saved_prediction(saved, problem, label, cfg["lr"])
        if prediction is None:
            theta_init = lasso_seed(problem, label, cfg["lr"])
            if theta_init is None:
                # No independent seed: start from the first label-noise run's final ensemble mean.
                theta_init = next(iter(runs.values())).mean["theta"][-1]
            prediction = predict(problem, label, cfg["lr"], theta_init)
        job.prediction = prediction
        job.verdict = check_convergence(problem, runs, job.prediction)
    except ValueError as err:
        job.theory_error = str(err)


def _saved_prediction(saved: dict | None, problem, noise, lr: float) -> Prediction | None:
    """The Prediction that summary.json's verdict holds (``saved``: its "prediction"), when it is one for
    this problem, noise and η (same λ, noise and η; stationary points of the problem's dimension); None
    otherwise (an older or damaged summary, another configuration): then it is solved again. JSON keeps
    floats exactly, so the report is the one the job printed."""
    from sgdsde.implicit import Prediction, StationaryPoint, effective_lambda
    from sgdsde.implicit._prediction import describe_noise

    try:
        if not isinstance(saved, dict):
            return None
        lam = float(effective_lambda(noise, lr, problem))
        if saved["noise"] != describe_noise(noise) or float(saved["lr"]) != float(lr):
            return None
        if not np.isclose(float(saved["lam"]), lam, rtol=1e-12, atol=0.0):
            return None
        points = {}
        for name, d in saved["points"].items():
            pos, neg, zero = (int(v) for v in d["inertia"])  # ValueError unless three
            point = StationaryPoint(
                theta=np.asarray(d["theta"], np.float64),
                regularizer=str(d["regularizer"]),
                lam=float(d["lam"]),
                objective=float(d["objective"]),
                loss=float(d["loss"]),
                reg_value=float(d["reg_value"]),
                residual=float(d["residual"]),
                gtol=float(d["gtol"]),
                inertia=(pos, neg, zero),
                hessian_eigenvalues=np.asarray(d["hessian_eigenvalues"], np.float64),
                converged=bool(d["converged"]),
                n_steps=int(d["n_steps"]),
                message=str(d.get("message", "")),
                matrix_free=bool(d.get("matrix_free", False)),
                eigenvalue_errors=None
                if d.get("eigenvalue_errors") is None
                else np.asarray(d["eigenvalue_errors"], np.float64),
            )
            if point.theta.shape != (problem.n_params,):
                return None
            points[str(name)] = point
        failures = {str(k): str(v) for k, v in saved["failures"].items()}
        return Prediction(
            lam=float(saved["lam"]),
            lr=float(saved["lr"]),
            noise=str(saved["noise"]),
            points=points,
            failures=failures,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def make_out(out: str) -> None:
    """Create the output folder ``out``; ValueError naming --out when it is an existing file or cannot be
    created or written (a read-only parent), before anything runs."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out: {out!r} is an existing file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ValueError(f"--out: cannot create the folder {out!r}: {reason}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out: the folder {out!r} is not writable")


# summary.json's config: each option's accepted types (None where its default is None)
_TYPES: dict[str, tuple[type, ...]] = {
    k: (bool,) if isinstance(v, bool) else (int,) if isinstance(v, int) else (str,)
    for k, v in DEFAULTS.items()
}
_TYPES.update(
    alpha=(int, float), lr=(int, float), gaussian_sigma=(int, float), sigma=(int, float, type(None))
)
_TYPES.update(batch_size=(int, type(None)))
_REQUIRED = (
    "model",
    "methods",
    "dim",
    "n_samples",
    "sparsity",
    "seed",
    "lr",
    "steps",
    "paths",
)  # the job's identity


def read_summary(out: str, flag: str) -> dict:
    """The summary.json of the job in ``out``, checked: FileNotFoundError when there is none, ValueError
    naming ``flag`` and what is wrong when it is not JSON or not a job's summary (no configuration, one
    without the options that identify the job, unknown or mistyped options, unknown finished methods);
    other options it lacks take their defaults."""
    path = os.path.join(os.fspath(out), "summary.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: no job in {out!r} (no summary.json)")

    def damaged(why: str) -> NoReturn:
        raise ValueError(f"{flag}: {path!r} is damaged or not a job's summary: {why}")

    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        damaged(f"{type(err).__name__}: {err}")
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        damaged("no 'config' object")
    cfg = summary["config"]
    missing = sorted(set(_REQUIRED) - set(cfg))  # other options missing (an older summary): their defaults
    if missing:
        damaged(f"its config lacks {missing}")
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        damaged(f"its config has unknown options {unknown}")
    for k, types in _TYPES.items():
        if k not in cfg:
            continue
        v = cfg[k]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            damaged(f"config[{k!r}] = {v!r} is not {' or '.join(t.__name__ for t in types)}")
    finished = summary.get("finished", [])
    if not isinstance(finished, list) or not all(m in METHODS for m in finished):
        damaged(f"'finished' = {finished!r} is not a list of methods among {METHODS}")
    return summary


def _finished_methods(out: str) -> list[str]:
    return list(read_summary(out, "--resume").get("finished", []))


def resume_config(out: str) -> dict:
    """The configuration of the job saved in ``out`` (its summary.json), to run it again with resume."""
    return dict(read_summary(out, "--resume")["config"], out=out)


def reload(out: str) -> JobReport:
    """Rebuild a finished job's report from the files it wrote in ``out`` (no simulation is re-run)."""
    summary = read_summary(out, "--reload")
    cfg, methods = _configure(dict(summary["config"], out=out))
    # an interrupted job lists the methods that finished (older summaries: all of them)
    methods = [m for m in methods if m in summary.get("finished", methods)]
    if not methods:
        raise ValueError(f"--reload: the job in {out!r} was interrupted before any method finished")
    import sgdsde as sd

    problem, _, obs = build_problem(
        cfg["model"], cfg["dim"], cfg["n_samples"], cfg["sparsity"], cfg["alpha"], cfg["seed"]
    )
    noises = {m: noise_for(m, cfg["sigma"], cfg["gaussian_sigma"], cfg["batch_size"]) for m in methods}
    reports = []
    for m in methods:
        res = sd.EnsembleResult.load(os.path.join(out, f"run_{m}"))
        rows = {name: tuple(float(v) for v in res.final(name)) for name in obs}
        reports.append(MethodReport(res.method, res, rows))
    job = JobReport(cfg, reports)
    if cfg["verdict"] and ("label" in methods or "sde" in methods):
        # the job's prediction is in summary.json (a finished job's verdict): not solved again
        verdict = summary.get("verdict")
        _theory(
            job, problem, noises, methods, verdict.get("prediction") if isinstance(verdict, dict) else None
        )
    return job


def _label(method: str, cfg) -> str:
    return {
        "gd": "GD",
        "label": f"label-noise SGD (sigma={cfg['sigma']:.3g}, B={cfg['batch_size']})",
        "sde": "label-noise SDE (SME-1, Euler, dt=eta)",
        "spherical": f"spherical-noise GD (sigma={cfg['gaussian_sigma']:g})",
        "minibatch": f"minibatch SGD (B={cfg['batch_size']})",
    }[method]


def format_table(reports: list[MethodReport]) -> str:
    """The report: one row per method, mean ± standard error of each observable at the last step; a
    diverged run prints its divergence instead of numbers."""
    cols = list(reports[0].rows)
    width = max(len(r.name) for r in reports) + 2
    lines = [f"{'method':<{width}}" + "".join(f"{c:>24s}" for c in cols) + f"{'paths':>8s}"]
    for r in reports:
        msg = r.result.divergence_message()
        if msg is not None:
            lines.append(f"{r.name:<{width}}  DIVERGED: {msg}")
            continue
        one = r.result.n_paths == 1  # one path has no standard error: print none rather than "± 0"
        cells = "".join(f"{m:>13.4g}" + (" " * 11 if one else f" ± {s:<8.2g}") for m, s in r.rows.values())
        lines.append(f"{r.name:<{width}}{cells}{r.result.n_paths:>8d}")
    single = [r.name for r in reports if r.result.n_paths == 1 and r.result.divergence_message() is None]
    if single:
        lines.append(f"({', '.join(single)}: 1 path: no standard error)")
    return "\n".join(lines)


def format_report(job: JobReport) -> str:
    """The methods' table, then the prediction of L + λR and the verdict (or why there is none)."""
    parts = [format_table(job.methods)]
    if job.prediction is not None:
        parts.append(str(job.prediction))
    if job.verdict is not None:
        parts.append(job.verdict.table())
    if job.theory_error is not None:
        parts.append(f"NO VERDICT: {job.theory_error}")
    return "\n\n".join(parts)


def _write_summary(job: JobReport, finished: list[str]) -> None:
    """summary.json: the configuration, the methods that finished (all of them once ``complete``), their final
    rows and the verdict; strict JSON (a diverged run's NaN mean as the string "nan", ±inf as "inf"/"-inf"),
    written with ``atomic_write`` (a temporary file, fsync, rename, fsync of the folder)."""
    from sgdsde._results import atomic_write, dump_json, package_versions

    methods = _methods(job.config)
    summary = {
        "config": job.config,
        "finished": list(finished),
        "complete": finished == methods,
        "versions": package_versions(),
        "results": {
            r.name: {
                "complete": r.result.complete,
                "diverged": r.result.diverged,
                "final": {k: {"mean": m, "stderr": s} for k, (m, s) in r.rows.items()},
            }
            for r in job.methods
        },
        "verdict": None if job.verdict is None else job.verdict.to_dict(),
        "theory_error": job.theory_error,
    }
    path = os.path.join(job.config["out"], "summary.json")
    atomic_write(path, lambda f: dump_json(summary, f, indent=2), binary=False, what="--out")


def _figure(job: JobReport, column: str) -> None:
    plt = _pyplot()
    if plt is None:
        return
    cfg = job.config
    fig, ax = plt.subplots(figsize=(8, 4.8))
    styles = ["--", "-", "-.", ":", "-"]
    for i, r in enumerate(job.methods):
        res = r.result
        mean, se = res.mean[column], res.stderr(column)
        ok = res.count > 0
        ax.plot(res.steps[ok], mean[ok], styles[i % 5], lw=2 if i == 0 else 1.5, label=r.name)
        ax.fill_between(res.steps[ok], (mean - 2 * se)[ok], (mean + 2 * se)[ok], alpha=0.25)
    if job.prediction is not None and job.prediction.points:
        star = job.prediction.point()
        value = _observable_at(job, column, star.theta)
        if value is not None:
            ax.axhline(
                value, color="k", ls=":", lw=1, label=f"stationary point of L + λR ({job.prediction.primary})"
            )
    ax.set_xlabel("SGD step k (SDE time t = kη)")
    ax.set_ylabel(f"test error {column}")
    ax.set_yscale("log")
    ax.set_title(
        f"{cfg['model']} model, d={cfg['dim']}, n={cfg['n_samples']}, eta={cfg['lr']:g} (mean ± 2 s.e.)"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(cfg["out"], "test_error.png"), dpi=120)
    plt.close(fig)


def _observable_at(job: JobReport, column: str, theta) -> float | None:
    """The test-error observable at a given θ (re-built from the configuration)."""
    cfg = job.config
    problem, _, obs = build_problem(
        cfg["model"], cfg["dim"], cfg["n_samples"], cfg["sparsity"], cfg["alpha"], cfg["seed"]
    )
    value = float(obs[column](problem, np.asarray(theta, dtype=np.asarray(problem.X).dtype)))
    return value if np.isfinite(value) and value > 0 else None


def parse_args(argv=None) -> dict:
    return vars(_parser().parse_args(argv))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sgdsde", description=__doc__)
    p.add_argument(
        "--model",
        choices=MODELS,
        default=DEFAULTS["model"],
        help="hadamard: β = v⊙v (HaoChen et al.); diagonal: β = u⊙u − v⊙v; linear; two-layer",
    )
    p.add_argument("--methods", default=DEFAULTS["methods"], help=f"comma-separated, among {METHODS}")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="step size η")
    p.add_argument(
        "--sigma",
        type=float,
        default=DEFAULTS["sigma"],
        help="label-noise σ (labels ± σ); default √B, i.e. λ = ησ²/B = η",
    )
    p.add_argument(
        "--gaussian-sigma",
        type=float,
        default=DEFAULTS["gaussian_sigma"],
        help="spherical Gaussian gradient-noise σ",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS["batch_size"],
        help="B for label-noise and minibatch SGD; default n (full batch)",
    )
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--paths", type=int, default=DEFAULTS["paths"], help="ensemble size N")
    p.add_argument("--record-every", type=int, default=DEFAULTS["record_every"])
    p.add_argument("--dim", type=int, default=DEFAULTS["dim"])
    p.add_argument("--n-samples", type=int, default=DEFAULTS["n_samples"])
    p.add_argument("--sparsity", type=int, default=DEFAULTS["sparsity"])
    p.add_argument("--alpha", type=float, default=DEFAULTS["alpha"], help="initialisation scale")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--out", default=DEFAULTS["out"], help="output folder")
    p.add_argument("--dtype", choices=("float32", "float64"), default=DEFAULTS["dtype"])
    p.add_argument(
        "--no-verdict",
        dest="verdict",
        action="store_false",
        help="skip the prediction of L + λR and the verdict",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=DEFAULTS["checkpoint_every"],
        help="checkpoint each run's whole state every this many records (it must divide steps/record-every)",
    )
    p.add_argument(
        "--reload", action="store_true", help="do not simulate: reprint the report of the job saved in --out"
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="continue the interrupted job saved in DIR (its configuration; finished methods are reloaded, "
        "the others continue from their checkpoints bit for bit)",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="instead of the four methods: the λ → 0 convergence study (label-noise SGD and SDE at each λ of "
        "--sweep-lams, distances of their late time averages to θ*(λ) of L + λR, fitted power laws)",
    )
    p.add_argument("--sweep-lams", default=DEFAULTS["sweep_lams"], help="comma-separated λ for --sweep")
    p.add_argument(
        "--sweep-steps",
        default=DEFAULTS["sweep_steps"],
        help="steps per run for --sweep, or 'auto': 3 relaxation times of L + λR at θ*(λ) (REG-15)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _given(argv) -> set[str]:
    """The options given on the command line (their dests), whatever their values."""
    unset = object()
    p = _parser()
    p.set_defaults(**{k: unset for k in vars(p.parse_args([]))})
    return {k for k, v in vars(p.parse_args(argv)).items() if v is not unset}


def _flag(dest: str) -> str:
    return "--no-verdict" if dest == "verdict" else "--" + dest.replace("_", "-")


def check_modes(argv) -> None:
    """ValueError naming the flag that cannot apply: --resume DIR runs DIR's saved configuration (only
    --quiet goes with it), --reload reprints the job in --out (only --out and --quiet), and neither goes
    with --sweep or the other; --sweep-lams needs --sweep."""
    given = _given(argv)
    for mode, allowed in (("resume", {"resume", "quiet"}), ("reload", {"reload", "out", "quiet"})):
        if mode in given:
            extra = sorted(given - allowed, key=lambda k: (k not in ("resume", "reload", "sweep"), k))
            if extra:
                why = (
                    "runs the saved job's own configuration"
                    if mode == "resume"
                    else "reprints the job saved in --out"
                )
                raise ValueError(f"--{mode} {why}; {_flag(extra[0])} cannot apply to it (drop it)")
    if "sweep_lams" in given and "sweep" not in given:
        raise ValueError("--sweep-lams applies to --sweep only")


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet = args.pop("quiet")
    again = args.pop("reload")
    resume_dir = args.pop("resume")
    study = args.pop("sweep")
    t0 = time.perf_counter()
    try:
        check_modes(sys.argv[1:] if argv is None else argv)
        if resume_dir is not None:
            args["out"] = resume_dir
        if study:
            print(run_sweep(progress=not quiet, **args))
            print(f"\nwrote {args['out']}/sweep.json and sweep.png ({time.perf_counter() - t0:.0f} s)")
            return 0
        if resume_dir is not None:
            args = resume_config(resume_dir)
            job = run(progress=not quiet, resume=True, **args)
        else:
            job = reload(args["out"]) if again else run(progress=not quiet, **args)
    except (ValueError, OSError) as e:  # OSError: a failed write (full disk …), named by its file
        print(f"sgdsde: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"sgdsde: interrupted; {args['out']}/summary.json lists the methods that finished "
            f"(`--reload` reports them; `--resume {args['out']}` continues the job from its checkpoints)",
            file=sys.stderr,
        )
        return 130
    print(format_report(job))
    if again:
        return 0
    print(
        f"\nwrote {args['out']}/test_error.png, {args['out']}/summary.json and per-method results "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
