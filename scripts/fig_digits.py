"""Two seeds' headline effects on a real dataset (scikit-learn's digits) with equinox MLPs as FunctionModels.

(a) Damian et al.: label-noise SGD against plain SGD at the same η and B from the same start (one network
    init, common batches): the training loss comparable, the sharpness λ_max(∇²L) (Lanczos on HVPs) and
    tr∇²L (Hutchinson) lower under label noise, ± s.e. over paths; and the SDE of label-noise SGD tracking
    SGD's sharpness curve. Squared loss on ±1 targets (digit ≥ 5), a tanh MLP, label noise ±σ.
(b) Bae, Song & Jeong's resetting on digits with 40 % of the training labels flipped: an MLP with
    cross-entropy, SGD with and without resetting to the best-validation checkpoint (``BestSoFar``; rate 0 is
    early stopping at the best-validation model), test error of the best-validation model, benefit ± s.e.
    (paired: same inits and keys).
The quick mode (the suite's smoke run) takes the sharpness by power iteration (cheaper to compile), the full
size by 20 Lanczos steps.
Last line: ``digits: sharpness_label=… sharpness_plain=… reset_benefit=… ± …``.
Usage: python scripts/fig_digits.py [--quick] [--out fig_digits.png]
"""

from __future__ import annotations

import argparse
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import sgdsde as sd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def mlp_model(width: int, depth: int, out, activation, seed: int) -> sd.FunctionModel:
    """An equinox MLP on the 64 pixels as a FunctionModel (θ₀ = its default init from ``seed``)."""
    net = eqx.nn.MLP(64, out, width, depth, activation=activation, key=jax.random.key(seed))
    return sd.FunctionModel.from_module(net)


def mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def label_noise_experiment(cfg: dict, seed: int) -> dict:
    """(a): one start θ₀ for all paths; σ = 0 (plain SGD) and σ > 0 in one sweep (the same batches)."""
    data = sd.data.digits(seed, split=(cfg["n_train"], 0, 0))
    y = jnp.where(data.y_clean >= 5, 1.0, -1.0)
    model = mlp_model(cfg["width"], cfg["depth"], "scalar", jnp.tanh, seed)
    problem = sd.Problem(model, data.X, y)
    theta0 = jnp.broadcast_to(model.init(), (cfg["paths"], model.n_params))
    observables = (
        "loss",
        sd.Sharpness(cfg["sharpness_iters"], method=cfg["sharpness_method"], key=seed + 1),
        sd.HutchinsonTrace(cfg["probes"], key=seed + 2),
    )
    common = dict(
        lr=cfg["lr"],
        n_steps=cfg["steps"],
        key=seed,
        ensemble=sd.Ensemble(n_paths=cfg["paths"]),
        record=sd.Record(
            every=cfg["steps"] // cfg["records"], observables=observables, n_saved_paths=cfg["paths"]
        ),
    )
    noise = sd.LabelNoise(cfg["sigma"], cfg["batch"], "with_replacement")
    t = time.perf_counter()
    swept = sd.sweep(sd.SGD(noise), problem, theta0, grid={"sigma": [0.0, cfg["sigma"]]}, **common)
    t_sgd = time.perf_counter() - t
    plain, label = swept.results
    t = time.perf_counter()
    sde = sd.simulate(sd.SDE(noise), problem, theta0, **common)
    t_sde = time.perf_counter() - t
    return {
        "d": model.n_params,
        "n": cfg["n_train"],
        "plain": plain,
        "label": label,
        "sde": sde,
        "seconds": (t_sgd, t_sde),
    }


def resetting_experiment(cfg: dict, seed: int) -> dict:
    """(b): 40 % flipped training labels, clean validation and test; the best-validation model's test error
    with resetting rate r = p/η and with r = 0 (early stopping), paired by init and key."""
    data = sd.data.digits(seed, split=cfg["split"], flip_fraction=0.4)
    model = mlp_model(cfg["width"], 1, 10, jax.nn.relu, seed + 7)
    ce = sd.CrossEntropyLoss()
    problem = sd.Problem(model, data.X, data.y, loss=ce)
    val = sd.Problem(model, data.X_val, data.y_val, loss=ce)
    inits = [mlp_model(cfg["width"], 1, 10, jax.nn.relu, seed + 100 + i).init() for i in range(cfg["paths"])]
    theta0 = jnp.stack(inits)
    test_error = sd.Accuracy(data.X_test, data.y_test, name="test_accuracy")
    lr, p = cfg["lr"], cfg["p"]
    checkpoint = sd.BestSoFar(lambda pr, th: val.loss(th), patience=cfg["patience"], every=cfg["val_every"])
    # r = 0 and r = p/η in one program: the same inits, batches and validation checks (paired)
    swept = sd.sweep(
        sd.SGD(sd.MinibatchNoise(cfg["batch"])),
        problem,
        theta0,
        grid={"reset_rate": [0.0, p / lr]},
        lr=lr,
        n_steps=cfg["steps"],
        key=seed,
        ensemble=sd.Ensemble(n_paths=cfg["paths"]),
        record=sd.Record(every=cfg["steps"] // cfg["records"], observables=("loss", test_error)),
        events=(sd.Resetting(p / lr, checkpoint=checkpoint),),
    )
    errs, curves = {}, {}
    for rate, res in zip((0.0, p), swept.results, strict=True):
        best = jnp.asarray(res.resets.best_theta)
        errs[rate] = 1 - np.asarray(jax.vmap(lambda th: test_error(problem, th))(best))
        curves[rate] = res
    d = errs[0.0] - errs[cfg["p"]]
    return {"errs": errs, "curves": curves, "benefit": mean_se(d), "d": model.n_params, "p": cfg["p"]}


QUICK = {
    "a": dict(
        n_train=150,
        width=16,
        depth=1,
        batch=16,
        lr=0.1,
        sigma=0.5,
        steps=200,
        paths=4,
        records=2,
        sharpness_method="power",
        sharpness_iters=6,
        probes=1,
    ),
    "b": dict(
        split=(300, 150, 300),
        width=32,
        batch=16,
        lr=0.1,
        p=0.05,
        steps=200,
        paths=4,
        records=2,
        patience=20,
        val_every=10,
    ),
}
FULL = {
    "a": dict(
        n_train=1000,
        width=64,
        depth=1,
        batch=32,
        lr=0.1,
        sigma=0.5,
        steps=20000,
        paths=16,
        records=20,
        sharpness_method="lanczos",
        sharpness_iters=20,
        probes=8,
    ),
    "b": dict(
        split=(1000, 300, 497),
        width=128,
        batch=16,
        lr=0.05,
        p=0.05,
        steps=20000,
        paths=16,
        records=20,
        patience=1000,
        val_every=10,
    ),
}


def run(quick: bool = False, out: str = "fig_digits.png", seed: int = 0) -> dict:
    cfg = QUICK if quick else FULL
    a = label_noise_experiment(cfg["a"], seed)
    b = resetting_experiment(cfg["b"], seed)
    ca = cfg["a"]
    print(
        f"(a) digits ≥ 5 vs < 5, squared loss, n = {a['n']}, tanh MLP d = {a['d']}, B = {ca['batch']}, "
        f"η = {ca['lr']}, σ = {ca['sigma']}, {ca['steps']} steps, {ca['paths']} paths from one θ₀ "
        f"(SGD {a['seconds'][0]:.1f} s for both, SDE {a['seconds'][1]:.1f} s)"
    )
    print("   method            train loss           sharpness λ_max        tr ∇²L (Hutchinson)")
    finals = {}
    for name in ("plain", "label", "sde"):
        res = a[name]
        row = [res.final(k) for k in ("loss", "sharpness", "trace_hessian")]
        finals[name] = row
        label = {"plain": "plain SGD", "label": "label-noise SGD", "sde": "SDE (label noise)"}[name]
        print(f"   {label:17s} " + "  ".join(f"{float(m):9.4g} ± {float(s):8.2g}" for m, s in row))
    # the SDE's sharpness curve against SGD's: the largest gap in units of their combined s.e.
    lab, sde = a["label"], a["sde"]
    z = (sde.mean["sharpness"] - lab.mean["sharpness"]) / np.sqrt(
        sde.stderr("sharpness") ** 2 + lab.stderr("sharpness") ** 2 + 1e-30
    )
    print(
        f"   SDE vs label-noise SGD sharpness curve: max |z| over {len(z)} records = {np.max(np.abs(z)):.2f}"
    )
    cb = cfg["b"]
    print(
        f"(b) 40 % flipped labels, n = {cb['split'][0]}, ReLU MLP d = {b['d']}, cross-entropy, B = {cb['batch']}, "
        f"η = {cb['lr']}, {cb['steps']} steps, {cb['paths']} paths; best-validation model's test error"
    )
    e0, e1 = mean_se(b["errs"][0.0]), mean_se(b["errs"][b["p"]])
    print(f"   r = 0 (early stopping): {e0[0]:.4f} ± {e0[1]:.4f}")
    print(f"   resetting p = {b['p']}/step: {e1[0]:.4f} ± {e1[1]:.4f}")
    print(f"   benefit (paired): {b['benefit'][0]:+.4f} ± {b['benefit'][1]:.4f}")

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, style, color in (("plain", "-", "C0"), ("label", "-", "C3"), ("sde", "--", "C1")):
        res = a[name]
        for axis, key in ((ax[0], "sharpness"), (ax[1], "trace_hessian")):
            m, s = res.mean[key], res.stderr(key)
            axis.plot(res.steps, m, style, color=color, label=name)
            axis.fill_between(res.steps, m - 2 * s, m + 2 * s, color=color, alpha=0.2)
    ax[0].set(xlabel="step", ylabel="λ_max(∇²L)", title="(a) sharpness (±2 s.e.)")
    ax[1].set(xlabel="step", ylabel="tr ∇²L", title="(a) trace of the Hessian (±2 s.e.)")
    ax[0].legend()
    for p, color in ((0.0, "C0"), (b["p"], "C3")):
        res = b["curves"][p]
        ax[2].plot(res.steps, 1 - res.mean["test_accuracy"], color=color, label=f"p = {p}")
    ax[2].set(xlabel="step", ylabel="test error (current model)", title="(b) 40 % flipped labels")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    s_label, s_plain = float(finals["label"][1][0]), float(finals["plain"][1][0])
    print(
        f"digits: sharpness_label={s_label:.4g} sharpness_plain={s_plain:.4g} "
        f"reset_benefit={b['benefit'][0]:.4f} ± {b['benefit'][1]:.4f}"
    )
    return {"a": a, "b": b, "finals": finals}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_digits.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.quick, args.out, args.seed)
