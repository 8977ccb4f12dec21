"""Seed 001's last two systems (issue 25): self-distillation (Mobahi, Farajtabar & Bartlett 2020) and
batch-normalization noise (``bn_part``, from scripts/fig_batchnorm.py).

Self-distillation (theory/self-distillation.md) on a noisy-teacher regression: f*(x) = sin(πx) + ½cos(3x),
x ~ U[−1, 1], n = 20, labels f* + N(0, 0.5²), a linear model on p = 200 random Fourier features of a Laplace
kernel (bandwidth 0.3), K = ΦΦᵀ.
(a) The constrained form (ε = 0.02) over 20 data draws: per round c_t, the effective basis count N_t and the
    test error against f* (± s.e. over draws); the collapse round of each draw against ⌈ρ⌉ and the upper
    bound ⌈κ(ρ − 1)⌉ + 1 (DIST-3, DIST-4, DIST-8).
(b) The rounds before the collapse trained by GD (``SGD(None, optimizer=Momentum(0, weight_decay=c_t/n))``,
    per-round step 2n/(d_max + d_min + 2c_t), steps to a contraction ≤ 1e-12) against the closed form: the
    largest relative error over rounds (DIST-6).
(c) The plain form (c = 1, 3 rounds) trained by full-batch label-noise SGD (σ = 0.5) and by minibatch SGD
    (B = 4), η swept: the mean squared deviation from the GD rounds against λ (label: ησ²/n, with its exact
    value; minibatch: η/B), and the largest |z| of the path mean against the GD round (DIST-7).
(d) Batch-normalization noise (StochNorm, p = 0.5): the covariance of its gradient over batches and masks,
    enumerated, against an ensemble of its draws (NORM-2; scripts/fig_batchnorm.py has the rest).

Last line: ``seed001: distill_max_relerr=<(b)> collapse_round=<draw 0's> predicted=<lower>..<upper>
bn_cov_relerr=<(d)'s relative Frobenius error>``.

Usage: python scripts/fig_seed001.py [--quick] [--out fig_seed001.png] [--seed 0]
"""

from __future__ import annotations

import argparse
import math

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

import sgdsde as sd  # noqa: E402
from sgdsde.implicit import (  # noqa: E402
    effective_lambda,
    label_noise_rounds_msd,
    self_distillation,
    train_self_distillation,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

N, P_FEATURES, BANDWIDTH, NOISE_SD, EPSILON = 20, 200, 0.3, 0.5, 0.02


def teacher(x):
    return np.sin(np.pi * x) + 0.5 * np.cos(3 * x)


def draw(seed: int, n_test: int = 200):
    """(Φ (n, p), labels y, Φ at the test grid, f* at the test grid) of data draw ``seed``: random Fourier
    features √(2/p)cos(ωx + b), ω ~ Cauchy(0, 1/bandwidth) (the Laplace kernel's spectrum), b ~ U[0, 2π]."""
    rng = np.random.default_rng(seed)
    omega = rng.standard_cauchy(P_FEATURES) / BANDWIDTH
    phase = rng.uniform(0, 2 * np.pi, P_FEATURES)
    x = rng.uniform(-1, 1, N)
    xt = np.linspace(-1, 1, n_test)
    feats = lambda v: np.sqrt(2 / P_FEATURES) * np.cos(np.outer(v, omega) + phase)
    return feats(x), teacher(x) + NOISE_SD * rng.normal(size=N), feats(xt), teacher(xt)


def curve(n_draws: int, rounds: int, seed: int):
    """The constrained rounds of every draw: test error (draws, T + 1; column 0 is the zero predictor's error,
    unused), effective counts, c_t, collapse rounds and bounds."""
    errs, counts, cs, collapse, bounds = [], [], [], [], []
    for i in range(n_draws):
        Phi, y, Pt, ft = draw(seed + i)
        r = self_distillation(Phi @ Phi.T, y, rounds=rounds, epsilon=EPSILON)
        test = r.weights(Phi) @ Pt.T  # (T, m): f_t at the test grid
        errs.append(np.concatenate([[np.nan], np.mean((test - ft) ** 2, axis=1)]))
        counts.append(r.effective_count)
        cs.append(r.c)
        collapse.append(r.collapse_round)
        bounds.append(r.collapse_bounds)
    return np.array(errs), np.array(counts), np.array(cs), collapse, bounds


def trained_gd(seed: int, rounds: int, tol: float = 1e-12, max_rounds: int | None = None):
    """Largest relative error ‖ŷ_t − y_t‖/‖y_t‖ of the GD rounds before the collapse (the first ``max_rounds``
    of them), and the rounds' details."""
    Phi, y, _, _ = draw(seed)
    r = self_distillation(Phi @ Phi.T, y, rounds=rounds, epsilon=EPSILON)
    live = r.c[np.isfinite(r.c)][:max_rounds]
    dmin, dmax = float(r.eigenvalues[0]), float(r.eigenvalues[-1])
    lrs = 2 * N / (dmax + dmin + 2 * live)  # GD's best constant step per round
    rate = np.max((dmax - dmin) / (dmax + dmin + 2 * live))  # its contraction per step
    steps = int(math.ceil(math.log(tol) / math.log(rate)))
    tr = train_self_distillation(Phi, y, live, lr=lrs, n_steps=steps)
    k = live.size
    err = np.linalg.norm(tr.predictions[1:, 0] - r.predictions[1 : k + 1], axis=1)
    rel = err / np.linalg.norm(r.predictions[1 : k + 1], axis=1)
    return float(rel.max()), rel, steps, float(tr.contraction.max())


def noise_sweep(seed: int, factors, n_paths: int, rounds: int, noises, c: float = 1.0):
    """{noise name: [(lr, λ, msd (T,), msd s.e. (T,), exact msd (T,) or None, max |z| of the path mean against the
    GD round over the T·n eigen-coordinates of K, mean z² over them (≈ 1 when unbiased))]}."""
    Phi, y, _, _ = draw(seed)
    r = self_distillation(Phi @ Phi.T, y, rounds=rounds, c=c)
    dmin, dmax = float(r.eigenvalues[0]), float(r.eigenvalues[-1])
    base = N / (dmax + c)
    steps = int(
        math.ceil(30 / (min(factors) * (dmin + c) / (dmax + c)))
    )  # e^-30 of the transient at the smallest lr
    problem = sd.Problem(sd.LinearRegression(P_FEATURES), Phi, y)
    out = {}
    for name, noise in noises.items():
        rows = []
        for f in factors:
            lr = f * base
            tr = train_self_distillation(
                Phi, y, r.c, lr=lr, n_steps=steps, noise=noise, n_paths=n_paths, key=seed
            )
            dev = tr.predictions[1:] - r.predictions[1:, None, :]  # (T, P, n)
            msd = np.mean(dev**2, axis=2)
            se = msd.std(1, ddof=1) / math.sqrt(n_paths)
            ev = (
                dev @ r.eigenvectors
            )  # K's eigen-coordinates: (nearly) uncorrelated, unlike the n predictions
            z = ev.mean(1) / (ev.std(1, ddof=1) / math.sqrt(n_paths))
            if isinstance(noise, sd.LabelNoise):
                lam = effective_lambda(noise, lr, problem)
                exact = label_noise_rounds_msd(Phi, r.c, lr=lr, n_steps=steps, sigma=float(noise.sigma))
            else:
                lam, exact = lr / noise.batch_size, None
            rows.append((lr, lam, msd.mean(1), se, exact, float(np.max(np.abs(z))), float(np.mean(z**2))))
        out[name] = rows
    return out


def bn_part(quick: bool) -> float:
    """The batch-normalization noise part (issue 25, item 2): its enumerated-vs-ensemble covariance error,
    from scripts/fig_batchnorm.py (one definition; its fine-tuning experiment runs there)."""
    from fig_batchnorm import bn_part as law_relerr  # scripts/ is on sys.path when a script runs

    return law_relerr(quick)


def run(quick: bool = False, out: str = "fig_seed001.png", seed: int = 0) -> dict:
    n_draws, rounds = (6, 14) if quick else (20, 14)
    errs, counts, cs, collapse, bounds = curve(n_draws, rounds, seed)
    m, se = np.full(rounds + 1, np.nan), np.full(rounds + 1, np.nan)
    m[1:], se[1:] = errs[:, 1:].mean(0), errs[:, 1:].std(0, ddof=1) / math.sqrt(n_draws)
    cm, cse = counts.mean(0), counts.std(0, ddof=1) / math.sqrt(n_draws)
    print(f"(a) constrained self-distillation, epsilon = {EPSILON}, n = {N}, {n_draws} data draws (± s.e.)")
    print("  | round | c_t (draw 0) | median c_t | effective count | test error |")
    print(f"  | 0 | | | {cm[0]:.3g} | |")
    for t in range(1, rounds + 1):
        c0 = "inf (collapsed)" if not np.isfinite(cs[0, t - 1]) else f"{cs[0, t - 1]:.4g}"
        med = float(np.median(cs[:, t - 1]))
        print(f"  | {t} | {c0} | {med:.4g} | {cm[t]:.3g} ± {cse[t]:.2g} | {m[t]:.4f} ± {se[t]:.4f} |")
    best = int(np.nanargmin(m))
    print(f"  test error: round 1 {m[1]:.4f}, minimum {m[best]:.4f} at round {best}, last {m[-1]:.4f}")
    shape = bool(m[best] < m[1] - 2 * se[1] and m[-1] > m[best] + 2 * se[best])
    print(f"  falls then rises: {shape}")
    print("  collapse round per draw [ceil(rho), upper bound]:")
    print("   " + ", ".join(f"{c} [{lo}, {hi:.0f}]" for c, (lo, hi) in zip(collapse, bounds, strict=True)))
    ok = all(c is not None and lo <= c <= hi for c, (lo, hi) in zip(collapse, bounds, strict=True))
    above = [c - lo for c, (lo, _) in zip(collapse, bounds, strict=True) if c is not None]
    print(f"  bounds hold in every draw: {ok}; collapse round − ceil(rho): {min(above)}..{max(above)}")

    tol = 1e-8 if quick else 1e-12
    relerr, rel, steps, q = trained_gd(seed, rounds, tol, 4 if quick else None)
    print(
        f"(b) GD rounds vs closed form (draw 0, the first {rel.size} rounds before the collapse, {steps} steps per round, "
    )
    print(f"    largest contraction {q:.2g}): relative errors " + " ".join(f"{v:.1e}" for v in rel))

    factors = (0.1, 0.4) if quick else (0.025, 0.05, 0.1, 0.2, 0.4)
    n_paths, sweep_rounds = (4, 2) if quick else (32, 3)
    noises = {"label noise, sigma = 0.5": sd.LabelNoise(0.5)}
    if not quick:
        noises["minibatch, B = 4"] = sd.MinibatchNoise(4)
    sweep = noise_sweep(seed, factors, n_paths, sweep_rounds, noises)
    print(
        f"(c) plain form, c = 1, {sweep_rounds} rounds, {n_paths} paths: (1/n)|y_t(SGD) − y_t(GD)|^2 per round"
    )
    slopes = {}
    for name, rows in sweep.items():
        print(f"  {name}: | lr | lambda | msd per round ± s.e. | exact | max |z|, mean z^2 of the mean |")
        for lr, lam, msd, s, exact, zmax, z2 in rows:
            ex = "" if exact is None else " ".join(f"{v:.3e}" for v in exact)
            ms = " ".join(f"{a:.3e} ± {b:.1e}" for a, b in zip(msd, s, strict=True))
            print(f"    | {lr:.4f} | {lam:.3e} | {ms} | {ex} | {zmax:.2f}, {z2:.2f} |")
        lams = np.array([row[1] for row in rows])
        last = np.array([row[2][-1] for row in rows])
        slopes[name] = float(np.polyfit(np.log(lams), np.log(last), 1)[0])
        print(f"    log-log slope of the last round's msd against lambda: {slopes[name]:.3f} (O(lambda): 1)")

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    t = np.arange(1, rounds + 1)
    ax[0].errorbar(t, m[1:], yerr=se[1:], fmt="o-", capsize=3, label="test error (± s.e.)")
    ax[0].axhline(
        float(np.mean(teacher(np.linspace(-1, 1, 200)) ** 2)), color="k", ls=":", label="zero predictor"
    )
    ax[0].set(
        xlabel="round", ylabel="test error vs f*", yscale="log", title=f"(a) constrained, ε = {EPSILON}"
    )
    ax[0].legend()
    ax[1].errorbar(np.arange(rounds + 1), cm, yerr=cse, fmt="s-", capsize=3)
    ax[1].set(xlabel="round", ylabel="effective basis count N_t", title="(a) N_t = Σ_k B_tk / max_j B_tj")
    for name, rows in sweep.items():
        lams = np.array([row[1] for row in rows])
        ax[2].errorbar(
            lams, [row[2][-1] for row in rows], yerr=[row[3][-1] for row in rows], fmt="o", label=name
        )
        if rows[0][4] is not None:
            ax[2].plot(lams, [row[4][-1] for row in rows], "k--", label="label noise, exact")
    ax[2].set(
        xscale="log", yscale="log", xlabel="λ", ylabel="msd from GD, last round", title="(c) SGD rounds"
    )
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)

    bn = bn_part(quick)
    lo, hi = bounds[0]
    hi_s = "inf" if not math.isfinite(hi) else f"{hi:.0f}"
    print(
        f"seed001: distill_max_relerr={relerr:.2e} collapse_round={collapse[0]} predicted={lo}..{hi_s} bn_cov_relerr={bn:.4f}"
    )
    return {
        "relerr": relerr,
        "collapse": collapse,
        "bounds": bounds,
        "test_error": (m, se),
        "falls_then_rises": shape,
        "slopes": slopes,
        "bn_cov_relerr": bn,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_seed001.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.quick, args.out, args.seed)
