"""Shared checks and formatting for the implicit-regularization layer."""

from __future__ import annotations

import jax
import numpy as np

from .._problem import Problem


def float64_problem(problem: Problem) -> Problem:
    """The problem in float64; raise if 64-bit JAX is off (solves and verdicts need it)."""
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
    if not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "stationary-point solves need float64: call jax.config.update('jax_enable_x64', True) "
            "before creating arrays (or set JAX_ENABLE_X64=1)"
        )
    return problem if problem.X.dtype == np.float64 else problem.astype(np.float64)


def check_theta(problem: Problem, theta, name: str) -> np.ndarray:
    th = np.asarray(theta, dtype=np.float64)
    if th.shape != (problem.n_params,):
        raise ValueError(f"{name} must have shape ({problem.n_params},), got {th.shape}")
    if not np.all(np.isfinite(th)):
        raise ValueError(f"{name} must be finite")
    return th


def fmt(x: float, se: float | None = None) -> str:
    """'1.234e-03 ± 5.6e-05' (or the number alone)."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.4g}" if se is None else f"{x:.4g} ± {se:.2g}"


def render_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
