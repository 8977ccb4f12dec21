"""First passage into a target set (theory/resetting.md, RESET-5): each path's first step k ≥ 0 with θ_k in
the target, its time t_k, and paths that never arrive reported as censored; O(N) storage whatever the number
of steps."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._events import AbstractEvent, check_scalar_function
from ._observables import BUILTIN
from ._validation import check_positive


class FirstPassage(eqx.Module):
    """The target set, as a predicate on θ or as a threshold on an observable.

    Args:
        target: f(problem, θ) → bool scalar (True inside the target); or None with ``observable``.
        observable: a built-in name or f(problem, θ) → real scalar; the target is {observable ≤ threshold}
            (``below=False``: {observable ≥ threshold}).
        threshold: the level (with ``observable``).
        below: which side of the threshold is the target.
        bridge_variance: s², the observable's diffusion rate per unit time (2D for a coordinate with
            diffusion D). Given, a step that ends outside the target still counts as a passage with the
            Brownian-bridge probability exp(−2 g_k g_{k+1}/(s² η_k)), g the distances to the threshold
            (RESET-6): this removes the O(√η) bias of checking only at the grid points. None: grid points only.
        absorb: the target is absorbing: a path that has arrived stays at its arrival state (its later steps
            are computed and discarded), as in an escape experiment where what happens after the escape must
            not matter (e.g. a far region where the dynamics diverge). Recorded statistics then include the
            frozen paths at their arrival states.

    The first passage is checked after the step and before any reset (a path that arrives counts even if a
    reset follows). ``result.first_passage`` holds per-path hitting steps and times and the MFPT with its
    standard error; the observable "hit" (1 once a path has arrived) is recorded, so its mean is the
    cumulative distribution of the first-passage time at the record times.
    """

    target: Callable | None = None
    observable: Any = None
    threshold: float | None = None
    below: bool = True
    bridge_variance: float | None = None
    absorb: bool = False

    def __check_init__(self):
        if self.target is None and self.observable is None:
            raise ValueError(
                "FirstPassage needs a target: target=f(problem, theta) -> bool, or observable= and threshold="
            )
        if self.target is not None:
            if self.observable is not None or self.threshold is not None:
                raise ValueError("FirstPassage takes target= or observable= with threshold=, not both")
            if not callable(self.target):
                raise ValueError("target must be a function (problem, theta) -> bool")
            if self.bridge_variance is not None:
                raise ValueError("bridge_variance needs the observable= and threshold= form of the target")
        else:
            if isinstance(self.observable, str):
                if self.observable not in BUILTIN:
                    raise ValueError(
                        f"observable: unknown name {self.observable!r}; built-ins are {sorted(BUILTIN)}"
                    )
            elif not callable(self.observable):
                raise ValueError(
                    "observable must be a built-in name or a function (problem, theta) -> scalar"
                )
            if self.threshold is None:
                raise ValueError("FirstPassage with an observable needs threshold=")
            t = self.threshold
            if isinstance(t, (str, bytes, bool)) or not math.isfinite(float(t)):
                raise ValueError(f"threshold must be a finite real number, got {t!r}")
        if not isinstance(self.below, (bool, np.bool_)):
            raise ValueError(f"below must be True or False, got {self.below!r}")
        if not isinstance(self.absorb, (bool, np.bool_)):
            raise ValueError(f"absorb must be True or False, got {self.absorb!r}")
        if self.bridge_variance is not None:
            check_positive("bridge_variance", self.bridge_variance)

    def event(self, problem, n_params: int, theta0) -> FirstPassageEvent:
        """The engine's event, after checking the target function at θ₀."""
        th = np.asarray(theta0, dtype=np.float64).reshape(-1, n_params)[0]
        if self.target is not None:
            check_scalar_function("target", self.target, problem, th, "bool")
            return FirstPassageEvent(self.target, None, 0.0, True, None, bool(self.absorb))
        fn = BUILTIN[self.observable] if isinstance(self.observable, str) else self.observable
        check_scalar_function("observable", fn, problem, th, "real")
        return FirstPassageEvent(
            None, fn, float(self.threshold), bool(self.below), self.bridge_variance, bool(self.absorb)
        )


class FirstPassageEvent(AbstractEvent):
    """The engine side of ``FirstPassage``: the per-path hitting step (−1 while outside)."""

    name: ClassVar[str] = "first_passage"
    records: ClassVar[tuple[str, ...]] = ("hit",)
    target: Callable | None
    observable: Callable | None
    threshold: float
    below: bool = eqx.field(static=True)
    bridge_variance: float | None = None
    absorb: bool = eqx.field(static=True, default=False)

    @property
    def moves_theta(self) -> bool:  # type: ignore[override]
        return self.absorb

    def _gap(self, problem, theta):
        """Signed distance to the threshold, ≤ 0 inside the target."""
        value = jax.vmap(lambda t: self.observable(problem, t))(theta)
        c = jnp.asarray(self.threshold, value.dtype)
        return value - c if self.below else c - value

    def _inside(self, problem, theta):
        if self.target is not None:
            return jax.vmap(lambda t: self.target(problem, t))(theta)
        return self._gap(problem, theta) <= 0

    def init(self, problem, theta):
        return {"hit": jnp.where(self._inside(problem, theta), 0, -1).astype(jnp.int32)}

    def after_step(self, problem, state, before, after, k_next, dt, key):
        if self.bridge_variance is None:
            inside = self._inside(problem, after)
        else:
            g0, g1 = self._gap(problem, before), self._gap(problem, after)
            s2dt = jnp.asarray(self.bridge_variance, g1.dtype) * dt.astype(g1.dtype)
            # P(a Brownian bridge from g0 > 0 to g1 > 0 over time dt touches 0) = exp(−2 g0 g1/(s² dt))
            crossed = jax.random.uniform(key, g1.shape, g1.dtype) < jnp.exp(
                -2 * jnp.maximum(g0, 0) * jnp.maximum(g1, 0) / s2dt
            )
            inside = (g1 <= 0) | crossed
        hit = state["hit"]
        if self.absorb:  # a path that had already arrived stays at its arrival state
            after = jnp.where((hit >= 0)[:, None], before, after)
        return after, {"hit": jnp.where((hit < 0) & inside, k_next, hit)}

    def observe(self, state):
        return {"hit": (state["hit"] >= 0).astype(jnp.float32)}

    def per_path(self, state):
        return {"hit": state["hit"]}

    def report(self, arrays, clock, step_unit):
        k = np.asarray(arrays["hit"], np.int64)
        arrived = k >= 0
        steps = np.where(arrived, -(-k // step_unit), -1)
        times = np.where(arrived, clock[np.where(arrived, k, 0)], np.nan)
        return FirstPassageReport(steps=steps, times=times, horizon=float(clock[-1]))


@dataclasses.dataclass
class FirstPassageReport:
    """Per-path first-passage steps (−1: censored, not arrived by the end) and times t_k (NaN if censored).

    ``mfpt()`` is the mean over arrived paths with its standard error; it is the MFPT only when nothing is
    censored (``censored == 0``), else a lower bound, and it says so."""

    steps: np.ndarray
    times: np.ndarray
    horizon: float

    @property
    def arrived(self) -> int:
        return int(np.sum(self.steps >= 0))

    @property
    def censored(self) -> int:
        return int(np.sum(self.steps < 0))

    def mfpt(self, *, allow_censored: bool = False) -> tuple[float, float]:
        """(mean first-passage time, standard error) over the paths. With censored paths the mean over
        arrived ones underestimates the MFPT: ValueError unless ``allow_censored``."""
        if self.censored and not allow_censored:
            raise ValueError(
                f"{self.censored} of {len(self.steps)} paths had not arrived by t = {self.horizon:.4g} "
                "(censored): run longer, or pass allow_censored=True for the mean over arrived paths (a lower "
                "bound)"
            )
        t = self.times[self.steps >= 0]
        if len(t) == 0:
            return float("nan"), float("nan")
        se = float(t.std(ddof=1) / np.sqrt(len(t))) if len(t) > 1 else float("nan")
        return float(t.mean()), se

    def arrays(self) -> dict[str, np.ndarray]:
        return {"steps": self.steps, "times": self.times}

    def meta(self) -> dict:
        return {"horizon": self.horizon}

    @classmethod
    def from_saved(cls, arrays: dict, meta: dict) -> FirstPassageReport:
        return cls(**arrays, **meta)
