"""First passage into a target set (theory/resetting.md, RESET-5): each path's first step k ≥ 0 with θ_k in
the target, its time t_k, and paths that never arrive reported as censored; O(N) storage whatever the number
of steps."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._events import AbstractEvent, AbstractReport, AbstractStepEvent, RunInfo, check_scalar_function
from ._observables import BUILTIN
from ._validation import check_positive


class FirstPassage(AbstractEvent):
    """The target set, as a predicate on θ or as a threshold on an observable.

    Args:
        target: f(problem, θ) → bool scalar (True inside the target); or None with ``observable``.
        observable: a built-in name or f(problem, θ) → real scalar; the target is {observable ≤ threshold}
            (``below=False``: {observable ≥ threshold}).
        threshold: the level (with ``observable``).
        below: which side of the threshold is the target.
        bridge_variance: s², the observable's diffusion rate per unit time (2D for a coordinate with
            diffusion D), if known to be constant. A step that ends outside the target still counts as a
            passage with the Brownian-bridge probability exp(−2 g_k g_{k+1}/(s² η_k)), g the distances to the
            threshold (RESET-6): this removes the O(√η) bias of checking only at the grid points.
        bridge: apply the bridge test in an SDE run (default): with ``bridge_variance`` if given, else with
            the SDE's own rate $s^2 = s(\\eta)^2\\|A(\\theta_k)^T\\nabla f(\\theta_k)\\|^2$ at the step's
            start (f the observable, s(η)A the diffusion: RESET-6). False: grid points only (biased by O(√η)).
            A discrete simulator (SGD, SVAG) checks its own steps, exactly, unless ``bridge_variance`` is given;
            an SDE run with a ``target`` predicate (no distance to bridge) warns that it is grid-only.
        absorb: the target is absorbing: a path that has arrived stays at its arrival state (its later steps
            are computed and discarded), as in an escape experiment where what happens after the escape must
            not matter (e.g. a far region where the dynamics diverge). Recorded statistics then include the
            frozen paths at their arrival states.
        stop: once every path (of a chunk) has arrived, skip the remaining steps (each a cheap no-op inside
            the compiled loop; in a sweep both branches run, so nothing is saved there) and say where in
            ``result.first_passage.stop_step``. The paths and records after that step stay as they were at it.
            Default (None): ``absorb``, the case where that is exactly what a full run records; ``stop=True``
            with ``absorb=False`` freezes paths that a full run would move on (records after a chunk's last
            arrival are then stale, and depend on ``chunk_size``), so it must be asked for; with resetting it
            is refused (a full run keeps resetting arrived paths). A run where some path never arrives is
            unchanged, bit for bit. False: run every step.

    The first passage is checked after the step and before any reset (a path that arrives counts even if a
    reset follows). ``result.first_passage`` (a ``FirstPassageReport``) holds per-path hitting steps and times
    and the MFPT with its standard error; the observable "hit" (1 once a path has arrived) is recorded, so its
    mean is the cumulative distribution of the first-passage time at the record times.
    """

    target: Callable | None = None
    observable: Any = None
    threshold: float | None = None
    below: bool = True
    bridge_variance: float | None = None
    absorb: bool = False
    bridge: bool = True
    stop: bool | None = None

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
            bad = isinstance(t, (str, bytes, bool, np.bool_)) or np.ndim(t) != 0 or np.iscomplexobj(t)
            try:
                bad = bad or not math.isfinite(float(t))
            except (TypeError, ValueError):
                bad = True
            if bad:
                raise ValueError(f"threshold must be a finite real number (a scalar), got {t!r}")
        if not isinstance(self.below, (bool, np.bool_)):
            raise ValueError(f"below must be True or False, got {self.below!r}")
        for name in ("absorb", "bridge", "stop"):
            if name == "stop" and self.stop is None:
                continue
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.bridge_variance is not None:
            check_positive("bridge_variance", self.bridge_variance)
            if not self.bridge:
                raise ValueError("bridge=False (grid points only) contradicts a given bridge_variance")

    @property
    def stops(self) -> bool:
        """Whether the run stops once every path has arrived (``stop``, default ``absorb``)."""
        return bool(self.absorb) if self.stop is None else bool(self.stop)

    @property
    def config_key(self) -> str:
        return "first_passage"

    def bind(self, run: RunInfo) -> FirstPassageEvent:
        """The engine's event for ``run`` (an SDE run's own diffusion gives the bridge test's rate)."""
        return self.event(run.problem, run.n_params, run.theta0, run.sde, run.steps_per_call, run.dtype)

    def event(
        self, problem, n_params: int, theta0, sde=None, steps_per_call: int = 1, dtype=None
    ) -> FirstPassageEvent:
        """The engine's event, after checking the target function at θ₀; ``sde`` (an SDE run): its diffusion
        gives the bridge test's rate when ``bridge_variance`` is not given."""
        th = np.asarray(theta0, dtype=np.float64).reshape(-1, n_params)[0]
        stop = self.stops
        if self.target is not None:
            check_scalar_function("target", self.target, problem, th, "bool")
            if sde is not None and self.bridge:
                warnings.warn(
                    "FirstPassage(target=...) in an SDE run is checked at the grid points only: crossings "
                    "between them are missed and the passage times are biased late by O(sqrt(lr)) (+3-5% MFPT "
                    "at lr = 1e-3 on a drift-diffusion); give observable= and threshold= for the Brownian-bridge "
                    "test, or bridge=False to accept grid points",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return FirstPassageEvent(self.target, None, 0.0, True, None, bool(self.absorb), stop=stop)
        if self.threshold is None:  # __check_init__ requires it with observable=
            raise ValueError("FirstPassage with an observable needs threshold=")
        fn = BUILTIN[self.observable] if isinstance(self.observable, str) else self.observable
        check_scalar_function("observable", fn, problem, th, "real")
        own = None
        if sde is not None and self.bridge and self.bridge_variance is None:
            dtype = np.float32 if dtype is None else dtype
            own = _BridgeRate(sde, sde.noise_dim(n_params, dtype), steps_per_call)
            own.check(fn, problem, th, dtype)
        return FirstPassageEvent(
            None,
            fn,
            float(self.threshold),
            bool(self.below),
            self.bridge_variance,
            bool(self.absorb),
            own,
            stop,
        )


class _BridgeRate(eqx.Module):
    """The observable's diffusion rate per unit time under an SDE, $s(\\eta)^2\\|A^T\\nabla f\\|^2$ (RESET-6)."""

    sde: Any
    m: int = eqx.field(static=True)
    steps_per_call: int = eqx.field(static=True, default=1)

    def rate(self, fn, problem, theta, dt):
        """(N,) rates at θ (N, d) for a step of time ``dt`` (``steps_per_call`` steps of η each)."""
        eta = (dt / self.steps_per_call).astype(theta.dtype)

        def one(t):
            g = jax.grad(lambda u: fn(problem, u))(t)
            _, vjp = jax.vjp(lambda w: self.sde.factor_mv(t, w), jnp.zeros((self.m,), t.dtype))
            (a,) = vjp(g)
            return jnp.sum(a * a)

        return self.sde.noise_scale(eta) ** 2 * jax.vmap(one)(theta)

    def check(self, fn, problem, theta, dtype) -> None:
        """The observable must be differentiable (its gradient gives the rate): ValueError naming it."""
        spec = jax.ShapeDtypeStruct((1, theta.shape[-1]), dtype)
        try:
            jax.eval_shape(lambda t: self.rate(fn, problem, t, jnp.ones((), dtype)), spec)
        except Exception as exc:
            raise ValueError(
                "FirstPassage: the bridge test needs the observable's gradient (its diffusion rate is "
                f"s(eta)^2 |A^T grad f|^2), which failed: {type(exc).__name__}: {exc}; give bridge_variance= "
                "or bridge=False"
            ) from exc


class FirstPassageEvent(AbstractStepEvent):
    """The engine side of ``FirstPassage``: the per-path hitting step (−1 while outside)."""

    name: ClassVar[str] = "first_passage"
    records: ClassVar[tuple[str, ...]] = ("hit",)
    target: Callable | None
    observable: Callable | None
    threshold: float
    below: bool = eqx.field(static=True)
    bridge_variance: float | None = None
    absorb: bool = eqx.field(static=True, default=False)
    own_rate: _BridgeRate | None = None  # the SDE's rate, when bridge_variance is not given
    stop: bool = eqx.field(static=True, default=False)

    @property
    def moves_theta(self) -> bool:
        return self.absorb

    def done(self, state) -> jax.Array | None:
        """Whether every path has arrived (the engine then skips the remaining steps), or None (no stop)."""
        return jnp.all(state["hit"] >= 0) if self.stop else None

    def _gap(self, problem, theta):
        """Signed distance to the threshold, ≤ 0 inside the target."""
        observable = self.observable
        if observable is None:  # the observable form: target is None
            raise ValueError("FirstPassageEvent: the threshold form needs an observable")
        value = jax.vmap(lambda t: observable(problem, t))(theta)
        c = jnp.asarray(self.threshold, value.dtype)
        return value - c if self.below else c - value

    def _inside(self, problem, theta):
        target = self.target
        if target is not None:
            return jax.vmap(lambda t: target(problem, t))(theta)
        return self._gap(problem, theta) <= 0

    def init(self, problem, theta):
        return {"hit": jnp.where(self._inside(problem, theta), 0, -1).astype(jnp.int32)}

    def after_step(self, problem, state, before, after, k_next, dt, key):
        if self.bridge_variance is None and self.own_rate is None:
            inside = self._inside(problem, after)
        else:
            g0, g1 = self._gap(problem, before), self._gap(problem, after)
            dt = dt.astype(g1.dtype)
            if self.own_rate is None:
                s2dt = jnp.asarray(self.bridge_variance, g1.dtype) * dt
            else:
                s2dt = self.own_rate.rate(self.observable, problem, before, dt).astype(g1.dtype) * dt
            # P(a Brownian bridge from g0 > 0 to g1 > 0 over time dt touches 0) = exp(−2 g0 g1/(s² dt))
            # (no noise along the observable, s² = 0: no crossing between the grid points)
            expo = -2 * jnp.maximum(g0, 0) * jnp.maximum(g1, 0) / jnp.where(s2dt > 0, s2dt, 1)
            p = jnp.where(s2dt > 0, jnp.exp(expo), 0)
            crossed = jax.random.uniform(key, g1.shape, g1.dtype) < p
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
        stop_step = int(steps.max()) if self.stop and len(steps) and arrived.all() else None
        return FirstPassageReport(steps=steps, times=times, horizon=float(clock[-1]), stop_step=stop_step)


@dataclasses.dataclass
class FirstPassageReport(AbstractReport):
    """What ``result.first_passage`` holds: each path's first passage into the target (theory/resetting.md,
    RESET-5).

    Fields:
        steps: (N,) int, the (SGD) step k of each path's first passage, 0 if it started inside; −1: censored
            (not arrived by the end of the run).
        times: (N,) float, its time $t_k = \\sum_{j<k}\\eta_j$ (NaN if censored).
        horizon: the run's end time $t_{n}$ (a censored path's passage time is later).
        stop_step: with ``FirstPassage(stop=True)`` and every path arrived, the step of the last arrival,
            after which the run skipped its steps (records after it hold the paths as they were there);
            None otherwise.

    ``arrived`` and ``censored`` count the paths; ``mfpt()`` is the mean over arrived paths with its standard
    error; it is the MFPT only when nothing is censored (``censored == 0``), else a lower bound, and it says
    so."""

    steps: np.ndarray
    times: np.ndarray
    horizon: float
    stop_step: int | None = None

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
        return {"horizon": self.horizon, "stop_step": self.stop_step}

    @classmethod
    def from_saved(cls, arrays: dict, meta: dict) -> FirstPassageReport:
        return cls(**arrays, **meta)
