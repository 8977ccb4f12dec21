"""Stochastic resetting (Bae, Song & Jeong): first passage against T(r), and resetting against noisy labels.

(a) MFPT of 1-D drift–diffusion with Poissonian resetting (simulate_sde + FirstPassage with the bridge test)
    against T(r), for Pe = 0.5 and Pe = 2 (RESET-1..6).
(b) Test error of SGD on a noisy-label teacher problem (two-layer ReLU net, logistic loss) with and without
    resetting to the best-validation checkpoint (SGD solid, SDE dashed), and the latent gradient bias
    ‖τ∇R_w‖ along the run without resetting (RESET-7).
(c) The benefit (best-validation model's test error without minus with resetting) against the flip rate τ,
    for two batch sizes.
Last line: ``resetting: mfpt_max_z=<largest |z| over the grid> benefit=<gain at the default setting> ± <s.e.>``.

Usage: python scripts/fig_resetting.py [--quick] [--out fig_resetting.png]
"""

from __future__ import annotations

import argparse
import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

import sgdsde as sd  # noqa: E402
from sgdsde.analysis import latent_gradient_bias, mfpt_with_resetting, peclet  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

L, D, DT = 1.0, 1.0, 1e-3
LR = 0.01  # the mechanism's SGD step size (the paper's Setting 1, and seeds-001-003-004.md C.5(iv))


def drift_diffusion(v: float) -> sd.FunctionSDE:
    """dX = −v dt + √(2D) dW (a FunctionSDE is in its own time units: run with lr = DT)."""
    scale = math.sqrt(2 * D)
    return sd.FunctionSDE(
        lambda th, eta: jnp.full_like(th, -v),
        lambda th: jnp.full((1, 1), scale, th.dtype),
        noise_type="additive",
    )


def mfpt_point(v: float, r: float, n_paths: int, seed: int) -> tuple[float, float]:
    """Simulated MFPT ± s.e. from X₀ = L, run until fewer than 0.01 paths are expected still out (the
    inverse-Gaussian tail without resetting, 40 T(r) with it; ``mfpt()`` refuses censored runs)."""
    if r:
        horizon = 40 * mfpt_with_resetting(v, D, L, r)
    else:
        mu, shape = L / v, L**2 / (2 * D)
        horizon = float(scipy.stats.invgauss(mu / shape, scale=shape).isf(0.01 / n_paths))
    res = sd.simulate_sde(
        drift_diffusion(v),
        None,
        np.array([L]),
        lr=DT,
        n_steps=math.ceil(horizon / DT),
        key=seed,
        ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float64),
        resetting=sd.Resetting(r) if r else None,
        # without resetting the run ends at the last arrival (the passage steps are those of the full run)
        first_passage=sd.FirstPassage(
            observable=lambda p, th: th[0], threshold=0.0, bridge_variance=2 * D, stop=not r
        ),
    )
    return res.first_passage.mfpt()


def mfpt_grid(quick: bool, seed: int) -> list[tuple]:
    """Rows (Pe, r, T(r), simulated, s.e., z) over r for Pe = 0.5 (v = 1) and Pe = 2 (v = 4)."""
    rates = [0.0, 5.0] if quick else [0.0, 0.5, 1.0, 1.37, 2.0, 5.0]
    n_paths = 200 if quick else 8000
    rows = []
    for i, v in enumerate((1.0, 4.0)):
        for j, r in enumerate(rates):
            # a key per grid point: with one key the points share their noise and their errors correlate
            m, se = mfpt_point(v, r, n_paths, 1000 * seed + 10 * i + j)
            T = mfpt_with_resetting(v, D, L, r)
            rows.append((peclet(v, D, L), r, T, m, se, (m - T) / se))
    return rows


class Mechanism:
    """The noisy-label teacher problem: d = 20 inputs, n = 1000 training labels flipped with probability τ,
    clean validation (1000) and test (5000) sets, two-layer ReLU net of width 128, logistic loss."""

    def __init__(self, tau: float, n_train: int = 1000, width: int = 128, seed: int = 0):
        self.data = sd.noisy_teacher_classification(seed, n_train, 20, tau)
        self.net = sd.TwoLayerNetwork(20, width, "relu")
        self.problem = sd.Problem(self.net, self.data.X, self.data.y, loss=sd.LogisticLoss())
        self.val = sd.Problem(self.net, self.data.X_val, self.data.y_val, loss=sd.LogisticLoss())

    def val_loss(self, problem, theta):
        return self.val.loss(theta)

    def test_error(self, theta):
        out = self.net.outputs(theta, self.data.X_test)
        return jnp.mean((jnp.where(out >= 0, 1.0, -1.0) != self.data.y_test).astype(out.dtype))

    def bias_norms(self, problem, theta):
        """(‖(1−τ)∇R_c‖, ‖τ∇R_w‖, cos of the angle between them; 0 if either is 0): the latent gradient bias
        τ∇R_w."""
        clean, wrong = latent_gradient_bias(problem, theta, self.data.corrupted)
        nc, nw = jnp.linalg.norm(clean), jnp.linalg.norm(wrong)
        product = nc * nw  # 0 without corrupted labels: no bias, cosine reported as 0
        return jnp.stack([nc, nw, jnp.dot(clean, wrong) / jnp.where(product > 0, product, 1.0)])

    def run(
        self,
        batch: int,
        p: float,
        n_steps: int,
        n_paths: int,
        seed: int,
        sde: bool = False,
        every=None,
        momentum: float = 0.0,
    ):
        """(best-validation model's test error per path, the result). Resetting with per-step probability p
        (rate p/η) to the best-validation state, switched on after 1000 steps without improvement; validation
        every 10 steps, adaptive checkpoint (the authors' README example)."""
        theta0 = np.asarray(jax.vmap(self.net.init)(jax.random.split(jax.random.key(seed + 1), n_paths)))
        observables = {"test_error": lambda pr, th: self.test_error(th), "bias": self.bias_norms}
        noise = sd.MinibatchNoise(batch)
        # momentum: heavy ball, a reset restores the parameters only (the authors' --opt-reset 0 default)
        method = (
            sd.SDE(noise) if sde else sd.SGD(noise, optimizer=sd.Momentum(momentum) if momentum else None)
        )
        res = sd.simulate(
            method,
            self.problem,
            theta0,
            lr=LR,
            n_steps=n_steps,
            key=seed,
            ensemble=sd.Ensemble(n_paths=n_paths),
            record=sd.Record(every=every or n_steps // 20, observables=observables),
            events=(sd.Resetting(p / LR, checkpoint=sd.BestSoFar(self.val_loss, patience=1000, every=10)),),
        )
        best = jnp.asarray(res.resets.best_theta)
        return np.asarray(jax.vmap(self.test_error)(best)), res


def benefit(without: np.ndarray, with_: np.ndarray) -> tuple[float, float]:
    """Mean paired gain (same inits and keys) and its standard error over paths."""
    d = np.asarray(without) - np.asarray(with_)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def sem(x: np.ndarray) -> float:
    """Standard error of the mean over paths (0 for one path is not a standard error: NaN)."""
    x = np.asarray(x)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def run(quick: bool = False, out: str = "fig_resetting.png", seed: int = 0) -> dict:
    rows = mfpt_grid(quick, seed)
    print("(a) MFPT of drift-diffusion with resetting, L = D = 1, dt = 1e-3, bridge test")
    print("   Pe      r    T(r)   simulated ± s.e.      z")
    for pe, r, T, m, se, z in rows:
        print(f"  {pe:4.1f} {r:6.2f} {T:7.4f}  {m:7.4f} ± {se:6.4f}  {z:+5.2f}")
    max_z = max(abs(row[-1]) for row in rows)

    n_steps, n_paths = (2000, 4) if quick else (20000, 16)
    p_default, tau_default, b_default = 0.05, 0.4, 16
    # the paper's rates are 1% and 0.1% per step (seeds-001-003-004.md C.3); 5% is the README example's
    rates = (p_default,) if quick else (p_default, 0.01, 0.001)
    mech = Mechanism(tau_default)
    curves = {}
    errs = {}
    for p in (0.0, *rates):
        errs[p], res = mech.run(b_default, p, n_steps, n_paths, seed)
        if p in (0.0, p_default):
            curves[("SGD", p)] = res
    gain = benefit(errs[0.0], errs[p_default])
    sde_steps, sde_paths = (400, 2) if quick else (20000, 8)
    sde_errs = {}
    for p in (0.0, *rates):
        sde_errs[p], res = mech.run(b_default, p, sde_steps, sde_paths, seed, sde=True)
        if p in (0.0, p_default):
            curves[("SDE", p)] = res
    sde_gain = benefit(sde_errs[0.0], sde_errs[p_default])
    print(f"(b) tau = {tau_default}, B = {b_default}: best-validation model's test error ± s.e. over paths")
    print(f"  SGD ({n_steps} steps, {n_paths} paths): r=0 {errs[0.0].mean():.4f} ± {sem(errs[0.0]):.4f}")
    print(
        f"  SDE ({sde_steps} steps, {sde_paths} paths): r=0 {sde_errs[0.0].mean():.4f} ± {sem(sde_errs[0.0]):.4f}"
    )
    print("   p/step   SGD reset        SGD benefit        SDE reset        SDE benefit")
    by_rate = {}
    for p in rates:
        g, sg = benefit(errs[0.0], errs[p]), benefit(sde_errs[0.0], sde_errs[p])
        by_rate[p] = (g, sg)
        print(
            f"  {p:7.3f}  {errs[p].mean():.4f} ± {sem(errs[p]):.4f}  {g[0]:+.4f} ± {g[1]:.4f}  "
            f"{sde_errs[p].mean():.4f} ± {sem(sde_errs[p]):.4f}  {sg[0]:+.4f} ± {sg[1]:.4f}"
        )

    taus = [0.4] if quick else [0.0, 0.2, 0.4]
    batches = [16] if quick else [16, 64]
    table = {}
    for batch in batches:
        for tau in taus:
            m = mech if (tau, batch) == (tau_default, b_default) else Mechanism(tau)
            if (tau, batch) == (tau_default, b_default):
                table[(tau, batch)] = gain
                continue
            e0, _ = m.run(batch, 0.0, n_steps, n_paths, seed)
            e1, _ = m.run(batch, p_default, n_steps, n_paths, seed)
            table[(tau, batch)] = benefit(e0, e1)
    print("(c) benefit (test error without − with resetting) ± s.e.")
    for (tau, batch), (g, se) in sorted(table.items()):
        print(f"  tau = {tau:.1f}  B = {batch:3d}: {g:+.4f} ± {se:.4f}")

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    rr = np.linspace(0, 6, 200)
    for v, color in ((1.0, "C0"), (4.0, "C1")):
        pe = peclet(v, D, L)
        ax[0].plot(rr, [mfpt_with_resetting(v, D, L, r) for r in rr], color=color, label=f"T(r), Pe = {pe:g}")
        pts = [row for row in rows if row[0] == pe]
        ax[0].errorbar(
            [p[1] for p in pts], [p[3] for p in pts], [2 * p[4] for p in pts], fmt="o", color=color
        )
    ax[0].set(xlabel="resetting rate r", ylabel="mean first-passage time", title="(a) MFPT vs r (±2 s.e.)")
    ax[0].legend()
    for (kind, p), res in curves.items():
        style = "-" if kind == "SGD" else "--"
        ax[1].plot(
            res.steps, res.mean["test_error"], style, color="C0" if p == 0 else "C3", label=f"{kind}, p = {p}"
        )
    twin = ax[1].twinx()
    res0 = curves[("SGD", 0.0)]
    twin.plot(res0.steps, res0.mean["bias"][:, 1], ":", color="gray", label="‖τ∇R_w‖ (SGD, p = 0)")
    twin.set_ylabel("latent gradient bias norm")
    ax[1].set(
        xlabel="step", ylabel="test error (current model)", title=f"(b) τ = {tau_default}, B = {b_default}"
    )
    ax[1].legend(loc="upper right", fontsize=8)
    for batch in batches:
        g = [table[(t, batch)] for t in taus]
        ax[2].errorbar(
            taus, [x[0] for x in g], [2 * x[1] for x in g], marker="o", capsize=3, label=f"B = {batch}"
        )
    ax[2].axhline(0, color="k", lw=0.5)
    ax[2].set(
        xlabel="flip rate τ", ylabel="test-error gain of resetting", title=f"(c) benefit, p = {p_default}"
    )
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"resetting: mfpt_max_z={max_z:.2f} benefit={gain[0]:.4f} ± {gain[1]:.4f}")
    return {
        "rows": rows,
        "max_z": max_z,
        "benefit": gain,
        "sde_benefit": sde_gain,
        "table": table,
        "by_rate": by_rate,
    }


def momentum_study(beta: float = 0.9, quick: bool = False, seed: int = 0) -> dict:
    """The mechanism's benefit (τ = 0.4, B = 16, p = 0.05 per step) with heavy-ball momentum β beside plain
    SGD at the same step size (the authors' README example runs momentum 0.9); issue 23."""
    n_steps, n_paths = (2000, 4) if quick else (20000, 16)
    mech = Mechanism(0.4)
    out = {}
    for b in (0.0, beta):
        e0, _ = mech.run(16, 0.0, n_steps, n_paths, seed, momentum=b)
        e1, _ = mech.run(16, 0.05, n_steps, n_paths, seed, momentum=b)
        out[b] = (benefit(e0, e1), float(e0.mean()), sem(e0))
        g = out[b][0]
        print(
            f"momentum {b:.2f}: test error without resetting {e0.mean():.4f} ± {sem(e0):.4f}, "
            f"benefit {g[0]:+.4f} ± {g[1]:.4f}"
        )
    print(f"resetting_momentum: beta={beta} benefit={out[beta][0][0]:.4f} ± {out[beta][0][1]:.4f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_resetting.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--momentum", type=float, default=0.0, help="only the momentum comparison, at this β")
    args = parser.parse_args()
    if args.momentum:
        momentum_study(args.momentum, args.quick, args.seed)
        raise SystemExit
    run(args.quick, args.out, args.seed)
