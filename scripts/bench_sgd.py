"""Throughput of `simulate_sgd` against the fastest hand-written jitted scan of the same update, in one process.

Cases (issue 2): (a) minibatch SGD on linear regression, d = 100, n = 1000, B = 32, N = 10,000 paths;
(b) full-batch label-noise SGD (±σ) on the diagonal network u⊙u − v⊙v, d = 100, n = 40, N = 10,000;
(c) the engine's fixed cost per step (issue 22): case (b) with few paths and many steps, N = 8, 32 and 256
(--small-steps steps, 10⁵ by default; N = 256 runs a tenth of them), what the theory checks run;
(d) case (b) with heavy-ball momentum 0.9 and with Adam (issue 23), against the same scan with momentum
written out and with optax's Adam on the whole (N, d) array.
The hand-written baselines draw their random numbers flat (the fast layout of ../shared/performance.md), keep
the state (N, d) and use the same arithmetic with nothing else: no divergence checks, no recording. Case (c)'s
baseline makes exactly the draws `simulate_sgd` makes (step k: ε from split(fold_in(run key, k))[1]; its final
θ is compared with the run's) and is the fastest such scan found: the keys and the ±1 draws of a segment of
steps are made in one vectorized call (threefry runs as a rolled loop on CPU, so a call per step costs far
more than its arithmetic at few paths), then the segment's updates are scanned.
Each round times the hand-written scan and then `simulate_sgd`, so load from other jobs hits both alike; prints
path-steps per second (medians over --reps rounds), the ratio (the median of the per-round ratios), the
process's peak RSS, and last `ratio_vs_handwritten=<min over cases>`.

Run: python scripts/bench_sgd.py [--quick] [--steps T] [--reps R] [--small-steps T]
     [--no-small | --small-only | --optimizers-only]
"""

from __future__ import annotations

import argparse
import resource

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _timing import paired_medians

import sgdsde as sd


def handwritten_minibatch(X, y, B, n_steps):
    n = X.shape[0]

    @jax.jit
    def run(key, theta):
        N = theta.shape[0]

        def body(th, k):
            idx = jax.random.randint(jax.random.fold_in(key, k), (N * B,), 0, n).reshape(N, B)
            xb = X[idx]  # N × B × d
            r = jnp.einsum("nbd,nd->nb", xb, th) - y[idx]
            return th - (lr / B) * jnp.einsum("nb,nbd->nd", r, xb), None

        return jax.lax.scan(body, theta, jnp.arange(n_steps))[0]

    lr = 0.01
    return run


def handwritten_label_noise(X, y, sigma, n_steps, lr):
    n, p = X.shape

    @jax.jit
    def run(key, theta):
        N = theta.shape[0]

        def body(th, k):
            eps = sigma * jax.random.rademacher(jax.random.fold_in(key, k), (N * n,), th.dtype).reshape(N, n)
            u, v = th[:, :p], th[:, p:]
            r = (u * u - v * v) @ X.T - y[None, :] - eps  # N × n
            gb = (r @ X) * (2.0 / n)  # ∂L/∂β
            return jnp.concatenate([th[:, :p] - lr * gb * u, th[:, p:] + lr * gb * v], axis=1), None

        return jax.lax.scan(body, theta, jnp.arange(n_steps))[0]

    return run


def handwritten_label_noise_same_draws(X, y, sigma, n_steps, lr, run_key, segment):
    """Case (b)'s update with simulate_sgd's own draws, the keys and draws of ``segment`` steps at a time."""
    n, p = X.shape

    @jax.jit
    def run(theta):
        N = theta.shape[0]

        def update(th, eps):
            u, v = th[:, :p], th[:, p:]
            r = (u * u - v * v) @ X.T - y[None, :] - eps
            gb = (r @ X) * (2.0 / n)
            return jnp.concatenate([th[:, :p] - lr * gb * u, th[:, p:] + lr * gb * v], axis=1), None

        def draws(k):  # LabelNoise.draw's ε at step k: its second split key, ±1 flat, times σ
            ke = jax.random.split(jax.random.fold_in(run_key, k))[1]
            return (sigma * jax.random.rademacher(ke, (N * n,), theta.dtype)).reshape(N, n)

        def block(th, ks):
            return jax.lax.scan(update, th, jax.vmap(draws)(ks))[0], None

        full, tail = divmod(n_steps, segment)
        ks = jnp.arange(full * segment, dtype=jnp.int32).reshape(full, segment)
        theta = jax.lax.scan(block, theta, ks)[0]
        if tail:
            theta = block(theta, jnp.arange(full * segment, n_steps, dtype=jnp.int32))[0]
        return theta

    return run


def handwritten_label_noise_optimizer(X, y, sigma, n_steps, lr, kind):
    """Case (b)'s gradient with heavy-ball momentum 0.9 written out, or with optax's Adam applied to the whole
    (N, d) array at once (one state for all paths: elementwise, so the same update per path; optimizers are
    never written by hand here, only the scan around them)."""
    n, p = X.shape
    tx = optax.adam(lr)

    @jax.jit
    def run(key, theta):
        N = theta.shape[0]

        def grad(th, k):
            eps = sigma * jax.random.rademacher(jax.random.fold_in(key, k), (N * n,), th.dtype).reshape(N, n)
            u, v = th[:, :p], th[:, p:]
            r = (u * u - v * v) @ X.T - y[None, :] - eps
            gb = (r @ X) * (2.0 / n)
            return jnp.concatenate([gb * u, -gb * v], axis=1)  # ∂L/∂u = 2u·(rX/n), as in case (b)

        def momentum(carry, k):
            th, m = carry
            m = 0.9 * m + grad(th, k)
            return (th - lr * m, m), None

        def adam(carry, k):
            th, state = carry
            u, state = tx.update(grad(th, k), state, th)
            return (th + u, state), None

        if kind == "momentum":
            return jax.lax.scan(momentum, (theta, jnp.zeros_like(theta)), jnp.arange(n_steps))[0][0]
        return jax.lax.scan(adam, (theta, tx.init(theta)), jnp.arange(n_steps))[0][0]

    return run


def case_optimizer(n_paths, n_steps, kind):
    """Case (d): case (b) with momentum 0.9 or Adam (issue 23)."""
    data = sd.sparse_regression(jax.random.key(0), 40, 100, 5)
    model = sd.DiagonalLinearNetwork(100, 1.0)
    problem = sd.Problem(model, data.X, data.y, dtype=jnp.float32)
    theta0 = jnp.broadcast_to(model.init().astype(jnp.float32), (n_paths, 200))
    optimizer = sd.Momentum(0.9) if kind == "momentum" else sd.Adam()
    lr = 0.01 if kind == "momentum" else 1e-3
    hand = handwritten_label_noise_optimizer(problem.X, problem.y, 1.0, n_steps, lr, kind)

    def ours():
        sd.simulate(
            sd.SGD(sd.LabelNoise(1.0), optimizer=optimizer),
            problem,
            model.init(),
            lr=lr,
            n_steps=n_steps,
            key=1,
            ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float32),
        )

    return lambda: hand(jax.random.key(2), theta0).block_until_ready(), ours


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_minibatch(n_paths, n_steps):
    key = jax.random.key(0)
    X = jax.random.normal(key, (1000, 100), jnp.float32)
    y = X @ jnp.ones(100) / 10
    problem = sd.Problem(sd.LinearRegression(100), X, y)
    theta0 = jnp.zeros((n_paths, 100), jnp.float32)
    hand = handwritten_minibatch(problem.X, problem.y, 32, n_steps)
    noise = sd.MinibatchNoise(32, "with_replacement")

    def ours():
        sd.simulate_sgd(
            problem,
            noise,
            np.zeros(100),
            lr=0.01,
            n_steps=n_steps,
            key=1,
            ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float32),
        )

    return lambda: hand(key, theta0).block_until_ready(), ours


def case_label_noise(n_paths, n_steps):
    data = sd.sparse_regression(jax.random.key(0), 40, 100, 5)
    model = sd.DiagonalLinearNetwork(100, 1.0)
    problem = sd.Problem(model, data.X, data.y, dtype=jnp.float32)
    theta0 = jnp.broadcast_to(model.init().astype(jnp.float32), (n_paths, 200))
    hand = handwritten_label_noise(problem.X, problem.y, 1.0, n_steps, 0.01)
    noise = sd.LabelNoise(1.0)

    def ours():
        sd.simulate_sgd(
            problem,
            noise,
            model.init(),
            lr=0.01,
            n_steps=n_steps,
            key=1,
            ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float32),
        )

    return lambda: hand(jax.random.key(2), theta0).block_until_ready(), ours


def case_few_paths(n_paths, n_steps, segment=100):
    """Case (c): case (b) with few paths; checks once that both make the same draws (final θ to rounding)."""
    data = sd.sparse_regression(jax.random.key(0), 40, 100, 5)
    model = sd.DiagonalLinearNetwork(100, 1.0)
    problem = sd.Problem(model, data.X, data.y, dtype=jnp.float32)
    theta0 = jnp.broadcast_to(model.init().astype(jnp.float32), (n_paths, 200))
    run_key = jax.random.split(jax.random.fold_in(jax.random.key(1), 0))[1]  # seed 1, chunk 0's stepping key
    hand = handwritten_label_noise_same_draws(problem.X, problem.y, 1.0, n_steps, 0.01, run_key, segment)

    def ours(n_saved=0):
        return sd.simulate_sgd(
            problem,
            sd.LabelNoise(1.0),
            model.init(),
            lr=0.01,
            n_steps=n_steps,
            key=1,
            ensemble=sd.Ensemble(n_paths=n_paths, dtype=np.float32),
            record=sd.Record(n_saved_paths=n_saved),
        )

    # the same draws: the arithmetic differs only in rounding (2uᵀ… vs the VJP), so the paths agree closely
    gap = np.max(np.abs(np.asarray(hand(theta0)) - ours(n_paths).paths[-1]))
    if not gap < 1e-3:
        raise AssertionError(
            f"the hand-written scan and simulate_sgd differ by {gap:.3g}: not the same draws"
        )
    return lambda: hand(theta0).block_until_ready(), ours


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N = 1,000 paths, 50 steps, 1 round")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--reps", type=int, default=9, help="paired rounds (hand-written, then simulate_sgd)")
    ap.add_argument("--small-steps", type=int, default=100_000, help="steps of the few-paths cases (c)")
    ap.add_argument("--no-small", action="store_true", help="skip the few-paths cases (c)")
    ap.add_argument("--small-only", action="store_true", help="only the few-paths cases (c)")
    ap.add_argument("--optimizers-only", action="store_true", help="only the optimizer cases (d)")
    args = ap.parse_args(argv)
    n_paths, n_steps, reps = (1_000, 50, 1) if args.quick else (10_000, args.steps, args.reps)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; N = {n_paths}, {n_steps} steps, "
        f"{reps} paired rounds (medians; the ratio is the median of the per-round ratios)"
    )
    ratios = []
    large = (
        ("minibatch linear regression d=100 n=1000 B=32", case_minibatch),
        ("label-noise diagonal net d=100 n=40 (full batch)", case_label_noise),
        ("the same with momentum 0.9", lambda n, t: case_optimizer(n, t, "momentum")),
        ("the same with Adam", lambda n, t: case_optimizer(n, t, "adam")),
    )
    if args.optimizers_only:
        large, args.no_small = large[2:], True
    for name, case in () if args.small_only else large:
        hand, ours = case(n_paths, n_steps)
        medians, ratio = paired_medians({"hand": hand, "ours": ours}, reps)
        rate_hand, rate_ours = n_paths * n_steps / medians["hand"], n_paths * n_steps / medians["ours"]
        ratios.append(ratio["ours"])
        print(
            f"{name}: simulate_sgd {rate_ours / 1e6:.3f} M path-steps/s, hand-written "
            f"{rate_hand / 1e6:.3f} M path-steps/s, ratio {ratios[-1]:.3f}, peak RSS so far "
            f"{peak_rss_mb():.0f} MB"
        )
    if not args.no_small:
        small_steps = 200 if args.quick else args.small_steps
        for n in (8,) if args.quick else (8, 32, 256):
            steps = small_steps if n < 256 or args.quick else max(1, small_steps // 10)
            hand, ours = case_few_paths(n, steps)
            medians, ratio = paired_medians({"hand": hand, "ours": ours}, reps)
            ratios.append(ratio["ours"])
            print(
                f"label-noise diagonal net d=100 n=40, N={n}, {steps} steps: simulate_sgd "
                f"{medians['ours'] / steps * 1e6:.2f} us/step, hand-written (same draws) "
                f"{medians['hand'] / steps * 1e6:.2f} us/step, ratio {ratios[-1]:.3f}"
            )
    print(f"ratio_vs_handwritten={min(ratios):.3f}")


if __name__ == "__main__":
    main()
