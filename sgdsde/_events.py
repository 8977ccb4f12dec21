"""Events: what happens to every path after every step, for SGD, SVAG and the SDE alike (resetting, first
passage, a user's own), and what each reports.

The contract has two sides. ``AbstractEvent`` is what ``simulate(..., events=(...))`` takes: it checks itself
against the run (``bind``) and returns the ``AbstractStepEvent`` the engine runs. After the method moves every
path from θ_k to θ_{k+1}, the engine calls each bound event in ``phase`` order (0: observers such as first
passage, which must see θ_{k+1} before a reset moves it; 1: events that reset θ) with (θ_k, θ_{k+1}); an event
may replace θ_{k+1}, keeps O(N·d) state per path, may add per-path values to the records (ensemble mean and
variance like any observable), and reports per-path arrays at the end, as an ``AbstractReport`` in
``result.reports[name]``. A new event is one file: an ``AbstractStepEvent`` (its ``bind`` is itself) and,
if it reports, an ``AbstractReport``.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jaxtyping import Array, Bool, Float, PyTree

from ._describe import describe


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What an event may check against when a run starts: the problem (None for an SDE given by functions),
    the number of parameters d, the step sizes (``etas``: ``.max()``, ``.first``), θ₀ ((d,) or (N, d),
    float64), the method, the SDE an SDE run integrates (None otherwise), the engine steps per stepper call,
    and the run's dtype."""

    problem: Any
    n_params: int
    etas: Any
    theta0: np.ndarray
    method: Any
    sde: Any = None
    steps_per_call: int = 1
    dtype: Any = None

    @property
    def theta_start(self) -> np.ndarray:
        """θ₀ of the first path, (d,) float64 (where an event checks its functions)."""
        return np.asarray(self.theta0, dtype=np.float64).reshape(-1, self.n_params)[0]


class AbstractReport(abc.ABC):
    """What an event reports at the end of a run: per-path arrays and JSON-able metadata, saved with the
    result and read back by ``from_saved`` (the class must be imported when a saved result is loaded)."""

    @abc.abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The report's arrays (saved in the result's .npz)."""

    @abc.abstractmethod
    def meta(self) -> dict:
        """The report's other fields, JSON-able (saved in the result's .json)."""

    @classmethod
    @abc.abstractmethod
    def from_saved(cls, arrays: dict, meta: dict) -> AbstractReport:
        """The report from what ``arrays`` and ``meta`` gave."""


class AbstractEvent(eqx.Module):
    """An event as a user gives it in ``events=(...)``: ``bind`` checks it against the run and returns the
    engine's ``AbstractStepEvent``; ``check_with`` refuses combinations with the run's other events."""

    @abc.abstractmethod
    def bind(self, run: RunInfo) -> AbstractStepEvent:
        """The event the engine runs (ValueError naming the option that does not fit the run)."""

    def check_with(self, others: tuple[AbstractEvent, ...]) -> None:
        """ValueError if this event cannot run beside ``others`` (the run's other events)."""
        return None

    @property
    def config_key(self) -> str:
        """The key of this event in the result's configuration record (snake_case of the class name)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


class AbstractStepEvent(AbstractEvent):
    """An event as the engine runs it: ``init`` its per-path state, ``after_step`` (may move θ),
    ``observe`` for the records, ``per_path`` arrays and a ``report``. Its ``bind`` is itself, so a simple
    event needs only this class."""

    name: ClassVar[str]  # the key of its report in ``result.reports``
    records: ClassVar[tuple[str, ...]] = ()  # the names ``observe`` adds to the records
    phase: ClassVar[int] = 0  # events run in phase order: 0 observes θ_{k+1}, 1 may reset it

    def bind(self, run: RunInfo) -> AbstractStepEvent:
        return self

    @property
    def moves_theta(self) -> bool:
        """Whether ``after_step`` can return another θ_{k+1} than it was given (the method must allow it)."""
        return False

    @abc.abstractmethod
    def init(self, problem, theta: Float[Array, "N d"]) -> PyTree:
        """The state at step 0 (θ₀ of every path)."""

    @abc.abstractmethod
    def after_step(
        self, problem, state, before, after, k_next, dt, key
    ) -> tuple[Float[Array, "N d"], PyTree]:
        """(θ_{k+1} as the event leaves it, the new state), for the step from ``before`` = θ_k to ``after``;
        ``k_next`` = k + 1 (engine steps), ``dt`` the step's time Ση."""

    def done(self, state) -> jax.Array | None:
        """A boolean scalar: True once the event needs no more steps (the engine then skips them), or None
        (the run always takes every step)."""
        return None

    def observe(self, state) -> dict[str, Float[Array, " N"]]:
        """Per-path values recorded with the observables (name → (N,) array)."""
        return {}

    def restarted(self, state) -> Bool[Array, " N"] | None:
        """The paths whose state beyond θ restarts after this step (a reset that restores an optimizer's
        state: the engine then calls the stepper's ``restart``), or None (never)."""
        return None

    @property
    def restarts_paths(self) -> bool:
        """Whether ``restarted`` can mark a path (known before the run: without such an event every path's
        state beyond θ advances in lockstep, and the stepper may share what all paths hold equal)."""
        return False

    @abc.abstractmethod
    def per_path(self, state) -> dict[str, Array]:
        """The per-path arrays kept at the end of a chunk (concatenated over chunks)."""

    @abc.abstractmethod
    def report(self, arrays: dict[str, np.ndarray], clock: np.ndarray, step_unit: int) -> AbstractReport:
        """The result's report from the concatenated per-path arrays; ``clock[k]`` = t_k."""


def check_scalar_function(name: str, fn, problem, theta, kind: str) -> None:
    """``fn(problem, θ)`` must return one value per path of the given kind ("real" or "bool"), index inside θ
    (JAX would clamp an index past θ silently inside the run) and, if real, not be NaN at θ₀ (a NaN never
    compares: the event would never act); else ValueError naming ``name``."""
    theta = jnp.asarray(theta)
    try:
        err, out = checkify.checkify(lambda t: fn(problem, t), errors=checkify.index_checks)(theta)
    except Exception as exc:
        raise ValueError(f"{name} failed at theta0: {type(exc).__name__}: {exc}") from exc
    msg = err.get()
    if msg is not None:
        raise ValueError(f"{name} indexes outside theta (d = {theta.shape[-1]}): {msg.strip()}")
    shape = getattr(out, "shape", None)
    dtype = getattr(out, "dtype", None)
    if shape is None or tuple(shape) != ():
        raise ValueError(f"{name} must return a scalar per path (shape ()), got shape {shape}")
    if kind == "bool" and dtype != jnp.bool_:
        raise ValueError(f"{name} must return a boolean per path, got dtype {dtype}")
    # dtype None: as before (issubdtype reads None as float64)
    if kind == "real" and dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must return a real (floating) scalar per path, got dtype {dtype}")
    if kind == "real" and bool(jnp.isnan(out)):
        raise ValueError(
            f"{name} is NaN at theta0: it must return a number (a NaN never crosses a threshold)"
        )


def check_events(events) -> tuple[AbstractEvent, ...]:
    """``events`` as a tuple of events, each able to run beside the others; TypeError naming ``events``."""
    if isinstance(events, AbstractEvent):
        events = (events,)
    if not isinstance(events, (tuple, list)):
        raise TypeError(
            "events must be a tuple of events (sgdsde.Resetting(...), sgdsde.FirstPassage(...) or an "
            f"sgdsde.AbstractEvent), got {type(events).__name__}"
        )
    for e in events:
        if not isinstance(e, AbstractEvent):
            raise TypeError(
                "events must hold sgdsde.Resetting(...), sgdsde.FirstPassage(...) or AbstractEvent instances, "
                f"got {type(e).__name__}"
            )
    events = tuple(events)
    for i, e in enumerate(events):
        e.check_with(events[:i] + events[i + 1 :])
    return events


def bind_events(events: tuple[AbstractEvent, ...], run: RunInfo) -> tuple[AbstractStepEvent, ...]:
    """The engine events of a run, in phase order (stable: first passage before resetting, so an arrival
    counts even if a reset follows in the same step); ValueError naming an option that does not fit, two
    events that report under one name, or an event that moves θ under a method that cannot honour it."""
    bound = []
    for e in check_events(events):
        b = e.bind(run)
        if not isinstance(b, AbstractStepEvent):
            raise TypeError(
                f"{type(e).__name__}.bind must return an AbstractStepEvent, got {type(b).__name__}"
            )
        if b.moves_theta and not run.method.moves_theta:
            raise ValueError(
                f"events: {type(e).__name__} moves theta, which the method {type(run.method).__name__} cannot "
                "honour (its stepper has no with_theta)"
            )
        bound.append(b)
    names = [b.name for b in bound]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"events: two events report as {twice}; give each event once")
    return tuple(sorted(bound, key=lambda b: b.phase))


def event_config(events: tuple[AbstractEvent, ...]) -> dict:
    """The events as they go into the result's configuration record."""
    return {e.config_key: describe(e) for e in events}
