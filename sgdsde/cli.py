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

import numpy as np

DEFAULTS = dict(
    model="hadamard",
    methods="gd,label,spherical",
    dim=100,
    n_samples=40,
    sparsity=5,
    alpha=1.0,
    lr=0.01,
    sigma=None,
    gaussian_sigma=0.01,
    batch_size=None,
    steps=40_000,
    paths=100,
    record_every=1000,
    seed=0,
    out="sgdsde-out",
    dtype="float32",
)

MODELS = ("hadamard", "diagonal", "linear", "two-layer")
METHODS = ("gd", "label", "spherical", "minibatch")


@dataclass
class MethodReport:
    name: str
    result: object
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
        data = sd.teacher_network(key, n_samples + 1000, dim, width, "tanh")
        Xt, yt = data.X[n_samples:], data.y[n_samples:]
        net = sd.TwoLayerNetwork(dim, 2 * width, "tanh")
        problem = sd.Problem(net, data.X[:n_samples], data.y[:n_samples])

        def test_error(p, th):
            r = p.model.outputs(th, Xt) - yt
            return jnp.mean(r * r)

        obs = {
            "train loss": lambda p, th: p.loss(th),
            "test error": test_error,
            "|theta|^2": lambda p, th: jnp.sum(th * th),
        }
        return problem, net.init(jax.random.key(seed + 1)), obs
    data = sd.sparse_regression(key, n_samples, dim, sparsity)
    if model == "hadamard":
        net = sd.DiagonalLinearNetwork(dim, alpha, signed=False)
    elif model == "diagonal":
        net = sd.DiagonalLinearNetwork(dim, alpha, signed=True)
    else:
        net = sd.LinearRegression(dim)
    problem = sd.Problem(net, data.X, data.y)
    w = data.teacher

    def test_error(p, th):
        e = p.model.weights(th) - w
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
    if method == "label":
        return sd.LabelNoise(sigma, batch_size, "without_replacement")
    if method == "spherical":
        return sd.SphericalGaussianNoise(gaussian_sigma)
    if method == "minibatch":
        return sd.MinibatchNoise(batch_size, "with_replacement")
    raise ValueError(f"methods must be among {METHODS}, got {method!r}")


def run(progress: bool = True, **kwargs) -> list[MethodReport]:
    """Run the configured methods; write the figure, results and a JSON summary to ``out``."""
    cfg = dict(DEFAULTS, **kwargs)
    if cfg["model"] not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {cfg['model']!r}")
    methods = [m.strip() for m in cfg["methods"].split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods must be among {METHODS}, got {m!r}")
    if cfg["dtype"] == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    import sgdsde as sd

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
    os.makedirs(cfg["out"], exist_ok=True)
    reports = []
    for m in methods:
        noise = noises[m]
        res = sd.simulate_sgd(
            problem,
            noise,
            theta0,
            lr=cfg["lr"],
            n_steps=cfg["steps"],
            key=cfg["seed"] + 1,
            n_paths=1 if noise is None else cfg["paths"],
            record_every=cfg["record_every"],
            observables=obs,
            dtype=np.dtype(cfg["dtype"]),
            progress=progress,
            label=_label(m, cfg),
            save_to=os.path.join(cfg["out"], f"sgd_{m}"),
        )
        rows = {name: tuple(float(v) for v in res.final(name)) for name in obs}
        reports.append(MethodReport(_label(m, cfg), res, rows))
    _write_summary(cfg, reports)
    _figure(cfg, reports, list(obs)[1])
    return reports


def _label(method: str, cfg) -> str:
    return {
        "gd": "GD",
        "label": f"label-noise SGD (sigma={cfg['sigma']:.3g}, B={cfg['batch_size']})",
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
        cells = "".join(f"{m:>13.4g} ± {s:<8.2g}" for m, s in r.rows.values())
        lines.append(f"{r.name:<{width}}{cells}{r.result.n_paths:>8d}")
    return "\n".join(lines)


def _write_summary(cfg, reports) -> None:
    summary = {
        "config": cfg,
        "results": {
            r.name: {
                "diverged": r.result.diverged,
                "final": {k: {"mean": m, "stderr": s} for k, (m, s) in r.rows.items()},
            }
            for r in reports
        },
    }
    with open(os.path.join(cfg["out"], "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


def _figure(cfg, reports, column: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["--", "-", ":", "-."]
    for i, r in enumerate(reports):
        res = r.result
        mean, se = res.mean[column], res.stderr(column)
        ok = res.count > 0
        ax.plot(res.steps[ok], mean[ok], styles[i % 4], lw=2 if i == 0 else 1.5, label=r.name)
        ax.fill_between(res.steps[ok], (mean - 2 * se)[ok], (mean + 2 * se)[ok], alpha=0.25)
    ax.set_xlabel("SGD step k")
    ax.set_ylabel(f"test error {column}")
    ax.set_yscale("log")
    ax.set_title(
        f"{cfg['model']} model, d={cfg['dim']}, n={cfg['n_samples']}, eta={cfg['lr']:g} (mean ± 2 s.e.)"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(cfg["out"], "test_error.png"), dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> dict:
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
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return vars(p.parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet = args.pop("quiet")
    t0 = time.perf_counter()
    try:
        reports = run(progress=not quiet, **args)
    except ValueError as e:
        print(f"sgdsde: error: {e}", file=sys.stderr)
        return 2
    print(format_table(reports))
    print(
        f"\nwrote {args['out']}/test_error.png, {args['out']}/summary.json and per-method results "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
