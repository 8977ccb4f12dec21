"""Malladi et al.'s RMSprop/Adam SDEs against the discrete optimizers, and their square-root scaling rule
(theory/adaptive-sdes.md, ASDE-4, ASDE-5).

1. The scaling-rule table: Adam and RMSprop at B = 4, η = 0.01, 1000 steps on linear regression (n = 64,
   d = 2, residual noise std 40) against batch 4κ under the square-root rule (η√κ, 1 − κ(1 − β), ε/√κ,
   1000/κ steps) and the linear rule (κη, 1000/κ steps): z of E θ and E L at the end (independent ensembles).
2. The weak order: discrete RMSprop/Adam against their SDE (Euler on SGD's clock) on a 1-D quadratic with
   skewed minibatch noise in their scaling (σ = σ₀/η, 1 − β = cη², ε = ε₀/η) up to their time T = 1
   (1/η² steps): |E θ_T(discrete) − E θ_T(SDE)| against η, fitted by ``fit_order`` with its 95% band, from
   optax's cold start (m₀ = v₀ = 0, bias-corrected) and from a warm start (v₀ = σ² + ∇L(θ₀)², m₀ = ∇L(θ₀),
   no correction: ``Adam(m0=..., v0=...)``, ``RMSprop(v0=...)``), and with the noise's skewness flipped
   (z → −z: the cold start's extra error is odd in the third moment; ASDE-8).
3. The warm-up term (``--part warmup``, ASDE-8): the same weak errors for Adam with an exact SDE mean and a
   control-variate discrete mean (precise enough to fit the order down to η = 0.00625), and the per-step
   bias of sd.Adam's update at ∇L = 0 against the formula κ₃S_kσ²/(2(σ+ε)²).

4. The warm start's two O(η) terms (``--part warmterm``, ASDE-9): the same-sample overlap and θ's response,
   their continuum coefficients C₁ + C₂ and the finite-η first-order prediction of E[θ − θ_lin], against the
   control variate's measurement.
5. SVAG(l) → the SDE (``--part svag``, ASDE-10): RMSprop and Adam, warm and cold, l = 1 … 64 at η = 0.1, the
   SDE's mean exact in continuous time and SVAG's by the control variate; the order in 1/l by ``fit_order``.

Run from the repository root:
``python scripts/adaptive_sdes.py [--quick] [--part rule|order|skew|warmup|warmterm|svag|all]``.
The last line reads ``adaptive_sdes: sqrt_rule_max_z=… linear_rule_min_z=… rmsprop_order=… adam_order=…``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import sgdsde as sd
from sgdsde.analysis import ScaledRun, fit_order, linear_scaling, sqrt_scaling, weak_error

jax.config.update("jax_enable_x64", True)


# -- 1. the scaling rule ---------------------------------------------------------------------------------------


def rule_problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 2))
    y = X @ np.array([1.0, -1.0]) + 40.0 * rng.standard_normal(64)
    theta0 = np.linalg.lstsq(X, y, rcond=None)[0] + np.array([1.5, 1.0])
    return sd.Problem(sd.LinearRegression(2), X, y), theta0


def final_stats(problem, theta0, run: ScaledRun, n_paths: int, key: int):
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam under strict promotion: see the report
        r = sd.simulate(
            sd.SGD(sd.MinibatchNoise(batch_size=run.batch_size), optimizer=run.optimizer),
            problem,
            theta0,
            lr=run.lr,
            n_steps=run.n_steps,
            key=key,
            ensemble=sd.Ensemble(n_paths),
            record=sd.Record(observables=["loss", "theta"]),
        )
    (mt, st), (ml, sl) = r.final("theta"), r.final("loss")
    return np.append(mt, ml), np.append(st, sl)


def rule_table(n_paths: int, kappas=(2, 4, 8)):
    problem, theta0 = rule_problem()
    rows = []
    for name, opt in (("adam", sd.Adam(0.9, 0.999, 1e-8)), ("rmsprop", sd.RMSprop(0.999, 1e-8))):
        base = ScaledRun(opt, 0.01, 4, 1000)
        m0, s0 = final_stats(problem, theta0, base, n_paths, 0)
        for kappa in kappas:
            for rule, fn in (("sqrt", sqrt_scaling), ("linear", linear_scaling)):
                run = fn(opt, base.lr, base.batch_size, kappa, base.n_steps)
                m1, s1 = final_stats(problem, theta0, run, n_paths, 100 * kappa + (rule == "linear"))
                z = (m1 - m0) / np.sqrt(s0**2 + s1**2)
                for stat, zi in zip(("E theta_1", "E theta_2", "E L"), z, strict=True):
                    rows.append((name, kappa, rule, stat, float(zi)))
    print(f"scaling rule ({n_paths} paths per ensemble; base B=4, lr=0.01, 1000 steps)")
    print("| optimizer | kappa | rule | statistic | z |")
    print("|---|---|---|---|---|")
    for name, kappa, rule, stat, z in rows:
        print(f"| {name} | {kappa} | {rule} | {stat} | {z:+.2f} |")
    return rows


# -- 2. the weak order -----------------------------------------------------------------------------------------

Z = np.array([-1.0] * 7 + [7.0])
Z = (Z - Z.mean()) / Z.std()  # skewness 2.27: the noise's third moment makes the weak error O(η)


def order_problem(eta: float, sigma0: float = 1.0, skew_sign: float = 1.0):
    """L = ½ mean (θ − y_i)² with y_i = z_i σ₀/η: ∇L = θ, minibatch noise (B = 1) of variance (σ₀/η)²
    (skewness 2.27·``skew_sign``)."""
    return sd.Problem(sd.LinearRegression(1), np.ones((Z.size, 1)), skew_sign * Z * sigma0 / eta)


def optimizer_at(which: str, eta: float, start: str = "cold", sigma0: float = 1.0, theta0: float = 1.0):
    """Their scaling: c = 1 (RMSprop), c₁ = 10, c₂ = 1 (Adam), ε₀ = 0.5; ``start="warm"``: v₀ = σ² + ∇L(θ₀)²
    (E g̃² at θ₀) and Adam's m₀ = ∇L(θ₀) = θ₀, without bias correction."""
    warm = {}
    if start == "warm":
        warm = {"v0": np.array([(sigma0 / eta) ** 2 + theta0**2])}
        if which == "adam":
            warm["m0"] = np.array([theta0])
    if which == "rmsprop":
        return sd.RMSprop(beta=1 - 1.0 * eta**2, eps=0.5 / eta, **warm)
    return sd.Adam(b1=1 - 10.0 * eta**2, b2=1 - 1.0 * eta**2, eps=0.5 / eta, **warm)


def weak_errors(
    which: str, etas, n_paths: int, horizon: float = 1.0, start: str = "cold", skew_sign: float = 1.0
):
    errs, ses = [], []
    noise = sd.MinibatchNoise(batch_size=1)
    label = f"{which} ({start} start, skewness sign {skew_sign:+.0f})"
    for eta in etas:
        t0 = time.perf_counter()
        problem, opt = order_problem(eta, skew_sign=skew_sign), optimizer_at(which, eta, start)
        n = round(horizon / eta**2)
        kw = dict(
            lr=eta, n_steps=n, ensemble=sd.Ensemble(n_paths), record=sd.Record(every=n, observables=["theta"])
        )
        with jax.numpy_dtype_promotion("standard"):
            disc = sd.simulate(sd.SGD(noise, optimizer=opt), problem, np.ones(1), key=1, **kw)
            cont = sd.simulate(sd.SDE(noise, optimizer=opt), problem, np.ones(1), key=2, **kw)
        e, se = weak_error(disc, cont, ["theta"]).final("theta")
        errs.append(abs(float(e[0])))
        ses.append(float(se[0]))
        print(
            f"{label} eta={eta:g} steps={n}: E theta_T discrete - SDE = {float(e[0]):+.5f} ± {float(se[0]):.5f}"
            f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    fit = fit_order(etas, errs, ses)
    local = np.log(np.array(errs[:-1]) / np.array(errs[1:])) / np.log(
        np.array(etas[:-1]) / np.array(etas[1:])
    )
    print(f"{label}: weak error of E theta_T against eta: {fit}; local slopes {np.round(local, 2).tolist()}")
    if len(etas) > 3:
        print(f"{label}: over the {len(etas) - 1} smallest eta: {fit_order(etas[1:], errs[1:], ses[1:])}")
    return fit


def cv_weak_error(eta: float, start: str, n_paths: int, key: int = 0, pieces: bool = False):
    """E θ_T(discrete Adam) − E θ_T(AdamSDE) on ``order_problem``: the SDE's mean exactly (its drift is linear in
    (θ, m) with v, γ deterministic), the discrete mean as E[θ − θ_lin] (Monte Carlo) + E θ_lin (exact), θ_lin
    the same recursion on the same draws with v̂ replaced by its deterministic value."""
    from sgdsde._sde.optimizer_sdes import optimizer_sde

    sigma, K = 1 / eta, round(1 / eta**2)
    opt = optimizer_at("adam", eta, start)
    b1, b2, eps = float(opt.b1), float(opt.b2), float(opt.eps)
    warm = start == "warm"
    m0, v0 = (1.0, sigma**2 + 1.0) if warm else (0.0, 0.0)
    sde = optimizer_sde(order_problem(eta), sd.MinibatchNoise(batch_size=1), opt, None)
    kk = np.arange(1, K + 1)
    v_det = v0 * b2**kk + sigma**2 * (1 - b2**kk)
    xs = (
        jnp.asarray(np.ones(K) if warm else 1 - b1**kk),
        jnp.asarray(np.sqrt(v_det if warm else v_det / (1 - b2**kk)) + eps),
    )
    zs = jnp.asarray(-Z * sigma)

    @jax.jit
    def run(key):
        y_T = jax.lax.scan(
            lambda y, _: (y + eta * sde.drift(y, eta), None), sde.init_state(jnp.ones(1)), None, K
        )[0]

        def lin(c, x):
            th, m = c
            m = b1 * m + (1 - b1) * th
            return (th - eta * (m / x[0]) / x[1], m), None

        lin_T = jax.lax.scan(lin, (1.0, m0), xs)[0][0]
        th = jnp.ones((n_paths, 1))
        with jax.numpy_dtype_promotion("standard"):
            state = jax.vmap(opt.init)(th)

        def step(c, x):
            th, s, tl, ml = c
            g = zs[jax.random.randint(x[0], (n_paths,), 0, 8)][:, None]
            with jax.numpy_dtype_promotion("standard"):
                u, s = jax.vmap(opt.update)(th + g, s, th)
            ml = b1 * ml + (1 - b1) * (tl + g)
            return (th + eta * u, s, tl - eta * (ml / x[1]) / x[2], ml), None

        c = jax.lax.scan(step, (th, state, th, jnp.full((n_paths, 1), m0)), (jax.random.split(key, K), *xs))[
            0
        ]
        d = (c[0] - c[2])[:, 0]
        return jnp.mean(d), jnp.std(d) / np.sqrt(n_paths), lin_T - y_T[0]

    d, se, lin = run(jax.random.key(key))
    if pieces:  # E[θ − θ_lin] (Monte Carlo), its standard error, E θ_lin − E θ_SDE (exact)
        return float(d), float(se), float(lin)
    return float(d) + float(lin), float(se)


def cv_weak_error_rmsprop(eta: float, start: str, n_paths: int, key: int = 0):
    """``cv_weak_error`` for RMSprop: the SDE's θ-drift −θ/(√v + ε) is linear with v deterministic, and the
    companion divides by the deterministic √v + ε."""
    from sgdsde._sde.optimizer_sdes import optimizer_sde

    sigma, K = 1 / eta, round(1 / eta**2)
    opt = optimizer_at("rmsprop", eta, start)
    beta, eps = float(opt.beta), float(opt.eps)
    v0 = sigma**2 + 1.0 if start == "warm" else 0.0
    sde = optimizer_sde(order_problem(eta), sd.MinibatchNoise(batch_size=1), opt, None)
    kk = np.arange(1, K + 1)
    den = jnp.asarray(np.sqrt(v0 * beta**kk + sigma**2 * (1 - beta**kk)) + eps)
    zs = jnp.asarray(-Z * sigma)

    @jax.jit
    def run(key):
        th = jnp.ones((n_paths, 1))
        state = jax.vmap(opt.init)(th)

        def step(c, x):
            th, s, tl, y, mt = c
            g = zs[jax.random.randint(x[0], (n_paths,), 0, 8)][:, None]
            u, s = jax.vmap(opt.update)(th + g, s, th)
            return (
                th + eta * u,
                s,
                tl - eta * (tl + g) / x[1],
                y + eta * sde.drift(y, eta),
                mt - eta * mt / x[1],
            ), None

        init = (th, state, th, sde.init_state(jnp.ones(1)), 1.0)
        c = jax.lax.scan(step, init, (jax.random.split(key, K), den))[0]
        d = (c[0] - c[2])[:, 0]
        return jnp.mean(d) + c[4] - c[3][0], jnp.std(d) / np.sqrt(n_paths)

    e, se = run(jax.random.key(key))
    return float(e), float(se)


def warmup(n_paths: int, etas):
    out = {}
    for which, start in (("adam", "cold"), ("adam", "warm"), ("rmsprop", "cold"), ("rmsprop", "warm")):
        errs, ses = [], []
        for eta in etas:
            fn = cv_weak_error if which == "adam" else cv_weak_error_rmsprop
            e, se = fn(eta, start, n_paths)
            errs.append(abs(e))
            ses.append(se)
            print(
                f"{which} ({start} start, control variate) eta={eta:g}: E theta_T discrete - SDE = {e:+.5f} "
                f"± {se:.5f}"
            )
        local = np.log(np.array(errs[:-1]) / np.array(errs[1:])) / np.log(
            np.array(etas[:-1]) / np.array(etas[1:])
        )
        fit = fit_order(etas, errs, ses)
        print(f"{which} ({start} start): {fit}; local slopes {np.round(local, 2).tolist()}")
        if len(etas) > 3:
            print(
                f"{which} ({start} start) over eta <= {etas[2]:g}: {fit_order(etas[2:], errs[2:], ses[2:])}"
            )
        out[f"{which}_{start}"] = fit.order
    # the per-step bias at ∇L = 0 (η = 0.05): E u_k against κ₃S_kσ²/(2(σ+ε)²)
    eta, n, K = 0.05, 50_000, 64
    sigma = 1 / eta
    k3, k = float(np.mean((-Z) ** 3)), np.arange(K)
    for start in ("cold", "warm"):
        opt = optimizer_at("adam", eta, start)
        if start == "warm":  # ∇L = 0: m₀ = 0, v₀ = σ²
            opt = sd.Adam(opt.b1, opt.b2, opt.eps, v0=np.array([sigma**2]))
        b1, b2, eps = float(opt.b1), float(opt.b2), float(opt.eps)
        S = (1 - b1) * (1 - b2) * (1 - (b1 * b2) ** (k + 1)) / (1 - b1 * b2)
        if start == "cold":
            S /= (1 - b1 ** (k + 1)) * (1 - b2 ** (k + 1))
        pred = k3 * S * sigma**2 / (2 * (sigma + eps) ** 2)

        @jax.jit
        def run(key, opt=opt):
            th = jnp.zeros((n, 1))
            with jax.numpy_dtype_promotion("standard"):
                state = jax.vmap(opt.init)(th)

            def step(s, kk):
                g = jnp.asarray(-sigma * Z)[jax.random.randint(kk, (n,), 0, 8)][:, None]
                with jax.numpy_dtype_promotion("standard"):
                    u, s = jax.vmap(opt.update)(g, s, th)
                return s, (jnp.mean(u), jnp.std(u) / np.sqrt(n))

            return jax.lax.scan(step, state, jax.random.split(key, K))[1]

        m, se = (np.asarray(a) for a in run(jax.random.key(0)))
        idx = [0, 1, 2, 4, 8, 16, 32, 63]
        print(
            f"per-step bias ({start}): E u_k / formula at k={idx}: {np.round((m / pred)[idx], 3).tolist()}; "
            f"E u_k / se: {np.round((m / se)[idx], 1).tolist()}"
        )
    return out


# -- 5. the warm start's O(η) terms (--part warmterm) ---------------------------------------------------------


def warm_coefficients():
    """(C₁, C₂): the coefficients of η in discrete Adam's warm-start weak error E θ(1) − E θ_SDE(1) on ASDE-5's
    problem (their scaling, σ₀ = 1, ε₀ = 0.5, c₁ = 10, c₂ = 1, θ₀ = m₀ = 1, u₀ = 1; ASDE-8). With
    Cov(m, v) = σ³κ₃η²w_m, w solves w' = (J − c₂)w + c₁c₂e_m (w(0) = 0), J = [[0, −1/P], [c₁, −c₁]] the mean
    ODE of (θ, m), P = σ₀ + ε₀; the bias −ηf'(V)Cov(m, v) of θ's step is ησ₀²κ₃w_m/(2P²) per unit of s, and
    δ' = Jδ + e_θ·(that)/η carries it to s = 1. C₁: w_m of the same-sample overlap alone (w_m' = −(c₁+c₂)w_m +
    c₁c₂, ASDE-8's first term); C₂: the rest (θ's response to a past draw, seen by v through κ₃)."""
    from scipy.integrate import solve_ivp

    s0, e0, c1, c2 = 1.0, 0.5, 10.0, 1.0
    P, k3 = s0 + e0, float(np.mean((-Z) ** 3))
    J = np.array([[0.0, -1 / P], [c1, -c1]])
    src = s0**2 * k3 / (2 * P**2)

    def rhs(s, y):
        w, w1, d1, d2 = y[:2], y[2], y[3:5], y[5:7]
        return np.concatenate(
            [
                (J - c2 * np.eye(2)) @ w + [0.0, c1 * c2],
                [-(c1 + c2) * w1 + c1 * c2],
                J @ d1 + [src * w1, 0.0],
                J @ d2 + [src * (w[1] - w1), 0.0],
            ]
        )

    y = solve_ivp(rhs, (0.0, 1.0), np.zeros(7), method="Radau", rtol=1e-12, atol=1e-14).y[:, -1]
    return float(y[3]), float(y[5])


def warm_first_order(eta: float) -> dict[str, float]:
    """E θ_K − E θ_lin,K of discrete warm Adam at finite η to first order in v̂'s fluctuation (ASDE-8): the
    companion θ_lin divides by √V + ε, V the deterministic v; discrete Adam's step has the extra mean
    −η[f'(V)(Cov(m, v) + E m·(E v − V)) + ½f''(V)E m·Var v], f(v) = 1/(√v + ε), all moments of the linear
    companion computed exactly by their recursions (Cov(x, v) for x = (θ, m), Cov x, E v − V, Var v), and the
    extra means carried to step K by the companion's linear mean recursion. Split as "overlap" (the same-sample
    σ³κ₃ term: ASDE-8's first term), "response" (the rest of the κ₃ part of Cov(m, v)) and "rest" (the
    2σ²E θ and Cov(x, θ²) parts of Cov(m, v), E v − V, Var v: O(η²))."""
    sigma, K = 1 / eta, round(1 / eta**2)
    b1, b2, eps = 1 - 10 * eta**2, 1 - eta**2, 0.5 / eta
    k3, k4 = float(np.mean((-Z) ** 3)), float(np.mean(Z**4))
    v0 = sigma**2 + 1.0
    mu, S = np.array([1.0, 1.0]), np.zeros((2, 2))
    W, W1, Wo = np.zeros(2), 0.0, np.zeros(2)  # Cov(x, v): the κ₃ part, its same-sample part, the rest
    dV, varv, V = 0.0, 0.0, v0
    d = {"overlap": np.zeros(2), "response": np.zeros(2), "rest": np.zeros(2)}
    for _ in range(K):
        V = b2 * V + (1 - b2) * sigma**2
        D = np.sqrt(V) + eps
        a = eta / D
        A = np.array([[1 - a * (1 - b1), -a * b1], [1 - b1, b1]])
        bv = (1 - b1) * np.array([-a, 1.0])
        Et, s2 = mu[0], S[0, 0]
        var_g2 = (
            2 * s2**2
            + 4 * Et**2 * s2
            + 4 * (s2 + Et**2) * sigma**2
            + sigma**4 * (k4 - 1)
            + 4 * Et * sigma**3 * k3
        )
        varv = b2**2 * varv + (1 - b2) ** 2 * var_g2 + 2 * b2 * (1 - b2) * 2 * Et * (W[0] + Wo[0])
        W = b2 * A @ W + (1 - b2) * bv * sigma**3 * k3
        W1 = b2 * b1 * W1 + (1 - b2) * (1 - b1) * sigma**3 * k3
        Wo = b2 * A @ Wo + (1 - b2) * (A @ (2 * Et * S[:, 0]) + bv * 2 * sigma**2 * Et)
        dV = b2 * dV + (1 - b2) * (Et**2 + s2)
        mu, S = A @ mu, A @ S @ A.T + sigma**2 * np.outer(bv, bv)
        f1 = -1 / (2 * np.sqrt(V) * D**2)
        f2 = 1 / (4 * V**1.5 * D**2) + 1 / (2 * V * D**3)
        Em = mu[1]
        extra = {
            "overlap": -eta * f1 * W1,
            "response": -eta * f1 * (W[1] - W1),
            "rest": -eta * (f1 * (Wo[1] + Em * dV) + 0.5 * f2 * Em * varv),
        }
        for k in d:
            d[k] = A @ d[k] + np.array([extra[k], 0.0])
    return {k: float(v[0]) for k, v in d.items()}


def warm_term(n_paths: int, etas):
    c1, c2 = warm_coefficients()
    print(
        f"warm-start O(eta) coefficients (continuum): C1 (same-sample overlap) = {c1:+.5f}, C2 (theta's "
        f"response seen by v) = {c2:+.5f}, C1 + C2 = {c1 + c2:+.5f}"
    )
    rows = []
    for eta in etas:
        t0 = time.perf_counter()
        dm, se, lin = cv_weak_error(eta, "warm", n_paths, key=11, pieces=True)
        pred = warm_first_order(eta)
        tot = sum(pred.values())
        rows.append((eta, dm + lin, se))
        print(
            f"eta={eta:g}: measured E[theta - theta_lin] = {dm:+.6f} ± {se:.6f}, first-order prediction {tot:+.6f} "
            f"(overlap {pred['overlap']:+.6f}, response {pred['response']:+.6f}, rest {pred['rest']:+.6f}); "
            f"linear part E theta_lin - SDE {lin:+.6f}; error {dm + lin:+.6f}, error/eta {(dm + lin) / eta:+.4f} "
            f"(C1 + C2 = {c1 + c2:+.4f}); {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    h = np.array([r[0] for r in rows])
    e = np.array([r[1] for r in rows]) / h
    w = (h / np.array([r[2] for r in rows])) ** 2
    X = np.stack([np.ones_like(h), h], axis=1)
    cov = np.linalg.inv(X.T @ (X * w[:, None]))
    beta = cov @ (X.T @ (w * e))
    print(
        f"error/eta = C + D eta fitted over eta={h.tolist()} (weights 1/se^2): C = {beta[0]:+.4f} ± "
        f"{np.sqrt(cov[0, 0]):.4f} (Monte Carlo), D = {beta[1]:+.3f}; predicted C = {c1 + c2:+.4f}"
    )


# -- 4. SVAG(l) -> the SDE, with a control variate (--part svag) ---------------------------------------------


def sde_mean_exact(which: str, eta: float, start: str) -> float:
    """E θ at their time s = 1 of the RMSprop/Adam SDE (continuous time, not its Euler scheme) on
    ``order_problem(eta)``: with v deterministic (u = v/σ² solves u' = c₂(1 − u)) the mean of (θ, m) solves a
    linear ODE in their time: Adam θ' = −m̂/(σ₀√(u/γ₂) + ε₀), m̂' = (c₁/γ₁)(θ − m̂) (cold: u = γ₂, and m̂ = m/γ₁
    started at s = δ = 1e-9 with the first-order start m̂ = 1 − δ/(2P), θ = 1 − δ/P, since 1/γ₁ is singular at
    0; warm: γ = 1, m̂ = m, u = 1 + η²e^{−c₂s}); RMSprop θ' = −θ/(σ₀√u + ε₀), u = u₀e^{−cs} + 1 − e^{−cs}
    (scipy Radau, rtol 1e-12)."""
    from scipy.integrate import solve_ivp

    s0, e0, c1, c2 = 1.0, 0.5, 10.0, 1.0
    warm = start == "warm"
    u0 = 1 + eta**2 if warm else 0.0
    tol = dict(method="Radau", rtol=1e-12, atol=1e-14)
    if which == "rmsprop":

        def rhs(s, y):
            u = u0 * np.exp(-s) + 1 - np.exp(-s)  # c = 1
            return [-y[0] / (s0 * np.sqrt(u) + e0)]

        return float(solve_ivp(rhs, (0.0, 1.0), [1.0], **tol).y[0, -1])
    if warm:

        def rhs(s, y):
            u = 1 + eta**2 * np.exp(-c2 * s)
            return [-y[1] / (s0 * np.sqrt(u) + e0), c1 * (y[0] - y[1])]

        return float(solve_ivp(rhs, (0.0, 1.0), [1.0, 1.0], **tol).y[0, -1])
    P, delta = s0 + e0, 1e-9

    def rhs(s, y):
        return [-y[1] / P, c1 / -np.expm1(-c1 * s) * (y[0] - y[1])]

    y0 = [1 - delta / P, 1 - delta / (2 * P)]
    return float(solve_ivp(rhs, (delta, 1.0), y0, **tol).y[0, -1])


def cv_svag_error(which: str, start: str, eta: float, l: int, n_paths: int, key: int = 0):  # noqa: E741
    """E θ_T(SVAG(l) with RMSprop/Adam) − E θ_T(its SDE) at their time s = 1 on ``order_problem(eta)`` (c₁ = 10,
    c₂ = 1 or c = 1, ε₀ = 0.5, σ₀ = 1): SVAG's l·η⁻² steps of the mapped optimizer (``svag_optimizer``: the
    library's map and update, step η/√l) on the gradient θ − (a y_i + c y_j), two independent draws of ASDE-5's
    skewed residuals y = σz, a, c = (1 ± √(2l−1))/2; the SDE's mean exactly (``sde_mean_exact``). Control
    variate: each path also runs the same recursion on the same draws with v̂ replaced by its deterministic
    value (lσ² bias-corrected, or the warm l·v₀ relaxing to lσ²): linear, its mean exact (the recursion without
    noise); the Monte Carlo estimates E[θ − θ_lin] only. Returns (error, standard error, E θ_lin − SDE)."""
    from sgdsde._sde.svag import svag_coefficients, svag_optimizer

    sigma, K = 1 / eta, l * round(1 / eta**2)
    opt, r = svag_optimizer(optimizer_at(which, eta, start), l)
    assert opt is not None
    a, c = svag_coefficients(l)
    step = eta / l * r  # the engine's clock advance η/l times the step factor √l
    warm = start == "warm"
    kk = np.arange(1, K + 1)
    if which == "adam":
        b1, b2, eps = float(opt.b1), float(opt.b2), float(opt.eps)
        m0 = 1.0 if warm else 0.0
    else:
        b1, b2, eps, m0 = 0.0, float(opt.beta), float(opt.eps), 0.0
    v0 = float(opt.v0[0]) if warm else 0.0  # l·(σ² + θ₀²)
    v_det = v0 * b2**kk + l * sigma**2 * (1 - b2**kk)
    corrected = which == "adam" and not warm
    g1 = 1 - b1**kk if corrected else np.ones(K)
    den = np.sqrt(v_det / (1 - b2**kk) if corrected else v_det) + eps
    xs = (jnp.asarray(g1), jnp.asarray(den))
    ys = jnp.asarray(Z * sigma)
    sde = sde_mean_exact(which, eta, start)

    @jax.jit
    def run(key):
        th = jnp.ones((n_paths, 1))
        with jax.numpy_dtype_promotion("standard"):
            state = jax.vmap(opt.init)(th)

        def one(cr, x):
            th, s, tl, ml, mt, mm = cr
            k, g1, d = x
            i = jax.random.randint(k, (2, n_paths), 0, Z.size)
            xi = -(a * ys[i[0]] + c * ys[i[1]])[:, None]  # the gradient noise: mean 0, variance lσ²
            with jax.numpy_dtype_promotion("standard"):
                u, s = jax.vmap(opt.update)(th + xi, s, th)
            ml = b1 * ml + (1 - b1) * (tl + xi)  # RMSprop: b1 = 0, m = g
            mm = b1 * mm + (1 - b1) * mt  # the companion's exact mean
            return (th + step * u, s, tl - step * (ml / g1) / d, ml, mt - step * (mm / g1) / d, mm), None

        init = (th, state, th, jnp.full((n_paths, 1), m0), 1.0, m0)
        cr = jax.lax.scan(one, init, (jax.random.split(key, K), *xs))[0]
        diff = (cr[0] - cr[2])[:, 0]
        return jnp.mean(diff), jnp.std(diff) / np.sqrt(n_paths), cr[4]

    d, se, lin = run(jax.random.key(key))
    return float(d) + float(lin) - sde, float(se), float(lin) - sde


def svag_part(n_paths: int, eta: float, ls):
    """The SVAG(l) → SDE errors and their order in 1/l, with independent keys per (l, start)."""
    out = {}
    print(f"SVAG(l) against the SDE (control variate, {n_paths} paths, eta={eta:g}, their time s = 1)")
    # the hand-written SVAG loop against the engine's SVAG stepper (plain Monte Carlo, independent draws)
    lv, n_engine = 4, 4 * n_paths
    for which, start in (("adam", "cold"), ("rmsprop", "warm")):
        e, se, _ = cv_svag_error(which, start, eta, lv, n_paths, key=99)
        n = round(1 / eta**2)
        with jax.numpy_dtype_promotion("standard"):
            r = sd.simulate(
                sd.SVAG(sd.MinibatchNoise(batch_size=1), lv, optimizer_at(which, eta, start)),
                order_problem(eta),
                np.ones(1),
                lr=eta,
                n_steps=n,
                key=5,
                ensemble=sd.Ensemble(n_engine),
                record=sd.Record(every=n, observables=["theta"]),
            )
        m, s_e = (float(x[0]) for x in r.final("theta"))
        mine = e + sde_mean_exact(which, eta, start)
        print(
            f"engine check {which} ({start}) l={lv}: engine SVAG E theta_T = {m:.5f} ± {s_e:.5f} ({n_engine} paths), "
            f"control variate {mine:.5f} ± {se:.5f}: z = {(m - mine) / np.hypot(s_e, se):+.2f}"
        )
    for which in ("adam", "rmsprop"):
        for start in ("warm", "cold"):
            errs, ses = [], []
            for j, lv in enumerate(ls):
                t0 = time.perf_counter()
                e, se, lin = cv_svag_error(which, start, eta, lv, n_paths, key=1000 * j + 7)
                errs.append(abs(e))
                ses.append(se)
                print(
                    f"{which} ({start}) l={lv}: E theta_T SVAG - SDE = {e:+.6f} ± {se:.6f} (linear part "
                    f"{lin:+.6f}; l*error {lv * e:+.4f}; error / ((3l-1)/(2l^2)) {e * 2 * lv**2 / (3 * lv - 1):+.5f};"
                    f" {time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            inv = 1 / np.asarray(ls, float)
            local = np.log(np.array(errs[:-1]) / np.array(errs[1:])) / np.log(inv[:-1] / inv[1:])
            fit = fit_order(inv, errs, ses)
            print(
                f"{which} ({start}): order in 1/l over l={list(ls)}: {fit}; local slopes {np.round(local, 2).tolist()}"
            )
            for lo in (2, 3):
                if len(ls) - lo >= 3:
                    print(f"{which} ({start}) over l >= {ls[lo]}: {fit_order(inv[lo:], errs[lo:], ses[lo:])}")
            out[f"{which}_{start}"] = fit.order
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small ensembles, large steps")
    parser.add_argument(
        "--part", choices=["rule", "order", "skew", "warmup", "svag", "warmterm", "all"], default="all"
    )
    args = parser.parse_args()
    sq_max = lin_min = float("nan")
    orders = {"rmsprop": float("nan"), "adam": float("nan"), "adam_warm": float("nan")}
    if args.part in ("rule", "all"):
        rows = rule_table(512 if args.quick else 4096, (2, 4) if args.quick else (2, 4, 8))
        # κ = 8 (B = 32) leaves the SDE's regime (|∇L|² no longer ≪ σ²Σ₁): reported, not in the maximum
        sq_max = max(abs(z) for _, kappa, rule, _, z in rows if rule == "sqrt" and kappa <= 4)
        by_run: dict[tuple, list[float]] = {}
        for name, kappa, rule, _, z in rows:
            by_run.setdefault((name, kappa, rule), []).append(abs(z))
        lin_min = min(max(v) for k, v in by_run.items() if k[2] == "linear")
    if args.part in ("order", "all"):
        etas = [0.2, 0.1, 0.05] if args.quick else [0.1, 0.05, 0.025, 0.0125]
        n_paths = 4096 if args.quick else 50_000
        for which in ("rmsprop", "adam"):
            orders[which] = weak_errors(which, etas, n_paths).order
        weak_errors("adam", etas, n_paths, start="warm")
        weak_errors("rmsprop", etas, n_paths, start="warm")
    if args.part in ("warmup", "all"):
        fits = warmup(
            2000 if args.quick else 10_000,
            [0.1, 0.05, 0.025] if args.quick else [0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625],
        )
        orders["adam_warm"] = fits["adam_warm"]
    if args.part in ("warmterm", "all"):
        if args.quick:
            warm_term(2000, [0.1, 0.05, 0.025])
        else:
            warm_term(10_000, [0.1, 0.05, 0.025, 0.0125, 0.00625])
    if args.part in ("svag", "all"):
        if args.quick:
            svag_orders = svag_part(2000, 0.2, [1, 2, 4, 8])
        else:
            svag_orders = svag_part(20_000, 0.1, [1, 2, 4, 8, 16, 32, 64])
        orders["svag_adam_warm"] = svag_orders["adam_warm"]
    if args.part in ("skew", "all"):
        # the cold start's extra error is odd in the noise's third moment: flip z → −z
        etas = [0.2, 0.1] if args.quick else [0.1, 0.05, 0.025]
        for start in ("cold", "warm"):
            weak_errors("adam", etas, 4096 if args.quick else 50_000, start=start, skew_sign=-1.0)
    print(
        f"adaptive_sdes: sqrt_rule_max_z={sq_max:.2f} linear_rule_min_z={lin_min:.2f} "
        f"rmsprop_order={orders['rmsprop']:.2f} adam_order={orders['adam']:.2f} "
        f"adam_warm_order={orders['adam_warm']:.2f} svag_adam_warm_order={orders.get('svag_adam_warm', float('nan')):.2f}"
    )


if __name__ == "__main__":
    main()
