"""Per-example derivative kernels: symbolic (sympy → JAX) or numeric (JAX autodiff), one contract.

Every kernel is a function of one example, ``k(θ, x, y, v)`` (v: a direction in parameter space, ignored
by kernels that take none). Sums over the n data points never enter sympy: callers vmap a kernel over
(x, y) and take the mean in JAX, so expressions do not grow with n (theory/symbolic.md, SYM-2).
"""

from __future__ import annotations

import abc
import functools
import time
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from .._losses import AbstractLoss, SquaredLoss
from .._models import AbstractModel
from ._codegen import DEFAULT_BACKEND, to_jax
from ._expressions import ExpressionModel, SymbolicModel, compiled_output, symbolic_model
from ._functions import diff, latex

# name -> one-line math, the per-example quantity (ℓ = ½(f − y)², r = f − y).
KERNELS = {
    "output": "f",
    "loss": r"\ell = \tfrac12 r^2",
    "grad_output": r"\nabla f",
    "grad_loss": r"\nabla\ell = r\,\nabla f",
    "hvp_output": r"\nabla^2 f\, v",
    "hvp_loss": r"\nabla^2\ell\, v = \nabla f\,(\nabla f^T v) + r\,\nabla^2 f\, v",
    "jp_output": r"\nabla^2 f\,\nabla f = \tfrac12\nabla\|\nabla f\|^2",
    "jp_loss": r"\nabla^2 \ell\,\nabla \ell = \tfrac12\nabla\|\nabla \ell\|^2",
    "sqnorm_grad_output": r"\|\nabla f\|^2",
    "diag_hessian_loss": r"\operatorname{diag}\nabla^2\ell",
    "trace_hessian_loss": r"\operatorname{tr}\nabla^2\ell = \|\nabla f\|^2 + r\,\Delta f",
    "grad_trace_hessian_loss": r"\nabla\operatorname{tr}\nabla^2\ell",
    "grad_quadform_loss": r"\nabla_\theta\,(v^T\nabla^2\ell\, v)",
}
SCALAR_KERNELS = ("output", "loss", "sqnorm_grad_output", "trace_hessian_loss")


class AbstractKernels(abc.ABC):
    """Per-example kernels of one model; ``is_symbolic`` says whether they come from sympy."""

    is_symbolic: bool
    n_params: int
    reason: str
    loss: AbstractLoss

    @abc.abstractmethod
    def function(self, name: str) -> Callable[..., Any]:
        """The per-example JAX function ``k(θ, x, y, v)`` of kernel ``name`` (``output``: ``k(θ, x)``)."""

    def batched(self, name: str):
        """$(k(\\theta, x_i, y_i, v))_i$ stacked on the leading axis, by vmap over the examples."""
        k = self.function(name)
        if name == "output":
            return jax.vmap(k, in_axes=(None, 0))
        return jax.vmap(k, in_axes=(None, 0, 0, None))

    def mean(self, name: str, theta, X, y, v=None):
        """$\\frac1n\\sum_i k(\\theta, x_i, y_i, v)$ (jitted per kernel: eager calls compile once)."""
        v = jnp.zeros_like(theta) if v is None else v
        return _jitted_mean(self, name)(theta, X, y, v)

    def grad_and_hvp_of_grad(self, theta, X, y):
        """$(\\nabla L, \\nabla^2 L\\,\\nabla L)$: the two means of the order-2 drift."""
        g = self.mean("grad_loss", theta, X, y)
        return g, self.mean("hvp_loss", theta, X, y, g)

    def latex(self, name: str) -> str:
        """The per-example expression of a kernel in LaTeX (numeric kernels: its definition only)."""
        return KERNELS[name]


@functools.lru_cache(maxsize=1024)
def _jitted_mean(k: AbstractKernels, name: str):
    batched = k.batched(name)
    return jax.jit(lambda theta, X, y, v: jnp.mean(batched(theta, X, y, v), axis=0))


@functools.lru_cache(maxsize=1024)
def _jitted_unit_mean(k: SymbolicKernels, name: str):
    per_example = jax.vmap(k._assemble(name), in_axes=(None, 0, 0, None))
    if name in SCALAR_KERNELS:
        return jax.jit(lambda theta, X, y, v: jnp.mean(per_example(theta, X, y, v), axis=0))
    return jax.jit(lambda theta, X, y, v: k._scatter(jnp.mean(per_example(theta, X, y, v), axis=0)))


def _kernel_table(*fns) -> dict:
    """{name: per-example function} keyed by each function's own name, which must cover KERNELS exactly."""
    table = {f.__name__: f for f in fns}
    if set(table) != set(KERNELS):
        raise AssertionError(f"kernel table mismatch: {sorted(set(table) ^ set(KERNELS))}")
    return table


def _check_name(name: str) -> None:
    if name not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {name!r}")


UNIT_KERNELS = {
    "u": "u",
    "grad_u": r"\nabla u",
    "hvp_u": r"\nabla^2 u\, v",
    "jp_u": r"\nabla^2 u\,\nabla u",
    "diag_hessian_u": r"\operatorname{diag}\nabla^2 u",
    "laplacian_u": r"\Delta u",
    "grad_laplacian_u": r"\nabla\Delta u",
    "grad_quadform_u": r"\nabla(v^T\nabla^2 u\, v)",
}


class SymbolicKernels(AbstractKernels):
    """Kernels derived by sympy and compiled through ``to_jax``.

    sympy differentiates the model's unit template u (q parameters; theory/symbolic.md, SYM-2); the
    per-example kernels of $f = \\sum_j u_j$ are assembled from them in JAX using that f's Hessian is
    block diagonal over units and $\\nabla^2\\ell = \\nabla f\\nabla f^T + r\\nabla^2 f$. Expressions are
    derived lazily and memoised, so each is derived once per model structure.
    """

    def __init__(
        self, model: SymbolicModel, backend: str = DEFAULT_BACKEND, loss: AbstractLoss | None = None
    ):
        self.model, self.backend = model, backend
        self.loss = SquaredLoss() if loss is None else loss
        self.squared = isinstance(self.loss, SquaredLoss)
        self.K = model.n_outputs
        if self.K > 1 and self.loss.label_kind != "class":
            raise ValueError(
                f"loss: a {self.K}-output model needs a K-class loss (e.g. CrossEntropyLoss), "
                f"got {type(self.loss).__name__}"
            )
        self.is_symbolic, self.n_params, self.reason = True, model.n_params, "derived symbolically by sympy"
        U = model.units
        self.units = U
        taken = {s.name for s in (*U.params, *U.inputs, *U.constants)}
        prefix = "delta" if not any(n.startswith("delta_") for n in taken) else "_dir"
        self.v = tuple(sp.Symbol(f"{prefix}_{k}", real=True) for k in range(len(U.params)))
        self.param_index = np.asarray(U.param_index, dtype=np.int32).reshape(U.n_units, len(U.params))
        self.input_index = np.asarray(U.input_index, dtype=np.int32).reshape(U.n_units, len(U.inputs))
        self.constant_values = np.asarray(U.constant_values, np.float64).reshape(U.n_units, len(U.constants))
        # θ-order position → position in the flattened (m × q) unit layout: scatter back as a gather.
        self.inverse = np.argsort(self.param_index.reshape(-1)).astype(np.int32) if self.K == 1 else None
        self.output_of_unit = np.asarray(U.outputs_of_units(), dtype=np.int32)
        self._exprs: dict[str, Any] = {}  # an sp.Expr (scalar unit kernels) or a list of them (vectors)
        self._unit_functions: dict[str, Callable[..., Any]] = {}
        self._functions: dict[str, Callable[..., Any]] = {}
        self.timings: dict[str, float] = {}
        # the neuron fast path assembles the squared loss's residual; other losses use the unit path
        self.linear = _linear_preactivation(U, self.input_index, backend) if self.squared else None
        self._loss_fn = None
        self._k_output_kernels = None

    # -- unit expressions (the only sympy work) ---------------------------------------------------------
    def expr(self, name: str):
        """The sympy expression (scalar) or list (vector) of unit kernel ``name`` (see UNIT_KERNELS)."""
        if name not in UNIT_KERNELS:
            raise ValueError(f"unit kernel must be one of {sorted(UNIT_KERNELS)}, got {name!r}")
        if name not in self._exprs:
            t0 = time.perf_counter()
            self._exprs[name] = self._derivations[name](self)
            self.timings["derive:" + name] = time.perf_counter() - t0
        return self._exprs[name]

    def _dot(self, a, b):
        return sp.Add(*[ai * bi for ai, bi in zip(a, b, strict=True)])

    def _u(self):
        return self.units.expr

    def _grad_u(self):
        return [diff(self.units.expr, t) for t in self.units.params]

    def _hvp_u(self):
        # Factoring vᵀ∇u first (e.g. a φ′(z)·Σ_l x_l v_l for a neuron) keeps each component O(q) instead of
        # an expanded sum of q terms: the common factor is shared by cse across the q derivatives.
        s = sp.factor_terms(self._dot(self.v, self.expr("grad_u")))
        return [diff(s, t) for t in self.units.params]

    def _jp_u(self):
        sub = dict(zip(self.v, self.expr("grad_u"), strict=True))
        return [h.xreplace(sub) for h in self.expr("hvp_u")]

    def _diag_hessian_u(self):
        return [diff(g, t) for g, t in zip(self.expr("grad_u"), self.units.params, strict=True)]

    def _laplacian_u(self):
        return sp.factor_terms(sp.Add(*self.expr("diag_hessian_u")))

    def _grad_laplacian_u(self):
        lap = self.expr("laplacian_u")
        return [diff(lap, t) for t in self.units.params]

    def _grad_quadform_u(self):
        q = sp.factor_terms(self._dot(self.v, self.expr("hvp_u")))
        return [diff(q, t) for t in self.units.params]

    # unit kernel name → its derivation (checked against UNIT_KERNELS below the class)
    _derivations: ClassVar[dict[str, Callable[[SymbolicKernels], object]]] = {
        "u": _u,
        "grad_u": _grad_u,
        "hvp_u": _hvp_u,
        "jp_u": _jp_u,
        "diag_hessian_u": _diag_hessian_u,
        "laplacian_u": _laplacian_u,
        "grad_laplacian_u": _grad_laplacian_u,
        "grad_quadform_u": _grad_quadform_u,
    }

    def unit_function(self, name: str) -> Callable[..., Any]:
        """Unit kernel ``name`` as JAX, vmapped over units: (Φ (m×q), Ξ (m×s), C (m×c), V (m×q)) → (m, …)."""
        if name not in self._unit_functions:
            e = self.expr(name)
            t0 = time.perf_counter()
            U = self.units
            fn = to_jax(e, [U.params, U.inputs, U.constants, self.v], backend=self.backend)
            self._unit_functions[name] = jax.vmap(fn)
            self.timings["codegen:" + name] = time.perf_counter() - t0
        return self._unit_functions[name]

    # -- assembly of f's kernels from the units' (JAX) --------------------------------------------------
    def _gather(self, theta, x, v):
        dtype = jnp.result_type(theta, float)
        phi = theta[self.param_index]
        xi = jnp.asarray(x, dtype)[self.input_index]
        c = jnp.asarray(self.constant_values, dtype)
        return phi, xi, c, v[self.param_index]

    def _scatter(self, per_unit):
        return per_unit.reshape(-1)[self.inverse]

    def function(self, name: str) -> Callable[..., Any]:
        _check_name(name)
        if name not in self._functions:
            k = self._assemble(name)
            if name in SCALAR_KERNELS or self.K > 1:
                self._functions[name] = k
            else:
                self._functions[name] = lambda theta, x, y, v, k=k: self._scatter(k(theta, x, y, v))
        return self._functions[name]

    def mean(self, name: str, theta, X, y, v=None):
        """$\\frac1n\\sum_i k(\\theta, x_i, y_i, v)$, averaged in the units' layout and put in θ's order once
        (the scatter is linear), so XLA reduces over the examples before any reordering."""
        _check_name(name)
        v = jnp.zeros_like(theta) if v is None else v
        if self.linear is not None and name in ("grad_loss", "hvp_loss"):
            return _jitted_linear_mean(self, name)(theta, X, y, v)
        if self.K > 1:
            return _jitted_mean(self, name)(theta, X, y, v)
        return _jitted_unit_mean(self, name)(theta, X, y, v)

    def grad_and_hvp_of_grad(self, theta, X, y):
        if self.linear is None:
            return AbstractKernels.grad_and_hvp_of_grad(self, theta, X, y)
        # One pass: the pre-activations and ũ's derivatives serve both means.
        return _jitted_linear_mean(self, "grad_and_hvp_of_grad")(theta, X, y, jnp.zeros_like(theta))

    def _assemble(self, name: str):
        """Kernel ``name`` of one example; vector kernels in the units' (m × q) layout (K outputs: in θ's
        order, see ``_assemble_k_outputs``)."""
        if self.K > 1:
            return self._assemble_k_outputs()[name]
        out = _OutputKernels(self)
        loss = _SquaredLossKernels(out) if self.squared else _GeneralLossKernels(out)
        return _kernel_table(*out.kernels(), *loss.kernels())[name]

    def loss_derivatives(self):
        """(ℓ, ℓ′, ℓ″, ℓ‴)(f, y) of the loss, differentiated by sympy from ``loss.sympy_expr`` and compiled
        through ``to_jax`` (theory/losses.md, LOSS-6).

        One output: a function of (f, y) returning the four scalars. K outputs: a function of (f (K,),
        h (K,)) returning ℓ, ∂ℓ (K,), ∂²ℓ (K, K), ∂³ℓ (K, K, K), where h is the label one-hot and
        $\\ell(f, h) = \\sum_c h_c\\,\\ell(f, c)$ (exact for a one-hot h), so one program serves every class.
        """
        if self._loss_fn is not None:
            return self._loss_fn
        if self.K == 1:
            f, y = sp.Symbol("f", real=True), sp.Symbol("y", real=True)
            e = self.loss.sympy_expr(f, y)
            d1 = diff(e, f)
            d2 = diff(d1, f)
            d3 = diff(d2, f)
            self._loss_fn = to_jax([e, d1, d2, d3], [f, y], backend=self.backend)
            return self._loss_fn
        K = self.K
        f = tuple(sp.Symbol(f"f_{k}", real=True) for k in range(K))
        h = tuple(sp.Symbol(f"h_{k}", real=True) for k in range(K))
        e = sp.Add(*[h[c] * self.loss.sympy_expr(f, c) for c in range(K)])
        d1 = [diff(e, fk) for fk in f]
        d2 = [[diff(g, fl) for fl in f] for g in d1]
        d3 = [[[diff(g, fm) for fm in f] for g in row] for row in d2]
        flat = [e, *d1, *[g for row in d2 for g in row], *[g for sq in d3 for row in sq for g in row]]
        fn = to_jax(flat, [f, h], backend=self.backend)
        shift = self.loss.shift_invariant

        def derivatives(fv, hv):
            # a shift-invariant loss (cross-entropy: logits) is evaluated at f − max f, so exp cannot overflow
            out = fn(fv - jnp.max(fv) if shift else fv, hv)
            return (
                out[0],
                out[1 : 1 + K],
                out[1 + K : 1 + K + K * K].reshape(K, K),
                out[1 + K + K * K :].reshape(K, K, K),
            )

        self._loss_fn = derivatives
        return self._loss_fn

    def _assemble_k_outputs(self):
        """Every kernel of one example of a K-output model, in θ's order (``_KOutputKernels``, LOSS-7)."""
        if self._k_output_kernels is None:
            self._k_output_kernels = _kernel_table(*_KOutputKernels(self).kernels())
        return self._k_output_kernels

    def latex(self, name: str) -> str:
        """A unit kernel's expression in LaTeX (f = Σ_j u_j assembles the model's kernels from it)."""
        e = self.expr(name)
        body = latex(e) if name in ("u", "laplacian_u") else latex(sp.Matrix(e))
        return rf"{UNIT_KERNELS[name]} = {body}"


if set(SymbolicKernels._derivations) != set(UNIT_KERNELS):
    raise AssertionError(
        f"unit kernel table mismatch: {sorted(set(SymbolicKernels._derivations) ^ set(UNIT_KERNELS))}"
    )


class _OutputKernels:
    """The kernels of f = Σ_j u_j of a one-output model, in the units' (m × q) layout, from the units'
    derivatives (SYM-2): ∇f, ∇²f v and ∇²f∇f unit by unit (f's Hessian is block diagonal over units)."""

    def __init__(self, kernels: SymbolicKernels):
        self.k, self.unit = kernels, kernels.unit_function

    def gather(self, theta, x, v):
        """(Φ, Ξ, C, V): the units' parameters, inputs, constants and direction."""
        return self.k._gather(theta, x, v)

    def kernels(self) -> tuple:
        return self.output, self.grad_output, self.hvp_output, self.jp_output, self.sqnorm_grad_output

    def output(self, theta, x):
        return compiled_output(self.k.model, self.k.backend)(theta, x)

    def grad_output(self, theta, x, y, v):
        return self.unit("grad_u")(*self.gather(theta, x, v))

    def hvp_output(self, theta, x, y, v):
        return self.unit("hvp_u")(*self.gather(theta, x, v))

    def jp_output(self, theta, x, y, v):
        return self.unit("jp_u")(*self.gather(theta, x, v))

    def sqnorm_grad_output(self, theta, x, y, v):
        gf = self.grad_output(theta, x, y, v)
        return jnp.sum(gf * gf)


class _SquaredLossKernels:
    """The loss kernels of ℓ = ½r², r = f − y, from f's: ∇²ℓ = ∇f∇fᵀ + r∇²f (SYM-2)."""

    def __init__(self, out: _OutputKernels):
        self.out, self.unit, self.gather = out, out.unit, out.gather

    def kernels(self) -> tuple:
        return (
            self.loss,
            self.grad_loss,
            self.hvp_loss,
            self.jp_loss,
            self.diag_hessian_loss,
            self.trace_hessian_loss,
            self.grad_trace_hessian_loss,
            self.grad_quadform_loss,
        )

    def residual(self, theta, x, y):
        return self.out.output(theta, x) - y

    def loss(self, theta, x, y, v):
        r = self.residual(theta, x, y)
        return 0.5 * r * r

    def grad_loss(self, theta, x, y, v):
        return self.residual(theta, x, y) * self.out.grad_output(theta, x, y, v)

    def hvp_loss(self, theta, x, y, v):
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        return gf * jnp.sum(gf * g[3]) + self.residual(theta, x, y) * self.unit("hvp_u")(*g)

    def jp_loss(self, theta, x, y, v):
        # ∇²ℓ∇ℓ = r‖∇f‖²∇f + r²∇²f∇f, from ∇²ℓ = ∇f∇fᵀ + r∇²f and ∇ℓ = r∇f.
        g = self.gather(theta, x, v)
        gf, r = self.unit("grad_u")(*g), self.residual(theta, x, y)
        return (r * jnp.sum(gf * gf)) * gf + (r * r) * self.unit("jp_u")(*g)

    def diag_hessian_loss(self, theta, x, y, v):
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        return gf * gf + self.residual(theta, x, y) * self.unit("diag_hessian_u")(*g)

    def trace_hessian_loss(self, theta, x, y, v):
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        return jnp.sum(gf * gf) + self.residual(theta, x, y) * jnp.sum(self.unit("laplacian_u")(*g))

    def grad_trace_hessian_loss(self, theta, x, y, v):
        # tr∇²ℓ = ‖∇f‖² + rΔf, so its gradient is 2∇²f∇f + Δf∇f + r∇Δf.
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        lap = jnp.sum(self.unit("laplacian_u")(*g))
        r = self.residual(theta, x, y)
        return 2 * self.unit("jp_u")(*g) + lap * gf + r * self.unit("grad_laplacian_u")(*g)

    def grad_quadform_loss(self, theta, x, y, v):
        # vᵀ∇²ℓv = (∇fᵀv)² + r vᵀ∇²f v; ∇²f is block diagonal, so vᵀ∇²f v is a sum over units.
        g = self.gather(theta, x, v)
        gf, hv = self.unit("grad_u")(*g), self.unit("hvp_u")(*g)
        gq = self.unit("grad_quadform_u")(*g)
        return 2 * jnp.sum(gf * g[3]) * hv + jnp.sum(g[3] * hv) * gf + self.residual(theta, x, y) * gq


class _GeneralLossKernels:
    """The loss kernels of ℓ(f, y) for a general one-output loss, from ℓ′, ℓ″, ℓ‴ and f's unit derivatives:
    ∇ℓ = ℓ′∇f, ∇²ℓ v = ℓ″∇f(∇fᵀv) + ℓ′∇²f v, and so on (LOSS-6)."""

    def __init__(self, out: _OutputKernels):
        self.out, self.unit, self.gather = out, out.unit, out.gather

    def kernels(self) -> tuple:
        return (
            self.loss,
            self.grad_loss,
            self.hvp_loss,
            self.jp_loss,
            self.diag_hessian_loss,
            self.trace_hessian_loss,
            self.grad_trace_hessian_loss,
            self.grad_quadform_loss,
        )

    def derivs(self, theta, x, y):
        """(ℓ, ℓ′, ℓ″, ℓ‴) at f(θ; x) and y."""
        f = self.out.output(theta, x)
        dt = f.dtype
        return self.out.k.loss_derivatives()(f, jnp.asarray(y, dt))

    def loss(self, theta, x, y, v):
        return self.derivs(theta, x, y)[0]

    def grad_loss(self, theta, x, y, v):
        return self.derivs(theta, x, y)[1] * self.out.grad_output(theta, x, y, v)

    def hvp_loss(self, theta, x, y, v):
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        _, l1, l2, _ = self.derivs(theta, x, y)
        return l2 * gf * jnp.sum(gf * g[3]) + l1 * self.unit("hvp_u")(*g)

    def jp_loss(self, theta, x, y, v):
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        _, l1, l2, _ = self.derivs(theta, x, y)
        return (l1 * l2 * jnp.sum(gf * gf)) * gf + (l1 * l1) * self.unit("jp_u")(*g)

    def diag_hessian_loss(self, theta, x, y, v):
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        _, l1, l2, _ = self.derivs(theta, x, y)
        return l2 * gf * gf + l1 * self.unit("diag_hessian_u")(*g)

    def trace_hessian_loss(self, theta, x, y, v):
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        _, l1, l2, _ = self.derivs(theta, x, y)
        return l2 * jnp.sum(gf * gf) + l1 * jnp.sum(self.unit("laplacian_u")(*g))

    def grad_trace_hessian_loss(self, theta, x, y, v):
        # ∇(ℓ″‖∇f‖² + ℓ′Δf) = ℓ‴‖∇f‖²∇f + 2ℓ″∇²f∇f + ℓ″Δf∇f + ℓ′∇Δf
        g = self.gather(theta, x, v)
        gf = self.unit("grad_u")(*g)
        lap = jnp.sum(self.unit("laplacian_u")(*g))
        _, l1, l2, l3 = self.derivs(theta, x, y)
        return (
            l3 * jnp.sum(gf * gf) * gf
            + 2 * l2 * self.unit("jp_u")(*g)
            + l2 * lap * gf
            + l1 * self.unit("grad_laplacian_u")(*g)
        )

    def grad_quadform_loss(self, theta, x, y, v):
        # ∇(ℓ″(∇fᵀv)² + ℓ′vᵀ∇²fv) = ℓ‴(∇fᵀv)²∇f + 2ℓ″(∇fᵀv)∇²fv + ℓ″(vᵀ∇²fv)∇f + ℓ′∇(vᵀ∇²fv)
        g = self.gather(theta, x, v)
        gf, hv = self.unit("grad_u")(*g), self.unit("hvp_u")(*g)
        s_, q = jnp.sum(gf * g[3]), jnp.sum(g[3] * hv)
        _, l1, l2, l3 = self.derivs(theta, x, y)
        return l3 * s_ * s_ * gf + 2 * l2 * s_ * hv + l2 * q * gf + l1 * self.unit("grad_quadform_u")(*g)


class _KOutputKernels:
    """Every kernel of one example of a K-output model, in θ's order, from the unit derivatives and the
    loss's (LOSS-7). With J = ∇f (K × d), ℓ′ (K), ℓ″ (K × K), ℓ‴ (K × K × K) and ∇²f_k v from the units
    of output k (block diagonal): ∇ℓ = Jᵀℓ′, ∇²ℓ v = Jᵀℓ″Jv + Σ_k ℓ′_k∇²f_k v, and their gradients."""

    def __init__(self, kernels: SymbolicKernels):
        self.k, self.unit = kernels, kernels.unit_function
        self.K, self.d = kernels.K, kernels.n_params
        self.P, self.outs = kernels.param_index, kernels.output_of_unit

    def kernels(self) -> tuple:
        return (
            self.output,
            self.loss,
            self.grad_output,
            self.grad_loss,
            self.hvp_output,
            self.hvp_loss,
            self.jp_output,
            self.jp_loss,
            self.sqnorm_grad_output,
            self.diag_hessian_loss,
            self.trace_hessian_loss,
            self.grad_trace_hessian_loss,
            self.grad_quadform_loss,
        )

    def per_output(self, per_unit):
        """(K, d): row k holds the units of output k, each at its parameters' positions."""
        return jnp.zeros((self.K, self.d), per_unit.dtype).at[self.outs[:, None], self.P].add(per_unit)

    def per_output_sum(self, per_unit):
        """(K,): Σ over the units of output k."""
        return jnp.zeros((self.K,), per_unit.dtype).at[self.outs].add(per_unit)

    def parts(self, theta, x, y, v):
        """(the units' gather, J, (ℓ, ℓ′, ℓ″, ℓ‴)) of one example."""
        g = self.k._gather(theta, x, v)
        f = compiled_output(self.k.model, self.k.backend)(theta, x)
        h = jax.nn.one_hot(y, self.K, dtype=f.dtype)
        return g, self.per_output(self.unit("grad_u")(*g)), self.k.loss_derivatives()(f, h)

    def hess_f_along(self, theta, g, w):
        """(K, d): ∇²f_k w for every output k."""
        return self.per_output(self.unit("hvp_u")(g[0], g[1], g[2], w[self.P]))

    def hvp_along(self, theta, g, J, l1, l2, w):
        return (l2 @ (J @ w)) @ J + l1 @ self.hess_f_along(theta, g, w)

    def output(self, theta, x):
        return compiled_output(self.k.model, self.k.backend)(theta, x)

    def grad_output(self, theta, x, y, v):
        return self.per_output(self.unit("grad_u")(*self.k._gather(theta, x, v))).T  # (d, K)

    def hvp_output(self, theta, x, y, v):
        return self.per_output(self.unit("hvp_u")(*self.k._gather(theta, x, v))).T

    def jp_output(self, theta, x, y, v):
        return jnp.sum(self.per_output(self.unit("jp_u")(*self.k._gather(theta, x, v))), axis=0)

    def sqnorm_grad_output(self, theta, x, y, v):
        J = self.per_output(self.unit("grad_u")(*self.k._gather(theta, x, v)))
        return jnp.sum(J * J)

    def loss(self, theta, x, y, v):
        return self.parts(theta, x, y, v)[2][0]

    def grad_loss(self, theta, x, y, v):
        _, J, (_, l1, _, _) = self.parts(theta, x, y, v)
        return l1 @ J

    def hvp_loss(self, theta, x, y, v):
        g, J, (_, l1, l2, _) = self.parts(theta, x, y, v)
        return self.hvp_along(theta, g, J, l1, l2, v)

    def jp_loss(self, theta, x, y, v):
        g, J, (_, l1, l2, _) = self.parts(theta, x, y, v)
        return self.hvp_along(theta, g, J, l1, l2, l1 @ J)

    def diag_hessian_loss(self, theta, x, y, v):
        g, J, (_, l1, l2, _) = self.parts(theta, x, y, v)
        return jnp.einsum("kd,kl,ld->d", J, l2, J) + l1 @ self.per_output(self.unit("diag_hessian_u")(*g))

    def trace_hessian_loss(self, theta, x, y, v):
        # tr∇²ℓ = Σ_kl ℓ″_kl J_k·J_l + Σ_k ℓ′_k Δf_k
        g, J, (_, l1, l2, _) = self.parts(theta, x, y, v)
        return jnp.sum(l2 * (J @ J.T)) + l1 @ self.per_output_sum(self.unit("laplacian_u")(*g))

    def grad_trace_hessian_loss(self, theta, x, y, v):
        # ∇ = Σ ℓ‴_klm (J_k·J_l) J_m + 2Σ ℓ″_kl ∇²f_k J_l + Σ ℓ″_kl Δf_k J_l + Σ ℓ′_k ∇Δf_k
        g, J, (_, l1, l2, l3) = self.parts(theta, x, y, v)
        lap = self.per_output_sum(self.unit("laplacian_u")(*g))
        HJ = jax.vmap(lambda w: self.hess_f_along(theta, g, w))(J)  # HJ[l, k] = ∇²f_k J_l
        return (
            jnp.einsum("klm,kl,md->d", l3, J @ J.T, J)
            + 2 * jnp.einsum("kl,lkd->d", l2, HJ)
            + (lap @ l2) @ J
            + l1 @ self.per_output(self.unit("grad_laplacian_u")(*g))
        )

    def grad_quadform_loss(self, theta, x, y, v):
        # q = sᵀℓ″s + Σ_k ℓ′_k Q_k with s = Jv, Q_k = vᵀ∇²f_k v:
        # ∇q = Σ ℓ‴_klm s_k s_l J_m + 2Σ ℓ″_kl s_l ∇²f_k v + Σ ℓ″_kl Q_k J_l + Σ ℓ′_k ∇Q_k
        g, J, (_, l1, l2, l3) = self.parts(theta, x, y, v)
        s_ = J @ v
        hv = self.unit("hvp_u")(*g)
        Q = self.per_output_sum(jnp.sum(g[3] * hv, axis=1))
        return (
            jnp.einsum("klm,k,l,md->d", l3, s_, s_, J)
            + 2 * (l2 @ s_) @ self.per_output(hv)
            + (Q @ l2) @ J
            + l1 @ self.per_output(self.unit("grad_quadform_u")(*g))
        )


class _Linear:
    """A unit u(φ; ξ) = ũ(Σ_k w_k ξ_k, ρ): parameters w enter only through one pre-activation Z = wᵀξ."""

    def __init__(self, Z, lin_pos, rest_pos, rest, exprs, fn):
        self.Z, self.lin_pos, self.rest_pos, self.rest, self.exprs, self.fn = (
            Z,
            lin_pos,
            rest_pos,
            rest,
            exprs,
            fn,
        )


def _linear_preactivation(U, input_index, backend: str = DEFAULT_BACKEND) -> _Linear | None:
    """Detect ũ(Z, ρ) with Z = Σ_k w_k ξ_k over all of a unit's inputs, shared by all units (a neuron):
    then sums over the data of ∂ũ/∂Z · x become matrix products (theory/symbolic.md, SYM-2)."""
    if U.n_units == 0 or len(U.inputs) == 0 or np.any(input_index != input_index[:1]):
        return None
    params = list(U.params)
    for A in sorted(U.expr.atoms(sp.Add), key=sp.default_sort_key):
        terms = A.args
        if len(terms) != len(U.inputs):
            continue
        w_of = {}
        for t in terms:
            fac = t.as_ordered_factors()
            if len(fac) != 2:
                break
            w = next((q for q in fac if q in params), None)
            xi = next((q for q in fac if q in U.inputs), None)
            if w is None or xi is None or xi in w_of:
                break
            w_of[xi] = w
        else:
            Z = sp.Symbol("_Z", real=True)
            reduced = U.expr.xreplace({A: Z})
            if reduced.free_symbols & set(w_of.values()) or reduced.free_symbols & set(U.inputs):
                continue
            lin_pos = [params.index(w_of[xi]) for xi in U.inputs]
            rest_pos = [k for k in range(len(params)) if k not in lin_pos]
            rest = [params[k] for k in rest_pos]
            uZ = diff(reduced, Z)
            exprs = [reduced, uZ, diff(uZ, Z)]
            exprs += [diff(reduced, r) for r in rest] + [diff(uZ, r) for r in rest]
            exprs += [diff(diff(reduced, r1), r2) for r1 in rest for r2 in rest]
            # batched: ũ's derivatives are evaluated once on (n, m) arrays, fused with the matmuls around.
            fn = to_jax(exprs, [Z, tuple(rest), tuple(U.constants)], backend=backend, batched=True)
            return _Linear(Z, np.asarray(lin_pos), np.asarray(rest_pos, dtype=np.int64), rest, exprs, fn)
    return None


def _block(idx: np.ndarray) -> tuple[int, bool] | None:
    """(start, transposed) when idx lists start, start + 1, … in row-major order (transposed = False) or
    column-major order (True), else None."""
    start = int(idx.flat[0])
    run = start + np.arange(idx.size)
    if np.array_equal(idx.reshape(-1), run):
        return start, False
    if idx.ndim == 2 and np.array_equal(idx.T.reshape(-1), run):
        return start, True
    return None


def _take(v, idx: np.ndarray):
    """v[idx] for a static index array: a slice (and reshape) where idx is a contiguous or strided block,
    since XLA's CPU gather with constant indices is not simplified to one (it costs a pass per call)."""
    block = _block(idx)
    if block is not None:
        start, transposed = block
        piece = jax.lax.slice(v, (start,), (start + idx.size,))
        return piece.reshape(idx.shape[::-1]).T if transposed else piece.reshape(idx.shape)
    if idx.ndim == 1:
        step = int(idx[1] - idx[0])
        if step > 0 and np.array_equal(idx, idx[0] + step * np.arange(idx.size)):
            return jax.lax.slice(v, (int(idx[0]),), (int(idx[-1]) + 1,), (step,))
    return v[idx]


def _put(pieces, positions):
    """The vector t with t[positions[k]] = pieces[k] (the positions partition t's indices): a
    concatenation where every piece is a contiguous block, one gather otherwise."""
    maybe_blocks = [_block(idx) for idx in positions]
    blocks = [b for b in maybe_blocks if b is not None]
    if len(blocks) == len(maybe_blocks):
        order = sorted(range(len(pieces)), key=lambda k: blocks[k][0])
        return jnp.concatenate(
            [pieces[k].T.reshape(-1) if blocks[k][1] else pieces[k].reshape(-1) for k in order]
        )
    flat = jnp.concatenate([p.reshape(-1) for p in pieces])
    return flat[np.argsort(np.concatenate([i.reshape(-1) for i in positions]))]


@functools.lru_cache(maxsize=256)
def _jitted_linear_mean(k: SymbolicKernels, name: str):
    """Mean over the data of ∇ℓ or ∇²ℓ v for a neuron model, with the sums over examples as matmuls:
    Σ_i c_ij x_i for the w-block, from the symbolic scalar derivatives of ũ(Z, ρ) (SYM-2).

    Everything stays in blocks (W-block (m × s), one (m,) column per other parameter ρ_r): θ is read by
    slices, ũ's derivatives are one batched program on (n, m) arrays, and the result is written back by
    concatenation, so XLA fuses the elementwise work with the matmuls as it does for autodiff.
    """
    L = k.linear
    if L is None:
        raise AssertionError("the linear-mean path needs a neuron model (SymbolicKernels.linear set)")
    R = len(L.rest)
    w_idx = k.param_index[:, L.lin_pos]  # (m, s) positions in θ of the units' weights
    r_idx = [k.param_index[:, j] for j in L.rest_pos]  # R × (m,)
    positions = [w_idx, *r_idx]
    x_idx = k.input_index[0]

    def blocks(vec):
        return _take(vec, w_idx), [_take(vec, i) for i in r_idx]

    def mean(theta, X, y, v):
        dtype = jnp.result_type(theta, float)
        W, rho = blocks(theta)
        X = jnp.asarray(X, dtype)
        Xs = X if np.array_equal(x_idx, np.arange(X.shape[1])) else X[:, x_idx]
        y = jnp.asarray(y, dtype)
        n = X.shape[0]
        Z = Xs @ W.T  # (n, m) pre-activations
        rho_arg = jnp.stack(rho)[:, None, :] if R else jnp.zeros((0, 1, W.shape[0]), dtype)
        c_arg = jnp.asarray(k.constant_values.T[:, None, :], dtype)  # (C, 1, m)
        out = L.fn(Z, rho_arg, c_arg)  # (K, n, m): ũ, ũ_Z, ũ_ZZ, ũ_ρ, ũ_Zρ, ũ_ρρ
        u, uZ, uZZ = out[0], out[1], out[2]
        ur = [out[3 + j] for j in range(R)]
        uZr = [out[3 + R + j] for j in range(R)]
        urr = [[out[3 + 2 * R + R * j + i] for i in range(R)] for j in range(R)]
        # Sums over the short unit axis and over examples are matrix-vector products: XLA's CPU dot
        # kernels do them several times faster than a reduce over a minor axis of length m.
        ones = jnp.ones((W.shape[0],), dtype)
        res = u @ ones - y  # (n,) residuals
        r = res[:, None]

        def hvp(Vw, Vr):
            # ∇²ℓ v = ∇f(∇fᵀv) + r∇²f v, ∇f's w-block ũ_Z x: S_ij = x_iᵀ v_{w_j}, t_i = ∇f_iᵀ v.
            S = Xs @ Vw.T
            t = (uZ * S) @ ones + sum((ur[j] @ Vr[j] for j in range(R)), 0.0)
            Vr1 = [vr[None, :] for vr in Vr]
            Kw = uZ * t[:, None] + r * (uZZ * S + sum((uZr[j] * Vr1[j] for j in range(R)), 0.0))
            Hw = (Kw.T @ Xs) / n  # Σ_i K_ij x_i: a matmul
            Hr = [
                (t @ ur[j] + res @ (uZr[j] * S + sum((urr[j][i] * Vr1[i] for i in range(R)), 0.0))) / n
                for j in range(R)
            ]
            return Hw, Hr

        if name == "hvp_loss":
            Gw, Gr = hvp(*blocks(v))
            return _put([Gw, *Gr], positions)
        Gw, Gr = ((r * uZ).T @ Xs) / n, [(res @ K) / n for K in ur]
        g = _put([Gw, *Gr], positions)
        if name == "grad_loss":
            return g
        Hw, Hr = hvp(Gw, Gr)
        return g, _put([Hw, *Hr], positions)

    return jax.jit(mean)


class NumericKernels(AbstractKernels):
    """The same kernels by JAX autodiff of a numeric model's ``output``: the fallback where symbolic
    derivation does not scale, reported as numeric (``is_symbolic = False``)."""

    def __init__(
        self, model: AbstractModel, reason: str = "numeric autodiff", loss: AbstractLoss | None = None
    ):
        self.model, self.is_symbolic, self.n_params, self.reason = model, False, model.n_params, reason
        f = model.output
        loss_fn = SquaredLoss() if loss is None else loss
        self.loss = loss_fn

        def example_loss(th, x, y, v):
            return loss_fn(f(th, x), y)

        # K outputs: ∇f is the (d, K) Jacobian; jp_output and ‖∇f‖² then sum over the outputs
        grad_f = jax.grad(f) if model.n_outputs == 1 else lambda th, x: jax.jacrev(f)(th, x).T
        grad_loss = jax.grad(example_loss)

        def hvp(fun):
            return lambda th, x, y, v: jax.jvp(lambda t: fun(t, x, y, v), (th,), (v,))[1]

        def gf(th, x, y, v):
            return grad_f(th, x)

        def hvp_output(th, x, y, v):
            return hvp(gf)(th, x, y, v)

        def diag_hessian_loss(th, x, y, v):
            return jnp.diagonal(jax.hessian(example_loss)(th, x, y, v))

        def trace_hessian_loss(th, x, y, v):
            return jnp.sum(diag_hessian_loss(th, x, y, v))

        def quadform(th, x, y, v):
            return jnp.dot(v, hvp(grad_loss)(th, x, y, v))

        self._functions = {
            "output": f,
            "loss": example_loss,
            "grad_output": gf,
            "grad_loss": grad_loss,
            "hvp_output": hvp_output,
            "hvp_loss": hvp(grad_loss),
            "jp_output": lambda th, x, y, v: jax.grad(lambda t: 0.5 * jnp.sum(grad_f(t, x) ** 2))(th),
            "jp_loss": lambda th, x, y, v: hvp(grad_loss)(th, x, y, grad_loss(th, x, y, v)),
            "sqnorm_grad_output": lambda th, x, y, v: jnp.sum(grad_f(th, x) ** 2),
            "diag_hessian_loss": diag_hessian_loss,
            "trace_hessian_loss": trace_hessian_loss,
            "grad_trace_hessian_loss": jax.grad(trace_hessian_loss),
            "grad_quadform_loss": jax.grad(quadform),
        }

    def function(self, name: str) -> Callable[..., Any]:
        _check_name(name)
        return self._functions[name]


# sympy differentiates the unit template u, so its cost grows with u's parameter count q (q = p + 1 for a
# two-layer unit). Measured (scripts/bench_symbolic.py; theory/symbolic.md, SYM-5): q = 21 derives, generates
# and compiles in ~35 s, q = 51 in ~280 s, most of it XLA compiling the scalar program. Beyond this q,
# "auto" uses autodiff kernels, reported as numeric.
MAX_SYMBOLIC_PARAMS = 32


@functools.lru_cache(maxsize=64)
def _symbolic_kernels(
    model: SymbolicModel, backend: str, loss: AbstractLoss | None = None
) -> SymbolicKernels:
    return SymbolicKernels(model, backend, loss)


@functools.lru_cache(maxsize=64)
def _numeric_kernels(model: AbstractModel, reason: str, loss: AbstractLoss | None = None) -> NumericKernels:
    return NumericKernels(model, reason, loss)


def kernels(
    model, symbolic: bool | str = "auto", backend: str = DEFAULT_BACKEND, loss: AbstractLoss | None = None
) -> AbstractKernels:
    """The (cached) per-example kernels of ``model``.

    Args:
        model: a numeric model, an ExpressionModel or a SymbolicModel.
        symbolic: True (always sympy), False (always autodiff) or "auto": sympy up to
            ``MAX_SYMBOLIC_PARAMS`` parameters per unit template, autodiff beyond, with the reason recorded.
        backend: the ``to_jax`` backend.
        loss: the per-example loss (default squared); sympy differentiates ℓ∘f (LOSS-6).
    """
    if symbolic not in (True, False, "auto"):
        raise ValueError(f"symbolic must be True, False or 'auto', got {symbolic!r}")
    if loss is not None and not isinstance(loss, AbstractLoss):
        raise ValueError(f"loss must be an sgdsde loss, got {type(loss).__name__}")
    loss = None if isinstance(loss, SquaredLoss) else loss  # one cache entry for the default
    if symbolic is False and isinstance(model, AbstractModel):
        # autodiff of the numeric model: no symbolic form needed (a model may have none)
        if loss is not None:
            loss.check_outputs(model.n_outputs)
        return _numeric_kernels(model, "numeric autodiff (symbolic=False)", loss)
    sm = symbolic_model(model)
    if loss is not None:
        loss.check_outputs(sm.n_outputs)  # e.g. cross-entropy on a one-output model: refused by name
    numeric = model if isinstance(model, AbstractModel) else ExpressionModel(sm)
    if symbolic is False:
        return _numeric_kernels(numeric, "numeric autodiff (symbolic=False)", loss)
    q = len(sm.units.params)
    if symbolic == "auto" and q > MAX_SYMBOLIC_PARAMS:
        return _numeric_kernels(
            numeric,
            f"numeric autodiff, not symbolic: the unit template has {q} parameters > MAX_SYMBOLIC_PARAMS = "
            f"{MAX_SYMBOLIC_PARAMS}, beyond which symbolic derivation and compilation stop scaling",
            loss,
        )
    return _symbolic_kernels(sm, backend, loss)
