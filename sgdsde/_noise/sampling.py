"""Minibatch sampling schemes: i.i.d. indices, uniform B-subsets, and shuffled epochs."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal, overload

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_range


class AbstractSampling(eqx.Module):
    """How a step's minibatch of B out of n examples is drawn: the scheme owns its sampler state, the scale c
    of one step's covariance (Cov of the minibatch mean gradient = c·Σ₁/B) and whether B = n is the full batch.
    A noise model names its scheme (``sampling="with_replacement"``) or takes the object itself."""

    name: ClassVar[str]

    def scale(self, batch_size: int, n: int) -> float:
        """c = (n − B)/(n − 1): one step's batch is a uniform B-subset (without replacement, and shuffled epochs
        (minibatch-noise.md §5, §9.1)); ``WithReplacement`` overrides it with 1."""
        return (n - batch_size) / (n - 1) if n > 1 else 0.0

    def full_batch(self, batch_size: int, n: int) -> bool:
        """Whether every step uses all n examples (then no indices are drawn)."""
        return batch_size == n

    def init_state(self, n: int, key, n_paths: int) -> Any:
        """The sampler state of N paths at step 0 (None: the scheme keeps none)."""
        return None

    @abc.abstractmethod
    def indices(self, batch_size: int, n: int, key, step, state, n_paths: int) -> tuple[jax.Array, Any]:
        """(indices (N, B) int32, new state) of one step that is not the full batch."""


class WithReplacement(AbstractSampling):
    """B i.i.d. uniform indices per step: c = 1."""

    name: ClassVar[str] = "with_replacement"

    def scale(self, batch_size, n):
        return 1.0

    def full_batch(self, batch_size, n):
        return False

    def indices(self, batch_size, n, key, step, state, n_paths) -> tuple[jax.Array, Any]:
        flat = jax.random.randint(key, (n_paths * batch_size,), 0, n, dtype=jnp.int32)
        return flat.reshape(n_paths, batch_size), state


class WithoutReplacement(AbstractSampling):
    """A uniform B-subset per step, independent across steps (the top B of n uniforms)."""

    name: ClassVar[str] = "without_replacement"

    def indices(self, batch_size, n, key, step, state, n_paths) -> tuple[jax.Array, Any]:
        u = jax.random.uniform(key, (n_paths, n))
        return jax.lax.top_k(u, batch_size)[1].astype(jnp.int32), state


class Shuffled(AbstractSampling):
    """Epochs of m = ⌊n/B⌋ batches (a final partial batch is dropped), a new partition every epoch: the state
    is each path's current permutation."""

    name: ClassVar[str] = "shuffle"

    def init_state(self, n, key, n_paths) -> Any:
        # placeholder of the right shape: step 0 starts an epoch and draws the first partition
        return jnp.zeros((n_paths, n), jnp.int32)

    def indices(self, batch_size, n, key, step, state, n_paths) -> tuple[jax.Array, Any]:
        j = step % (n // batch_size)
        state = jax.lax.cond(j == 0, lambda: _permutations(key, n_paths, n), lambda: state)
        return jax.lax.dynamic_slice_in_dim(state, j * batch_size, batch_size, axis=1), state


# the schemes by the names noise models take (one line per scheme)
SCHEMES: dict[str, AbstractSampling] = {
    s.name: s for s in (WithReplacement(), WithoutReplacement(), Shuffled())
}
SAMPLINGS = tuple(SCHEMES)


def sampling_name(sampling) -> str:
    """The scheme's name from its name or its object (ValueError naming ``sampling`` and the choices)."""
    if isinstance(sampling, AbstractSampling):
        return sampling.name
    if not isinstance(sampling, str) or sampling not in SCHEMES:
        raise ValueError(
            f"sampling must be one of {SAMPLINGS} (or its sgdsde sampling object), got {sampling!r}"
        )
    return sampling


def check_sampling(sampling) -> None:
    sampling_name(sampling)


def scheme(sampling: str) -> AbstractSampling:
    return SCHEMES[sampling_name(sampling)]


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


def sampling_scale(sampling, batch_size: int, n: int) -> float:
    """c with Cov(minibatch mean gradient) = c·Σ₁/B: the scheme's (``AbstractSampling.scale``)."""
    return scheme(sampling).scale(batch_size, n)


def is_full_batch(sampling, batch_size: int, n: int) -> bool:
    return scheme(sampling).full_batch(batch_size, n)


class BatchSampler(eqx.Module):
    """Draws the batch indices of one step for N paths at once (shape (N, B), int32) by the named scheme."""

    batch_size: int = eqx.field(static=True)
    sampling: str = eqx.field(static=True, converter=sampling_name)

    def init_state(self, n: int, key, n_paths: int) -> Any:
        return scheme(self.sampling).init_state(n, key, n_paths)

    def draw(self, n: int, key, step, state, n_paths: int) -> tuple[jax.Array | None, Any]:
        """Indices (N, B), or None for the full batch (every path uses all n examples; nothing to gather)."""
        s = scheme(self.sampling)
        if s.full_batch(self.batch_size, n):
            return None, state
        return s.indices(self.batch_size, n, key, step, state, n_paths)


def _permutations(key, n_paths: int, n: int):
    return jnp.argsort(jax.random.uniform(key, (n_paths, n)), axis=1).astype(jnp.int32)
