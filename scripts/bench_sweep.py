"""A 16-point η × σ sweep of the flagship-sized problem as one compiled program (`sgdsde.sweep`), against the
Python loop of the 16 `simulate_sgd` runs it replaces, in one process.

The problem is the main job's: HaoChen et al.'s sparse regression on the quadratically parametrised model
β = v⊙v, d = 100, n = 40, full-batch label noise, 100 paths per point, float32 as on an accelerator (float64
with --float64). Grid: η ∈ {0.005, 0.0075, 0.01, 0.0125} × σ ∈ {0.5, 1, 2, 4}. Both sides are timed warm
(after one compiling call each), in alternating rounds; it prints the medians, the median per-round speed-up,
the largest difference of any point's statistics and paths from the loop's (0: bit for bit), for the default
`bitwise=True` sweep and the data-sharing `bitwise=False` one, and last
`sweep_speedup=<ratio> bitwise_equal=<bool> shared_speedup=<ratio>`.

Run: python scripts/bench_sweep.py [--steps T] [--reps R] [--float64]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _timing import paired_medians

import sgdsde as sd

LRS = [0.005, 0.0075, 0.01, 0.0125]
SIGMAS = [0.5, 1.0, 2.0, 4.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--paths", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--float64", action="store_true")
    args = ap.parse_args()
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = np.float64 if args.float64 else np.float32
    data = sd.sparse_regression(jax.random.key(0), n_samples=40, dim=100, sparsity=5)
    problem = sd.Problem(sd.DiagonalLinearNetwork(100, alpha=1.0, signed=False), data.X, data.y).astype(dtype)
    theta0 = problem.model.init()
    kw = dict(
        n_steps=args.steps,
        key=0,
        ensemble=sd.Ensemble(n_paths=args.paths),
        record=sd.Record(every=args.steps // 10, n_saved_paths=args.paths),
    )
    noise = sd.LabelNoise(1.0)
    out = {}

    def swept(bitwise=True):
        out["sweep" if bitwise else "shared"] = sd.sweep(
            sd.simulate_sgd, problem, noise, theta0, grid={"lr": LRS, "sigma": SIGMAS}, bitwise=bitwise, **kw
        )

    def looped():
        out["loop"] = [
            sd.simulate_sgd(problem, sd.LabelNoise(s), theta0, lr=lr, **kw) for lr in LRS for s in SIGMAS
        ]

    medians, ratios = paired_medians(
        {"loop": looped, "sweep": swept, "shared": lambda: swept(False)}, args.reps
    )

    def max_diff(name):  # 0.0: bit for bit
        return max(
            max([np.max(np.abs(a.paths - b.paths))] + [np.max(np.abs(a.mean[k] - b.mean[k])) for k in a.mean])
            for a, b in zip(out["loop"], out[name].results, strict=True)
        )

    work = len(LRS) * len(SIGMAS) * args.paths * args.steps
    print(
        f"device: {jax.devices()[0].device_kind}; {len(LRS) * len(SIGMAS)} points × {args.paths} paths × {args.steps} steps, {np.dtype(dtype).name}"
    )
    for name, what in (
        ("loop", "16 simulate_sgd runs"),
        ("sweep", "sweep, bitwise=True"),
        ("shared", "sweep, bitwise=False"),
    ):
        diff = (
            ""
            if name == "loop"
            else f"  speed-up {ratios[name]:.2f}x  max |diff| vs loop {max_diff(name):.3g}"
        )
        print(f"{what:22s} median {medians[name]:.3f} s  {work / medians[name]:.3g} path-steps/s{diff}")
    print(
        f"sweep_speedup={ratios['sweep']:.2f} bitwise_equal={max_diff('sweep') == 0} "
        f"shared_speedup={ratios['shared']:.2f}"
    )


if __name__ == "__main__":
    main()
