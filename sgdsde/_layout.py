"""How SGD carries the parameters of its paths between steps: the flat θ (N, d) everywhere else in sgdsde, or
a model's own form of them (a ``FunctionModel``'s params pytree, each leaf stacked over the paths), packed
and unpacked only where the engine asks for θ (records, block ends, checkpoints' θ, events)."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import equinox as eqx
from jaxtyping import Array, Float, PyTree

if TYPE_CHECKING:
    from ._problem import Problem


class AbstractLayout(eqx.Module):
    """A parametrization of θ that a stepper carries: $P = \\mathrm{pack}(\\theta)$,
    $\\theta = \\mathrm{unpack}(P)$, a linear bijection that only moves entries (so ``pack``/``unpack`` and
    any elementwise update commute exactly), and the problem whose model takes P in place of θ
    (theory/function-models.md, FMOD-5)."""

    @abc.abstractmethod
    def pack(self, theta: Float[Array, "*N d"]) -> PyTree:
        """θ (…, d) in the carried form, the leading axes kept."""

    @abc.abstractmethod
    def unpack(self, params: PyTree) -> Float[Array, "*N d"]:
        """The carried form back as θ (…, d)."""

    @abc.abstractmethod
    def problem(self, problem: Problem) -> Problem:
        """``problem`` with a model whose outputs take one path's carried form in place of θ, so that a
        gradient taken through the outputs comes out in the carried form."""


class FlatLayout(AbstractLayout):
    """θ itself: pack and unpack are the identity."""

    def pack(self, theta):
        return theta

    def unpack(self, params):
        return params

    def problem(self, problem):
        return problem


FLAT = FlatLayout()
