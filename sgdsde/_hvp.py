"""λ_max of a symmetric operator known only by its products v ↦ Hv (Hessian-vector products at size): power
iteration with a shift when the dominant eigenvalue is negative (theory/function-models.md, FMOD-4). The one power
iteration of the package: ``Sharpness(method="power")`` (theory/curvature.md, CURV-2) runs it too."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

# relative change of the Rayleigh quotient between iterations at which power iteration stops (FMOD-4)
POWER_ITERATION_RTOL = 1e-4
POWER_ITERATION_MAX_ITERS = 200


def power_iteration(hvp, v0, shift, iters: int, rtol: float):
    r"""Power iteration on H + shift·I from v0: (the Rayleigh quotient μ of H, products used). Each product
    gives $\mu_k = v_k^T(H + sI)v_k$ and $v_{k+1} = (H + sI)v_k/\|\cdot\|$; it stops after ``iters`` products,
    or once μ changes by ≤ ``rtol`` relatively (rtol = 0: only where μ repeats exactly, i.e. ``iters`` products
    up to a converged tail; ``Sharpness(method="power")``, CURV-2)."""

    def body(state):
        v, mu, _, k = state
        hv = hvp(v) + shift * v
        mu_new = jnp.vdot(v, hv)
        nrm = jnp.linalg.norm(hv)
        v = jnp.where(nrm > 0, hv / jnp.where(nrm > 0, nrm, 1), v)
        return v, mu_new, mu, k + 1

    def cond(state):
        _, mu, mu_old, k = state
        done = jnp.abs(mu - mu_old) <= rtol * jnp.abs(mu)
        return (k < iters) & ~(done & (k > 1))

    v0 = v0 / jnp.linalg.norm(v0)
    inf = jnp.asarray(jnp.inf, v0.dtype)
    _, mu, _, k = jax.lax.while_loop(cond, body, (v0, inf, -inf, jnp.int32(0)))
    return mu - shift, k


def power_iteration_lambda_max(
    hvp: Callable[[Array], Array],
    d: int,
    key,
    dtype=jnp.float32,
    iters: int = POWER_ITERATION_MAX_ITERS,
    rtol: float = POWER_ITERATION_RTOL,
) -> Float[Array, ""]:
    """$\\lambda_{\\max}(H)$ of a symmetric H given by ``hvp`` (v ↦ Hv, v ∈ R^d), by power iteration from a
    random start: the dominant eigenvalue μ; if μ < 0, again on H + |μ|I, whose dominant eigenvalue is
    λ_max + |μ| ≥ 0. Stops when the Rayleigh quotient changes by ≤ ``rtol`` relatively, or after ``iters``
    products per stage (theory/function-models.md, FMOD-4). Traceable: call it under jit.

    The Rayleigh quotient is ≤ the dominant |λ| and approaches it at rate (λ₂/λ₁)^{2k}: with a small gap it
    can stop early below λ_max (a warning may then come late, never spuriously)."""
    v0 = jax.random.normal(key, (d,), dtype)
    mu, _ = power_iteration(hvp, v0, jnp.zeros((), dtype), iters, rtol)
    return jax.lax.cond(mu >= 0, lambda: mu, lambda: power_iteration(hvp, v0, -mu, iters, rtol)[0])


# terms of a matrix-free sum (basis directions of a Hessian trace, examples of a sum of per-example gradients)
# taken at once: memory O(CHUNK·d) plus CHUNK times one term's activations
CHUNK = 32


def chunked_sum(term: Callable[[Array], Array], count: int, chunk: int = CHUNK) -> Array:
    """$\\sum_{i < \\mathrm{count}} \\mathrm{term}(i)$ for a ``term`` (scalar or array) of an integer index, ``chunk`` terms at a time
    (vmapped) in a ``lax.map`` over ⌈count/chunk⌉ chunks; each chunk is rematerialized under reverse mode, so
    neither the value nor its derivatives hold more than one chunk's intermediates (CURV-5)."""
    chunk = max(1, min(chunk, count))
    n_chunks = -(-count // chunk)
    idx = jnp.arange(n_chunks * chunk, dtype=jnp.int32).reshape(n_chunks, chunk)

    @jax.checkpoint
    def one(rows):
        valid = rows < count
        vals = jax.vmap(term)(jnp.where(valid, rows, count - 1))
        keep = valid.reshape(valid.shape + (1,) * (vals.ndim - 1))
        return jnp.sum(jnp.where(keep, vals, jnp.zeros_like(vals)), axis=0)

    return jnp.sum(jax.lax.map(one, idx), axis=0)


def hessian_trace(
    f: Callable[[Array], Array], theta: Float[Array, " d"], chunk: int = CHUNK
) -> Float[Array, ""]:
    """$\\operatorname{tr}\\nabla^2 f(\\theta) = \\sum_j \\partial_j^2 f$ exactly, one second directional derivative
    (forward over forward mode) per basis vector e_j, ``chunk`` at a time: d products, no d × d matrix (CURV-5)."""
    d = theta.shape[0]

    def second(j):
        e = jax.nn.one_hot(j, d, dtype=theta.dtype)
        return jax.jvp(lambda t: jax.jvp(f, (t,), (e,))[1], (theta,), (e,))[1]

    return chunked_sum(second, d, chunk)
