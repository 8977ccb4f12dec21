"""Optimizers with state and their SDEs (issue 23): momentum's exact moments, the momentum SME's O(η) gap, and
the square-root scaling rule for Adam.

(a) Heavy-ball momentum SGD (β = 0.9) on a 2-D quadratic with correlated Gaussian noise: the ensemble's
    stationary covariance of θ against the exact discrete Lyapunov solution (OPT-5), with the relative
    Frobenius error and the largest |z| per entry; and, exactly, the relative gap of the momentum SME's
    stationary covariance (MSDE) against the discrete one as η shrinks (O(η)).
(b) Adam at batch B = 4 against batch κB (κ = 2, 4) under Malladi et al.'s square-root rule (η√κ,
    1 − κ(1 − β), ε/√κ, n/κ steps) and under the linear rule (κη, n/κ steps): E L along the run at matched
    time, and the z of E θ and E L at the end (independent ensembles; ASDE-4).

Last line: ``optimizers: momentum_cov_relerr=<…> sqrt_rule_max_z=<largest |z|, square-root rule>
linear_rule_z=<the smallest, over κ, of the largest |z| under the linear rule>``.

Usage: python scripts/fig_optimizers.py [--quick] [--out fig_optimizers.png] [--seed 0]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from adaptive_sdes import rule_problem  # noqa: E402  (the scaling rule's problem: one definition, scripts/)

import sgdsde as sd  # noqa: E402
from sgdsde.analysis import (  # noqa: E402
    linear_scaling,
    momentum_sgd_stationary_cov,
    momentum_sme_stationary_cov,
    sqrt_scaling,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

H = np.diag([1.0, 0.3])
C = np.array([[0.5, 0.1], [0.1, 0.2]])


def momentum_stationary(n_paths: int, seed: int, lr: float = 0.1, beta: float = 0.9):
    """(ensemble covariance of θ, exact stationary covariance of θ, largest |z| over its entries) after 300
    steps from θ* (300 ≫ the slowest mode's 1/(1 − √β) ≈ 20 steps; 1e-7 of the transient left)."""
    problem = sd.quadratic_problem(H, np.zeros(2), dtype=np.float64)
    res = sd.simulate(
        sd.SGD(sd.GaussianNoise(C), optimizer=sd.Momentum(beta)),
        problem,
        np.zeros(2),
        lr=lr,
        n_steps=300,
        key=seed,
        ensemble=sd.Ensemble(n_paths),
        record=sd.Record(every=300, observables=("theta",), n_saved_paths=n_paths),
    )
    cov = np.cov(res.paths[-1].T)
    exact = momentum_sgd_stationary_cov(H, C, lr, beta)[:2, :2]
    # a sample covariance entry of Gaussian θ has standard error √((P_ii P_jj + P_ij²)/N)
    se = np.sqrt((np.outer(np.diag(exact), np.diag(exact)) + exact**2) / n_paths)
    return cov, exact, float(np.max(np.abs(cov - exact) / se))


def sme_gap(etas, beta: float = 0.9) -> np.ndarray:
    """‖S_SME − S_SGD‖_F/‖S_SGD‖_F for θ's stationary covariance, exact (Lyapunov equations), per η."""
    out = []
    for eta in etas:
        disc = momentum_sgd_stationary_cov(H, C, eta, beta)[:2, :2]
        sme = momentum_sme_stationary_cov(H, C, eta, beta)[:2, :2]
        out.append(np.linalg.norm(sme - disc) / np.linalg.norm(disc))
    return np.asarray(out)


def adam_run(problem, theta0, run, n_paths: int, key: int, records: int = 20):
    res = sd.simulate(
        sd.SGD(sd.MinibatchNoise(run.batch_size), optimizer=run.optimizer),
        problem,
        theta0,
        lr=run.lr,
        n_steps=run.n_steps,
        key=key,
        ensemble=sd.Ensemble(n_paths),
        record=sd.Record(every=run.n_steps // records, observables=("loss", "theta")),
    )
    (mt, st), (ml, sl) = res.final("theta"), res.final("loss")
    return res, np.append(mt, ml), np.append(st, sl)


def scaling_rule(n_paths: int, kappas, seed: int):
    """{(κ, rule): (result, z of (E θ₁, E θ₂, E L))} against the base run (B = 4, η = 0.01, 1000 steps)."""
    problem, theta0 = rule_problem()
    opt = sd.Adam(0.9, 0.999, 1e-8)
    base = sqrt_scaling(opt, 0.01, 4, 1, 1000)  # κ = 1: the base run itself
    res0, m0, s0 = adam_run(problem, theta0, base, n_paths, seed)
    out = {(1, "base"): (res0, np.zeros(3))}
    for kappa in kappas:
        for rule, fn in (("sqrt", sqrt_scaling), ("linear", linear_scaling)):
            run = fn(opt, base.lr, base.batch_size, kappa, base.n_steps)
            res, m1, s1 = adam_run(problem, theta0, run, n_paths, seed + 100 * kappa + (rule == "linear"))
            out[(kappa, rule)] = (res, (m1 - m0) / np.sqrt(s0**2 + s1**2))
    return out


def run(quick: bool = False, out: str = "fig_optimizers.png", seed: int = 0) -> dict:
    n_mom = 4096 if quick else 32768
    cov, exact, z_cov = momentum_stationary(n_mom, seed)
    relerr = float(np.linalg.norm(cov - exact) / np.linalg.norm(exact))
    print(f"(a) momentum SGD, beta = 0.9, lr = 0.1, {n_mom} paths: stationary covariance of theta")
    for i, j in ((0, 0), (0, 1), (1, 1)):
        print(f"  S[{i},{j}]: exact {exact[i, j]:.5f}  ensemble {cov[i, j]:.5f}")
    print(f"  relative Frobenius error {relerr:.4f}, largest |z| over entries {z_cov:.2f}")
    etas = np.array([2e-3, 1e-3, 5e-4, 2.5e-4])  # asymptotic once lr ≪ 1 − β (slope 0.86 over 0.02…0.0025)
    gaps = sme_gap(etas)
    slope = float(np.polyfit(np.log(etas), np.log(gaps), 1)[0])
    print("  momentum SME vs discrete, stationary covariance of theta (exact): relative gap per lr")
    for e, g in zip(etas, gaps, strict=True):
        print(f"    lr = {e:.4f}: {g:.3e}")
    print(f"  log-log slope {slope:.3f} (O(lr): 1)")

    kappas = (2, 4)
    n_rule = 1024 if quick else 4096
    runs = scaling_rule(n_rule, kappas, seed)
    print(f"(b) Adam, B = 4, lr = 0.01, 1000 steps vs batch 4 kappa ({n_rule} paths each): z at the end")
    print("  | kappa | rule | z(E theta_1) | z(E theta_2) | z(E L) |")
    for (kappa, rule), (_, z) in runs.items():
        if rule != "base":
            print(f"  | {kappa} | {rule} | {z[0]:+.2f} | {z[1]:+.2f} | {z[2]:+.2f} |")
    sqrt_max = max(float(np.max(np.abs(z))) for (k, r), (_, z) in runs.items() if r == "sqrt")
    linear_z = min(float(np.max(np.abs(z))) for (k, r), (_, z) in runs.items() if r == "linear")

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    labels = ["S00", "S01", "S11"]
    idx = [(0, 0), (0, 1), (1, 1)]
    x = np.arange(3)
    ax[0].bar(x - 0.2, [exact[i] for i in idx], 0.4, label="exact (Lyapunov)")
    ax[0].bar(x + 0.2, [cov[i] for i in idx], 0.4, label=f"ensemble ({n_mom} paths)")
    ax[0].set(xticks=x, xticklabels=labels, title="(a) momentum SGD: stationary covariance of θ")
    ax[0].legend()
    ax[1].loglog(etas, gaps, "o-", label="SME vs discrete (exact)")
    ax[1].loglog(etas, gaps[0] * etas / etas[0], "k:", label="slope 1")
    ax[1].set(xlabel="lr", ylabel="relative gap", title="(a) momentum SME: O(lr) stationary gap")
    ax[1].legend()
    for (kappa, rule), (res, _) in runs.items():
        style = {"base": "k-", "sqrt": "-", "linear": "--"}[rule]
        label = "B = 4" if rule == "base" else f"κ = {kappa}, {rule} rule"
        ax[2].plot(res.times / res.times[-1], res.mean["loss"], style, label=label)
    ax[2].set(xlabel="matched time (fraction of the run)", ylabel="E L", title="(b) Adam: scaling rules")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(
        f"optimizers: momentum_cov_relerr={relerr:.4f} sqrt_rule_max_z={sqrt_max:.2f} linear_rule_z={linear_z:.2f}"
    )
    return {"relerr": relerr, "z_cov": z_cov, "sme_slope": slope, "sqrt_max": sqrt_max, "linear_z": linear_z}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_optimizers.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.quick, args.out, args.seed)
