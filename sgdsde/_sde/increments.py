"""Random inputs of SDE steps for all paths at once, drawn flat (the fast layout) and reshaped.

Convention (theory/sde.md, SDE-3): the Brownian increment over one SGD step is $\\Delta W =
-\\sqrt{\\eta}\\,\\xi$
with ξ the N(0, I_m) draw that Gaussian-noise SGD makes from the same step key, so Euler with dt = η
reproduces
$\\theta - \\eta(\\nabla L + A\\xi)$. With k substeps the fine increments are a Brownian bridge pinned to that
sum, so every k shares one Brownian path (common random numbers across dt, and strong errors against SGD).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from diffrax import SpaceTimeLevyArea

from .solvers import WeakIncrement


def coarse_normals(key, n_paths: int, m: int, dtype):
    """ξ of one step, exactly as GaussianNoise/SphericalGaussianNoise draw it from ``key``."""
    return jax.random.normal(key, (n_paths * m,), dtype).reshape(n_paths, m)


def brownian(key, eta, substeps: int, n_paths: int, m: int, dtype):
    """ΔW of shape (k, N, m) over k substeps of dt = η/k, summing to $-\\sqrt\\eta\\,\\xi$."""
    total = -jnp.sqrt(eta) * coarse_normals(key, n_paths, m, dtype)
    if substeps == 1:
        return total[None]
    dt = eta / substeps
    z = jax.random.normal(jax.random.fold_in(key, 1), (substeps * n_paths * m,), dtype)
    z = z.reshape(substeps, n_paths, m)
    # Z_j − Z̄ has covariance (I − 11ᵀ/k) across substeps: with the pinned sum, increments are iid N(0, dt)
    return total[None] / substeps + jnp.sqrt(dt) * (z - jnp.mean(z, axis=0, keepdims=True))


def levy(key, eta, substeps: int, n_paths: int, m: int, dtype):
    """Brownian increments with their space-time Lévy areas H ~ N(0, dt/12), independent of ΔW."""
    dW = brownian(key, eta, substeps, n_paths, m, dtype)
    dt = eta / substeps
    h = jax.random.normal(jax.random.fold_in(key, 2), (substeps * n_paths * m,), dtype)
    H = jnp.sqrt(dt / 12) * h.reshape(substeps, n_paths, m)
    return SpaceTimeLevyArea(dt=jnp.broadcast_to(dt, (substeps, n_paths)), W=dW, H=H)


def two_point(key, eta, substeps: int, n_paths: int, m: int, dtype):
    """±√dt with probability ½ each: matches N(0, dt) up to third moments (weak order 1 with Euler)."""
    dt = eta / substeps
    s = jax.random.rademacher(key, (substeps * n_paths * m,), dtype)
    return jnp.sqrt(dt) * s.reshape(substeps, n_paths, m)


def weak2(key, eta, substeps: int, n_paths: int, m: int, dtype, with_v: bool):
    """Three-point ΔŴ (±√(3dt) w.p. 1/6, 0 w.p. 2/3; moments of N(0, dt) up to the fifth) and two-point V."""
    dt = eta / substeps
    u = jax.random.uniform(key, (substeps * n_paths * m,), dtype)
    s = jnp.where(u < 1 / 6, -1.0, jnp.where(u > 5 / 6, 1.0, 0.0)).astype(dtype)
    dW = jnp.sqrt(3 * dt) * s.reshape(substeps, n_paths, m)
    if not with_v:
        return WeakIncrement(dW=dW, V=None)
    r = jax.random.rademacher(jax.random.fold_in(key, 1), (substeps * n_paths * m * m,), dtype)
    upper = jnp.triu(r.reshape(substeps, n_paths, m, m), 1)
    V = dt * (upper - jnp.swapaxes(upper, -1, -2))
    return WeakIncrement(dW=dW, V=V)
