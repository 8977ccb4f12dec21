"""The JAX translation of the non-elementary sympy functions (the activations' twins live with the models,
``sgdsde/_models/sympy_activations.py``), the LaTeX printer and a.e. differentiation.

ReLU is written $z\\,H(z)$ (Heaviside). Its derivatives contain DiracDelta, which we drop: that is the
almost-everywhere derivative, and the convention of JAX's ``relu`` (φ′(0) = 0, φ″ = 0), so generated code
matches autodiff and has no NaN branch.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
import sympy as sp
from sympy.printing.latex import LatexPrinter

from .._models.sympy_activations import (
    SYMBOLIC_ACTIVATIONS as SYMBOLIC_ACTIVATIONS,
    relu as relu,
    sigmoid as sigmoid,
    softplus as softplus,
)


def _heaviside(z, *h0):
    # H(0) = 0, matching jax.nn.relu's derivative at 0; where() of two constants has no NaN branch.
    return jnp.where(z > 0, jnp.ones_like(z), jnp.zeros_like(z))


JAX_FUNCTIONS = {
    "Heaviside": _heaviside,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
}

SYMPY2JAX_FUNCTIONS = {sp.Heaviside: _heaviside, sigmoid: jax.nn.sigmoid, softplus: jax.nn.softplus}


class _Printer(LatexPrinter):
    # sympy prints Heaviside as θ(·), which would read as the parameter vector θ.
    def _print_Heaviside(self, expr, exp=None):
        tex = rf"H\left({self._print(expr.args[0])}\right)"
        return tex if exp is None else rf"{tex}^{{{exp}}}"


def latex(expr) -> str:
    """LaTeX of a sympy expression, with H(·) for the Heaviside step."""
    return _Printer().doprint(expr)


def drop_dirac(expr: sp.Expr) -> sp.Expr:
    """Replace every DiracDelta (the derivative of a Heaviside step) by 0: the a.e. derivative."""
    if not expr.has(sp.DiracDelta):
        return expr
    # replacing sub-expressions by 0 leaves an Expr (sympy's replace is typed as returning Basic)
    return cast(sp.Expr, expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero))


def diff(expr: sp.Expr, symbol: sp.Symbol) -> sp.Expr:
    """$\\partial expr / \\partial symbol$, a.e. for step functions; raise if sympy cannot differentiate."""
    out = drop_dirac(sp.diff(expr, symbol))
    if out.has(sp.Derivative) or out.has(sp.Subs):
        bad = next(iter(out.atoms(sp.Derivative) | out.atoms(sp.Subs)))
        raise ValueError(
            f"expression is not differentiable in {symbol}: sympy leaves {bad} unevaluated "
            "(use functions with known derivatives)"
        )
    return out
