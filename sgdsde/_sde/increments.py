"""Random inputs of SDE steps for all paths at once, drawn flat (the fast layout) and reshaped, and the
``increments=`` options that choose them.

Convention (theory/sde.md, SDE-3): the Brownian increment over one SGD step is $\\Delta W = -\\sqrt\\eta\\,\\xi$,
ξ the N(0, I_m) draw Gaussian-noise SGD makes from the same step key (read path by path with
``CoupledToSGD()``, or in the state's layout otherwise), so coupled Euler with dt = η reproduces
$\\theta - \\eta(\\nabla L + A\\xi)$. With k substeps the fine increments are a Brownian bridge pinned to that
sum, so every k shares one Brownian path (common random numbers across dt, and strong errors against SGD).
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from diffrax import SpaceTimeLevyArea

from .._noise.base import NoiseType
from .._normals import step_normals


class WeakIncrement(eqx.Module):
    """The random input of one weak order-2 step: three-point $\\Delta\\hat W$ (±√(3h) w.p. 1/6 each, 0 w.p.
    2/3) and the antisymmetric two-point $V$ ($V_{rj} = \\pm h$ for r < j, $V_{jr} = -V_{rj}$), or None for
    additive noise (Kloeden & Platen 1992, §14.2)."""

    dW: jax.Array
    V: jax.Array | None


def coarse_normals(key, n_paths: int, m: int, dtype):
    """ξ of one step, exactly as GaussianNoise/SphericalGaussianNoise draw it from ``key``."""
    return step_normals(key, n_paths, m, dtype)


def bridge_increment(key, j: jax.Array, substeps: int, remaining, dt, dtype):
    """Substep j's ΔW given the sum ``remaining`` of the k − j increments still to come: the conditional law
    $N(R/(k-j),\\ dt\\,(k-j-1)/(k-j))$ of one of k − j iid N(0, dt) increments with sum R. Drawing these in
    turn
    gives iid N(0, dt) increments summing to the SGD step's −√η ξ (a Brownian bridge, O(N·m) memory)."""
    left = (substeps - j).astype(dtype)
    z = step_normals(jax.random.fold_in(key, j + 1), 1, remaining.size, dtype).reshape(remaining.shape)
    return remaining / left + jnp.sqrt(dt * (left - 1) / left) * z


def levy_area(key, j, dt, shape, dtype):
    """Space-time Lévy area H ~ N(0, dt/12) of substep j, independent of its ΔW."""
    h = step_normals(jax.random.fold_in(jax.random.fold_in(key, 2**30), j), 1, math.prod(shape), dtype)
    return SpaceTimeLevyArea(dt=dt, W=None, H=jnp.sqrt(dt / 12) * h.reshape(shape))


def two_point(key, j, dt, shape, dtype):
    """±√dt with probability ½ each: matches N(0, dt) up to third moments (weak order 1 with Euler)."""
    s = jax.random.rademacher(jax.random.fold_in(key, j), (math.prod(shape),), dtype)
    return jnp.sqrt(dt) * s.reshape(shape)


def weak2(key, j, dt, shape, dtype, with_v: bool):
    """Three-point ΔŴ (±√(3dt) w.p. 1/6, 0 w.p. 2/3; moments of N(0, dt) up to the fifth) and two-point V."""
    key = jax.random.fold_in(key, j)
    u = jax.random.uniform(key, (math.prod(shape),), dtype)
    s = jnp.where(u < 1 / 6, -1.0, jnp.where(u > 5 / 6, 1.0, 0.0)).astype(dtype)
    dW = jnp.sqrt(3 * dt) * s.reshape(shape)
    if not with_v:
        return WeakIncrement(dW=dW, V=None)
    n, m = shape
    r = jax.random.rademacher(jax.random.fold_in(key, 1), (n * m * m,), dtype)
    upper = jnp.triu(r.reshape(n, m, m), 1)
    return WeakIncrement(dW=dW, V=dt * (upper - jnp.swapaxes(upper, -1, -2)))


class AbstractControl(eqx.Module):
    """The random input of an SDE step for all paths, drawing its own increments: Brownian ones (bridged to
    the SGD step's −√η ξ, SDE-3), with Lévy areas, two-point or weak-2 ones. ``name`` is the configuration
    record's; ``bridged`` whether the step first draws its total increment (the Brownian controls, which an
    ``increments=`` option may lay out or replace); ``levy_area`` whether the draws carry space-time Lévy
    areas; ``axis`` the path axis of the draws (the state's, so no transpose, where the draw's layout allows
    it)."""

    name: ClassVar[str]
    bridged: ClassVar[bool] = False
    levy_area: ClassVar[bool] = False

    @classmethod
    def for_sde(cls, noise_type: str, m: int) -> AbstractControl:
        """The control a solver whose natural input is ``cls`` draws for an SDE with this noise and m."""
        return cls()

    def axis(self, paths_last: bool) -> int:
        return 0

    @abc.abstractmethod
    def coupled(self) -> AbstractControl | None:
        """The same draws in simulate_sgd's per-path (N, m) order (SDE-3); None for draws that are not
        Brownian."""

    @abc.abstractmethod
    def draw(self, key, j, dt, remaining, shape, dtype, substeps: int) -> tuple[Any, Any]:
        """(substep j's input for all paths, the remaining bridge sum)."""


class _Bridged(AbstractControl):
    bridged: ClassVar[bool] = True

    def _dW(self, key, j, dt, remaining, dtype, substeps):
        return remaining if substeps == 1 else bridge_increment(key, j, substeps, remaining, dt, dtype)


class BrownianControl(_Bridged):
    """Gaussian increments in the state's layout (the fastest)."""

    name: ClassVar[str] = "brownian"

    def axis(self, paths_last):
        return 1 if paths_last else 0

    def coupled(self) -> AbstractControl:
        return CoupledControl()

    def draw(self, key, j, dt, remaining, shape, dtype, substeps) -> tuple[Any, Any]:
        dW = self._dW(key, j, dt, remaining, dtype, substeps)
        return dW, remaining - dW


class CoupledControl(_Bridged):
    """Gaussian increments in SGD's per-path (N, m) order: Euler at dt = η reproduces Gaussian-noise SGD."""

    name: ClassVar[str] = "coupled"

    def coupled(self) -> AbstractControl:
        return self

    def draw(self, key, j, dt, remaining, shape, dtype, substeps) -> tuple[Any, Any]:
        dW = self._dW(key, j, dt, remaining, dtype, substeps)
        return dW, remaining - dW


class LevyControl(_Bridged):
    """Gaussian increments with their space-time Lévy areas (the SRK solvers' input)."""

    name: ClassVar[str] = "levy"
    levy_area: ClassVar[bool] = True

    def coupled(self) -> AbstractControl:
        return self  # its draws already use SGD's (N, m) order

    def draw(self, key, j, dt, remaining, shape, dtype, substeps) -> tuple[Any, Any]:
        dW = self._dW(key, j, dt, remaining, dtype, substeps)
        la = levy_area(key, j, dt, shape, dtype)
        return SpaceTimeLevyArea(dt=jnp.broadcast_to(dt, shape[:1]), W=dW, H=la.H), remaining - dW


class TwoPointControl(AbstractControl):
    """±√dt increments (weak order 1 with Euler)."""

    name: ClassVar[str] = "two_point"

    def axis(self, paths_last):
        return 1 if paths_last else 0

    def coupled(self) -> None:
        return None

    def draw(self, key, j, dt, remaining, shape, dtype, substeps) -> tuple[Any, Any]:
        return two_point(key, j, dt, shape, dtype), remaining


class Weak2Control(AbstractControl):
    """PlatenWeak2's three-point ΔŴ, with the two-point V when the noise is not additive and m > 1."""

    name: ClassVar[str] = "weak2"
    with_v: bool = eqx.field(static=True, default=False)

    @classmethod
    def for_sde(cls, noise_type: str, m: int) -> AbstractControl:
        return cls(with_v=noise_type != NoiseType.ADDITIVE and m > 1)

    def coupled(self) -> None:
        return None

    def draw(self, key, j, dt, remaining, shape, dtype, substeps) -> tuple[Any, Any]:
        return weak2(key, j, dt, shape, dtype, self.with_v), remaining


class AbstractIncrements(eqx.Module):
    """How the SDE's Brownian increments are drawn (fixed steps): each option turns the solver's natural
    random input into the one it asks for, or refuses a solver it cannot drive. A new option is one final
    class here (with its control above) plus one re-export line in ``sgdsde/__init__.py``."""

    virtual_tree: ClassVar[bool] = False  # the law of Brownian motion is all it asks for (adaptive steps)

    def control(self, natural: AbstractControl, solver: Any) -> AbstractControl:
        """The fixed steps' random input for ``solver``, whose own is ``natural``; ValueError where the solver
        draws its own non-Brownian input, or where this option would make it solve another SDE."""
        if not natural.bridged:
            raise ValueError(
                f"solver {type(solver).__name__} draws its own {natural.name} increments, not Brownian ones; "
                f"increments must be None, got {self!r}"
            )
        return self._replace(natural, solver)

    @abc.abstractmethod
    def _replace(self, natural: AbstractControl, solver: Any) -> AbstractControl:
        """The control for a solver whose natural input is Brownian."""


class Gaussian(AbstractIncrements):
    """Brownian increments drawn in the fastest layout (the default)."""

    virtual_tree: ClassVar[bool] = True

    def _replace(self, natural, solver) -> AbstractControl:
        return natural


class TwoPoint(AbstractIncrements):
    """±√dt increments: weak Euler only (same first and second moments as Brownian increments)."""

    def _replace(self, natural, solver) -> AbstractControl:
        if not isinstance(solver, diffrax.Euler):
            raise ValueError(
                "increments=TwoPoint() is a weak scheme and is valid with Euler only, not with "
                f"{type(solver).__name__} (its higher-order terms need Gaussian increments)"
            )
        return TwoPointControl()


class CoupledToSGD(AbstractIncrements):
    """Brownian increments sharing simulate_sgd's Gaussian draws path by path: with dt = η and the same key,
    Euler reproduces a GaussianNoise/SphericalGaussianNoise SGD run (SDE-3)."""

    def _replace(self, natural, solver) -> AbstractControl:
        coupled = natural.coupled()
        assert coupled is not None  # natural is Brownian (bridged): checked by control
        return coupled


# the options by name in messages (one entry per option; any AbstractIncrements is accepted)
INCREMENTS: tuple[type[AbstractIncrements], ...] = (Gaussian, TwoPoint, CoupledToSGD)


def increments_choices() -> str:
    """'None, sgdsde.Gaussian(), … or sgdsde.CoupledToSGD()': the valid ``increments=`` values, for messages."""
    names = ["None"] + [f"sgdsde.{c.__name__}()" for c in INCREMENTS]
    return ", ".join(names[:-1]) + " or " + names[-1]
