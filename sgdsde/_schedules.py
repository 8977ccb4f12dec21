"""Learning-rate schedules: callables of the step index k ↦ η_k (JAX-traceable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._validation import check_int_range, check_positive

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


class ConstantLR(eqx.Module):
    """$\\eta_k = \\eta$."""

    lr: float

    def __check_init__(self):
        check_positive("lr", self.lr)

    def __call__(self, step):
        return jnp.full(jnp.shape(step), self.lr)


class StepDecayLR(eqx.Module):
    """$\\eta_k = \\eta\\,\\gamma^{\\#\\{b \\le k\\}}$: multiply by ``factor`` at each boundary step."""

    lr: float
    boundaries: tuple[int, ...]
    factor: float = 0.1

    def __check_init__(self):
        check_positive("lr", self.lr)
        check_positive("factor", self.factor)
        for b in self.boundaries:
            check_int_range("boundaries", b, 0)

    def __call__(self, step):
        step = jnp.asarray(step)  # a plain int step works too
        count = sum((step >= b).astype(jnp.int32) for b in self.boundaries) if self.boundaries else 0
        # the decay count as a float: integer powers of a float under strict dtype promotion
        return self.lr * self.factor ** jnp.asarray(count).astype(jnp.result_type(float))


class CosineLR(eqx.Module):
    """$\\eta_k = \\eta_{\\min} + \\frac12(\\eta - \\eta_{\\min})(1 + \\cos(\\pi k / T))$."""

    lr: float
    n_steps: int
    final_lr: float = 0.0

    def __check_init__(self):
        check_positive("lr", self.lr)
        check_int_range("n_steps", self.n_steps, 1)
        check_positive("final_lr", self.final_lr, allow_zero=True)

    def __call__(self, step):
        frac = jnp.clip(jnp.asarray(step) / self.n_steps, 0.0, 1.0)
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1 + jnp.cos(jnp.pi * frac))


def learning_rates(lr: float | Schedule | Sequence[float], n_steps: int) -> np.ndarray:
    """η_0 … η_{T−1} as a float64 array, validated: every η_k finite and ≥ 0, η_0 > 0."""
    if isinstance(lr, StepDecayLR) and any(b >= n_steps for b in lr.boundaries):
        raise ValueError(
            f"boundaries: an anneal step must be < n_steps={n_steps} (within the run), got {list(lr.boundaries)}"
        )
    if callable(lr):
        # a user's schedule gets integer steps and JAX's standard promotion (0.1 / (1 + k) is a float)
        with jax.numpy_dtype_promotion("standard"):
            etas = np.asarray(lr(jnp.arange(n_steps)), dtype=np.float64)
        if etas.shape != (n_steps,):
            etas = np.broadcast_to(etas, (n_steps,)).astype(np.float64)
    elif np.ndim(lr) == 0:
        etas = np.full(n_steps, check_positive("lr", lr))
    else:
        etas = np.asarray(lr, dtype=np.float64)
        if etas.shape != (n_steps,):
            raise ValueError(f"lr given as an array must have shape ({n_steps},), got {etas.shape}")
    if not np.all(np.isfinite(etas)) or np.any(etas < 0) or etas[0] <= 0:
        bad = int(np.argmax(~np.isfinite(etas) | (etas < 0))) if np.any(etas < 0) else 0
        raise ValueError(
            f"lr must be finite and > 0 (a schedule may decay to >= 0); step {bad} has {etas[bad]}"
        )
    return etas


class Rates:
    """η_0 … η_{T−1} of one run: a constant lr is kept as one number (host memory flat in T), a schedule or an
    array as the validated float64 array (``learning_rates``)."""

    def __init__(self, n_steps: int, value: float | None = None, array: np.ndarray | None = None):
        self.n_steps, self.value, self.array = n_steps, value, array
        self._clock: np.ndarray | None = None

    @property
    def constant(self) -> bool:
        return self.value is not None

    @property
    def uniform(self) -> bool:
        """Whether every η_k is the same (a constant lr, or an array of equal entries)."""
        return self.constant or bool(np.all(self.array == self.array[0]))

    @property
    def first(self) -> float:
        return self.value if self.constant else float(self.array[0])

    def max(self) -> float:
        return self.value if self.constant else float(np.max(self.array))

    def take(self, steps) -> np.ndarray:
        """η_k at the step indices ``steps`` (any shape)."""
        steps = np.asarray(steps)
        return np.full(steps.shape, self.value) if self.constant else self.array[steps]

    def times(self, steps) -> np.ndarray:
        """$t_k = \\sum_{j<k}\\eta_j$ at the step indices ``steps`` (0 ≤ k ≤ T): k·η for a constant lr."""
        steps = np.asarray(steps, np.int64)
        if self.constant:
            return steps * self.value
        if self._clock is None:
            self._clock = np.concatenate([[0.0], np.cumsum(self.array)])
        return self._clock[steps]

    def repeat(self, l: int) -> Rates:  # noqa: E741
        """Each η_k/l taken l times (SVAG's steps)."""
        if self.constant:
            return Rates(self.n_steps * l, value=self.value / l)
        return Rates(self.n_steps * l, array=np.repeat(self.array / l, l))


class Clock:
    """t_k by indexing, ``clock[k]``, without a per-step array for a constant lr."""

    def __init__(self, etas: Rates):
        self.etas = etas

    def __getitem__(self, steps):
        return self.etas.times(steps)


def rates(lr, n_steps: int) -> Rates:
    """The validated lr of a run as ``Rates``: a number (or ``ConstantLR``) stays one number."""
    if isinstance(lr, Rates):
        if lr.n_steps != n_steps:
            raise ValueError(f"lr covers {lr.n_steps} steps, the run has n_steps={n_steps}")
        return lr
    if isinstance(lr, ConstantLR):
        lr = lr.lr
    if not callable(lr) and np.ndim(lr) == 0:
        return Rates(n_steps, value=check_positive("lr", lr))
    return Rates(n_steps, array=learning_rates(lr, n_steps))
