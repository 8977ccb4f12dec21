"""Speed at size (issue 24, item 5): an equinox MLP with about 10⁵ parameters on digits as a FunctionModel.

An MLP 64 → 280 → 280 → 10 (ReLU, d = 99,690) with cross-entropy on scikit-learn's digits (the default training
split, n = 1,078), minibatch SGD with B = 32 drawn with replacement, 64 paths:
- SGD path-steps/s of ``sd.simulate`` against the fastest hand-written JAX loop of the same update in the same
  process: jit + lax.scan over steps + vmap over paths, θ ← θ − η ∇(mean CE of the batch), the batch indices
  drawn as ``simulate`` draws them (one flat randint of N·B indices per step from fold_in(key, k), reshaped
  (N, B)); two hand-written forms are timed (parameters as the stacked pytree, and as one flat (N, d) array
  unraveled in the step) and the faster one is the baseline;
- SGD's run at ``--steps`` and at a quarter of them, recording ‖θ‖² (the same work as the hand-written
  loops): the per-step (steady-state) cost of both loops and ``simulate``'s fixed cost per call (planning,
  the stability check's power iteration on HVPs over the n examples), so the end-to-end ratio at a given
  run length follows; and the run with the default records (the loss, a forward pass over all n examples per
  path at the start and the end) apart;
- the SDE's cost per step (``sd.SDE(MinibatchNoise(32))``, Euler: the full gradient and the centred diffusion
  product A(θ)ξ over all n examples, together one vector–Jacobian product, SDE-10; from runs of 1 and
  ``--sde-steps`` steps) relative to SGD's per-step cost (at least n/B: the drift is the full-batch gradient),
  and relative to full-batch GD's (``sd.SGD(None)``), the floor of any step that reads all n examples;
- the process's peak resident memory.
Each round times the hand-written loop and then ``simulate`` (paired medians, scripts/_timing.py).
Last line: ``large: d=… ratio_vs_handwritten=… sde_over_sgd=… peak_mb=…`` (the end-to-end ratio of the
median times at ``--steps``, fixed cost included).

Run: python scripts/bench_large.py [--quick] [--steps T] [--sde-steps S] [--reps R]
"""

from __future__ import annotations

import argparse
import resource
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _timing import paired_medians

import sgdsde as sd


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(width: int, n_paths: int):
    data = sd.data.digits(0, dtype=np.float32)
    net = eqx.nn.MLP(64, 10, width, 2, activation=jax.nn.relu, key=jax.random.key(0))
    model = sd.FunctionModel.from_module(net)
    problem = sd.Problem(model, data.X, data.y, loss=sd.CrossEntropyLoss())
    params, static = eqx.partition(net, eqx.is_inexact_array)
    return problem, model, params, static


def handwritten_pytree(params, static, X, y, B, lr, n_steps):
    """Parameters as the path-stacked pytree: vmap over paths of the batch gradient."""
    n = X.shape[0]

    def batch_loss(p, xb, yb):
        logits = jax.vmap(eqx.combine(p, static))(xb)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, yb[:, None], 1)[:, 0])

    @jax.jit
    def run(key, stacked):
        N = jax.tree.leaves(stacked)[0].shape[0]

        def body(p, k):
            idx = jax.random.randint(jax.random.fold_in(key, k), (N * B,), 0, n, dtype=jnp.int32).reshape(
                N, B
            )
            g = jax.vmap(jax.grad(batch_loss))(p, X[idx], y[idx])
            return jax.tree.map(lambda a, b: a - lr * b, p, g), None

        return jax.lax.scan(body, stacked, jnp.arange(n_steps))[0]

    return run


def handwritten_flat(model, X, y, B, lr, n_steps):
    """Parameters as one flat (N, d) array, unraveled inside the step (sgdsde's layout for models other than a
    FunctionModel; SGD carries a FunctionModel's params pytree, theory/function-models.md FMOD-5)."""
    n = X.shape[0]

    def batch_loss(theta, xb, yb):
        logits = jax.vmap(lambda x: model.output(theta, x))(xb)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, yb[:, None], 1)[:, 0])

    @jax.jit
    def run(key, theta):
        N = theta.shape[0]

        def body(th, k):
            idx = jax.random.randint(jax.random.fold_in(key, k), (N * B,), 0, n, dtype=jnp.int32).reshape(
                N, B
            )
            return th - lr * jax.vmap(jax.grad(batch_loss))(th, X[idx], y[idx]), None

        return jax.lax.scan(body, theta, jnp.arange(n_steps))[0]

    return run


def run(quick: bool = False, steps: int | None = None, sde_steps: int | None = None, reps: int | None = None):
    width, n_paths, B, lr = (64, 8, 32, 0.05) if quick else (280, 64, 32, 0.05)
    steps = steps or (40 if quick else 400)
    short = steps // 4
    sde_steps = max(sde_steps or (3 if quick else 4), 2)
    reps = reps or (2 if quick else 3)
    problem, model, params, static = setup(width, n_paths)
    d, n = model.n_params, problem.n_data
    theta0 = jnp.broadcast_to(model.init(), (n_paths, d))
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_paths, *a.shape)), params)
    X, y = problem.X, problem.y
    hand_tree = handwritten_pytree(params, static, X, y, B, lr, steps)
    hand_flat = handwritten_flat(model, X, y, B, lr, steps)
    key = jax.random.key(1)
    ensemble = sd.Ensemble(n_paths=n_paths, dtype=np.float32)
    sgd = sd.SGD(sd.MinibatchNoise(B, "with_replacement"))

    # the same work as the hand-written loops: ‖θ‖² recorded at the start and the end (the default records the
    # loss, a forward pass over all n examples per path at both ends: timed apart below)
    record = sd.Record(observables=("sq_norm",))

    def ours():
        sd.simulate(sgd, problem, theta0, lr=lr, n_steps=steps, key=1, ensemble=ensemble, record=record)

    def ours_loss():
        sd.simulate(sgd, problem, theta0, lr=lr, n_steps=steps, key=1, ensemble=ensemble)

    def tree():
        jax.block_until_ready(hand_tree(key, stacked))

    def flat():
        hand_flat(key, theta0).block_until_ready()

    # the faster hand-written form is the baseline (one warm-up and one timed call each)
    base = {}
    for name, fn in (("pytree", tree), ("flat", flat)):
        fn()
        t = time.perf_counter()
        fn()
        base[name] = time.perf_counter() - t
    best = min(base, key=base.__getitem__)
    hand_short = (
        handwritten_pytree(params, static, X, y, B, lr, short)
        if best == "pytree"
        else handwritten_flat(model, X, y, B, lr, short)
    )
    start = stacked if best == "pytree" else theta0

    def ours_short():
        sd.simulate(sgd, problem, theta0, lr=lr, n_steps=short, key=1, ensemble=ensemble, record=record)

    medians, ratios = paired_medians(
        {
            "hand": tree if best == "pytree" else flat,
            "sgdsde": ours,
            "hand_short": lambda: jax.block_until_ready(hand_short(key, start)),
            "sgdsde_short": ours_short,
            "sgdsde_loss": ours_loss,
        },
        reps,
    )
    path_steps = n_paths * steps
    # per-step (marginal) cost from the two run lengths, and simulate's fixed cost per call (planning, the
    # stability check's power iteration, the initial record over the n examples)
    marginal = {k: (medians[k] - medians[k + "_short"]) / (steps - short) for k in ("hand", "sgdsde")}
    fixed = medians["sgdsde"] - steps * marginal["sgdsde"]
    ratio = medians["hand"] / medians["sgdsde"]
    print(
        f"MLP 64-{width}-{width}-10 ReLU on digits: d = {d}, n = {n}, B = {B}, N = {n_paths} paths, "
        f"{steps} steps, float32"
    )
    print(
        f"  hand-written forms (one call): pytree {path_steps / base['pytree']:,.0f}, flat "
        f"{path_steps / base['flat']:,.0f} path-steps/s; baseline: {best}"
    )
    print(f"  hand-written jit+scan+vmap: {path_steps / medians['hand']:,.0f} path-steps/s")
    print(
        f"  sgdsde simulate (SGD):      {path_steps / medians['sgdsde']:,.0f} path-steps/s "
        f"(ratio {ratio:.3f} of the medians; median of per-round ratios {ratios['sgdsde']:.3f}; {reps} paired rounds)"
    )
    print(
        f"  per step (from {short} and {steps} steps): hand {marginal['hand'] * 1e3:.1f} ms, sgdsde "
        f"{marginal['sgdsde'] * 1e3:.1f} ms (steady-state ratio {marginal['hand'] / marginal['sgdsde']:.3f}); "
        f"sgdsde's fixed cost per call {fixed:.2f} s"
    )
    print(
        f"  with the default records (the loss over all n examples at the start and the end): "
        f"{path_steps / medians['sgdsde_loss']:,.0f} path-steps/s, "
        f"+{medians['sgdsde_loss'] - medians['sgdsde']:.2f} s per call (ratio {medians['hand'] / medians['sgdsde_loss']:.3f})"
    )

    sde = sd.SDE(sd.MinibatchNoise(B, "with_replacement"))

    gd = sd.SGD(None)

    def run_of(method, n_steps):
        return lambda: sd.simulate(method, problem, theta0, lr=lr, n_steps=n_steps, key=1, ensemble=ensemble)

    sde_medians, _ = paired_medians(
        {
            "long": run_of(sde, sde_steps),
            "short": run_of(sde, 1),
            "gd_long": run_of(gd, sde_steps),
            "gd_short": run_of(gd, 1),
        },
        reps,
    )
    per_step_sgd = marginal["sgdsde"]
    per_step_sde = (sde_medians["long"] - sde_medians["short"]) / (sde_steps - 1)
    per_step_gd = (sde_medians["gd_long"] - sde_medians["gd_short"]) / (sde_steps - 1)
    sde_over_sgd = per_step_sde / per_step_sgd
    print(
        f"  SDE (Euler, full gradient + A(θ)ξ over n = {n} in one VJP): {per_step_sde * 1e3:.1f} ms/step (from 1 and "
        f"{sde_steps} steps) vs SGD {per_step_sgd * 1e3:.2f} ms/step: {sde_over_sgd:.1f}×; n/B = {n / B:.1f}"
    )
    # the SDE's drift is the full-batch gradient, so its floor is full-batch GD's step, not a batch of B
    print(
        f"  full-batch GD (the SDE's drift alone): {per_step_gd * 1e3:.1f} ms/step; SDE over GD "
        f"{per_step_sde / per_step_gd:.2f}×"
    )
    peak = peak_rss_mb()
    print(f"  peak RSS of the process: {peak:,.0f} MB (θ ensemble {n_paths * d * 4 / 2**20:.1f} MB)")
    print(f"large: d={d} ratio_vs_handwritten={ratio:.3f} sde_over_sgd={sde_over_sgd:.2f} peak_mb={peak:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--sde-steps", type=int)
    parser.add_argument("--reps", type=int)
    args = parser.parse_args()
    run(args.quick, args.steps, args.sde_steps, args.reps)
