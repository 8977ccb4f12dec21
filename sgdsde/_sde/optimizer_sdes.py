"""Which SDE an optimizer has: ``SDE(noise, optimizer=...)`` looks up ``type(optimizer)`` here.

    OPTIMIZER_SDES[OptimizerClass] = builder, builder(problem, noise, optimizer, order) -> AbstractSDE

A new optimizer's SDE is one file (its AbstractSDE, in a state y = (θ, optimizer state), and its builder,
which refuses the settings it cannot honour by raising ValueError naming ``optimizer``) plus one line below.
An optimizer without an entry (``Optax(...)``, a user's own) is refused by name: never silently simulated as
SGD's SDE. This module imports the optimizers; ``_optimizers`` never imports it (no cycle).
"""

from __future__ import annotations

from collections.abc import Callable

from .._optimizers import AbstractOptimizer, Adam, Momentum, RMSprop
from .adaptive_sdes import adam_sde, rmsprop_sde
from .base import AbstractSDE
from .momentum import momentum_sme

OPTIMIZER_SDES: dict[type, Callable[..., AbstractSDE]] = {
    Momentum: momentum_sme,  # Li, Tai & E 2019, the MSGD SME (theory/momentum-sde.md, MSDE-2)
    RMSprop: rmsprop_sde,  # Malladi, Lyu, Panigrahi & Arora 2022 (theory/adaptive-sdes.md, ASDE-1)
    Adam: adam_sde,  # Malladi, Lyu, Panigrahi & Arora 2022 (theory/adaptive-sdes.md, ASDE-2)
}


def check_optimizer_sde(optimizer: AbstractOptimizer) -> Callable[..., AbstractSDE]:
    """The registered builder of ``optimizer``'s SDE; ValueError naming ``optimizer`` if none is known."""
    builder = OPTIMIZER_SDES.get(type(optimizer))
    if builder is None:
        known = ", ".join(sorted(c.__name__ for c in OPTIMIZER_SDES))
        raise ValueError(
            f"optimizer: no SDE is known for {optimizer.label()} ({type(optimizer).__name__}); SDE(...) "
            f"simulates the SDEs of {known} only (it never falls back to SGD's SDE); run the discrete method "
            "with sgdsde.SGD(noise, optimizer=...)"
        )
    return builder


def optimizer_sde(problem, noise, optimizer: AbstractOptimizer, order: int | None) -> AbstractSDE:
    """The SDE of ``optimizer`` on ``problem`` with ``noise`` (ValueError naming ``optimizer`` if none is
    known, or if its builder refuses the optimizer's settings)."""
    return check_optimizer_sde(optimizer)(problem, noise, optimizer, order)
