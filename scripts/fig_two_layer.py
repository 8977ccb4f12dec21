"""A two-layer tanh network with label noise: the loss stays at its floor while the sharpness tr G falls;
SGD, its SDE and the Li–Wang–Arora flow side by side; the verdict against a stationary point of L + λR.

Theory: theory/implicit-regularization.md REG-12, REG-8, REG-7.
Usage: python scripts/fig_two_layer.py [--quick] [--out fig_two_layer.png]   (also writes <out>.txt)
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

import sgdsde  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgdsde.implicit import (  # noqa: E402
    HessianTraceRegularizer,
    check_convergence,
    limiting_flow,
    predict,
    regularizer_observables,
)

simulate_sde = getattr(sgdsde, "simulate_sde", None)
if simulate_sde is None:  # until the lead re-exports it from sgdsde
    from sgdsde import simulate_sde


def run(
    quick: bool = False, out: str = "fig_two_layer.png", eta: float = 0.05, c: float = 2.0, seed: int = 0
):
    n, p, m = 10, 3, 8
    data = sgdsde.teacher_network(jax.random.key(seed), n, p, 3, "tanh")
    net = sgdsde.TwoLayerNetwork(p, m, "tanh")
    prob = sgdsde.Problem(net, data.X, data.y)
    gd = sgdsde.simulate_sgd(
        prob,
        None,
        net.init(jax.random.key(seed + 1)),
        lr=0.2,
        n_steps=20000,
        key=0,
        ensemble=sgdsde.Ensemble(dtype=np.float64),
        record=sgdsde.Record(n_saved_paths=1),
    )
    theta_gd = gd.paths[-1, 0]
    noise = sgdsde.LabelNoise(np.sqrt(c * n))  # full batch: c = σ²/B
    n_paths, n_steps = (8, 2000) if quick else (32, 20000)
    trg = {"trG": lambda q, th: jnp.sum(q.output_gradients(th) ** 2) / q.n_data}
    obs = regularizer_observables(eta, trg)
    # quick: the ¼ tr ∇²L regularizer only, as fig_flagship's quick mode (predict solves for one stationary
    # point per regularizer, each with its own compiles: the two took a third of the quick run, profiled)
    regs = [HessianTraceRegularizer()] if quick else None
    if quick:
        obs = {key: f for key, f in obs.items() if "trace_log" not in key}
    kw = dict(
        lr=eta,
        n_steps=n_steps,
        key=seed + 2,
        ensemble=sgdsde.Ensemble(n_paths=n_paths, chunk_size=8, dtype=np.float64),
        record=sgdsde.Record(every=n_steps // 40, observables=obs, n_saved_paths=n_paths),
    )
    runs = {
        "label-noise SGD": sgdsde.simulate_sgd(
            prob, noise, theta_gd, **kw, output=sgdsde.Output(label="label-noise SGD")
        ),
        "label-noise SDE": simulate_sde(
            prob, noise, theta_gd, **kw, output=sgdsde.Output(label="label-noise SDE")
        ),
    }
    flow = limiting_flow(
        prob,
        theta_gd,
        c=c,
        duration=eta**2 * n_steps,
        n_steps=200 if quick else 800,
        record_every=5 if quick else 20,
    )
    half = len(runs["label-noise SGD"].steps) // 2
    pred = predict(
        prob, noise, eta, np.mean(runs["label-noise SGD"].mean["theta"][half:], axis=0), regularizers=regs
    )
    report = check_convergence(prob, runs, pred)
    lam = pred.lam
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (name, r), color in zip(runs.items(), ["C0", "C1"], strict=True):
        for ax, key in ((ax1, "trG"), (ax2, "loss")):
            mu, se = r.mean[key], r.stderr(key)
            ax.plot(r.times, mu, color=color, label=name)
            ax.fill_between(r.times, mu - 2 * se, mu + 2 * se, color=color, alpha=0.2)
        ax2.plot(r.times, lam / 4 * r.mean["trG"], color=color, ls=":", label=f"(λ/4) tr G along {name}")
    ax1.plot(flow.sde_times(eta), flow.sharpness, "k--", label="Li–Wang–Arora flow (τ = ηt)")
    star = pred.point()
    ax1.axhline(
        float(trg["trG"](prob, jnp.asarray(star.theta))),
        color="0.4",
        ls="-.",
        label=f"tr G at the stationary point of L + λR ({pred.primary})",
    )
    ax1.set_xlabel("time t = ηk")
    ax1.set_ylabel(r"sharpness tr G = $\frac{1}{n}\sum_i\|\nabla f_i\|^2$ (± 2 SE)")
    ax1.set_title(
        f"tanh net p = {p}, width {m}, n = {n}; η = {eta}, c = σ²/B = {c:g}, λ = {lam:g}", fontsize=9
    )
    ax1.legend(fontsize=7)
    ax2.set_xlabel("time t = ηk")
    ax2.set_ylabel("training loss L (± 2 SE)")
    ax2.set_title("the loss stays at the label-noise floor ≈ (λ/4) tr G", fontsize=9)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    with open(out + ".txt", "w") as f:
        f.write(str(pred) + "\n\n" + report.table() + "\n")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small ensemble, short runs, ¼tr R only")
    parser.add_argument("--out", default="fig_two_layer.png")
    args = parser.parse_args()
    print(run(quick=args.quick, out=args.out).table())
