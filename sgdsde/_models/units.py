"""A model's symbolic form as data: one sympy template summed over parameter blocks (``Units``).

This module imports no sympy: a model builds its ``Units`` inside ``sympy_units`` (which imports sympy
itself), and only ``instantiate`` needs sympy, when the symbolic layer asks for the full expression.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import sympy as sp


@dataclasses.dataclass(frozen=True)
class Units:
    """$f_k(\\theta; x) = \\sum_{j: o_j = k} u(\\theta_{I_j}; x_{J_j}, c_j)$: one template u over m
    parameter blocks. Derivatives are taken of u once (q parameters, not d); JAX assembles f's from them.

    ``param_index`` (m × q) are the positions in θ of each unit's parameters, ``input_index`` (m × s) the
    entries of x each unit reads, ``constant_values`` (m × c) the unit's fixed numbers (e.g. a fixed second
    layer), ``output_index`` (m,) the output o_j each unit adds to (None: all to the one output f). The
    units of one output have disjoint parameters (so ∇²f_k is block diagonal), and all units together use
    every position of θ; with one output they are a partition of 0..d−1 (theory/symbolic.md, SYM-2).
    """

    expr: sp.Expr
    params: tuple[sp.Symbol, ...]
    inputs: tuple[sp.Symbol, ...]
    constants: tuple[sp.Symbol, ...]
    param_index: tuple[tuple[int, ...], ...]
    input_index: tuple[tuple[int, ...], ...]
    constant_values: tuple[tuple[float, ...], ...]
    output_index: tuple[int, ...] | None = None

    @classmethod
    def single(cls, expr: sp.Expr, params, inputs) -> Units:
        """f as one unit: the template is f itself, its ``params`` are θ in order and its ``inputs`` x."""
        params, inputs = tuple(params), tuple(inputs)
        return cls(
            expr, params, inputs, (), (tuple(range(len(params))),), (tuple(range(len(inputs))),), ((),)
        )

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
        import sympy as sp

        def number(v: float) -> sp.Expr:
            return sp.Integer(int(v)) if float(v).is_integer() else sp.Float(v, 17)

        terms: list[list[sp.Expr]] = [[] for _ in range(self.n_outputs)]
        for pi, ii, cv, o in zip(
            self.param_index, self.input_index, self.constant_values, self.outputs_of_units(), strict=True
        ):
            sub = {s: params[k] for s, k in zip(self.params, pi, strict=True)}
            sub.update({s: inputs[k] for s, k in zip(self.inputs, ii, strict=True)})
            sub.update({s: number(v) for s, v in zip(self.constants, cv, strict=True)})
            terms[o].append(cast(sp.Expr, self.expr.xreplace(sub)))  # substituting Exprs leaves an Expr
        if self.output_index is None:
            return sp.Add(*terms[0])
        return tuple(sp.Add(*t) for t in terms)
