"""The u·v toy (f = uv, x = y = 1): balance u² − v² under label vs isotropic noise, and the time average of uv.

Theory: theory/implicit-regularization.md REG-9 (label-noise.md C3, C6), REG-8 (C5, the limiting flow), REG-14
(SGD's own stationary E[uv] = 1 − λ/(2(1 − η)) + O(λ²), two thirds of the way from the ¼tr point's uv to the
tr-log point's).
Usage: python scripts/fig_uv_toy.py [--quick] [--out fig_uv_toy.png]
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

from sgdsde.implicit import TraceLogRegularizer, limiting_flow, stationary_point  # noqa: E402

simulate_sde = getattr(sgdsde, "simulate_sde", None)
if simulate_sde is None:  # until the lead re-exports it from sgdsde
    from sgdsde import simulate_sde


def run(
    quick: bool = False, out: str = "fig_uv_toy.png", eta: float = 0.05, sigma: float = 1.0, seed: int = 0
):
    toy = sgdsde.Problem(sgdsde.TwoLayerNetwork(1, 1, "linear"), np.ones((1, 1)), np.ones(1))
    n_paths, n_steps = (200, 1000) if quick else (2000, 4000)
    obs = {"D": lambda p, th: th[0] ** 2 - th[1] ** 2, "uv": lambda p, th: th[0] * th[1]}
    kw = dict(
        lr=eta,
        n_steps=n_steps,
        key=seed,
        ensemble=sgdsde.Ensemble(n_paths=n_paths, dtype=np.float64),
        record=sgdsde.Record(every=n_steps // 50, observables=obs),
    )
    th0 = np.array([2.0, 0.5])
    label = sgdsde.LabelNoise(sigma, batch_size=1)
    runs = {
        "label-noise SGD": sgdsde.simulate_sgd(toy, label, th0, **kw),
        "label-noise SDE (Euler, dt = η/4)": simulate_sde(
            toy, label, th0, **kw, stepping=sgdsde.Fixed(substeps=4)
        ),
        "isotropic-noise SGD (σ = 0.5)": sgdsde.simulate_sgd(
            toy, sgdsde.SphericalGaussianNoise(0.5), th0, **kw
        ),
    }
    lam = eta * sigma**2
    t_end = eta * n_steps
    flow = limiting_flow(toy, th0, c=sigma**2, duration=eta * t_end, n_steps=100, record_every=2)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (name, r), color in zip(runs.items(), ["C0", "C1", "C2"], strict=True):
        m, se = r.mean["D"], r.stderr("D")
        ax1.plot(r.times, m, color=color, label=name)
        ax1.fill_between(r.times, m - 2 * se, m + 2 * se, color=color, alpha=0.25)
    t = np.linspace(0, t_end, 200)
    ax1.plot(t, 3.75 * np.exp(-eta * sigma**2 * t), "k--", label=r"$3.75\,e^{-\eta\sigma^2 t}$ (SDE, exact)")
    u, v = flow.theta[:, 0], flow.theta[:, 1]
    ax1.plot(flow.sde_times(eta), u * u - v * v, "k:", lw=2, label="Li–Wang–Arora flow, τ = ηt")
    ax1.set_yscale("log")
    ax1.set_xlabel("time t = ηk")
    ax1.set_ylabel(r"$E[u^2 - v^2]$ (± 2 SE)")
    ax1.set_title("balance: decays under label noise, martingale under isotropic noise", fontsize=9)
    ax1.legend(fontsize=7, loc="lower left")

    kw2 = dict(kw, n_steps=2 * n_steps, record=sgdsde.Record(every=2 * n_steps // 100, observables=obs))
    if (
        quick
    ):  # kw's 50 records: the two runs reuse the first two runs' compiled programs (100 records do not)
        kw2 = kw
    balanced = {
        "label-noise SGD": sgdsde.simulate_sgd(toy, label, np.ones(2), **kw2),
        "label-noise SDE": simulate_sde(toy, label, np.ones(2), **kw2, stepping=sgdsde.Fixed(substeps=4)),
    }
    for (name, r), color in zip(balanced.items(), ["C0", "C1"], strict=True):
        m = r.mean["uv"]
        running = np.cumsum(m[1:]) / np.arange(1, len(m))
        ax2.plot(r.times[1:], running, color=color, label=f"{name}: running time average")
        ax2.plot(r.times, m, color=color, alpha=0.3, lw=0.8)
    ax2.axhline(
        1 - lam / 2, color="k", ls="--", label=r"$1 - \lambda/2$ (SDE stationary mean, exact; ¼tr point)"
    )
    sgd_uv = 1 - lam / (2 * (1 - eta))
    trace_log_uv = float(np.prod(stationary_point(toy, TraceLogRegularizer(eta), lam, np.ones(2)).theta))
    ax2.axhline(sgd_uv, color="C0", ls="--", label=r"$1 - \lambda/(2(1-\eta))$ (SGD, first order in λ)")
    ax2.axhline(trace_log_uv, color="C3", ls=":", label="tr-log point's uv (SGD sits 2/3 of the way to it)")
    ax2.set_xlabel("time t = ηk")
    ax2.set_ylabel(r"$E[uv]$")
    ax2.set_title(f"time average of uv from u = v = 1 (λ = ησ² = {lam:g})", fontsize=9)
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    summary = {name: float(np.mean(r.mean["uv"][len(r.steps) // 2 :])) for name, r in balanced.items()}
    return {
        "figure": out,
        "time_average_uv": summary,
        "prediction": 1 - lam / 2,
        "sgd_prediction": sgd_uv,
        "trace_log_uv": trace_log_uv,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small ensemble, short runs")
    parser.add_argument("--out", default="fig_uv_toy.png")
    args = parser.parse_args()
    print(run(quick=args.quick, out=args.out))
