"""Stochastic resetting (theory/resetting.md, RESET-4..6): after each step every path returns to its
checkpoint θ_c independently, with probability rη_k (SGD: Bernoulli, the rule of Bae, Song & Jeong) or
1 − e^{−rη_k} (SDE: a Poisson process of rate r in SGD time t = Ση, exact in the step's count)."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._events import AbstractEvent, AbstractReport, AbstractStepEvent, RunInfo, check_scalar_function
from ._first_passage import FirstPassage
from ._validation import check_int_range, check_positive


class BestSoFar(eqx.Module):
    """Checkpoint = each path's best state so far by a validation observable (lower is better), the rule of
    Bae, Song & Jeong's code: resetting switches on once the best value has not improved for ``patience``
    steps, and the checkpoint becomes the best state then; with ``adaptive`` every later new best moves it.

    Args:
        observable: f(problem, θ) → real scalar, e.g. a validation loss; evaluated every ``every`` steps.
        patience: steps without improvement before resetting switches on (the paper's threshold T, ≥ 1).
        every: evaluate the observable every this many steps (≥ 1; the code's log interval).
        adaptive: move the checkpoint to every new best once resetting is on.
    """

    observable: Callable
    patience: int
    every: int = 1
    adaptive: bool = True

    def __check_init__(self):
        if not callable(self.observable):
            raise ValueError("BestSoFar: observable must be a function (problem, theta) -> real scalar")
        check_int_range("patience", self.patience, 1)
        check_int_range("every", self.every, 1)
        if not isinstance(self.adaptive, (bool, np.bool_)):
            raise ValueError(f"adaptive must be True or False, got {self.adaptive!r}")


class Resetting(AbstractEvent):
    """Reset each path to its checkpoint at rate ``rate`` per unit of SGD time t = Σ η.

    SGD resets with probability rη_k after step k (for the paper's per-step probability p at a constant
    step size η, pass rate = p/η); the SDE with probability 1 − e^{−rη_k} (Poissonian resetting, the limit of
    SGD's as η → 0). rη_k must be < 1 at every step.

    Args:
        rate: r ≥ 0 per unit time (0: no resets; the run equals one without resetting, draw for draw).
        checkpoint: "start" (each path's θ₀), a fixed θ_c of shape (d,), or ``BestSoFar(...)``.
        optimizer: also restart the optimizer's state (momentum, Adam's moments) as at step 0 from the
            checkpoint: Bae, Song & Jeong's ``--opt-reset 1`` (their code's default, 0, restores the
            parameters only, as does False here). Needs a method with an optimizer; not with ``BestSoFar``
            (their code then restores the optimizer state saved with the best model, which is not kept here).

    By default a reset restores θ only (an optimizer keeps its state); the step-size schedule keeps its global
    clock (the paper's Setting 2 does not reset the scheduler either). Resets are reported in
    ``result.resets`` (per-path counts, first and last reset step) and recorded as the observable "resets"
    (cumulative resets per path: its mean at each record).
    """

    rate: float
    checkpoint: Any = "start"
    optimizer: bool = False

    def __check_init__(self):
        check_positive("rate", self.rate, allow_zero=True)
        if not isinstance(self.optimizer, (bool, np.bool_)):
            raise ValueError(f"optimizer must be True or False, got {self.optimizer!r}")
        if self.optimizer and isinstance(self.checkpoint, BestSoFar):
            raise ValueError(
                "optimizer=True restarts the optimizer as at step 0, which fits checkpoint='start' or a fixed "
                "theta; with BestSoFar the optimizer state of the best model would be needed (not kept)"
            )
        c = self.checkpoint
        if isinstance(c, str):
            if c != "start":
                raise ValueError(f"checkpoint must be 'start', a (d,) array or BestSoFar(...), got {c!r}")
        elif not isinstance(c, BestSoFar):
            try:
                arr = np.asarray(c, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"checkpoint must be 'start', a (d,) array or BestSoFar(...), got {type(c).__name__}"
                ) from None
            if arr.ndim != 1 or not np.all(np.isfinite(arr)):
                raise ValueError(f"checkpoint must be a finite (d,) array, got shape {arr.shape}")

    def check_with(self, others) -> None:
        if any(isinstance(o, FirstPassage) and o.stops for o in others):
            raise ValueError(
                "first_passage: stop=True cannot be combined with resetting (a full run keeps resetting the paths "
                "that have arrived); give FirstPassage(..., stop=False)"
            )

    @property
    def config_key(self) -> str:
        return "resetting"

    def bind(self, run: RunInfo) -> ResetEvent:
        """The engine's event, after the checks that need the run (rη_k < 1, the checkpoint's shape and
        range in the run's ``dtype``, the validation observable at θ₀); what a reset is per step comes from
        the method (``reset_law``: Bernoulli per discrete step, Poisson for an SDE)."""
        n_params, dtype = run.n_params, run.dtype
        rate = float(self.rate)
        worst = rate * float(run.etas.max())
        if worst >= 1:
            raise ValueError(
                f"rate * lr must be < 1 at every step (a reset probability per step), got rate={rate} with "
                f"max lr={float(run.etas.max())} (product {worst:.4g})"
            )
        fixed = None
        best = self.checkpoint if isinstance(self.checkpoint, BestSoFar) else None
        if not isinstance(self.checkpoint, (str, BestSoFar)):
            fixed = np.asarray(self.checkpoint, dtype=np.float64)
            if fixed.shape != (n_params,):
                raise ValueError(f"checkpoint must have shape ({n_params},), got {fixed.shape}")
            if dtype is not None and np.issubdtype(dtype, np.floating):
                big = float(np.finfo(dtype).max)
                if np.any(np.abs(fixed) > big):
                    raise ValueError(
                        f"checkpoint overflows the run's dtype {np.dtype(dtype).name} (|value| <= {big:.4g}), "
                        f"got max |checkpoint| = {float(np.max(np.abs(fixed))):.4g}"
                    )
        if best is not None:
            check_scalar_function(
                "BestSoFar.observable", best.observable, run.problem, run.theta_start, "real"
            )
        if self.optimizer and getattr(run.method, "optimizer", None) is None:
            raise ValueError(
                f"Resetting(optimizer=True) restarts an optimizer's state, and the method "
                f"{type(run.method).__name__} runs none; give it optimizer=... or use optimizer=False"
            )
        # the rate as an array leaf: traced, so a sweep over it batches and another rate reuses the program
        law = run.method.reset_law()
        return ResetEvent(np.asarray(rate, np.float64), law, fixed, best, bool(self.optimizer))


class AbstractResetLaw(eqx.Module):
    """What a reset at rate r means over a step of time Δt: the probability that a path resets."""

    poisson: ClassVar[bool]

    @abc.abstractmethod
    def probability(self, rate, dt) -> jax.Array:
        """The probability of a reset during a step of time ``dt`` at ``rate``."""


class PerStepReset(AbstractResetLaw):
    r"""A discrete method's rule (Bae, Song & Jeong): one Bernoulli coin per step, $P = r\,\Delta t$."""

    poisson: ClassVar[bool] = False

    def probability(self, rate, dt):
        return rate * dt


class PoissonReset(AbstractResetLaw):
    r"""An SDE's: a Poisson clock of rate r in time t = Ση, $P = 1 - e^{-r\,\Delta t}$ (exact per step)."""

    poisson: ClassVar[bool] = True

    def probability(self, rate, dt):
        return -jnp.expm1(-rate * dt)


class ResetEvent(AbstractStepEvent):
    """The engine side of ``Resetting``: the coin, the checkpoint and the best-so-far bookkeeping."""

    name: ClassVar[str] = "resets"
    records: ClassVar[tuple[str, ...]] = ("resets",)
    phase: ClassVar[int] = 1  # after first passage: an arrival counts even if a reset follows
    rate: Any  # a 0-d array (traced)
    law: AbstractResetLaw
    fixed: Any = None
    best: BestSoFar | None = None
    restarts: bool = eqx.field(static=True, default=False)

    @property
    def moves_theta(self) -> bool:
        return True

    def _validation(self, problem, theta):
        best = self.best
        if best is None:  # only the best-so-far checkpoint validates
            raise ValueError("ResetEvent: validation needs best=BestSoFar(...)")
        return jax.vmap(lambda t: best.observable(problem, t))(theta)

    def init(self, problem, theta):
        n = theta.shape[0]
        minus = jnp.full((n,), -1, jnp.int32)
        ckpt = (
            theta
            if self.fixed is None
            else jnp.broadcast_to(jnp.asarray(self.fixed, theta.dtype), theta.shape)
        )
        state = {"ckpt": ckpt, "count": jnp.zeros((n,), jnp.int32), "first": minus, "last": minus}
        if self.restarts:
            state["coin"] = jnp.zeros((n,), bool)
        if self.best is None:
            state["active"] = jnp.ones((n,), bool)
        else:
            state.update(
                active=jnp.zeros((n,), bool),
                best_value=self._validation(problem, theta),
                best_theta=theta,
                improved_at=jnp.zeros((n,), jnp.int32),
            )
        return state

    def _track(self, problem, state, theta, k_next):
        """Algorithm 1's steps 3–4: new bests, the switch-on after ``patience`` stale steps, the checkpoint."""
        best = self.best
        if best is None:  # only the best-so-far checkpoint tracks
            raise ValueError("ResetEvent: tracking needs best=BestSoFar(...)")
        value = self._validation(problem, theta)
        improved = value < state["best_value"]
        best_value = jnp.where(improved, value, state["best_value"])
        best_theta = jnp.where(improved[:, None], theta, state["best_theta"])
        improved_at = jnp.where(improved, k_next, state["improved_at"])
        stale = k_next - improved_at >= best.patience
        move = stale | (improved & state["active"]) if best.adaptive else stale
        return dict(
            state,
            best_value=best_value,
            best_theta=best_theta,
            improved_at=improved_at,
            active=state["active"] | stale,
            ckpt=jnp.where(move[:, None], best_theta, state["ckpt"]),
        )

    def after_step(self, problem, state, before, after, k_next, dt, key):
        rate = jnp.asarray(self.rate, after.dtype)
        dt = dt.astype(after.dtype)
        p = self.law.probability(rate, dt)
        coin = (jax.random.uniform(key, (after.shape[0],), after.dtype) < p) & state["active"]
        theta = jnp.where(coin[:, None], state["ckpt"], after)
        state = dict(
            state,
            count=state["count"] + coin.astype(jnp.int32),
            first=jnp.where(coin & (state["first"] < 0), k_next, state["first"]),
            last=jnp.where(coin, k_next, state["last"]),
        )
        if self.restarts:
            state["coin"] = coin
        if self.best is not None:
            check = (k_next % self.best.every) == 0
            state = jax.lax.cond(check, lambda s: self._track(problem, s, theta, k_next), lambda s: s, state)
        return theta, state

    def observe(self, state):
        return {"resets": state["count"].astype(state["ckpt"].dtype)}

    def restarted(self, state):
        """The paths reset at this step, when the reset restarts the optimizer too."""
        return state["coin"] if self.restarts else None

    @property
    def restarts_paths(self) -> bool:
        return self.restarts

    def per_path(self, state):
        out = {"count": state["count"], "first": state["first"], "last": state["last"]}
        if self.best is not None:
            out.update(best_value=state["best_value"], best_theta=state["best_theta"], active=state["active"])
        return out

    def report(self, arrays, clock, step_unit):
        return ResetReport(
            counts=arrays["count"].astype(np.int64),
            first_step=_steps(arrays["first"], step_unit),
            last_step=_steps(arrays["last"], step_unit),
            rate=float(self.rate),
            poisson=self.law.poisson,
            best_value=arrays.get("best_value"),
            best_theta=arrays.get("best_theta"),
            switched_on=arrays.get("active"),
        )


def _steps(k: np.ndarray, step_unit: int) -> np.ndarray:
    k = np.asarray(k, np.int64)
    return np.where(k < 0, -1, -(-k // step_unit))


@dataclasses.dataclass
class ResetReport(AbstractReport):
    """Resets per path: ``counts``, ``first_step``/``last_step`` (−1: never reset); with a BestSoFar
    checkpoint also each path's best validation value, its best state (the model Bae et al. report) and
    whether resetting switched on."""

    counts: np.ndarray
    first_step: np.ndarray
    last_step: np.ndarray
    rate: float
    poisson: bool
    best_value: np.ndarray | None = None
    best_theta: np.ndarray | None = None
    switched_on: np.ndarray | None = None

    def mean_count(self) -> tuple[float, float]:
        """(mean resets per path, its standard error)."""
        c = self.counts.astype(np.float64)
        return float(c.mean()), float(c.std(ddof=1) / np.sqrt(len(c))) if len(c) > 1 else float("nan")

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"counts": self.counts, "first_step": self.first_step, "last_step": self.last_step}
        for k in ("best_value", "best_theta", "switched_on"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    def meta(self) -> dict:
        return {"rate": self.rate, "poisson": self.poisson}

    @classmethod
    def from_saved(cls, arrays: dict, meta: dict) -> ResetReport:
        return cls(**arrays, **meta)
