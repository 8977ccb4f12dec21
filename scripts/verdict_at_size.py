"""The L + λR verdict at size (issue 24): a tanh MLP on scikit-learn's digits (≥ 5 against < 5), squared loss on
±1 targets, Blanc's R = Σ‖∇f_i‖² with λ = ησ²/(4nB) (label noise σ, batch B; REG-3's 1/(4n)).

1. θ_init: the end of one label-noise SGD run from the MLP's default init (``--steps`` steps, lr η, B, σ);
2. ``stationary_point`` from θ_init (L-BFGS, then the at-size Newton): wall time, solver steps, HVPs of
   Newton's inner solves, ‖∇F‖, the Lanczos ends and the classification;
3. ``check_convergence`` of a label-noise SGD ensemble started at θ_init (``--paths`` paths, ``--steps``
   steps) against the prediction.

Last line: ``verdict_at_size: d=… seconds=… steps=… hvps=… residual=… kind=… converged=… verdict=…``.

Run: python scripts/verdict_at_size.py [--width W] [--steps T] [--quick] [--cache FILE] [--trust-region N]
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
        "--trust-region",
        type=int,
        default=0,
        help="instead of Newton: this many Steihaug trust-region Newton-CG steps on F (an experiment)",
    )
    ap.add_argument(
        "--cache", default="", help="a .npz to keep θ_init and L-BFGS's end in (rerun: Newton only)"
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
    counter = _stationary.STATS
    cached = None
    if a.cache:
        try:
            cached = np.load(a.cache)
        except FileNotFoundError:
            pass
    if cached is not None:
        theta_init, theta_descent, t_descent, n_descent = (
            cached["theta_init"],
            cached["theta_descent"],
            float(cached["t"]),
            int(cached["n"]),
        )
    else:
        theta_init = initial_point(a, problem, model, noise, obs)
        t = time.perf_counter()
        q = sd.implicit.stationary_point(
            problem, reg, lam, theta_init, method="bfgs", on_failure="flag", max_steps=a.max_steps
        )
        theta_descent, t_descent, n_descent = q.theta, time.perf_counter() - t, q.n_steps
        print(f"L-BFGS: {t_descent:.1f} s, {n_descent} steps, |grad F| = {q.residual:.3g}")
        if a.cache:
            np.savez(a.cache, theta_init=theta_init, theta_descent=theta_descent, t=t_descent, n=n_descent)
    if a.trust_region:
        trust_region_experiment(problem, reg, lam, theta_descent, a.trust_region)
        return
    if a.trust_region:
        trust_region_experiment(problem, reg, lam, theta_descent, a.trust_region)
        return
    counter.clear()
    t = time.perf_counter()
    p = sd.implicit.stationary_point(
        problem, reg, lam, theta_descent, method="newton", on_failure="flag", max_steps=a.max_steps
    )
    t_newton = time.perf_counter() - t
    seconds = t_descent + t_newton
    print(p.table())
    print(f"L-BFGS {t_descent:.1f} s ({n_descent} steps) + Newton {t_newton:.1f} s, stats {dict(counter)}")
    verdict = "skipped"
    if p.converged and not a.no_verdict:
        pred = sd.implicit.predict(
            problem, noise, a.lr, p.theta, regularizers=[reg], lam=lam, max_steps=a.max_steps
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
        f"verdict_at_size: d={d} seconds={seconds:.1f} steps={p.n_steps} hvps={counter.get('hvps', 'n/a')} "
        f"residual={p.residual:.3g} kind={p.kind} converged={p.converged} verdict={verdict}"
    )


def trust_region_experiment(problem, reg, lam, theta, steps: int, cg_max: int = 500) -> None:
    """Steihaug–Toint trust-region Newton–CG on F = L + λR (HVPs only; Nocedal & Wright Alg. 7.2 and 4.1):
    a minimizer for the global phase, where Newton's root finding swings. Prints each step, then the point's
    table (not part of the package: an experiment for CURV-6's measured note)."""
    from sgdsde.implicit._common import float64_problem
    from sgdsde.implicit._stationary import _finish, objective_function

    problem = float64_problem(problem)
    F = objective_function(problem, reg, jnp.asarray(lam), True)
    value_grad = jax.value_and_grad(F)

    def steihaug(hvp, g, delta, tol):
        def to_boundary(z, d):
            a, b, c = d @ d, 2 * z @ d, z @ z - delta**2
            return (-b + jnp.sqrt(b * b - 4 * a * c)) / (2 * a)

        def cond(s):
            return ~s[4] & (s[3] < cg_max)

        def body(s):
            z, r, d, j, _, hz, _ = s
            hd = hvp(d)
            dhd = d @ hd
            alpha = (r @ r) / dhd
            hit = (dhd <= 0) | (jnp.linalg.norm(z + alpha * d) >= delta)
            step = jnp.where(hit, to_boundary(z, d), alpha)
            rn = r + alpha * hd
            beta = (rn @ rn) / (r @ r)
            done = hit | (jnp.linalg.norm(rn) <= tol)
            return z + step * d, rn, -rn + beta * d, j + 1, done, hz + step * hd, hit

        z0 = jnp.zeros_like(g)
        z, _, _, j, _, hz, hit = jax.lax.while_loop(cond, body, (z0, g, -g, 0, False, z0, False))
        return z, hz, j, hit

    @jax.jit
    def run(theta):
        def body(k, s):
            th, f, g, delta, hv = s
            _, hvp = jax.linearize(jax.grad(F), th)
            gn = jnp.linalg.norm(g)
            p, hp, j, hit = steihaug(hvp, g, delta, jnp.minimum(0.1, jnp.sqrt(gn)) * gn)
            f_new, g_new = value_grad(th + p)
            rho = (f - f_new) / -(g @ p + 0.5 * p @ hp)
            delta = jnp.where(rho < 0.25, 0.25 * delta, jnp.where((rho > 0.75) & hit, 2 * delta, delta))
            ok = (rho > 1e-4) & jnp.isfinite(f_new)
            jax.debug.print(
                "tr {k}: |g| {a:.3e}, F {f:.10e}, rho {r:.3f}, radius {d:.2e}, CG {j}",
                k=k,
                a=gn,
                f=jnp.where(ok, f_new, f),
                r=rho,
                d=delta,
                j=j,
            )
            return (
                jnp.where(ok, th + p, th),
                jnp.where(ok, f_new, f),
                jnp.where(ok, g_new, g),
                delta,
                hv + j,
            )

        f, g = value_grad(theta)
        return jax.lax.fori_loop(0, steps, body, (theta, f, g, jnp.asarray(1.0, theta.dtype), 0))

    t = time.perf_counter()
    th, f, g, _, hv = run(jnp.asarray(theta))
    print(
        f"trust region: {time.perf_counter() - t:.1f} s, {steps} steps, {int(hv)} HVPs, F = {float(f):.10g}"
    )
    print(_finish(problem, reg, lam, th, 1e-9, 1e-9, steps, "flag", 64).table())


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
