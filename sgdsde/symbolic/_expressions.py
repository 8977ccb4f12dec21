"""Models as per-example sympy expressions $f(\\theta; x)$, in the numeric models' flattened order."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from .._models import AbstractModel, DiagonalLinearNetwork, LinearRegression, TwoLayerNetwork
from ._codegen import DEFAULT_BACKEND, to_jax
from ._functions import SYMBOLIC_ACTIVATIONS, latex
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


def _number(v: float) -> sp.Expr:
    return sp.Integer(int(v)) if float(v).is_integer() else sp.Float(v, 17)


def _realify(expr: sp.Expr) -> sp.Expr:
    """Give every free symbol the real=True assumption (so sympy simplifies |z|², conjugates …)."""
    return expr.xreplace({s: sp.Symbol(s.name, real=True) for s in expr.free_symbols})


@dataclasses.dataclass(frozen=True)
class Units:
    """$f_k(\\theta; x) = \\sum_{j: o_j = k} u(\\theta_{I_j}; x_{J_j}, c_j)$: one template u over m
    parameter blocks. Derivatives are taken of u once (q parameters, not d); JAX assembles f's from them.

    ``param_index`` (m × q) are the positions in θ of each unit's parameters, ``input_index`` (m × s) the
    entries of x each unit reads, ``constant_values`` (m × c) the unit's fixed numbers (e.g. a fixed second
    layer), ``output_index`` (m,) the output o_j each unit adds to (None: all to the one output f). The
    units of one output have disjoint parameters (so ∇²f_k is block diagonal), and all units together use
    every position of θ; with one output they are a partition of 0..d−1.
    """

    expr: sp.Expr
    params: tuple[sp.Symbol, ...]
    inputs: tuple[sp.Symbol, ...]
    constants: tuple[sp.Symbol, ...]
    param_index: tuple[tuple[int, ...], ...]
    input_index: tuple[tuple[int, ...], ...]
    constant_values: tuple[tuple[float, ...], ...]
    output_index: tuple[int, ...] | None = None

    @property
    def n_units(self) -> int:
        return len(self.param_index)

    @property
    def n_outputs(self) -> int:
        """K, the number of outputs the units add to."""
        return 1 if self.output_index is None else max(self.output_index) + 1

    def outputs_of_units(self) -> tuple[int, ...]:
        """o_j for every unit (all 0 with one output)."""
        return (0,) * self.n_units if self.output_index is None else self.output_index

    def check(self, d: int) -> None:
        """ValueError unless the units cover θ's d positions, disjointly within each output."""
        rows = self.param_index
        if self.output_index is not None and (
            len(self.output_index) != len(rows)
            or sorted(set(self.output_index)) != list(range(self.n_outputs))
        ):
            raise ValueError("units.output_index must give one output per unit, using each of 0..K−1")
        if self.n_outputs == 1:
            if sorted(k for row in rows for k in row) != list(range(d)):
                raise ValueError("units.param_index must use every parameter position exactly once")
            return
        outs = self.outputs_of_units()
        for o in range(self.n_outputs):
            used = [k for row, oj in zip(rows, outs, strict=True) if oj == o for k in row]
            if len(used) != len(set(used)):
                raise ValueError(f"units.param_index: the units of output {o} must have disjoint parameters")
        if sorted({k for row in rows for k in row}) != list(range(d)):
            raise ValueError("units.param_index must use every parameter position")

    def instantiate(self, params, inputs):
        """The full expression $\\sum_j u(\\theta_{I_j}; x_{J_j}, c_j)$ in the model's symbols (K > 1: the
        tuple of the K outputs' sums)."""
        terms: list[list[sp.Expr]] = [[] for _ in range(self.n_outputs)]
        for pi, ii, cv, o in zip(
            self.param_index, self.input_index, self.constant_values, self.outputs_of_units(), strict=True
        ):
            sub = {s: params[k] for s, k in zip(self.params, pi, strict=True)}
            sub.update({s: inputs[k] for s, k in zip(self.inputs, ii, strict=True)})
            sub.update({s: _number(v) for s, v in zip(self.constants, cv, strict=True)})
            terms[o].append(self.expr.xreplace(sub))
        if self.output_index is None:
            return sp.Add(*terms[0])
        return tuple(sp.Add(*t) for t in terms)


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
        unknown = sorted(s.name for s in expr.free_symbols - set(params) - set(inputs))
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
    d, p = len(params), len(inputs)
    return Units(expr, params, inputs, (), (tuple(range(d)),), (tuple(range(p)),), ((),))


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

    LinearRegression: $\\theta^T x$; DiagonalLinearNetwork: $\\sum_j (u_j^2 - v_j^2) x_j$ (or $v_j^2 x_j$);
    TwoLayerNetwork: $\\sum_j a_j\\varphi(w_j^T x)$ with the model's activation, with K outputs
    $f_k = \\sum_j A_{jk}\\varphi(w_j^T x)$ (theory/symbolic.md, SYM-1).
    """
    if isinstance(model, SymbolicModel):
        return model
    if isinstance(model, ExpressionModel):
        return model.symbolic
    if not isinstance(model, AbstractModel):
        raise ValueError(f"model must be an sgdsde model or a SymbolicModel, got {type(model).__name__}")
    names = model.param_names()
    th = [sp.Symbol(n, real=True) for n in names]
    p = model.input_dim
    x = [sp.Symbol(n, real=True) for n in _inputs(p)]
    xi = sp.Symbol("xi", real=True)
    if isinstance(model, LinearRegression):
        t = sp.Symbol("theta", real=True)
        each = tuple((k,) for k in range(p))
        units = Units(t * xi, (t,), (xi,), (), each, each, ((),) * p)
        desc = f"LinearRegression(dim={p})"
    elif isinstance(model, DiagonalLinearNetwork):
        u, v = sp.symbols("u_j v_j", real=True)
        if model.signed:
            units = Units(
                (u**2 - v**2) * xi,
                (u, v),
                (xi,),
                (),
                tuple((k, p + k) for k in range(p)),
                tuple((k,) for k in range(p)),
                ((),) * p,
            )
        else:
            units = Units(
                v**2 * xi,
                (v,),
                (xi,),
                (),
                tuple((k,) for k in range(p)),
                tuple((k,) for k in range(p)),
                ((),) * p,
            )
        desc = f"DiagonalLinearNetwork(dim={p}, signed={model.signed})"
    elif isinstance(model, TwoLayerNetwork):
        phi = SYMBOLIC_ACTIVATIONS[model.activation]
        m = model.width
        w = tuple(sp.Symbol(f"w_{k}", real=True) for k in range(p))
        xs = tuple(sp.Symbol(f"x_{k}", real=True) for k in range(p))
        a = sp.Symbol("a", real=True)
        z = sp.Add(*[wk * xk for wk, xk in zip(w, xs, strict=True)])
        rows = tuple(tuple(range(j * p, (j + 1) * p)) for j in range(m))
        inputs = (tuple(range(p)),) * m
        K = model.n_outputs
        if K > 1:
            # unit (j, k) = A_jk φ(w_jᵀx) adds to output k; θ = (vec(W), vec(A)) with A (m × K) row-major
            units = Units(
                a * phi(z),
                (*w, a),
                xs,
                (),
                tuple((*rows[j], m * p + j * K + k) for j in range(m) for k in range(K)),
                (tuple(range(p)),) * (m * K),
                ((),) * (m * K),
                tuple(k for _ in range(m) for k in range(K)),
            )
        elif model.train_second_layer:
            units = Units(
                a * phi(z), (*w, a), xs, (), tuple((*rows[j], m * p + j) for j in range(m)), inputs, ((),) * m
            )
        else:
            c = [1.0 / m] * m if model.second_layer is None else [float(v) for v in model.second_layer]
            units = Units(a * phi(z), w, xs, (a,), rows, inputs, tuple((cj,) for cj in c))
        desc = (
            f"TwoLayerNetwork(dim={p}, width={m}, activation={model.activation}, "
            f"train_second_layer={model.train_second_layer}, second_layer={model.second_layer}"
            + (f", n_outputs={K})" if K > 1 else ")")
        )
    else:
        raise ValueError(
            f"no symbolic form for {type(model).__name__}; write its output as "
            "SymbolicModel(expr, params, inputs)"
        )
    return SymbolicModel(units.instantiate(th, x), th, x, name=desc, units=units)


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
