"""Diagonal network β = u⊙u − v⊙v with label noise → the weighted Lasso λ_j = (ησ²/B)(XᵀX/n)_jj.

Theory: theory/implicit-regularization.md REG-10 (label-noise.md §5, C4).
Usage: python scripts/fig_lasso.py [--quick] [--out fig_lasso.png]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

import sgdsde  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgdsde.implicit import label_noise_lasso  # noqa: E402

simulate_sde = getattr(sgdsde, "simulate_sde", None)
if simulate_sde is None:  # until the lead re-exports it from sgdsde
    from sgdsde import simulate_sde


def run(
    quick: bool = False, out: str = "fig_lasso.png", eta: float = 0.02, sigma: float = 5.0, seed: int = 0
):
    n, d, k = 15, 30, 3
    data = sgdsde.sparse_regression(jax.random.key(3), n, d, k)
    prob = sgdsde.Problem(sgdsde.DiagonalLinearNetwork(d, alpha=0.3), data.X, data.y)
    noise = sgdsde.LabelNoise(sigma)
    lasso = label_noise_lasso(prob, noise, eta)
    n_paths, n_steps = (16, 10000) if quick else (256, 40000)
    beta = {"beta": lambda p, th: p.model.weights(th)}
    kw = dict(
        lr=eta,
        n_steps=n_steps,
        key=seed,
        ensemble=sgdsde.Ensemble(dtype=np.float64),
        record=sgdsde.Record(every=n_steps // 40, observables=beta),
    )
    runs = {
        "label-noise SGD": sgdsde.simulate_sgd(
            prob,
            noise,
            prob.model.init(),
            **dict(kw, ensemble=sgdsde.Ensemble(n_paths=n_paths, dtype=np.float64)),
        ),
        "label-noise SDE": simulate_sde(
            prob,
            noise,
            prob.model.init(),
            **dict(kw, ensemble=sgdsde.Ensemble(n_paths=n_paths, dtype=np.float64)),
        ),
    }
    gd = sgdsde.simulate_sgd(prob, None, prob.model.init(), **kw)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    j = np.arange(d)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.plot(j, np.asarray(data.teacher), "s", mfc="none", color="k", ms=9, label="truth w*")
    ax.plot(j, lasso.beta, "D", color="C3", ms=7, label="weighted Lasso, λ_j = (ησ²/B)D_jj")
    ax.plot(j, gd.mean["beta"][-1], "x", color="C2", ms=7, label="GD (its interpolant)")
    stats = {}
    for (name, r), (color, off) in zip(runs.items(), [("C0", -0.15), ("C1", 0.15)], strict=True):
        half = len(r.steps) // 2
        b = r.mean["beta"][half:].mean(0)
        se = r.stderr("beta")[half:].mean(0)  # conservative bound on the time average's SE
        ax.errorbar(j + off, b, yerr=2 * se, fmt="o", ms=4, color=color, label=f"{name}: time average ± 2 SE")
        stats[name] = float(np.linalg.norm(b - lasso.beta))
    ax.set_xlabel("coordinate j")
    ax.set_ylabel(r"$\beta_j$")
    lam = eta * sigma**2 / n
    ax.set_title(f"n = {n}, d = {d}, {k}-sparse, η = {eta}, σ = {sigma}, B = n: λ = {lam:.3g}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    stats["GD"] = float(np.linalg.norm(gd.mean["beta"][-1] - lasso.beta))
    return {"figure": out, "distance_to_lasso": stats, "lasso_kkt_residual": lasso.kkt_residual}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small ensemble, short runs")
    parser.add_argument("--out", default="fig_lasso.png")
    args = parser.parse_args()
    print(run(quick=args.quick, out=args.out))
