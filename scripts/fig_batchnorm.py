"""Batch-normalization noise and stochastic normalization (Kou et al. 2020) in miniature.

(a) The law of the BN / StochNorm gradient: the exact mean and covariance by enumerating batches and masks
(``BatchNormNoise``'s SDE side) against the Monte Carlo covariance of the SGD side's draws, and its bias
(E g̃ − ∇L of the moving-statistics network) for p = 0, 0.5, 1 (theory/normalization.md, NORM-2, NORM-3).
(b) Fine-tuning: a pretrained network (its moving statistics its own population statistics) fine-tuned on a
small noisy-label set (logistic loss, labels of a nearby teacher network, a fraction flipped) by SGD with
batch normalization (p = 1), StochNorm (p = 0.5) and without normalization noise (p = 0: the statistics stay
the pretrained ones, a fixed affine layer). Test error (with the moving statistics, and recalibrated: the
training inputs' statistics at the final θ) and sharpness λ_max(∇²L) ± s.e. over seeds × paths (NORM-5).

Last line: ``batchnorm: cov_relerr=… bn_err=…±… stochnorm_err=…±… plain_err=…±…`` (recalibrated test errors).

Usage: python scripts/fig_batchnorm.py [--quick] [--out fig_batchnorm.png]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

import sgdsde as sd  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODES = {"BN (p = 1)": 1.0, "StochNorm (p = 0.5)": 0.5, "no normalization noise (p = 0)": 0.0}


def law_check(quick: bool, seed: int = 0) -> dict:
    """(a): the enumerated covariance against N Monte Carlo draws of the SGD side (n = 5, B = 2, width 2)."""
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(5, 2)), rng.normal(size=5)
    model = sd.NormalizedTwoLayerNetwork(2, 2, mean=(0.1, -0.2), var=(1.2, 0.8))
    problem = sd.Problem(model, X, y)
    theta = model.init(jax.random.key(seed + 1))
    n_draws = 20_000 if quick else 400_000
    out = {"n_draws": n_draws, "bias": {}}
    for p in (0.5,) if quick else (0.0, 0.5, 1.0):
        noise = sd.BatchNormNoise(2, p=p)
        out["bias"][p] = float(
            jnp.linalg.norm(noise.bias(problem, theta)) / jnp.linalg.norm(problem.grad(theta))
        )
    noise = sd.BatchNormNoise(2, p=0.5)
    draws, _ = noise.draw(problem, jax.random.key(seed + 7), 0, None, n_draws, jnp.float64)
    g = np.asarray(jax.jit(jax.vmap(lambda d: noise.gradient(problem, theta, d)))(draws))
    cov = np.asarray(noise.covariance(problem, theta))
    mean = np.asarray(noise.mean_gradient(problem, theta))
    cov_mc = np.cov(g, rowvar=False)
    out["cov_relerr"] = float(np.linalg.norm(cov_mc - cov) / np.linalg.norm(cov))
    out["mean_max_z"] = float(np.max(np.abs(g.mean(0) - mean) / np.sqrt(np.diag(cov) / n_draws)))
    out["n_outcomes"] = noise.noise_dim(problem)
    return out


def bn_part(quick: bool) -> float:
    """The covariance check's relative error ‖Σ_MC − Σ_enumerated‖_F/‖Σ_enumerated‖_F (for fig_seed001.py)."""
    return law_check(quick)["cov_relerr"]


class FineTuning:
    """A pretrained network, a nearby teacher and a noisy-label training set of one seed."""

    def __init__(self, dim=8, width=8, n_train=48, flip_rate=0.2, n_test=4000, shift=0.3, seed=0):
        base = sd.NormalizedTwoLayerNetwork(dim, width, eps=1e-5)
        theta0, teacher, mean, var = _pretrained(base, shift)
        # the pretrained network: its moving statistics are its own population statistics; the teacher is
        # the same network with shifted weights (W, a), normalized by the same statistics
        self.model = base.with_statistics(np.asarray(mean), np.asarray(var))
        self.theta0 = theta0
        self.X, self.y, self.X_test, self.y_test = _task_data(
            self.model, teacher, jnp.asarray(seed), n_train, n_test, flip_rate
        )
        self.problem = sd.Problem(self.model, self.X, self.y, loss=sd.LogisticLoss())

    def test_error(self, model, theta) -> float:
        pred = np.where(np.asarray(model.outputs(theta, self.X_test)) >= 0, 1.0, -1.0)
        return float(np.mean(pred != np.asarray(self.y_test)))

    def evaluate(self, theta) -> dict:
        recal = self.model.with_statistics(*self.model.population_statistics(theta, self.X))
        return {
            "test_error": self.test_error(self.model, theta),
            "test_error_recal": self.test_error(recal, theta),
            "train_loss": float(self.problem.loss(theta)),
            "sharpness": self.problem.sharpness(theta),
        }


@eqx.filter_jit
def _pretrained(base, shift):
    """(θ₀, teacher, μ, s²): the same network for every seed (one compiled program: fast setup)."""
    k_net, k_shift, k_pool = jax.random.split(jax.random.key(1234), 3)
    theta0 = base.init(k_net)
    pool = jax.random.normal(k_pool, (20_000, base.dim))
    W0, gamma, beta, a = base.split(theta0)
    H = pool @ W0.T
    kw, ka = jax.random.split(k_shift)
    W = W0 + shift * jax.random.normal(kw, W0.shape) / np.sqrt(base.dim)
    teacher = jnp.concatenate(
        [W.ravel(), gamma, beta, a + shift * jax.random.normal(ka, a.shape) / np.sqrt(base.width)]
    )
    return theta0, teacher, jnp.mean(H, axis=0), jnp.var(H, axis=0)


@eqx.filter_jit
def _task_data(model, teacher, seed, n_train, n_test, flip_rate):
    # the training set (and its flips) from the seed; one clean test set for every seed
    kx, kf = jax.random.split(jax.random.key(seed))
    X = jnp.concatenate(
        [
            jax.random.normal(kx, (n_train, model.dim)),
            jax.random.normal(jax.random.key(999), (n_test, model.dim)),
        ]
    )
    labels = jnp.where(model.outputs(teacher, X) >= 0, 1.0, -1.0)
    flip = jax.random.uniform(kf, (n_train,)) < flip_rate
    return X[:n_train], jnp.where(flip, -labels[:n_train], labels[:n_train]), X[n_train:], labels[n_train:]


def fine_tune(quick: bool, seed: int = 0) -> dict:
    """(b): every mode × seeds × paths; per mode, the per-path numbers of each metric at the end, and the test
    error (moving statistics) along the run."""
    n_seeds, n_paths, n_steps = (2, 4, 300) if quick else (8, 8, 3000)
    lr, batch, n_records = 0.2, 8, 60
    results = {name: {} for name in MODES}
    curves = {name: [] for name in MODES}
    start, observables = [], None
    for s in range(n_seeds):
        task = FineTuning(seed=seed + s)
        if observables is None:  # one function for every seed (the test set is shared): one compiled run
            X_test, y_test = task.X_test, task.y_test

            def test_error(problem, theta, X_test=X_test, y_test=y_test):
                pred = jnp.where(problem.model.outputs(theta, X_test) >= 0, 1.0, -1.0)
                return jnp.mean((pred != y_test).astype(theta.dtype))

            observables = {"test_error": test_error}
        start.append(task.evaluate(task.theta0))
        for name, p in MODES.items():
            res = sd.simulate_sgd(
                task.problem,
                sd.BatchNormNoise(batch, p=p),
                task.theta0,
                lr=lr,
                n_steps=n_steps,
                key=100 * s + 1,  # common random numbers: the same rows in every mode
                ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float64),
                record=sd.Record(every=n_steps // n_records, observables=observables, n_saved_paths=n_paths),
            )
            curves[name].append(res.mean["test_error"])
            for theta in np.asarray(res.paths[-1]):
                for k, v in task.evaluate(jnp.asarray(theta)).items():
                    results[name].setdefault(k, []).append(v)
            steps = res.steps
    results["pretrained"] = {k: [r[k] for r in start] for k in start[0]}
    return {
        "results": results,
        "curves": {k: np.asarray(v) for k, v in curves.items()},
        "steps": np.asarray(steps),
        "n_seeds": n_seeds,
        "n_paths": n_paths,
        "n_steps": n_steps,
        "lr": lr,
        "B": batch,
    }


def mean_se(values, n_seeds: int) -> tuple[float, float]:
    """Mean and its s.e. from the per-seed means (paths of one seed share its data: not independent)."""
    v = np.asarray(values, float).reshape(n_seeds, -1).mean(axis=1)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(n_seeds)) if n_seeds > 1 else float("nan")


def run(quick: bool = False, out: str = "fig_batchnorm.png", seed: int = 0) -> dict:
    lines = []
    law = law_check(quick, seed)
    lines.append(
        f"(a) BN/StochNorm gradient law, n = 5, B = 2, width 2, p = 0.5 ({law['n_outcomes']} outcomes): "
        f"enumerated vs {law['n_draws']} Monte Carlo draws of the SGD side"
    )
    lines.append(
        f"  covariance relative Frobenius error {law['cov_relerr']:.4f} (MC: O(1/sqrt(N)) = "
        f"{1 / np.sqrt(law['n_draws']):.4f}), mean max |z| {law['mean_max_z']:.2f}"
    )
    lines.append(
        "  bias |E g - grad L| / |grad L|: " + ", ".join(f"p = {p}: {b:.3f}" for p, b in law["bias"].items())
    )
    ft = fine_tune(quick, seed)
    ns = ft["n_seeds"]
    lines.append(
        f"(b) fine-tuning: width 8, dim 8, n = 48 (20% flipped labels), logistic loss, SGD lr = {ft['lr']}, "
        f"B = {ft['B']}, {ft['n_steps']} steps, {ns} seeds x {ft['n_paths']} paths (s.e. over seeds)"
    )
    lines.append(
        "  | mode | test error (moving stats) | test error (recalibrated) | train loss | sharpness |"
    )
    table = {}
    for name in ("pretrained", *MODES):
        r = ft["results"][name]
        row = {k: mean_se(r[k], ns) for k in ("test_error", "test_error_recal", "train_loss", "sharpness")}
        table[name] = row
        lines.append(f"  | {name} | " + " | ".join(f"{row[k][0]:.4f} ± {row[k][1]:.4f}" for k in row) + " |")
    # paired by seed (same data, rows and start in every mode): the modes' differences have a much smaller s.e.
    plain = list(MODES)[2]
    for key in ("test_error_recal", "sharpness"):
        for name in list(MODES)[:2]:
            diff = np.asarray(ft["results"][name][key]) - np.asarray(ft["results"][plain][key])
            d, se = mean_se(diff, ns)
            lines.append(f"  paired {key}: {name} − p = 0: {d:+.4f} ± {se:.4f}")
            table[name]["paired_" + key] = (d, se)
    best = {name: mean_se(c.min(axis=1), ns) for name, c in ft["curves"].items()}
    lines.append(
        "  best test error along the run (moving statistics, mean over paths per record): "
        + ", ".join(f"{name}: {b[0]:.4f} ± {b[1]:.4f}" for name, b in best.items())
    )
    e = {name: table[name]["test_error_recal"] for name in MODES}
    names = list(MODES)
    lines.append(
        f"batchnorm: cov_relerr={law['cov_relerr']:.4f} bn_err={e[names[0]][0]:.4f}±{e[names[0]][1]:.4f} "
        f"stochnorm_err={e[names[1]][0]:.4f}±{e[names[1]][1]:.4f} plain_err={e[names[2]][0]:.4f}±{e[names[2]][1]:.4f}"
    )

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    labels = ["pretrained", "BN", "StochNorm", "p = 0"]
    ax = axes[0]
    for (name, c), color in zip(ft["curves"].items(), ("C0", "C1", "C2"), strict=True):
        m, se = c.mean(axis=0), c.std(axis=0, ddof=1) / np.sqrt(ns) if ns > 1 else 0 * c[0]
        ax.plot(ft["steps"], m, color=color, label=name)
        ax.fill_between(ft["steps"], m - se, m + se, color=color, alpha=0.25)
    ax.set_xlabel("fine-tuning step")
    ax.set_title("test error along the run (moving statistics)")
    ax.legend(fontsize=7)
    for ax, key, title in zip(
        axes[1:],
        ("test_error", "test_error_recal", "sharpness"),
        (
            "end: test error (moving statistics)",
            "end: test error (recalibrated statistics)",
            r"end: sharpness $\lambda_{\max}(\nabla^2 L)$",
        ),
        strict=True,
    ):
        vals = [table[name][key] for name in ("pretrained", *MODES)]
        ax.bar(
            labels,
            [v[0] for v in vals],
            yerr=[v[1] for v in vals],
            capsize=4,
            color=["grey", "C0", "C1", "C2"],
        )
        ax.set_title(title)
    fig.suptitle(
        "Fine-tuning with batch normalization, StochNorm and no normalization noise (± s.e. over seeds)"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    text = "\n".join(lines)
    with open(out + ".txt", "w") as fh:
        fh.write(text + "\n")
    print(text)
    return {"law": law, "table": table}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_batchnorm.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.quick, args.out, args.seed)
