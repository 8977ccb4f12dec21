"""Theory 1: minibatch/label noise escapes sharp minima exponentially faster than flat ones; white noise does not.

The learned model: ``PolynomialCurve(3)`` on ``double_well_data`` (x on a circle orthogonal to p(θ₁) − p(θ₂),
y = xᵀp(θ₁)), so both θ_sharp = −1.2 (H = 4.20) and θ_flat = 0.3 (H = 1.24) fit the data exactly and the
barrier ΔL = 0.151 is the same from either side (THR-8). Noise: label noise σ = 4 (Gaussian) with batches drawn with
replacement, whose covariance (Σ_mb + σ²G)/B equals σ²H/B at both minima; the contrast is isotropic noise of the
same mean variance along [θ_sharp, θ_flat].

(a) Exact SDE escape times (analysis.mean_exit_time on the SME's own coefficients) against B/η: log T is
    linear in B/η with slope 2∫L′/Σ̂ for label noise (steeper for the flat minimum: flat minima are
    exponentially favoured), while for isotropic noise both slopes are 2ΔL/s² and T_flat/T_sharp stays at the
    prefactor ratio; Eyring–Kramers with state-dependent noise as the asymptote (THR-9).
(b) Monte Carlo escape times of SGD ((η, B) = (κη₀, κ), κ = 1, 2, 4 at one η/B) and of the SDE against the exact
    integral: the SDE within its standard errors; SGD collapses on η/B as η → 0 and departs linearly in η
    (THR-10).
Last line: ``sharp_minima: eta_over_B_collapse=<largest (max − min)/T_exact of SGD's escape times over the
(η, B) = (κη₀, κB₀) family at one η/B> kramers_max_z=<largest |z| of the SDE's Monte Carlo escape times against
the exact escape integral (of which Eyring–Kramers is the asymptote)>``.

Usage: python scripts/fig_sharp_minima.py [--quick] [--out fig_sharp_minima.png]
"""

from __future__ import annotations

import argparse
import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

import sgdsde as sd  # noqa: E402
from sgdsde.analysis import eyring_kramers_time, mean_exit_time, sme_coefficients  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MINIMA = (-1.2, 0.3)
SIGMA = 8.0
EXACT_RATIOS = (0.00125, 0.0015625, 0.001875, 0.00234375, 0.003125, 0.0046875)  # η/B, exact table
MC_RATIOS = (0.003125,)  # η/B for Monte Carlo
KAPPAS = (1, 2, 4)  # (η, B) = (κ·η/B, κ)
SDE_DT = 0.003125  # the SDE's Euler step (substeps of each SGD step)
HORIZON = 8.0  # run each ensemble for 8 mean escape times: e^{-8} ≈ 3e-4 of an exponential tail is censored


class Well:
    """The double well, its saddle, the escape targets and the SME coefficients of each noise."""

    def __init__(self):
        data = sd.double_well_data(MINIMA)
        self.problem = sd.Problem(sd.PolynomialCurve(3), data.X, data.y, jnp.float64)
        self.sharp, self.flat = data.minima
        self.h_sharp, self.h_flat = data.curvatures
        grad = lambda x: float(self.problem.grad(jnp.array([x]))[0])  # noqa: E731
        self.saddle = scipy.optimize.brentq(grad, self.sharp + 1e-3, self.flat - 1e-3)
        self.barrier = float(self.problem.loss(jnp.array([self.saddle])))
        # escape = reaching the midpoint between the saddle and the other minimum (committed to the other well)
        self.target = {"flat": (self.saddle + self.sharp) / 2, "sharp": (self.saddle + self.flat) / 2}
        self.start = {"flat": self.flat, "sharp": self.sharp}
        self.far = {"flat": 3.0, "sharp": -4.0}  # reflecting ends far beyond each well
        mu, s2 = sme_coefficients(self.problem, self.label_noise(1), 1.0)
        grid = np.linspace(self.sharp, self.flat, 2001)
        self.iso_variance = float(np.mean(s2(grid)))  # isotropic noise of the same mean variance (B = 1)

    def label_noise(self, batch: int) -> sd.LabelNoise:
        return sd.LabelNoise(SIGMA, batch, sampling="with_replacement", distribution="gaussian")

    def iso_noise(self, batch: int) -> sd.SphericalGaussianNoise:
        return sd.SphericalGaussianNoise(math.sqrt(self.iso_variance / batch))

    def noise(self, kind: str, batch: int):
        return self.label_noise(batch) if kind == "label" else self.iso_noise(batch)

    def exact(self, kind: str, lr: float, batch: int, well: str) -> float:
        mu, s2 = sme_coefficients(self.problem, self.noise(kind, batch), lr)
        return mean_exit_time(mu, s2, self.start[well], self.target[well], self.far[well])

    def kramers(self, kind: str, lr: float, batch: int, well: str) -> float:
        mu, s2 = sme_coefficients(self.problem, self.noise(kind, batch), lr)
        return eyring_kramers_time(mu, s2, self.start[well], self.saddle)

    def slope(self, kind: str, well: str) -> float:
        """2∫_a^b L′/Σ̂ dθ (Σ̂ = BΣ: the noise per unit η/B): the predicted d log T / d(B/η)."""
        mu, s2 = sme_coefficients(self.problem, self.noise(kind, 1), 1.0)
        y = np.linspace(self.start[well], self.saddle, 20001)
        return float(np.trapezoid(-2 * mu(y) / s2(y), y))

    def first_passage(self, well: str, bridge: float | None = None) -> sd.FirstPassage:
        return sd.FirstPassage(
            observable=lambda p, th: th[0],
            threshold=self.target[well],
            below=well == "flat",
            bridge_variance=bridge,
            absorb=True,  # what happens after the escape must not matter (the far side of a well is stiff)
        )

    def simulate(self, method: str, well: str, lr: float, batch: int, n_paths: int, seed: int):
        """MFPT ± s.e. (time units t = kη) of SGD or the SDE (Euler, dt ≈ SDE_DT, bridge test) from a minimum."""
        exact = self.exact("label", lr, batch, well)
        n_steps = int(HORIZON * exact / lr) + 1
        common = dict(
            lr=lr,
            n_steps=n_steps,
            key=seed,
            ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float64),
            record=sd.Record(),
        )
        x0 = np.array([self.start[well]])
        noise = self.label_noise(batch)
        if method == "sgd":
            res = sd.simulate_sgd(self.problem, noise, x0, first_passage=self.first_passage(well), **common)
        else:
            _, s2 = sme_coefficients(self.problem, noise, lr)
            bridge = float(s2(np.array([self.target[well]]))[0])
            res = sd.simulate_sde(
                self.problem,
                noise,
                x0,
                stepping=sd.Fixed(substeps=max(1, round(lr / SDE_DT))),
                first_passage=self.first_passage(well, bridge),
                **common,
            )
        m, se = res.first_passage.mfpt(allow_censored=True)
        return m, se, res.first_passage.censored, exact


def exact_table(w: Well, ratios) -> dict:
    rows = {}
    for r in ratios:
        rows[r] = {
            (kind, well): (w.exact(kind, r, 1, well), w.kramers(kind, r, 1, well))
            for kind in ("label", "iso")
            for well in ("flat", "sharp")
        }
    return rows


def main(quick: bool, out: str, seed: int) -> None:
    w = Well()
    print(
        f"double well: sharp θ = {w.sharp} (H = {w.h_sharp:.3f}), flat θ = {w.flat} (H = {w.h_flat:.3f}), "
        f"saddle {w.saddle:.4f}, barrier ΔL = {w.barrier:.4f} from both; label noise σ = {SIGMA} "
        f"(with replacement), isotropic variance {w.iso_variance:.4f}/B"
    )
    # (a) exact escape times in the SDE limit
    ratios = EXACT_RATIOS
    table = exact_table(w, ratios)
    print("\n(a) exact SDE escape times T (time units) and T/T_Kramers, against η/B")
    print(
        f"{'η/B':>7} | {'label: T_flat':>14} {'T/K':>5} {'T_sharp':>10} {'T/K':>5} {'flat/sharp':>10} | "
        f"{'iso: T_flat':>11} {'T_sharp':>8} {'flat/sharp':>10}"
    )
    for r in ratios:
        t = table[r]
        lf, ls, i_f, i_s = t["label", "flat"], t["label", "sharp"], t["iso", "flat"], t["iso", "sharp"]
        print(
            f"{r:7.4f} | {lf[0]:14.1f} {lf[0] / lf[1]:5.2f} {ls[0]:10.1f} {ls[0] / ls[1]:5.2f} "
            f"{lf[0] / ls[0]:10.2f} | {i_f[0]:11.1f} {i_s[0]:8.1f} {i_f[0] / i_s[0]:10.2f}"
        )
    inv = 1 / np.asarray(ratios)
    print("\nslope of log T against B/η (fit over the 3 smallest η/B) vs the prediction 2∫L′/Σ̂:")
    slopes = {}
    for kind in ("label", "iso"):
        for well in ("flat", "sharp"):
            logt = np.log([table[r][kind, well][0] for r in ratios])
            fit = np.polyfit(inv[:3], logt[:3], 1)[0]
            slopes[kind, well] = (fit, w.slope(kind, well))
            print(f"  {kind:5s} {well:5s}: fitted {fit:.4f}, predicted {w.slope(kind, well):.4f}")
    # (b) Monte Carlo: SGD on the (η, B) grid and the SDE, against the exact integral
    kappas = (1, 2) if quick else KAPPAS
    # quick: η/B = 0.0046875, where the escape takes a third of the steps (exact 12.3 against 24.3 time units)
    mc_ratios = (0.0046875,) if quick else MC_RATIOS
    wells = ("sharp",) if quick else ("flat", "sharp")
    n_sgd, n_sde = (150, 100) if quick else (2000, 1000)
    print(
        f"\n(b) Monte Carlo escape times (SGD {n_sgd} paths, SDE {n_sde}; z against the exact SDE integral)"
    )
    print(
        f"{'well':>5} {'η/B':>8} {'method':>6} {'η':>8} {'B':>3} {'exact':>8} {'MFPT ± s.e.':>17} {'z':>6} cens"
    )
    mc = {}
    for well in wells:
        for r in mc_ratios:
            # the SDE depends on η/B only (THR-10): simulate it at the largest η, with Euler substeps of SDE_DT
            runs = [("sde", kappas[-1])] + [("sgd", k) for k in kappas]
            for i, (method, k) in enumerate(runs):
                n = n_sde if method == "sde" else n_sgd
                m, se, cens, exact = w.simulate(method, well, r * k, k, n, seed + 1000 * i + 17 * len(mc))
                mc[well, r, method, k] = (m, se, exact)
                print(
                    f"{well:>5} {r:8.6f} {method:>6} {r * k:8.6f} {k:3d} {exact:8.2f} "
                    f"{m:9.2f} ± {se:6.2f} {(m - exact) / se:6.2f} {cens}"
                )
    kramers_max_z = max(abs(m - e) / s for (wl, r, meth, k), (m, s, e) in mc.items() if meth == "sde")
    print("\nSGD at fixed η/B against η (the SDE limit is η → 0 along the line):")
    collapse = 0.0
    for well in wells:
        for r in mc_ratios:
            ts = np.array([mc[well, r, "sgd", k][0] for k in kappas])
            ses = np.array([mc[well, r, "sgd", k][1] for k in kappas])
            exact = mc[well, r, "sgd", 1][2]
            spread = (ts.max() - ts.min()) / exact
            collapse = max(collapse, spread)
            etas = r * np.asarray(kappas, float)
            A = np.stack([np.ones_like(etas), etas], 1) / ses[:, None]
            coef, *_ = np.linalg.lstsq(A, ts / ses, rcond=None)
            cov = np.linalg.inv(A.T @ A)
            print(
                f"  {well:5s} η/B = {r}: T_SGD/T_exact = "
                + ", ".join(f"{t / exact:.3f} (η = {e:.5f})" for t, e in zip(ts, etas, strict=True))
                + f"; spread {spread:.3f}; linear fit in η: T(η → 0) = {coef[0]:.2f} ± {np.sqrt(cov[0, 0]):.2f}"
                f" (exact {exact:.2f}, z = {(coef[0] - exact) / np.sqrt(cov[0, 0]):.2f})"
            )

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind, style in (("label", "-"), ("iso", "--")):
        for well, color in (("flat", "C0"), ("sharp", "C3")):
            axes[0].semilogy(
                inv,
                [table[r][kind, well][0] for r in ratios],
                style,
                color=color,
                marker="o",
                label=f"{kind} noise, {well} minimum",
            )
    for (wl, r, meth, _k), (m, s, _e) in mc.items():
        axes[0].errorbar(
            1 / r,
            m,
            yerr=2 * s,
            fmt="s" if meth == "sde" else "x",
            color="C0" if wl == "flat" else "C3",
            ms=4,
        )
    axes[0].set_xlabel("B/η")
    axes[0].set_ylabel("mean escape time (SGD time units)")
    axes[0].set_title("exact SDE escape times (lines), SDE (■) and SGD (×) Monte Carlo")
    axes[0].legend(fontsize=8)
    for well, color in (("flat", "C0"), ("sharp", "C3")):
        for r in mc_ratios:
            if (well, r, "sgd", 1) not in mc:
                continue
            axes[1].errorbar(
                [r * k for k in kappas],
                [mc[well, r, "sgd", k][0] / mc[well, r, "sgd", k][2] for k in kappas],
                yerr=[2 * mc[well, r, "sgd", k][1] / mc[well, r, "sgd", k][2] for k in kappas],
                marker="o",
                color=color,
                label=f"{well}, η/B = {r}",
            )
    axes[1].axhline(1, color="k", lw=0.8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("η (B = η/(η/B))")
    axes[1].set_ylabel("SGD escape time / exact SDE time")
    axes[1].set_title("η/B collapse: SGD vs its SDE limit")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"\nwrote {out}")
    print(f"sharp_minima: eta_over_B_collapse={collapse:.2f} kramers_max_z={kramers_max_z:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_sharp_minima.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.quick, args.out, args.seed)
