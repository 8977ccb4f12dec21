"""The sympy twin of every activation in ``activations.py``, for models' symbolic forms.

This module imports sympy: nothing in the numeric core imports it at load time; ``TwoLayerNetwork.sympy_units``
imports it when the symbolic layer asks, and ``sgdsde.symbolic`` translates these functions to JAX.
ReLU is written $z\\,H(z)$ (Heaviside); the symbolic layer drops the DiracDelta of its derivatives (the a.e.
derivative, JAX's convention for ``relu``).
"""

from __future__ import annotations

from typing import cast

import sympy as sp

from .activations import ACTIVATIONS


class sigmoid(sp.Function):  # noqa: N801 (sympy functions are lower-case, like sp.tanh)
    """$\\sigma(z) = 1/(1 + e^{-z})$, kept as one symbol so expressions stay small; σ′ = σ(1 − σ)."""

    def fdiff(self, argindex=1):
        s = cast(sp.Expr, sigmoid(self.args[0]))  # an applied Function is an Expr (sympy types it loosely)
        return s * (1 - s)

    def _latex(self, printer):
        return rf"\sigma\left({printer._print(self.args[0])}\right)"


class softplus(sp.Function):  # noqa: N801
    """$\\log(1 + e^{z})$, translated to JAX's overflow-safe ``softplus``; its derivative is σ(z)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _latex(self, printer):
        return rf"\operatorname{{softplus}}\left({printer._print(self.args[0])}\right)"


def relu(z):
    return z * sp.Heaviside(z)


# The symbolic twin of every numeric activation (activations.py is the source of the names;
# tests/test_symbolic.py::test_activation_tables_agree checks values and derivatives against JAX).
SYMBOLIC_ACTIVATIONS = {
    "tanh": sp.tanh,
    "relu": relu,
    "quadratic": lambda z: z**2,
    "sigmoid": sigmoid,
    "linear": lambda z: z,
    "softplus": softplus,
}
if set(SYMBOLIC_ACTIVATIONS) != set(ACTIVATIONS):
    raise ImportError(
        "symbolic activations out of sync with sgdsde._models.activations: "
        f"{sorted(set(SYMBOLIC_ACTIVATIONS) ^ set(ACTIVATIONS))}"
    )
