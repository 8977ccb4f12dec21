"""Models as per-example sympy expressions $f(\\theta; x)$, in the numeric models' flattened order."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from .._models import AbstractModel, Units
from ._codegen import DEFAULT_BACKEND, to_jax
from ._functions import latex
from ._parse import FUNCTIONS, parse_expression


def _symbols(names: Sequence[str], what: str) -> tuple[sp.Symbol, ...]:
    out = []
    for s in names:
        if isinstance(s, sp.Symbol):
            out.append(sp.Symbol(s.name, real=True))
        elif isinstance(s, str):
            out.append(sp.Symbol(s, real=True))
        else:
            raise ValueError(f"{what} must be names (str) or sympy Symbols, got {s!r}")
    return tuple(out)


def _realify(expr: sp.Expr) -> sp.Expr:
    """Give every free symbol the real=True assumption (so sympy simplifies |z|², conjugates …)."""
    # renaming symbols leaves an Expr (sympy leaves xreplace untyped)
    rule = {s: sp.Symbol(s.name, real=True) for s in expr.free_symbols}  # pyright: ignore[reportAttributeAccessIssue] -- free symbols have names; sympy types them as Basic
    return cast(sp.Expr, expr.xreplace(rule))


@dataclasses.dataclass(frozen=True)
class SymbolicModel:
    """A per-example model $f(\\theta; x)$: a sympy expression in parameter symbols θ and input symbols x
    (K ≥ 2 outputs: a sequence of K expressions, the logits of a K-class loss).

    The loss is the Problem's (``Problem(model, X, y, loss=...)``); ``loss`` below is the default squared
    loss $\\frac12(f - y)^2$ with the label symbol y. θ's order is ``params`` (for the built-in models,
    ``model.param_names()``). Free symbols other than θ and x are rejected.

    Args:
        expr: the output f: a sympy expression or a string parsed by a whitelist (never evaluated); or a
            sequence of K ≥ 2 of them for a K-output model.
        params: parameter names or symbols, in the flattened order of θ.
        inputs: input names or symbols, in the order of x's entries.
        label: the label symbol's name.
        name: a short description (used in reports and cache keys).
        units: f's decomposition into identical units (built-in models); default one unit per output.
    """

    expr: sp.Expr | tuple[sp.Expr, ...]
    params: tuple[sp.Symbol, ...]
    inputs: tuple[sp.Symbol, ...]
    label: sp.Symbol
    name: str
    units: Units

    def __init__(self, expr, params, inputs, label="y", name="expression", units=None):
        params = _symbols(params, "params")
        inputs = _symbols(inputs, "inputs")
        label_sym = _symbols([label], "label")[0]
        if len(params) == 0:
            raise ValueError("params must name at least one parameter")
        names = [s.name for s in (*params, *inputs, label_sym)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"params, inputs and label must have distinct names; repeated: {dup}")
        clash = sorted(set(names) & set(FUNCTIONS))
        if clash:
            # the generated code calls these functions by name: a symbol so named would shadow them
            raise ValueError(f"params, inputs and label must not be named like a function; rename {clash}")
        multi = isinstance(expr, (list, tuple))
        if multi and len(expr) < 2:
            raise ValueError(f"expr: a K-output model needs K >= 2 expressions, got {len(expr)}")
        outputs = tuple(self._output(e, params, inputs, label_sym) for e in (expr if multi else [expr]))
        object.__setattr__(self, "expr", outputs if multi else outputs[0])
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "label", label_sym)
        object.__setattr__(self, "name", str(name))
        if units is None:
            units = (
                _default_units(outputs, params, inputs) if multi else _one_unit(outputs[0], params, inputs)
            )
        if units.n_outputs != len(outputs):
            raise ValueError(f"units has {units.n_outputs} outputs but expr has {len(outputs)}")
        units.check(len(params))
        object.__setattr__(self, "units", units)

    @staticmethod
    def _output(expr, params, inputs, label_sym) -> sp.Expr:
        if isinstance(expr, str):
            # parsed from a whitelist, never evaluated (sympify would eval the string; SYM-6)
            expr = parse_expression(expr, {s.name: s for s in (*params, *inputs, label_sym)})
        if not isinstance(expr, sp.Expr):
            raise ValueError(f"expr must be a sympy expression or a string, got {type(expr).__name__}")
        expr = _realify(expr)
        if label_sym in expr.free_symbols:
            raise ValueError(f"expr is the output f(θ; x) and must not contain the label symbol {label_sym}")
        unknown = sorted(s.name for s in expr.free_symbols - set(params) - set(inputs))  # pyright: ignore[reportAttributeAccessIssue] -- free symbols have names; sympy types them as Basic
        if unknown:
            raise ValueError(
                f"expr has free symbols {unknown} that are neither parameters {[s.name for s in params]} "
                f"nor inputs {[s.name for s in inputs]}: name them in params= or inputs=, or substitute "
                "values"
            )
        return expr

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def input_dim(self) -> int:
        return len(self.inputs)

    @property
    def n_outputs(self) -> int:
        """K (1: a scalar output)."""
        return len(self.expr) if isinstance(self.expr, tuple) else 1

    def param_names(self) -> list[str]:
        return [s.name for s in self.params]

    @property
    def loss(self) -> sp.Expr:
        """$\\ell(\\theta; x, y) = \\frac12 (f - y)^2$ (the default loss of a one-output model)."""
        if self.n_outputs > 1:
            raise ValueError(
                "a K-output model has no default loss: give the Problem a loss, e.g. CrossEntropyLoss"
            )
        return sp.Rational(1, 2) * (self.expr - self.label) ** 2

    def latex(self) -> str:
        """$f(\\theta; x) = …$ in LaTeX (K outputs: the column of the K logits)."""
        if self.n_outputs > 1:
            return rf"f(\theta; x) = {latex(sp.Matrix(self.expr))}"
        return rf"f(\theta; x) = {latex(self.expr)}"

    def to_model(self) -> ExpressionModel:
        """The numeric model (an ``AbstractModel``) whose output is this expression, via ``to_jax``."""
        return ExpressionModel(self)


def _one_unit(expr, params, inputs) -> Units:
    return Units.single(expr, params, inputs)


def _default_units(outputs, params, inputs) -> Units:
    """K outputs as K units of one template $u = \\sum_k e_k f_k$ with a one-hot selector constant e: unit k
    (constants e = the k-th basis vector) is f_k, and sympy differentiates the template once."""
    taken = {s.name for s in (*params, *inputs)}
    prefix = "e"
    while any(n.startswith(prefix + "_") for n in taken):
        prefix = "_" + prefix
    K = len(outputs)
    sel = tuple(sp.Symbol(f"{prefix}_{k}", real=True) for k in range(K))
    d, p = len(params), len(inputs)
    return Units(
        sp.Add(*[e * f for e, f in zip(sel, outputs, strict=True)]),
        params,
        inputs,
        sel,
        (tuple(range(d)),) * K,
        (tuple(range(p)),) * K,
        tuple(tuple(1.0 if i == k else 0.0 for i in range(K)) for k in range(K)),
        tuple(range(K)),
    )


def _inputs(p: int) -> list[str]:
    return [f"x_{k}" for k in range(p)]


def symbolic_model(model) -> SymbolicModel:
    """The per-example sympy expression of a numeric model, parameters in ``model.param_names()`` order.

    The model gives its own form (``AbstractModel.sympy_units``: e.g. LinearRegression $\\theta^T x$,
    DiagonalLinearNetwork $\\sum_j (u_j^2 - v_j^2) x_j$, TwoLayerNetwork $\\sum_j a_j\\varphi(w_j^T x)$);
    here its template is instantiated in θ's symbols and inputs $x_0, \\dots, x_{p-1}$ (theory/symbolic.md,
    SYM-1). A model without one raises ValueError naming it.
    """
    if isinstance(model, SymbolicModel):
        return model
    if isinstance(model, ExpressionModel):
        return model.symbolic
    if not isinstance(model, AbstractModel):
        raise ValueError(f"model must be an sgdsde model or a SymbolicModel, got {type(model).__name__}")
    units = model.sympy_units()
    if not isinstance(units, Units):
        raise ValueError(
            f"{type(model).__name__}.sympy_units must return a sgdsde.symbolic.Units, got {type(units).__name__}"
        )
    th = [sp.Symbol(n, real=True) for n in model.param_names()]
    x = [sp.Symbol(n, real=True) for n in _inputs(model.input_dim)]
    return SymbolicModel(units.instantiate(th, x), th, x, name=type(model).__name__, units=units)


class ExpressionModel(AbstractModel):
    """A numeric model made from a SymbolicModel: $f(\\theta; x)$ evaluated by generated JAX code."""

    symbolic: SymbolicModel = eqx.field(static=True)

    @property
    def n_params(self) -> int:
        return self.symbolic.n_params

    @property
    def input_dim(self) -> int:
        return self.symbolic.input_dim

    @property
    def n_outputs(self) -> int:
        return self.symbolic.n_outputs

    def param_names(self) -> list[str]:
        return self.symbolic.param_names()

    def output(self, theta, x):
        # Always the generated code: only f itself is compiled, no derivative is taken.
        return compiled_output(self.symbolic, DEFAULT_BACKEND)(theta, x)


@functools.lru_cache(maxsize=64)
def compiled_output(sm: SymbolicModel, backend: str):
    """$f(\\theta; x) = \\sum_j u(\\theta_{I_j}; x_{J_j}, c_j)$ as JAX: the unit template compiled once by
    ``to_jax`` and vmapped over the units (the symbolic kernels' ``output`` is this function)."""
    U = sm.units
    unit = jax.vmap(to_jax(U.expr, [U.params, U.inputs, U.constants], backend=backend))
    n = U.n_units
    param_index = np.asarray(U.param_index, dtype=np.int32).reshape(n, len(U.params))
    input_index = np.asarray(U.input_index, dtype=np.int32).reshape(n, len(U.inputs))
    constants = np.asarray(U.constant_values, np.float64).reshape(n, len(U.constants))
    outputs = np.asarray(U.outputs_of_units(), dtype=np.int32)

    def f(theta, x):
        dtype = jnp.result_type(theta, float)
        u = unit(theta[param_index], jnp.asarray(x, dtype)[input_index], jnp.asarray(constants, dtype))
        if U.output_index is None:
            return jnp.sum(u)
        return jnp.zeros((U.n_outputs,), dtype).at[outputs].add(u)  # f_k = Σ_{j: o_j = k} u_j

    return f
