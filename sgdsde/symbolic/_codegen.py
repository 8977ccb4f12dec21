"""The single sympy → JAX seam: ``to_jax`` turns expressions into a JAX function of grouped arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp
import sympy as sp

from ._functions import JAX_FUNCTIONS, SYMPY2JAX_FUNCTIONS

BACKENDS = ("lambdify", "sympy2jax")
# Chosen by scripts/bench_symbolic.py (theory/symbolic.md, SYM-3): lambdify with common-subexpression
# elimination traces a flat straight-line program, which compiles faster and evaluates at least as fast.
DEFAULT_BACKEND = "lambdify"


def _groups(args) -> list[tuple[sp.Symbol, ...] | sp.Symbol]:
    out = []
    for a in args:
        if isinstance(a, sp.Symbol):
            out.append(a)
        else:
            group = tuple(a)
            if not all(isinstance(s, sp.Symbol) for s in group):
                raise ValueError(f"each argument must be a sympy Symbol or a sequence of Symbols, got {a!r}")
            out.append(group)
    return out


def _as_expr(e) -> sp.Basic:
    """A sympy expression or a plain number; strings are refused (they would be evaluated: parse them with
    ``SymbolicModel``'s whitelist parser instead)."""
    if isinstance(e, sp.Basic):
        return e
    if isinstance(e, bool) or not isinstance(e, (int, float)):
        raise ValueError(f"exprs must be sympy expressions (or numbers), got {type(e).__name__}")
    return sp.Integer(e) if isinstance(e, int) else sp.Float(e)


def to_jax(exprs, args: Sequence, *, backend: str = DEFAULT_BACKEND, batched: bool = False):
    """A JAX function of ``args`` evaluating ``exprs``: $(a_1, …, a_k) \\mapsto [e_1, …, e_m]$.

    Args:
        exprs: one sympy expression (the function returns a scalar) or a sequence (returns an (m,) array).
        args: one entry per positional argument of the result: a Symbol (a scalar argument) or a sequence
            of Symbols (a 1-D array argument, unpacked in that order).
        backend: "lambdify" (sympy's printer to jax.numpy, with common-subexpression elimination) or
            "sympy2jax" (an equinox module walking the expression graph).
        batched: evaluate the program once on whole arrays instead of per point (elementwise ops
            broadcast, so XLA fuses it with its neighbours rather than through a vmapped scalar program):
            a Symbol's argument is then an array of any shape, a group's has the group on its leading axis,
            (len(group), *shape); all shapes have one rank and broadcast to a common ``shape``, and the
            result is (m, *shape) (a scalar expression: ``shape``).

    Returns:
        A pure, jitted function (vmap it as needed). Its output dtype is that of the first argument.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    scalar = isinstance(exprs, sp.Basic)
    exprs = [_as_expr(exprs)] if scalar else [_as_expr(e) for e in exprs]
    groups = _groups(args)
    known = set()
    for g in groups:
        known |= {g} if isinstance(g, sp.Symbol) else set(g)
    free = set().union(*(e.free_symbols for e in exprs)) if exprs else set()
    missing = sorted(s.name for s in free - known)  # pyright: ignore[reportAttributeAccessIssue] -- free symbols (Symbol, Indexed) have names; sympy types them as Basic
    if missing:
        raise ValueError(f"expressions contain symbols {missing} that are not among the arguments")
    raw = _lambdify(exprs, groups) if backend == "lambdify" else _sympy2jax(exprs, groups)

    def fn(*arrays):
        if len(arrays) != len(groups):
            raise ValueError(f"expected {len(groups)} arguments, got {len(arrays)}")
        arrays = [jnp.asarray(a) for a in arrays]
        dtype = jnp.result_type(arrays[0], float)
        if batched:
            shape = _batch_shape(arrays, groups)
            out = [jnp.broadcast_to(jnp.asarray(o, dtype), shape) for o in raw(*arrays)]
            return out[0] if scalar else jnp.stack(out)
        for a, g in zip(arrays, groups, strict=True):
            want = () if isinstance(g, sp.Symbol) else (len(g),)
            if a.shape != want:
                what = g if want == () else "a group of symbols"
                raise ValueError(f"argument for {what} must have shape {want}, got {a.shape}")
        out = [jnp.asarray(o, dtype) for o in raw(*arrays)]
        return out[0] if scalar else jnp.stack(out)

    # jit: called eagerly, the scalar program would dispatch op by op; under an outer jit it is inlined.
    jitted = jax.jit(fn)

    def call(*arrays):
        return jitted(*arrays)

    # the compiled function carries what it evaluates, for inspection
    call.exprs, call.args, call.backend = exprs, groups, backend  # pyright: ignore[reportFunctionMemberAccess] -- attributes set on a function are untyped
    return call


def _batch_shape(arrays, groups) -> tuple[int, ...]:
    """The common trailing shape of batched arguments (a group's leading axis runs over its symbols)."""
    shapes = []
    for a, g in zip(arrays, groups, strict=True):
        if isinstance(g, sp.Symbol):
            shapes.append(a.shape)
        elif a.ndim == 0 or a.shape[0] != len(g):
            raise ValueError(
                f"a group of {len(g)} symbols needs an argument of shape ({len(g)}, ...), got {a.shape}"
            )
        else:
            shapes.append(a.shape[1:])
    if len({len(s) for s in shapes}) > 1:
        raise ValueError(f"batched arguments must have one rank (no implicit rank promotion), got {shapes}")
    # the arguments' shapes are static (Python ints, also under jit), so the broadcast shape is too
    return cast(tuple[int, ...], jnp.broadcast_shapes(*shapes))


def _lambdify(exprs, groups):
    # Groups become list arguments ([θ₀, θ₁, …] unpacks a 1-D array); cse shares repeated subterms.
    f = sp.lambdify(
        [list(g) if isinstance(g, tuple) else g for g in groups],
        exprs,
        modules=[JAX_FUNCTIONS, "jax"],
        cse=True,
    )
    return f


def _sympy2jax(exprs, groups):
    import sympy2jax

    module = sympy2jax.SymbolicModule(exprs, extra_funcs=SYMPY2JAX_FUNCTIONS, make_array=False)

    def f(*arrays):
        kw = {}
        for a, g in zip(arrays, groups, strict=True):
            if isinstance(g, sp.Symbol):
                kw[g.name] = a
            else:
                kw.update({s.name: a[i] for i, s in enumerate(g)})
        return module(**kw)

    return f
