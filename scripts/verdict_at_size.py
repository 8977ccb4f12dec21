"""The L + λR verdict at size (issue 24): a tanh MLP on scikit-learn's digits (≥ 5 against < 5), squared loss on
±1 targets, Blanc's R = Σ‖∇f_i‖² with λ = ησ²/(4nB) (label noise σ, batch B; REG-3's 1/(4n)).

1. θ_init: the end of one label-noise SGD run from the MLP's default init (``--steps`` steps, lr η, B, σ);
2. ``stationary_point`` from θ_init (``--method``; the default "bfgs+newton" is at size the trust-region
   Newton–CG of CURV-7): wall time, solver steps, HVPs of the inner solves, ‖∇F‖, the Lanczos ends and the
   classification;
3. ``check_convergence`` of a label-noise SGD ensemble started at θ_init (``--paths`` paths, ``--steps``
   steps) against the prediction.

Last line: ``verdict_at_size: d=… seconds=… steps=… hvps=… residual=… kind=… converged=… verdict=…``.

Run: python scripts/verdict_at_size.py [--width W] [--steps T] [--quick] [--cache FILE] [--max-steps N] [--save FILE]
(default width 294: d = 19,405; ``--quick``: width 20, d = 1,321 > n = 1,078.)
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import sgdsde as sd
from sgdsde.implicit import OutputGradientNormRegularizer, _stationary

jax.config.update("jax_enable_x64", True)


def build(width: int, seed: int = 0):
    """Digits ≥ 5 against < 5 (±1 targets: the squared loss has one output, and label noise y + ε needs it),
    a tanh MLP 64–width–1: d = 66·width + 1."""
    data = sd.data.digits(seed, dtype=np.float64)
    y = np.where(np.asarray(data.y) >= 5, 1.0, -1.0)
    net = eqx.nn.MLP(64, "scalar", width, 1, activation=jnp.tanh, key=jax.random.key(seed))
    model = sd.FunctionModel.from_module(net)
    return sd.Problem(model, np.asarray(data.X), y), model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=294)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--no-verdict", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--method",
        default="bfgs+newton",
        help="stationary_point's method: 'bfgs+newton' (at size the trust-region Newton-CG, CURV-7), 'newton' "
        "(Newton-MINRES, CURV-6) or 'bfgs' (L-BFGS)",
    )
    ap.add_argument(
        "--lbfgs-first", action="store_true", help="at size, run L-BFGS before the trust region (as before)"
    )
    ap.add_argument("--cache", default="", help="a .npz to keep θ_init in (rerun: no SGD run)")
    ap.add_argument("--save", default="", help="a .npz to write the solver's end θ to")
    ap.add_argument(
        "--cg-max",
        type=int,
        default=None,
        help="the trust region's CG products per step (stationary_point's cg_max_steps; default d)",
    )
    a = ap.parse_args()
    if a.quick:
        a.width, a.steps = 20, 1000
    problem, model = build(a.width)
    n, d = problem.n_data, model.n_params
    noise = sd.LabelNoise(a.sigma, a.batch, "with_replacement")
    lam = sd.implicit.effective_lambda(noise, a.lr, problem) / (4 * n)
    print(f"d = {d}, n = {n}, lambda (Blanc) = {lam:.3g}")

    obs = sd.implicit.regularizer_observables(a.lr, problem=problem)
    reg = OutputGradientNormRegularizer()
    _stationary.TRACE = True
    _stationary.LBFGS_BEFORE_TRUST_REGION = a.lbfgs_first
    counter = _stationary.STATS
    cached = None
    if a.cache:
        try:
            cached = np.load(a.cache)
        except FileNotFoundError:
            pass
    if cached is not None:
        theta_init = cached["theta_init"]
    else:
        theta_init = initial_point(a, problem, model, noise, obs)
        if a.cache:
            np.savez(a.cache, theta_init=theta_init)
    counter.clear()
    t = time.perf_counter()
    p = sd.implicit.stationary_point(
        problem,
        reg,
        lam,
        theta_init,
        method=a.method,
        on_failure="flag",
        max_steps=a.max_steps,
        cg_max_steps=a.cg_max,
    )
    seconds = time.perf_counter() - t
    stats = dict(counter)  # predict's own solve below clears the counter
    print(p.table())
    print(f"stationary_point({a.method!r}): {seconds:.1f} s, stats {stats}")
    if a.save:
        np.savez(a.save, theta=p.theta, theta_init=theta_init)
    verdict = "skipped"
    if p.converged and not a.no_verdict:
        pred = sd.implicit.predict(
            problem,
            noise,
            a.lr,
            p.theta,
            regularizers=[reg],
            lam=lam,
            max_steps=a.max_steps,
            cg_max_steps=a.cg_max,
        )
        t = time.perf_counter()
        run2 = sd.simulate(
            sd.SGD(noise),
            problem,
            jnp.broadcast_to(jnp.asarray(p.theta), (a.paths, d)),
            lr=a.lr,
            n_steps=a.steps,
            key=2,
            ensemble=sd.Ensemble(n_paths=a.paths),
            record=sd.Record(every=max(1, a.steps // 20), observables=obs, n_saved_paths=a.paths),
        )
        report = sd.implicit.check_convergence(problem, run2, pred)
        print(report.table())
        verdict = ",".join(v.verdict for v in report.verdicts)
        print(f"run + verdict: {time.perf_counter() - t:.1f} s")
    print(
        f"verdict_at_size: d={d} seconds={seconds:.1f} steps={p.n_steps} hvps={stats.get('hvps', 'n/a')} "
        f"residual={p.residual:.3g} kind={p.kind} converged={p.converged} verdict={verdict}"
    )


def initial_point(a, problem, model, noise, obs):
    """The paths' mean at the end of a label-noise SGD run from the MLP's default init."""
    d = model.n_params
    t = time.perf_counter()
    run = sd.simulate(
        sd.SGD(noise),
        problem,
        jnp.broadcast_to(model.init(), (a.paths, d)),
        lr=a.lr,
        n_steps=a.steps,
        key=1,
        ensemble=sd.Ensemble(n_paths=a.paths),
        record=sd.Record(every=max(1, a.steps // 20), observables=obs),
    )
    theta_init = np.asarray(run.mean["theta"][-1])  # the paths' mean at the end
    print(
        f"SGD run to theta_init: {time.perf_counter() - t:.1f} s, L = {float(problem.loss(theta_init)):.3g}"
    )
    return theta_init


if __name__ == "__main__":
    main()
