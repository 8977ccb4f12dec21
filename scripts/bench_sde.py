"""Benchmarks of simulate_sde against the fastest hand-written jitted Euler–Maruyama scan, in one process.

1. Throughput (Euler, fixed step dt = η, Gaussian increments, 1,000 steps): the OU process
   dX = −H(X − θ*)dt + √η A dW (d = 10, N = 100,000; d = 100, N = 10,000) and SME-1 of full-batch label-noise SGD
   on the diagonal network u⊙u − v⊙v (p = 100 inputs so d = 200 parameters, n = 40, N = 10,000; the case of
   bench_sgd.py). Reported: simulate_sde (its own scan over diffrax's Euler.step), a vmapped diffrax
   `diffeqsolve` (Euler, UnsafeBrownianPath), the hand-written scans with state (N, d) and (d, N) and flat draws
   (the faster is the baseline), and, where torch and torchsde are installed, a plain PyTorch loop of the same
   step and torchsde's sdeint.
2. Time to accuracy: wall time to estimate E‖X_T‖² of the d = 10 OU within 1e-3 (|bias| + 2 s.e.), Euler with
   Gaussian increments against PlatenWeak2 (weak order 2); (steps, paths) chosen from each scheme's exact bias
   (moment recursions) and the exact variance.
3. Compile time, and compile counts for sweeps over η, σ and B after a first run (0 = no recompilation).
4. --memory: peak RSS of 10,000 paths × 10,000 steps at d = 100 with streaming statistics, in a subprocess.
5. --large (default on a GPU): wall time of 100,000 paths × 10,000 steps at d = 100 (GPU goal < 60 s).

Prints medians; the last line is `ratio_vs_handwritten=<worst throughput ratio of simulate_sde>`.
Run: python scripts/bench_sde.py [--quick] [--memory] [--large] [--reps R]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_seconds, paired_medians
from jax import monitoring

import sgdsde as sd
from sgdsde import FunctionSDE, PlatenWeak2, simulate_sde
from sgdsde.analysis import sde_moments

_COMPILES = []
monitoring.register_event_duration_secs_listener(
    lambda name, dur, **kw: (
        _COMPILES.append(dur) if name == "/jax/core/compile/backend_compile_duration" else None
    )
)


def ou_setup(d, seed=0, noise_scale=0.5):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    H = Q @ np.diag(np.linspace(0.5, 2.0, d)) @ Q.T
    G = rng.normal(size=(d, d))
    A = noise_scale * np.linalg.cholesky(G @ G.T / d + np.eye(d))
    return H.astype(np.float32), A.astype(np.float32), rng.normal(size=d).astype(np.float32)


def ou_sde(H, A, ts, eta):
    """The OU SME dX = −H(X − θ*) dt + √η A dW (a FunctionSDE's factor is its whole diffusion: √η folded in)."""
    Hj, Aj, tj = jnp.asarray(H), jnp.asarray(np.sqrt(eta) * A, A.dtype), jnp.asarray(ts)
    return FunctionSDE(lambda th, eta: -Hj @ (th - tj), lambda th: Aj, noise_type="additive")


def handwritten_ou(H, A, ts, eta, n_steps, layout):
    """Euler–Maruyama x ← x − η H(x − θ*) + √η A (√η z), z drawn flat: the fastest we can write."""
    Hj, Aj, tj = jnp.asarray(H), jnp.asarray(A), jnp.asarray(ts)
    d = H.shape[0]

    @jax.jit
    def run(key, x):
        N = x.shape[0] if layout == "Nd" else x.shape[1]

        def body(x, k):
            z = jax.random.normal(jax.random.fold_in(key, k), (N * d,), x.dtype)
            if layout == "Nd":
                return x - eta * (x - tj) @ Hj.T + eta * z.reshape(N, d) @ Aj.T, None
            return x - eta * Hj @ (x - tj[:, None]) + eta * Aj @ z.reshape(d, N), None

        return jax.lax.scan(body, x, jnp.arange(n_steps))[0]

    return run


def diffeqsolve_runner(sde, eta, n_steps, d, m):
    """A vmapped diffrax diffeqsolve (Euler, UnsafeBrownianPath, fixed dt = η), per-path keys."""
    T = eta * n_steps

    @jax.jit
    def run(key, x0):
        keys = jax.random.split(key, x0.shape[0])

        def one(k, y0):
            terms = diffrax.MultiTerm(
                diffrax.ODETerm(lambda t, y, a: sde.drift(y, eta)),
                diffrax.ControlTerm(
                    lambda t, y, a: sde.diffusion(y, eta), diffrax.UnsafeBrownianPath(shape=(m,), key=k)
                ),
            )
            sol = diffrax.diffeqsolve(
                terms,
                diffrax.Euler(),
                0.0,
                T,
                eta,
                y0,
                saveat=diffrax.SaveAt(t1=True),
                max_steps=n_steps + 1,
                adjoint=diffrax.ForwardMode(),
            )
            return sol.ys[-1]

        return jax.vmap(one)(keys, x0)

    return run


def torch_loop_rate(H, A, ts, eta, n_paths, n_steps):
    """The same Euler–Maruyama step as a plain PyTorch loop (performance.md: print it beside the JAX baseline)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    Ht, At, tt = (torch.tensor(v) for v in (H, A, ts))
    HtT, AtT = Ht.T.contiguous(), (eta * At).T.contiguous()

    def go():
        y = torch.zeros(n_paths, H.shape[0])
        with torch.no_grad():
            for _ in range(n_steps):
                y = y - eta * (y - tt) @ HtT + torch.randn(n_paths, H.shape[0]) @ AtT
        return y

    return n_paths * n_steps / median_seconds(go, 3)


def torchsde_rate(H, A, ts, eta, n_paths, n_steps):
    try:
        import torch
        import torchsde
    except ImportError:
        return None
    torch.set_num_threads(2)
    Ht, At, tt = (torch.tensor(v) for v in (H, A, ts))

    class OU(torch.nn.Module):
        noise_type, sde_type = "general", "ito"

        def f(self, t, y):
            return -(y - tt) @ Ht.T

        def g(self, t, y):
            return (eta**0.5 * At).expand(y.shape[0], *At.shape)

    y0 = torch.zeros(n_paths, H.shape[0])
    ts_ = torch.tensor([0.0, eta * n_steps])

    def go():
        with torch.no_grad():
            torchsde.sdeint(OU(), y0, ts_, method="euler", dt=eta)

    return n_paths * n_steps / median_seconds(go, 1)


def throughput_ou(d, n_paths, n_steps, reps, eta=0.01, with_peers=True):
    """Rates of simulate_sde and the hand-written scans (timed in turn, round by round), and the median of
    the per-round ratios simulate_sde / hand-written."""
    H, A, ts = ou_setup(d)
    sde = ou_sde(H, A, ts, eta)
    key = jax.random.key(0)
    x_nd = jnp.zeros((n_paths, d), jnp.float32)

    def ours():
        simulate_sde(
            sde,
            None,
            np.zeros(d),
            lr=eta,
            n_steps=n_steps,
            key=1,
            ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float32),
            record=sd.Record(observables=("sq_norm",)),
        )

    fns = {"simulate_sde": ours}
    for layout, x in (("Nd", x_nd), ("dN", x_nd.T)):
        run = handwritten_ou(H, A, ts, eta, n_steps, layout)
        fns[f"hand-written ({layout})"] = lambda run=run, x=x: run(key, x).block_until_ready()
    seconds, paired = paired_medians(fns, reps)
    rates = {k: n_paths * n_steps / v for k, v in seconds.items()}
    # the ratio to the faster hand-written layout, from paired rounds (robust to machine noise)
    best = max((k for k in rates if k.startswith("hand-written")), key=rates.get)
    ratio = 1.0 / paired[best]
    if with_peers:
        run = diffeqsolve_runner(sde, eta, n_steps, d, d)
        rates["vmapped diffeqsolve"] = (
            n_paths * n_steps / median_seconds(lambda: run(key, x_nd).block_until_ready(), 1)
        )
        problem = sd.quadratic_problem(H.astype(np.float64), ts.astype(np.float64))
        noise = sd.GaussianNoise(factor=A)

        def sme():
            simulate_sde(
                problem,
                noise,
                np.zeros(d),
                lr=eta,
                n_steps=n_steps,
                key=1,
                ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float32),
                record=sd.Record(observables=("sq_norm",)),
            )

        rates["simulate_sde (SME of quadratic_problem)"] = n_paths * n_steps / median_seconds(sme, 1)
        r = torchsde_rate(H, A, ts, eta, n_paths, min(n_steps, 100))  # a rate: 100 steps suffice
        rates["torchsde sdeint"] = r if r is not None else float("nan")
        r = torch_loop_rate(H, A, ts, eta, n_paths, n_steps)
        rates["PyTorch loop"] = r if r is not None else float("nan")
    return rates, ratio


def handwritten_label_noise_sde(X, y, sigma, eta, n_steps):
    """Euler–Maruyama of SME-1 for label-noise GD on u⊙u − v⊙v: drift −∇L, noise √η(σ/n)Jz, by hand, the drift's
    and the noise's cotangents of the outputs summed before the one product with X (as simulate_sde's fused
    increment, SDE-10)."""
    n, p = X.shape
    scale = eta * sigma / n  # √η · σ/√(n·n) · √η

    @jax.jit
    def run(key, theta):
        N = theta.shape[0]

        def body(th, k):
            z = jax.random.normal(jax.random.fold_in(key, k), (N * n,), th.dtype).reshape(N, n)
            u, v = th[:, :p], th[:, p:]
            r = (u * u - v * v) @ X.T - y[None, :]
            # η∇L + the noise = (η(2/n) r + 2·scale·z) X, elementwise by ±(u, v): one (N, n) × (n, p) product
            gx = ((2.0 * eta / n) * r + (2.0 * scale) * z) @ X
            return jnp.concatenate([u - gx * u, v + gx * v], axis=1), None

        return jax.lax.scan(body, theta, jnp.arange(n_steps))[0]

    return run


def throughput_label_noise(n_paths, n_steps, reps, eta=0.01):
    data = sd.sparse_regression(jax.random.key(0), 40, 100, 5)
    model = sd.DiagonalLinearNetwork(100, 1.0)
    problem = sd.Problem(model, data.X, data.y, dtype=jnp.float32)
    theta0 = jnp.broadcast_to(model.init().astype(jnp.float32), (n_paths, 200))
    hand = handwritten_label_noise_sde(problem.X, problem.y, 1.0, eta, n_steps)

    def ours():
        simulate_sde(
            problem,
            sd.LabelNoise(1.0),
            model.init(),
            lr=eta,
            n_steps=n_steps,
            key=1,
            ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float32),
            record=sd.Record(observables=("sq_norm",)),
        )

    fns = {
        "simulate_sde": ours,
        "hand-written (Nd)": lambda: hand(jax.random.key(2), theta0).block_until_ready(),
    }
    seconds, paired = paired_medians(fns, reps)
    return {k: n_paths * n_steps / v for k, v in seconds.items()}, 1.0 / paired["hand-written (Nd)"]


# --- time to accuracy -------------------------------------------------------------------------------------


def scheme_bias_and_sd(H, A, ts, x0, eta, T, k, scheme):
    """Exact E‖Y_T‖² of the scheme with dt = T/k steps (linear moment recursion) and the sd of ‖Y_T‖²."""
    d = H.shape[0]
    h = T / k
    S = eta * A @ A.T  # the diffusion's covariance rate
    if scheme == "euler":
        F, G = np.eye(d) - h * H, np.eye(d)
    else:  # PlatenWeak2, additive: e⁺ = (I − hH + h²H²/2)e + (I − hH/2)σΔŴ
        F, G = np.eye(d) - h * H + 0.5 * h * h * H @ H, np.eye(d) - 0.5 * h * H
    e, P = x0 - ts, np.zeros((d, d))
    for _ in range(k):
        e, P = F @ e, F @ P @ F.T + h * G @ S @ G.T
    m = ts + e
    second = np.trace(P) + m @ m
    return second, np.sqrt(2 * np.trace(P @ P) + 4 * m @ P @ m)  # Gaussian approximation of Var ‖Y‖²


def time_to_accuracy(tol, reps):
    # OU with θ* = 0 from x₀ = 0.3·1 to T = 1, diffusion √η A with η = 0.1: E‖X_T‖² ≈ 0.33; the (steps, paths)
    # plans follow from each scheme's exact bias and variance, so the wall times compare equal accuracy
    d, eta, T = 10, 0.1, 1.0
    H, A, _ = (v.astype(np.float64) for v in ou_setup(d, seed=1, noise_scale=0.5))
    ts, x0 = np.zeros(d), np.full(d, 0.3)
    exact = sde_moments(H, ts, A @ A.T, x0, lr=eta, times=[T]).expectations(H, ts)["sq_norm"][0]
    # lr = T below (one SGD step of k substeps); the factor is √η A
    sde = ou_sde(H.astype(np.float32), A.astype(np.float32), ts.astype(np.float32), eta)
    out = {}
    for scheme, solver in (("euler", None), ("platen", PlatenWeak2())):
        best = None
        for k in (2**j for j in range(1, 15)):
            second, sd_ = scheme_bias_and_sd(H, A, ts, x0, eta, T, k, scheme)
            bias = abs(second - exact)
            if bias >= 0.8 * tol:
                continue
            n = int(np.ceil((2 * sd_ / (tol - bias)) ** 2))
            if best is None or k * n < best[0] * best[1]:
                best = (k, n, bias)
        k, n, bias = best

        def go(k=k, n=n, solver=solver):
            return simulate_sde(
                sde,
                None,
                x0,
                lr=T,
                n_steps=1,
                key=3,
                solver=solver,
                ensemble=sd.Ensemble(n_paths=n, chunk_size=min(n, 200_000), dtype=np.float32),
                record=sd.Record(observables=("sq_norm",)),
                stepping=sd.Fixed(substeps=k),
            )

        t = median_seconds(go, reps)
        res = go()
        mean, se = res.final("sq_norm")
        out[scheme] = dict(seconds=t, steps=k, paths=n, bias=bias, achieved=abs(mean - exact), se=float(se))
    return exact, out


# --- compiles ---------------------------------------------------------------------------------------------


def compile_counts():
    """Compile time of a first simulate_sde, then compile counts of sweeps over η, σ and B (0 = cached)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 5)).astype(np.float32)
    problem = sd.Problem(sd.DiagonalLinearNetwork(5), X, X @ np.ones(5))
    th0 = np.ones(10)
    kw = dict(
        n_steps=50,
        key=0,
        ensemble=sd.Ensemble(n_paths=256, dtype=np.float32),
        record=sd.Record(observables=("loss",)),
    )
    n0 = len(_COMPILES)
    t = time.perf_counter()
    simulate_sde(problem, sd.LabelNoise(0.5, batch_size=4), th0, lr=0.01, **kw)
    first = (time.perf_counter() - t, len(_COMPILES) - n0, sum(_COMPILES[n0:]))
    counts = {}
    for name, runs in (
        ("eta", [dict(lr=v, noise=sd.LabelNoise(0.5, batch_size=4)) for v in (0.02, 0.005, 0.03)]),
        ("sigma", [dict(lr=0.01, noise=sd.LabelNoise(v, batch_size=4)) for v in (0.1, 1.0, 2.0)]),
        ("B", [dict(lr=0.01, noise=sd.LabelNoise(0.5, batch_size=v)) for v in (2, 8, 16)]),
    ):
        n0 = len(_COMPILES)
        for r in runs:
            simulate_sde(problem, r["noise"], th0, lr=r["lr"], **kw)
        counts[name] = len(_COMPILES) - n0
    return first, counts


def peak_memory(n_paths, n_steps):
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r});"
        "import numpy as np;"
        "from bench_sde import ou_setup, ou_sde;"
        "import sgdsde;"
        "H, A, ts = ou_setup(100);"
        f"r = sgdsde.simulate_sde(ou_sde(H, A, ts, 0.01), None, np.zeros(100), lr=0.01, n_steps={n_steps}, key=0,"
        f" ensemble=sgdsde.Ensemble(n_paths={n_paths}, dtype=np.float32),"
        f" record=sgdsde.Record(every={n_steps // 10}, observables=('sq_norm', 'theta')));"
        # VmHWM is this process's own peak; ru_maxrss would include the (large) parent's RSS at fork time
        "print([int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]), time.perf_counter() - t


def large_run(n_paths=100_000, n_steps=10_000, d=100):
    """Wall time of n_paths × n_steps at d = 100 with streaming statistics (the GPU goal: < 60 s)."""
    H, A, ts = ou_setup(d)
    sde = ou_sde(H, A, ts, 0.01)
    kw = dict(
        lr=0.01,
        key=0,
        ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float32),
    )
    obs = ("sq_norm", "theta")
    simulate_sde(
        sde, None, np.zeros(d), n_steps=10, **kw, record=sd.Record(every=10, observables=obs)
    )  # compile
    t = time.perf_counter()
    res = simulate_sde(
        sde, None, np.zeros(d), n_steps=n_steps, **kw, record=sd.Record(every=n_steps // 10, observables=obs)
    )
    return time.perf_counter() - t, res


def run(quick=False, memory=False, reps=5, large=None):
    # quick: the pipeline and its compiles (the suite checks the last line and the recompile counts), at N/10
    # paths and 100 steps: rough rates
    steps = 100 if quick else 1000
    scale = 10 if quick else 1
    reps = 1 if quick else reps
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {steps} steps; medians of {reps}")
    ratios = []
    for d, n in ((10, 100_000 // scale), (100, 10_000 // scale)):
        # quick: the peers (diffeqsolve, the SME's simulate_sde, torch) at d = 10 only (each is a compile)
        peers = not quick or d == 10
        rates, ratio = throughput_ou(d, n, steps, reps, with_peers=peers)
        base = max(v for k, v in rates.items() if k.startswith("hand-written"))
        ratios.append(ratio)
        line = (
            f"OU d={d} N={n}: "
            + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in rates.items())
            + f" M path-steps/s; simulate_sde / best hand-written = {ratios[-1]:.3f} (median of paired rounds)"
        )
        if peers:
            line += (
                f", diffeqsolve / best = {rates['vmapped diffeqsolve'] / base:.3f}, vs torchsde = "
                f"{rates['simulate_sde'] / rates['torchsde sdeint']:.1f}x, vs PyTorch loop = "
                f"{rates['simulate_sde'] / rates['PyTorch loop']:.2f}x"
            )
        print(line)
    rates, ratio = throughput_label_noise(10_000 // scale, steps, reps)
    ratios.append(ratio)
    print(
        "label-noise diagonal net p=100 (d=200) n=40 N="
        + str(10_000 // scale)
        + ": "
        + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in rates.items())
        + f" M path-steps/s; ratio {ratios[-1]:.3f}"
    )
    tol = 1e-2 if quick else 1e-3
    exact, tta = time_to_accuracy(tol, 1)
    for name, r in tta.items():
        print(
            f"time to |bias| + 2 s.e. <= {tol:g} for E||X_T||^2 = {exact:.5f} (d=10 OU), {name}: {r['seconds']:.2f} s "
            f"({r['steps']} steps x {r['paths']} paths; exact bias {r['bias']:.2e}; achieved error {r['achieved']:.2e}"
            f", s.e. {r['se']:.1e})"
        )
    print(
        f"time-to-accuracy speed-up PlatenWeak2 vs Euler-Gaussian: {tta['euler']['seconds'] / tta['platen']['seconds']:.1f}x"
    )
    (t_first, n_first, t_compile), counts = compile_counts()
    print(
        f"first simulate_sde (label-noise diag net): {t_first:.2f} s wall, {n_first} compiles, {t_compile:.2f} s "
        f"compiling; recompiles in sweeps of 3 values: " + ", ".join(f"{k}: {v}" for k, v in counts.items())
    )
    if memory:
        n_steps = 1000 if quick else 10_000
        rss, secs = peak_memory(10_000, n_steps)
        print(
            f"peak RSS, 10,000 paths x {n_steps} steps at d=100 with streaming statistics: {rss:.0f} MB "
            f"({secs:.0f} s)"
        )
    if large is None:
        large = jax.default_backend() == "gpu"
    if large:
        secs, res = large_run(10_000 if quick else 100_000, 1000 if quick else 10_000)
        print(
            f"{res.n_paths:,} paths x {res.steps[-1]:,} steps at d=100 on {jax.devices()[0].device_kind}: "
            f"{secs:.1f} s wall ({res.n_paths * res.steps[-1] / secs / 1e6:.1f} M path-steps/s)"
        )
    else:
        print("100,000 paths x 10,000 steps at d=100: skipped (no GPU; --large forces it)")
    print(f"ratio_vs_handwritten={min(ratios):.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--quick",
        action="store_true",
        help="N/10 paths, 100 steps, 1 rep, tolerance 1e-2, peers at d = 10 only",
    )
    ap.add_argument(
        "--memory", action="store_true", help="peak memory of 10,000 paths x 10,000 steps, d = 100"
    )
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--large",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="100,000 paths x 10,000 steps at d = 100 (default: only on a GPU)",
    )
    args = ap.parse_args()
    run(quick=args.quick, memory=args.memory, reps=args.reps, large=args.large)
