"""Large initial learning rate, then anneal (Li, Wei & Ma 2019): learning order on the two-pattern toy.

Arms (same data, initialisations and keys): small LR η₂ throughout; large LR η₁ annealed to η₂ at k₀ (SGD's
own noise); the authors' proxy, small LR with Gaussian pre-activation noise switched off at k₀; and the SDE
(order 1, minibatch noise) of the small and large schedules. Also: the temperature η/B (B varied at fixed
η₁/B), SVAG (l = 1 vs 4) as the check of the SDE at η₁, a sweep over (η₁, B, width, margin), and a phase
diagram over (η₁, k₀). theory/large-lr.md, LLR-1..5.

Last line: ``large_lr: test_gap=<small − large P-only test error> ± <s.e.> order_large=<P|Q first>
order_small=<P|Q first>`` for SGD's own noise (the proxy's numbers are printed above it).

Usage: python scripts/fig_large_lr.py [--quick] [--out fig_large_lr.png]
"""

from __future__ import annotations

import argparse
import inspect
import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

import sgdsde as sd  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GROUPS = ("P", "Q", "PQ")


class Toy:
    """The two-pattern data (LLR-1) and a two-layer ReLU net with the second layer fixed at ±1/√m."""

    def __init__(self, n=200, dim_p=300, width=100, margin=0.1, loss="squared", seed=0):
        self.data = sd.two_pattern_data(seed, n, dim_p=dim_p, margin=margin)
        signs = tuple(np.where(np.arange(width) % 2 == 0, 1.0, -1.0) / np.sqrt(width))
        self.net = sd.TwoLayerNetwork(dim_p + 3, width, "relu", train_second_layer=False, second_layer=signs)
        self.loss = sd.SquaredLoss() if loss == "squared" else sd.LogisticLoss()
        self.problem = sd.Problem(self.net, self.data.X, self.data.y, loss=self.loss)

    def observables(self) -> dict:
        """Per group: test error, margin y·f on test examples, training loss and training error."""
        d, net, loss = self.data, self.net, self.loss

        def per_group(X, y, group, k, kind):
            mask = (group == k).astype(jnp.result_type(float))

            def f(problem, theta):
                out = net.outputs(theta, X)
                if kind == "error":
                    v = (jnp.where(out >= 0, 1.0, -1.0) != y).astype(out.dtype)
                elif kind == "margin":
                    v = y * out
                else:
                    v = jax.vmap(loss)(out, y)
                m = mask.astype(out.dtype)
                return jnp.sum(v * m) / jnp.sum(m)

            return f

        obs = {}
        for k, g in enumerate(GROUPS):
            obs[f"test_error_{g}"] = per_group(d.X_test, d.y_test, d.group_test, k, "error")
            obs[f"margin_{g}"] = per_group(d.X_test, d.y_test, d.group_test, k, "margin")
            obs[f"train_loss_{g}"] = per_group(d.X, d.y, d.group, k, "loss")
            obs[f"train_error_{g}"] = per_group(d.X, d.y, d.group, k, "error")
        return obs

    def run(
        self,
        *,
        eta1,
        eta2,
        k0,
        n_steps,
        n_paths,
        batch=16,
        sigma=0.0,
        sde=False,
        order=1,
        svag=0,
        seed=0,
        every=None,
        momentum=0.0,
    ):
        theta0 = np.asarray(jax.vmap(self.net.init)(jax.random.split(jax.random.key(seed + 7), n_paths)))
        lr = eta2 if eta1 == eta2 else sd.StepDecayLR(eta1, [k0], eta2 / eta1)
        noise = sd.PreactivationNoise(sigma, batch, anneal_step=k0) if sigma > 0 else sd.MinibatchNoise(batch)
        kw = dict(
            lr=lr,
            n_steps=n_steps,
            key=seed,
            ensemble=sd.Ensemble(n_paths=n_paths),
            record=sd.Record(
                every=every or n_steps // 40, observables=self.observables(), n_saved_paths=n_paths
            ),
        )
        if sde:
            return sd.simulate_sde(self.problem, noise, theta0, order=order, **kw)
        if svag:
            return sd.simulate_svag(self.problem, noise, theta0, l=svag, **kw)
        if momentum:  # heavy ball (PyTorch's form, as the authors' CIFAR runs use it)
            return sd.simulate(sd.SGD(noise, optimizer=sd.Momentum(momentum)), self.problem, theta0, **kw)
        return sd.simulate_sgd(self.problem, noise, theta0, **kw)


def first_of(p_curve, q_curve) -> str:
    """ "P" or "Q": whose training loss first falls below half its initial value (at the first record where
    either does, the one with the lower fraction of its initial loss; "none" if neither ever does)."""
    rel = np.stack([p_curve / p_curve[0], q_curve / q_curve[0]])
    hit = np.flatnonzero(np.any(rel <= 0.5, axis=0))
    if not len(hit):
        return "none"
    return "PQ"[int(np.argmin(rel[:, hit[0]]))]


def learned_first(res) -> tuple[str, float]:
    """The order of the ensemble-mean training losses (``first_of``) and the record step where it is decided."""
    rel = np.stack([res.mean["train_loss_P"], res.mean["train_loss_Q"]])
    hit = np.flatnonzero(np.any(rel <= 0.5 * rel[:, :1], axis=0))
    return first_of(*rel), (res.steps[hit[0]] if len(hit) else np.inf)


def per_path(toy: Toy, res) -> dict:
    """Per path, from the saved states: which pattern was learned first, and the final P-only test error."""
    obs = toy.observables()
    lp = jax.vmap(jax.vmap(lambda th: obs["train_loss_P"](None, th)))(jnp.asarray(res.paths))
    lq = jax.vmap(jax.vmap(lambda th: obs["train_loss_Q"](None, th)))(jnp.asarray(res.paths))
    err = jax.vmap(lambda th: obs["test_error_P"](None, th))(jnp.asarray(res.paths[-1]))
    order = [first_of(np.asarray(lp[:, i]), np.asarray(lq[:, i])) for i in range(res.paths.shape[1])]
    return {"order": np.array(order), "test_error_P": np.asarray(err)}


def fraction(flags: np.ndarray) -> tuple[float, float]:
    """A fraction over paths and its binomial standard error."""
    p = float(np.mean(flags))
    return p, math.sqrt(max(p * (1 - p), 1e-12) / len(flags))


def paired_gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """mean(a − b) over paired paths (same init, same key) and its standard error."""
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def final(res, name) -> tuple[float, float]:
    m, se = res.final(name)
    return float(m), float(se)


def gap(small, large, name="test_error_P") -> tuple[float, float]:
    """small − large at the end, with the s.e. of the difference of two ensembles (conservative for paired
    paths: the covariance between arms is left out)."""
    a, sa = final(small, name)
    b, sb = final(large, name)
    return a - b, math.hypot(sa, sb)


def run(quick: bool = False, out: str = "fig_large_lr.png", seed: int = 0) -> dict:
    toy = Toy(seed=seed)
    runs = {}

    def toy_run(**kw):
        """toy.run, once per configuration: the temperature row (η₁, B = 16) and the phase diagram's cells at
        k₀ = n_steps/2 for η₁ = η₂, η₁ are the arms' runs (same data, keys and inits: the same numbers)."""
        bound = inspect.signature(toy.run).bind(**kw)
        bound.apply_defaults()
        key = tuple(sorted(bound.arguments.items()))
        if key not in runs:
            runs[key] = toy.run(**kw)
        return runs[key]

    # quick: the pipeline at a size whose runs are short next to their compiles (the suite checks the line);
    # 280 = 40 records of 7 steps: no shorter last record, so each run compiles one block program, not two
    n_steps, n_paths = (280, 4) if quick else (8000, 8)
    k0 = n_steps // 2
    eta2, eta1, sigma = 0.05, 0.5, 1.0
    base = dict(eta2=eta2, k0=k0, n_steps=n_steps, n_paths=n_paths, seed=seed)
    arms = {
        "small (SGD)": toy_run(eta1=eta2, **base),
        "large→anneal (SGD)": toy_run(eta1=eta1, **base),
        "proxy: pre-act. noise→off": toy_run(eta1=eta2, sigma=sigma, **base),
    }
    sde_paths = 2 if quick else 4
    sde_base = dict(base, n_paths=sde_paths)
    arms["small (SDE)"] = toy_run(eta1=eta2, sde=True, **sde_base)
    arms["large→anneal (SDE)"] = toy_run(eta1=eta1, sde=True, **sde_base)
    if not quick:  # the order-2 SME (drift −∇(L + (η/4)‖∇L‖²)) of the large-LR schedule
        arms["large→anneal (SDE o2)"] = toy_run(eta1=eta1, sde=True, order=2, **sde_base)

    print(f"two-pattern toy: n = 200, d_P = 300, width 100, squared loss, B = 16, {n_steps} steps, k0 = {k0}")
    print("per path: P learned first (fraction ± s.e.); final test errors per group ± s.e.; P-only at k0")
    print(f"{'arm':28s} {'P first':>12s}  " + "  ".join(f"test {g:2s}     " for g in GROUPS) + " P at k0")
    pp, orders = {}, {}
    for name, res in arms.items():
        pp[name] = per_path(toy, res)
        p_first = fraction(pp[name]["order"] == "P")
        orders[name] = "P" if p_first[0] > 0.5 else "Q"
        pre = int(np.searchsorted(res.steps, k0))
        errs = "  ".join("{:.3f}±{:.3f}".format(*final(res, f"test_error_{g}")) for g in GROUPS)
        print(f"{name:28s} {p_first[0]:5.2f} ± {p_first[1]:.2f}  {errs}  {res.mean['test_error_P'][pre]:.3f}")
    err = {name: v["test_error_P"] for name, v in pp.items()}
    g_sgd = paired_gap(err["small (SGD)"], err["large→anneal (SGD)"])
    g_proxy = paired_gap(err["small (SGD)"], err["proxy: pre-act. noise→off"])
    g_sde = paired_gap(err["small (SDE)"], err["large→anneal (SDE)"])
    print(
        f"P-only test gap small − large (paired): SGD {g_sgd[0]:+.4f} ± {g_sgd[1]:.4f}, SDE {g_sde[0]:+.4f} ± {g_sde[1]:.4f}"
    )
    print(f"P-only test gap small − proxy (paired): {g_proxy[0]:+.4f} ± {g_proxy[1]:.4f}")

    # the temperature η/B: B varied at fixed η₁/B, and SVAG as the check of the SDE at η₁
    temps = [(eta1, 16), (2 * eta1, 32)] if not quick else [(eta1, 16)]
    print("temperature eta1/B fixed:")
    for e1, b in temps:
        res = toy_run(eta1=e1, batch=b, **dict(base, eta2=eta2 * b / 16))
        print(f"  eta1 = {e1:.2f}, B = {b:2d}: final P test error {final(res, 'test_error_P')[0]:.3f}")
    if not quick:
        for l in (1, 4):  # noqa: E741
            res = toy_run(eta1=eta1, svag=l, **base)
            print(
                f"  SVAG l = {l}: final P test error {final(res, 'test_error_P')[0]:.3f} ± {final(res, 'test_error_P')[1]:.3f}"
            )

    # phase diagram over (η₁, k₀) for SGD and the SDE
    etas = [0.05, 0.5] if quick else [0.05, 0.1, 0.2, 0.5, 1.0]
    k0s = [k0] if quick else [n_steps // 8, n_steps // 4, n_steps // 2]
    phase = {"SGD": np.zeros((len(etas), len(k0s))), "SDE": np.zeros((len(etas), len(k0s)))}
    first_p = {"SGD": np.zeros((len(etas), len(k0s)), bool), "SDE": np.zeros((len(etas), len(k0s)), bool)}
    for i, e1 in enumerate(etas):
        for j, k in enumerate(k0s):
            for kind in ("SGD", "SDE") if not quick else ("SGD",):
                kw = dict(base, k0=k, n_paths=n_paths if kind == "SGD" else sde_paths)
                res = toy_run(eta1=e1, sde=kind == "SDE", **kw)
                phase[kind][i, j] = final(res, "test_error_P")[0]
                first_p[kind][i, j] = learned_first(res)[0] == "P"
    for kind, label in (("SGD", "SGD"), ("SDE", "SDE, order 1"))[: 1 if quick else 2]:
        print(f"phase diagram, final P-only test error ({label}):")
        for i, e1 in enumerate(etas):
            print(
                f"  eta1 = {e1:4.2f}: "
                + "  ".join(
                    f"k0={k}: {phase[kind][i, j]:.3f}{'*' if first_p[kind][i, j] else ''}"
                    for j, k in enumerate(k0s)
                )
            )
    print("  (* = P learned first)")

    if not quick:
        print("sweep (eta1, B, width, margin), final P-only test error, large−anneal vs small:")
        for width in (100, 400):
            for margin in (0.1, 0.05):
                t = Toy(width=width, margin=margin, seed=seed)
                for b in (4, 16):
                    small = t.run(eta1=eta2, batch=b, **base)
                    for e1 in (0.2, 0.5, 1.0):
                        large = t.run(eta1=e1, batch=b, **base)
                        gp = gap(small, large)
                        print(
                            f"  width {width:3d} margin {margin:.2f} B {b:2d} eta1 {e1:.1f}: gap {gp[0]:+.3f} ± {gp[1]:.3f}"
                        )

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = {"small": "C0", "large→anneal": "C3", "proxy: pre-act. noise→off": "C2"}
    for name, res in arms.items():
        kind = "SDE" if "SDE" in name else "SGD"
        label = name.split(" (")[0]
        style = "--" if kind == "SDE" else "-"
        c = colors.get(label, "C2")
        ax[0].plot(res.steps, res.mean["test_error_P"], style, color=c, label=f"{name}")
        ax[1].plot(res.steps, res.mean["test_error_Q"], style, color=c, label=f"{name}")
    for a, g in zip(ax[:2], ("P", "Q"), strict=True):
        a.axvline(k0, color="gray", lw=0.5)
        a.set(
            xlabel="step", ylabel=f"{g}-only test error", title=f"{g}-only examples (SGD solid, SDE dashed)"
        )
    ax[0].legend(fontsize=7)
    im = ax[2].imshow(phase["SGD"], origin="lower", aspect="auto", cmap="viridis")
    ax[2].set_xticks(range(len(k0s)), [str(k) for k in k0s])
    ax[2].set_yticks(range(len(etas)), [f"{e:g}" for e in etas])
    ax[2].set(xlabel="anneal step k0", ylabel="eta1", title="final P-only test error (SGD)")
    fig.colorbar(im, ax=ax[2])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(
        f"large_lr: test_gap={g_sgd[0]:.4f} ± {g_sgd[1]:.4f} order_large={orders['large→anneal (SGD)']} "
        f"order_small={orders['small (SGD)']}"
    )
    return {
        "arms": arms,
        "gap_sgd": g_sgd,
        "gap_proxy": g_proxy,
        "gap_sde": g_sde,
        "orders": orders,
        "phase": phase,
    }


def momentum_study(beta: float = 0.9, quick: bool = False, seed: int = 0) -> dict:
    """The headline comparison (small LR vs large→anneal, SGD's own noise, paired) with heavy-ball momentum β
    next to plain SGD, at the same step sizes (the authors ran momentum 0.9 at these LRs on CIFAR); issue 23."""
    toy = Toy(seed=seed)
    n_steps, n_paths = (1000, 4) if quick else (8000, 8)
    base = dict(eta2=0.05, k0=n_steps // 2, n_steps=n_steps, n_paths=n_paths, seed=seed)
    out = {}
    for b in (0.0, beta):
        small = per_path(toy, toy.run(eta1=0.05, momentum=b, **base))
        large = per_path(toy, toy.run(eta1=0.5, momentum=b, **base))
        g = paired_gap(small["test_error_P"], large["test_error_P"])
        first = (fraction(large["order"] == "P")[0], fraction(small["order"] == "P")[0])
        out[b] = (g, first)
        print(
            f"momentum {b:.2f}: P-only test gap small − large (paired) {g[0]:+.4f} ± {g[1]:.4f}; "
            f"P learned first: large {first[0]:.2f}, small {first[1]:.2f}"
        )
    print(f"large_lr_momentum: beta={beta} test_gap={out[beta][0][0]:.4f} ± {out[beta][0][1]:.4f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="fig_large_lr.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--momentum", type=float, default=0.0, help="only the momentum comparison, at this β")
    args = parser.parse_args()
    if args.momentum:
        momentum_study(args.momentum, args.quick, args.seed)
        raise SystemExit
    run(args.quick, args.out, args.seed)
