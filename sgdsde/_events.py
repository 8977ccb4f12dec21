"""Per-step events the ensemble engine applies after every step, for SGD and its SDE alike: the contract of
resetting (``Resetting``) and first passage (``FirstPassage``).

After the stepper moves every path from θ_k to θ_{k+1}, the engine calls each event in order with
(θ_k, θ_{k+1}); an event may replace θ_{k+1} (a reset), keeps O(N·d) state per path, may add per-path values to
the records (ensemble mean and variance like any observable), and reports per-path arrays at the end.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jaxtyping import Array, Float, PyTree


class AbstractEvent(eqx.Module):
    """One event: ``init`` its per-path state, ``after_step`` (may move θ), ``observe`` for the records,
    and ``report`` its per-path arrays as a result object."""

    name: ClassVar[str]  # the EnsembleResult field the report goes to
    moves_theta: ClassVar[bool] = False
    records: ClassVar[tuple[str, ...]] = ()  # the names ``observe`` adds to the records

    @abc.abstractmethod
    def init(self, problem, theta: Float[Array, "N d"]) -> PyTree:
        """The state at step 0 (θ₀ of every path)."""

    @abc.abstractmethod
    def after_step(
        self, problem, state, before, after, k_next, dt, key
    ) -> tuple[Float[Array, "N d"], PyTree]:
        """(θ_{k+1} as the event leaves it, the new state), for the step from ``before`` = θ_k to ``after``;
        ``k_next`` = k + 1 (engine steps), ``dt`` the step's time Ση."""

    def done(self, state):
        """A boolean scalar: True once the event needs no more steps (the engine then skips them), or None
        (the run always takes every step)."""
        return None

    def observe(self, state) -> dict[str, Float[Array, " N"]]:
        """Per-path values recorded with the observables (name → (N,) array)."""
        return {}

    @abc.abstractmethod
    def per_path(self, state) -> dict[str, Array]:
        """The per-path arrays kept at the end of a chunk (concatenated over chunks)."""

    @abc.abstractmethod
    def report(self, arrays: dict[str, np.ndarray], clock: np.ndarray, step_unit: int) -> Any:
        """The result object from the concatenated per-path arrays; ``clock[k]`` = t_k."""


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
    if kind == "real" and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name} must return a real (floating) scalar per path, got dtype {dtype}")
    if kind == "real" and bool(jnp.isnan(out)):
        raise ValueError(
            f"{name} is NaN at theta0: it must return a number (a NaN never crosses a threshold)"
        )


def run_events(
    problem,
    n_params: int,
    etas,
    theta0,
    resetting,
    first_passage,
    *,
    poisson: bool,
    sde=None,
    steps_per_call=1,
    dtype=None,
) -> tuple:
    """The engine events of a run from its options (first passage before resetting: an arrival counts even
    if a reset follows in the same step); ValueError naming a wrong option. ``sde``: the SDE of an SDE run
    (its diffusion gives the first passage's bridge test), ``steps_per_call`` its engine steps per call;
    ``dtype`` the run's (a fixed checkpoint must fit in it)."""
    from ._first_passage import FirstPassage
    from ._resetting import Resetting

    events = []
    if first_passage is not None:
        if not isinstance(first_passage, FirstPassage):
            raise ValueError(
                f"first_passage must be a sgdsde.FirstPassage(...), got {type(first_passage).__name__}"
            )
        events.append(first_passage.event(problem, n_params, theta0, sde, steps_per_call, dtype))
    if resetting is not None:
        if not isinstance(resetting, Resetting):
            raise ValueError(f"resetting must be a sgdsde.Resetting(...), got {type(resetting).__name__}")
        if first_passage is not None and first_passage.stops:
            raise ValueError(
                "first_passage: stop=True cannot be combined with resetting (a full run keeps resetting the paths "
                "that have arrived); give FirstPassage(..., stop=False)"
            )
        events.append(resetting.event(problem, n_params, etas, poisson, theta0, dtype))
    return tuple(events)


def event_config(resetting, first_passage) -> dict:
    """The options as they go into the result's configuration record."""
    from ._results import describe

    out = {}
    if resetting is not None:
        out["resetting"] = describe(resetting)
    if first_passage is not None:
        out["first_passage"] = describe(first_passage)
    return out
