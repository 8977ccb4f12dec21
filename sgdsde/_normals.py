"""One step's standard normal draws for N paths: the one form every Gaussian gradient noise and the SDE's
Brownian increments take (so Euler at dt = η on them is Gaussian-noise SGD, SDE-3)."""

from __future__ import annotations

import jax
from jaxtyping import Array, Float


def step_normals(key, n_paths: int, m: int, dtype) -> Float[Array, "N m"]:
    """ξ ∈ R^{N×m} i.i.d. N(0, 1): one flat draw of N·m numbers from ``key``, reshaped (N, m).

    Materialized (an optimization barrier): fused into its consumer, the normal transform (log, erf⁻¹) is
    compiled into that consumer's loop, whose vectorized and scalar code round differently with its shape, so
    a sweep's vmapped points differed from their single runs by an ulp (theory/noise.md, NOISE-8)."""
    xi = jax.random.normal(key, (n_paths * m,), dtype).reshape(n_paths, m)
    return jax.lax.optimization_barrier(xi)
