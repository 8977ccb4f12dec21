"""Kernel vs rich regime (Woodworth et al. 2020): gradient descent on a diagonal linear network from scale α
converges to argmin Q_α(β) s.t. Xβ = y, between the min-ℓ2 (α → ∞) and min-ℓ1 (α → 0) interpolants.

Plots ‖β_α‖₁ and ‖β_α − β*‖ against α for the exact limit (sgdsde.implicit.kernel_rich_limit) and for simulated
GD, with the ℓ1 and ℓ2 interpolants as asymptotes. theory/three-theories.md, THR-1..3.
Last line: ``kernel_rich: max_kkt_gap=<largest ‖Xβ_α − y‖∞> max_gd_gap=<largest ‖β_GD − β_α‖ at the finest lr>``.

Usage: python scripts/fig_kernel_rich.py [--quick] [--out fig_kernel_rich.png]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

import sgdsde as sd  # noqa: E402
from sgdsde.implicit import kernel_rich_limit, min_l1_interpolant, min_l2_interpolant  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def gd_limit(X, y, alpha: float, lr: float, n_steps: int) -> tuple[np.ndarray, float]:
    """β at the end of GD from u = v = α𝟙, and the final training loss."""
    problem = sd.Problem(sd.DiagonalLinearNetwork(X.shape[1], alpha=alpha), X, y, jnp.float64)
    res = sd.simulate_sgd(
        problem, None, problem.model.init(), lr=lr, n_steps=n_steps, key=0, record=sd.Record(n_saved_paths=1)
    )
    return np.asarray(problem.model.weights(jnp.asarray(res.paths[-1, 0]))), float(res.mean["loss"][-1])


def run(quick: bool = False, out: str = "fig_kernel_rich.png", seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n, d = 20, 50
    X = rng.normal(size=(n, d))
    beta_star = np.zeros(d)
    beta_star[:3] = [1.0, -2.0, 1.5]
    y = X @ beta_star
    l1, l2 = min_l1_interpolant(X, y), min_l2_interpolant(X, y)
    alphas = np.logspace(-3, 1, 5 if quick else 13)
    limits = [kernel_rich_limit(X, y, a) for a in alphas]
    # GD: step ~ 0.01/max(1, α²) (the loss's curvature grows like α²); steps to convergence ~ 1/(lr·α²) for
    # large α and ~ log(1/α)/lr for small α
    gd_alphas = [0.1, 1.0, 10.0] if quick else [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    print(
        f"n = {n}, d = {d}, 3-sparse truth; |beta*|_1 = 4.5, min-l1 |.|_1 = {np.abs(l1).sum():.4f}, min-l2 |.|_1 = {np.abs(l2).sum():.4f}"
    )
    print("   alpha   |beta_a|_1  |beta_a - beta*|  KKT gap")
    for a, s in zip(alphas, limits, strict=True):
        print(
            f"  {a:7.4f}  {np.abs(s.beta).sum():9.4f}  {np.linalg.norm(s.beta - beta_star):14.4g}  {s.kkt_gap:.2g}"
        )
    print("   alpha      lr    |beta_GD - beta_a|   (lr/4)    ratio   final loss")
    gd = {}
    for a in gd_alphas:
        lr = 0.01 / max(1.0, a * a)
        # the step budget: 20 time constants; --quick takes 8 (1.3M instead of 3M steps): its final losses are
        # still <= 1e-22 and its gaps |β_GD − β_α| (the O(lr) bias the ratio column measures) equal to 3 digits
        steps = int(min(4e5, (8 if quick else 20) / (lr * min(1.0, a * a)) * max(1.0, np.log(1 / a))))
        target = kernel_rich_limit(X, y, a).beta
        b1, _ = gd_limit(X, y, a, lr, steps)
        b2, loss = gd_limit(X, y, a, lr / 4, 4 * steps)
        g1, g2 = np.linalg.norm(b1 - target), np.linalg.norm(b2 - target)
        gd[a] = (b2, g2)
        print(f"  {a:7.3f}  {lr:7.1e}  {g1:14.3g}  {g2:10.3g}  {g1 / g2:6.2f}   {loss:.1e}")

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    ax[0].semilogx(alphas, [np.abs(s.beta).sum() for s in limits], "-", label="β_α (exact limit)")
    ax[0].semilogx(list(gd), [np.abs(b).sum() for b, _ in gd.values()], "o", label="GD")
    ax[0].axhline(np.abs(l1).sum(), ls=":", color="k", label="min-ℓ1 interpolant")
    ax[0].axhline(np.abs(l2).sum(), ls="--", color="k", label="min-ℓ2 interpolant")
    ax[0].set(xlabel="initial scale α", ylabel="‖β‖₁", title="kernel (large α) vs rich (small α)")
    ax[0].legend(fontsize=8)
    ax[1].semilogx(alphas, [np.linalg.norm(s.beta - beta_star) for s in limits], "-", label="β_α")
    ax[1].semilogx(list(gd), [np.linalg.norm(b - beta_star) for b, _ in gd.values()], "o", label="GD")
    ax[1].set(xlabel="initial scale α", ylabel="‖β − β*‖", title="recovery of the sparse truth")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    max_kkt = max(s.kkt_gap for s in limits)
    max_gd = max(g for _, g in gd.values())
    print(f"kernel_rich: max_kkt_gap={max_kkt:.2e} max_gd_gap={max_gd:.2e}")
    return {"limits": limits, "gd": gd, "max_kkt_gap": max_kkt, "max_gd_gap": max_gd}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_kernel_rich.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.quick, args.out, args.seed)
