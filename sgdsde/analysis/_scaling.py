"""Batch-size scaling rules: Malladi et al.'s square-root rule for RMSprop and Adam, and the linear rule
(theory/adaptive-sdes.md, ASDE-4)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .._optimizers import AbstractOptimizer, Adam, RMSprop
from .._validation import check_int_range, check_positive


class ScaledRun(NamedTuple):
    """The hyperparameters of the run at batch size κB: optimizer, learning rate, batch size and the number of
    steps that reaches the same time (None when none was given)."""

    optimizer: AbstractOptimizer | None
    lr: float
    batch_size: int
    n_steps: int | None


def _check_common(lr, batch_size, kappa, n_steps) -> tuple[float, int, float, int | None]:
    lr = check_positive("lr", lr)
    batch_size = check_int_range("batch_size", batch_size, 1)
    kappa = check_positive("kappa", kappa)
    new_b = kappa * batch_size
    if not math.isclose(new_b, round(new_b), rel_tol=0, abs_tol=1e-9) or round(new_b) < 1:
        raise ValueError(
            f"kappa: kappa * batch_size must be a whole batch size >= 1, got {kappa!r} * {batch_size} = {new_b}"
        )
    steps = None
    if n_steps is not None:
        s = check_int_range("n_steps", n_steps, 1) / kappa
        if not math.isclose(s, round(s), rel_tol=0, abs_tol=1e-9) or round(s) < 1:
            raise ValueError(
                f"n_steps: n_steps / kappa must be a whole number of steps >= 1 to reach the same time, got "
                f"{n_steps} / {kappa!r} = {s}"
            )
        steps = round(s)
    return lr, round(new_b), kappa, steps


def _scaled_decay(name: str, beta, kappa: float) -> float:
    """β' = 1 − κ(1 − β), ValueError naming kappa unless it lies in [0, 1)."""
    b = float(np.asarray(beta))
    new = 1 - kappa * (1 - b)
    if not 0 <= new < 1:
        raise ValueError(
            f"kappa: the square-root rule sets {name} to 1 - kappa*(1 - {name}) = {new:.6g}, outside [0, 1); "
            f"kappa must be at most 1/(1 - {name}) = {1 / (1 - b):.6g}"
        )
    return new


def sqrt_scaling(optimizer, lr, batch_size: int, kappa, n_steps: int | None = None) -> ScaledRun:
    """Malladi et al.'s square-root scaling rule for batch size B → κB: η → √κ·η, 1 − β → κ(1 − β) (β₁ and β₂
    for Adam), ε → ε/√κ, and n → n/κ steps (the SDE's time is $k\\eta^2$; ASDE-4).

    It keeps the RMSprop/Adam SDE unchanged (σ₀ = ση, ε₀ = εη and c = (1−β)/η² with σ ∝ 1/√B), so the
    trajectory's statistics at matched time agree to the SDE's O(η) accuracy. AdamW's weight decay w → √κ·w
    keeps the decay per unit of their time, w/η, fixed (derived here; their rule has no weight decay).

    Args:
        optimizer: ``sgdsde.RMSprop`` or ``sgdsde.Adam`` (ValueError for any other: the rule is theirs).
        lr: the learning rate η > 0 at batch size ``batch_size``.
        batch_size: B ≥ 1.
        kappa: κ > 0 with κB a whole batch size and κ(1 − β) < 1 for every decay.
        n_steps: the number of steps at batch size B (optional); n/κ must be whole.

    Returns:
        ``ScaledRun(optimizer, lr, batch_size, n_steps)`` for batch size κB.
    """
    lr, new_b, kappa, steps = _check_common(lr, batch_size, kappa, n_steps)
    root = math.sqrt(kappa)
    if isinstance(optimizer, RMSprop):
        v0 = None if optimizer.v0 is None else optimizer.v0 / kappa  # a warm start's v: σ² → σ²/κ
        new = RMSprop(_scaled_decay("beta", optimizer.beta, kappa), float(optimizer.eps) / root, v0)
    elif isinstance(optimizer, Adam):
        new = Adam(
            _scaled_decay("b1", optimizer.b1, kappa),
            _scaled_decay("b2", optimizer.b2, kappa),
            float(optimizer.eps) / root,
            float(optimizer.weight_decay) * root,
            optimizer.m0,
            None if optimizer.v0 is None else optimizer.v0 / kappa,
        )
    else:
        raise ValueError(
            "optimizer: the square-root scaling rule is Malladi et al.'s for sgdsde.RMSprop and sgdsde.Adam, "
            f"got {type(optimizer).__name__}; for SGD use linear_scaling"
        )
    return ScaledRun(new, lr * root, new_b, steps)


def linear_scaling(optimizer, lr, batch_size: int, kappa, n_steps: int | None = None) -> ScaledRun:
    """The linear scaling rule (Goyal et al. 2017) for batch size B → κB: η → κη, the optimizer unchanged,
    n → n/κ steps (the same epochs). It keeps SGD's SDE on the clock t = kη; for RMSprop
    and Adam it changes their SDE (the comparison ASDE-4 makes).

    Args:
        optimizer: None (plain SGD) or any ``sgdsde`` optimizer, returned unchanged.
        lr, batch_size, kappa, n_steps: as in ``sqrt_scaling``.
    """
    if optimizer is not None and not isinstance(optimizer, AbstractOptimizer):
        raise ValueError(
            f"optimizer must be None or a sgdsde optimizer (RMSprop, Adam, Momentum, Optax), got "
            f"{type(optimizer).__name__}"
        )
    lr, new_b, kappa, steps = _check_common(lr, batch_size, kappa, n_steps)
    return ScaledRun(optimizer, lr * kappa, new_b, steps)
