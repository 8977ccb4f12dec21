"""Minibatch sampling schemes: i.i.d. indices, uniform B-subsets, and shuffled epochs."""

from __future__ import annotations

from typing import Literal, overload

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_range

SAMPLINGS = ("with_replacement", "without_replacement", "shuffle")


def check_sampling(sampling: str) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


@overload
def batch_size_arg(value, *, allow_none: Literal[False] = False) -> int: ...


@overload
def batch_size_arg(value, *, allow_none: bool) -> int | None: ...


def batch_size_arg(value, *, allow_none: bool = False) -> int | None:
    """A batch size argument as a Python int ≥ 1 (numpy integers accepted), or None where allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        also = " or None (full batch)" if allow_none else ""
        raise ValueError(f"batch_size must be an integer >= 1{also}, got {value!r}")
    return int(value)


def check_batch_size(batch_size: int, n: int) -> int:
    return check_int_range("batch_size", batch_size, 1, n)


def sampling_scale(sampling: str, batch_size: int, n: int) -> float:
    """c with Cov(minibatch mean gradient) = c·Σ₁/B: 1 with replacement, (n−B)/(n−1) without.

    Shuffled epochs give each step a uniform B-subset, so one step's covariance is the WOR one
    (minibatch-noise.md §5, §9.1).
    """
    if sampling == "with_replacement":
        return 1.0
    return (n - batch_size) / (n - 1) if n > 1 else 0.0


def is_full_batch(sampling: str, batch_size: int, n: int) -> bool:
    return sampling != "with_replacement" and batch_size == n


class BatchSampler(eqx.Module):
    """Draws the batch indices of one step for N paths at once (shape (N, B), int32)."""

    batch_size: int = eqx.field(static=True)
    sampling: str = eqx.field(static=True)

    def init_state(self, n: int, key, n_paths: int):
        if self.sampling == "shuffle":
            # Placeholder of the right shape: step 0 starts an epoch and draws the first partition.
            return jnp.zeros((n_paths, n), jnp.int32)
        return None

    def draw(self, n: int, key, step, state, n_paths: int):
        """Indices (N, B), or None for the full batch (every path uses all n examples; nothing to gather)."""
        B = self.batch_size
        if is_full_batch(self.sampling, B, n):
            return None, state
        if self.sampling == "with_replacement":
            flat = jax.random.randint(key, (n_paths * B,), 0, n, dtype=jnp.int32)
            return flat.reshape(n_paths, B), state
        if self.sampling == "without_replacement":
            u = jax.random.uniform(key, (n_paths, n))
            return jax.lax.top_k(u, B)[1].astype(jnp.int32), state
        # shuffle: m = ⌊n/B⌋ batches per epoch (a final partial batch is dropped); new partition per epoch.
        m = n // B
        j = step % m
        state = jax.lax.cond(j == 0, lambda: _permutations(key, n_paths, n), lambda: state)
        return jax.lax.dynamic_slice_in_dim(state, j * B, B, axis=1), state


def _permutations(key, n_paths: int, n: int):
    return jnp.argsort(jax.random.uniform(key, (n_paths, n)), axis=1).astype(jnp.int32)
