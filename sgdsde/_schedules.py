"""Learning-rate schedules: callables of the step index k ↦ η_k (JAX-traceable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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
        if isinstance(self.boundaries, (str, bytes)) or not isinstance(
            self.boundaries, (Sequence, np.ndarray)
        ):
            raise ValueError(
                f"boundaries must be a sequence of integer steps >= 0 (e.g. (1000, 2000)), got {self.boundaries!r}"
            )
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
    """η_0 … η_{T−1} as a float64 array (O(T): for the exact moment recursions), validated by ``rates``."""
    return rates(lr, n_steps).take(np.arange(n_steps))


BLOCK = 1 << 16  # steps of a schedule evaluated at once on the host (0.5 MB of float64)


def _evaluate(lr, steps: np.ndarray) -> np.ndarray:
    """A schedule's η at integer ``steps`` as float64 (a user's schedule gets JAX's standard promotion:
    0.1 / (1 + k) is a float)."""
    try:
        with jax.numpy_dtype_promotion("standard"):
            raw = lr(jnp.asarray(steps))
    except Exception as exc:
        raise ValueError(
            f"lr: the schedule {describe_fn(lr)} failed on an array of steps {steps.shape} (a schedule maps "
            f"the step index k, an int array, to η_k of the same shape): {type(exc).__name__}: {exc}"
        ) from exc
    try:
        kind = np.asarray(raw).dtype.kind
    except (TypeError, ValueError):
        kind = "O"
    if kind not in "fiu":  # complex, strings, booleans, objects
        raise ValueError(f"lr: the schedule must return real step sizes, got {raw!r:.80}")
    out = np.asarray(raw, dtype=np.float64)
    if out.shape not in (steps.shape, ()):
        raise ValueError(
            f"lr: the schedule must return one step size per step (shape {steps.shape} for steps of that "
            f"shape, or a scalar), got shape {out.shape}"
        )
    return out if out.shape == steps.shape else np.broadcast_to(out, steps.shape).astype(np.float64)


def describe_fn(fn) -> str:
    """A short name of a schedule for messages."""
    return getattr(fn, "__name__", None) or type(fn).__name__


class DeviceSchedule(eqx.Module):
    """η_k = fn(k // rep)/rep evaluated inside the jitted scan, cast to ``dtype``: no per-step array at all,
    and the same numbers as the host's evaluation (both are XLA's)."""

    fn: Callable
    rep: int = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)

    def __call__(self, k):
        with jax.numpy_dtype_promotion("standard"):
            eta = jnp.asarray(self.fn(k // self.rep))
        eta = eta.astype(jnp.result_type(float))
        return (eta if self.rep == 1 else eta / self.rep).astype(self.dtype)


class Rates:
    """η_0 … η_{T−1} of one run, with host memory flat in T: a constant lr is one number; a schedule (any
    callable of the step) is evaluated block by block where needed (validation, the clock at block starts:
    O(T/65536) numbers kept); an lr array given by the user is kept as that array."""

    def __init__(
        self,
        n_steps: int,
        value: float | None = None,
        array: np.ndarray | None = None,
        fn: Callable | None = None,
        repeat: int = 1,
    ):
        self.n_steps, self.value, self.array, self.fn, self.rep = n_steps, value, array, fn, repeat
        # set by _scan (a schedule or an array); a constant lr has only ``value``
        self._max: float | None = None
        self._uniform: bool | None = None
        self.block_starts: np.ndarray | None = None  # t at the first step of every block
        if fn is not None or array is not None:
            self._scan()

    def _values(self, steps: np.ndarray) -> np.ndarray:
        if self.array is not None:
            return self.array[steps]
        return _evaluate(self.fn, steps // self.rep) / self.rep

    def _scan(self) -> None:
        """One pass over the steps in blocks: validation (finite, ≥ 0, η₀ > 0), max, uniformity, and the
        clock at each block's first step (sequential sums, as np.cumsum over all steps would give)."""
        starts, t, peak, first, uniform = [0.0], 0.0, -np.inf, None, True
        for lo in range(0, self.n_steps, BLOCK):
            v = self._values(np.arange(lo, min(lo + BLOCK, self.n_steps)))
            if not np.all(np.isfinite(v)) or np.any(v < 0) or (lo == 0 and v[0] <= 0):
                bad = int(np.argmax(~np.isfinite(v) | (v < 0))) if np.any(~np.isfinite(v) | (v < 0)) else 0
                raise ValueError(
                    f"lr must be finite and > 0 (a schedule may decay to >= 0); step {lo + bad} has {v[bad]}"
                )
            first = v[0] if first is None else first
            uniform = uniform and bool(np.all(v == first))
            peak = max(peak, float(np.max(v)))
            t = np.cumsum(np.concatenate([[t], v]))[-1]
            starts.append(t)
        self._max, self._uniform, self.block_starts = peak, uniform, np.asarray(starts)

    @property
    def constant(self) -> bool:
        return self.value is not None

    @property
    def uniform(self) -> bool:
        """Whether every η_k is the same (a constant lr, or a schedule or array of equal entries)."""
        return self.value is not None or bool(self._uniform)

    @property
    def first(self) -> float:
        return self.value if self.value is not None else float(self._values(np.zeros(1, np.int64))[0])

    def max(self) -> float:
        if self.value is not None:
            return self.value
        if self._max is None:
            raise AssertionError("Rates: a schedule or array lr is scanned on construction")
        return self._max

    def take(self, steps) -> np.ndarray:
        """η_k at the step indices ``steps`` (any shape)."""
        steps = np.asarray(steps, np.int64)
        if self.constant:
            return np.full(steps.shape, self.value)
        return self._values(steps.reshape(-1)).reshape(steps.shape)

    def times(self, steps) -> np.ndarray:
        """$t_k = \\sum_{j<k}\\eta_j$ at the step indices ``steps`` (0 ≤ k ≤ T, negative from the end): k·η for a
        constant lr, else each block holding a query is evaluated once and summed on from its start."""
        steps = np.asarray(steps, np.int64)
        steps = np.where(steps < 0, steps + self.n_steps + 1, steps)
        if self.value is not None:
            return steps * self.value
        starts = self.block_starts
        if starts is None:
            raise AssertionError("Rates: a schedule or array lr is scanned on construction")
        out = np.empty(steps.shape)
        flat, res = steps.reshape(-1), out.reshape(-1)
        blocks = np.minimum(flat // BLOCK, len(starts) - 1)
        for b in np.unique(blocks):
            lo = int(b) * BLOCK
            v = self._values(np.arange(lo, min(lo + BLOCK, self.n_steps)))
            clock = np.cumsum(np.concatenate([[starts[b]], v]))
            mine = blocks == b
            res[mine] = clock[flat[mine] - lo]
        return out

    def device_schedule(self, dtype) -> DeviceSchedule | None:
        """The schedule as a ``DeviceSchedule`` when JAX can trace it on a scalar step, else None (the engine
        then passes per-step arrays, 8 B per step of a jitted call)."""
        if self.fn is None:
            return None
        fn = self.fn
        if isinstance(fn, (ConstantLR, StepDecayLR, CosineLR)):
            # their numbers as array leaves: another lr, boundary or factor reuses the compiled program
            fn = jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, (int, float)) else x, fn)
        sched = DeviceSchedule(fn, self.rep, np.dtype(dtype))
        try:
            out = jax.eval_shape(sched, jax.ShapeDtypeStruct((), jnp.int32))
        except Exception:  # noqa: BLE001 (any failure to trace means: evaluate on the host)
            return None
        return sched if out.shape == () else None

    def repeat(self, l: int) -> Rates:  # noqa: E741
        """Each η_k/l taken l times (SVAG's steps)."""
        if self.value is not None:
            return Rates(self.n_steps * l, value=self.value / l)
        if self.array is not None:
            return Rates(self.n_steps * l, array=np.repeat(self.array / l, l))
        return Rates(self.n_steps * l, fn=self.fn, repeat=self.rep * l)


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
    if callable(lr):
        if isinstance(lr, StepDecayLR) and any(b >= n_steps for b in lr.boundaries):
            raise ValueError(
                f"boundaries: an anneal step must be < n_steps={n_steps} (within the run), got {list(lr.boundaries)}"
            )
        return Rates(n_steps, fn=lr)
    etas = np.asarray(lr, dtype=np.float64)
    if etas.shape != (n_steps,):
        raise ValueError(f"lr given as an array must have shape ({n_steps},), got {etas.shape}")
    return Rates(n_steps, array=etas)
