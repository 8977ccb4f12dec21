"""The cost of checkpoints: the flagship's label-noise SGD run (d = 100, n = 40, 100 paths, float32) with its
whole state written every record (`Output(checkpoint_every=1)`, 40 atomic writes with fsync) against the
same run without checkpoints, in one process, in alternating rounds.

Prints the medians, the throughput of each, the checkpoint file's size, and last
`checkpoint_overhead=<median per-round time ratio − 1>`.

Run: python scripts/bench_checkpoint.py [--steps T] [--reps R]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import numpy as np
from _timing import paired_medians

import sgdsde as sd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40_000)
    ap.add_argument("--paths", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    data = sd.sparse_regression(jax.random.key(0), n_samples=40, dim=100, sparsity=5)
    problem = sd.Problem(sd.DiagonalLinearNetwork(100, alpha=1.0, signed=False), data.X, data.y)
    problem = problem.astype(np.float32)
    noise = sd.LabelNoise(float(np.sqrt(40)))
    folder = tempfile.mkdtemp()
    kw = dict(
        lr=0.01,
        n_steps=args.steps,
        key=0,
        ensemble=sd.Ensemble(n_paths=args.paths),
        record=sd.Record(every=args.steps // 40),
    )

    def plain():
        sd.simulate_sgd(
            problem, noise, problem.model.init(), **kw, output=sd.Output(save_to=f"{folder}/plain")
        )

    def checkpointed():
        out = sd.Output(save_to=f"{folder}/ckpt", checkpoint_every=1)
        sd.simulate_sgd(problem, noise, problem.model.init(), **kw, output=out)

    medians, ratios = paired_medians({"checkpointed": checkpointed, "plain": plain}, args.reps)
    work = args.paths * args.steps
    size = os.path.getsize(f"{folder}/ckpt.ckpt.npz")
    print(
        f"{args.paths} paths × {args.steps} steps, 40 records, 40 checkpoints; the finished run's file {size / 1e3:.0f} kB"
    )
    for name in ("plain", "checkpointed"):
        print(f"{name:13s} median {medians[name]:.3f} s  {work / medians[name]:.3g} path-steps/s")
    print(f"checkpoint_overhead={ratios['plain'] - 1:.3f}")


if __name__ == "__main__":
    main()
