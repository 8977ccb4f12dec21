"""Theory 3, SGD follows a regularized gradient flow: the error orders of GD against the plain and the
modified gradient flow (Barrett & Dherin), and of the exact epoch mean of shuffled / with-replacement SGD
against the flows of GD's and Smith et al.'s modified losses (theory/three-theories.md, THR-4..5).

Last line: ``modified_flow: gd_order=<GD vs L + (η/4)‖∇L‖² flow> smith_order=<shuffled epoch vs Smith's flow>``
(the other orders are printed above it, each with its 95% band).

Usage: python scripts/fig_modified_flow.py [--quick] [--out fig_modified_flow.png]   (--quick: η = 2⁻⁵…2⁻⁷, the
two-layer net only)
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

import sgdsde as sd  # noqa: E402
from sgdsde.analysis import fit_order  # noqa: E402
from sgdsde.implicit import expected_epoch, modified_flow  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def problems(seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(4, 2))
    y_net = np.tanh(X @ np.array([1.0, -0.5])) + 0.3 * rng.normal(size=4)
    net = sd.TwoLayerNetwork(2, 3, "tanh")
    two_layer = (
        sd.Problem(net, X, y_net, jnp.float64),
        np.asarray(net.init(jax.random.key(seed)), np.float64),
    )
    linear = (sd.Problem(sd.LinearRegression(2), X, rng.normal(size=4), jnp.float64), np.array([1.0, -1.0]))
    return {"two-layer tanh": two_layer, "linear regression": linear}


def run(quick: bool = False, out: str = "fig_modified_flow.png", seed: int = 0) -> dict:
    etas = 2.0 ** -np.arange(5, 8 if quick else 10)
    probs = problems(seed)
    curves, fits = {}, {}
    problem, theta0 = probs["two-layer tanh"]
    # one GD run per η, compared with both flows; one compiled program for every η (lr is traced, n_steps and
    # the record grid are not): each run takes the smallest η's 1/η steps and θ at time 1 (step 1/η) is read
    # from the records (equal bit for bit to a run of 1/η steps)
    n_steps, every = int(1 / etas[-1]), int(1 / etas[0])
    gd_end = [
        sd.simulate_sgd(
            problem,
            None,
            theta0,
            lr=eta,
            n_steps=n_steps,
            key=0,
            record=sd.Record(every=every, n_saved_paths=1),
        ).paths[int(1 / eta) // every, 0]
        for eta in etas
    ]
    for kind in ("plain", "gd"):
        curves[f"GD vs {kind} flow (two-layer, T = 1)"] = [
            np.linalg.norm(end - modified_flow(problem, theta0, 1.0, eta, kind))
            for end, eta in zip(gd_end, etas, strict=True)
        ]
    # quick: the two-layer net only (each flow solve compiles anew: the linear-regression curves would double
    # the run; tests/test_three_theories.py checks them)
    epoch_probs = probs if not quick else {"two-layer tanh": probs["two-layer tanh"]}
    for name, (problem, theta0) in epoch_probs.items():
        for sampling in ("shuffle", "with_replacement") if name == "linear regression" else ("shuffle",):
            means = [expected_epoch(problem, theta0, eta, 1, sampling) for eta in etas]
            for kind in ("gd", "smith"):
                errs = [
                    np.linalg.norm(m - modified_flow(problem, theta0, 4 * eta, eta, kind, batch_size=1))
                    for m, eta in zip(means, etas, strict=True)
                ]
                curves[f"{sampling} epoch vs {kind} flow ({name})"] = errs
    print(
        f"eta = 2^-5 ... 2^-{int(-np.log2(etas[-1]))}; orders of the error (95% band from the fit's residuals)"
    )
    for label, errs in curves.items():
        fits[label] = fit_order(etas, errs)
        print(f"  {label:55s} {fits[label]}")
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, errs in curves.items():
        ax.loglog(etas, errs, "o-", label=f"{label}: {fits[label].order:.2f}")
    ax.set(xlabel="step size η", ylabel="error", title="modified flows: GD order 2, shuffled SGD order 3")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    gd = fits["GD vs gd flow (two-layer, T = 1)"].order
    smith = fits["shuffle epoch vs smith flow (two-layer tanh)"].order
    print(f"modified_flow: gd_order={gd:.3f} smith_order={smith:.3f}")
    return {"fits": fits, "curves": curves}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_modified_flow.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.quick, args.out, args.seed)
