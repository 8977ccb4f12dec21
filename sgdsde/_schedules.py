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
