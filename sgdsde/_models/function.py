"""Any JAX model as an sgdsde model: $f(\\theta; x) = \\mathrm{apply}(\\mathrm{unravel}(\\theta), x)$ for a function
``apply(params, x)`` of a parameter pytree (an equinox module's arrays, a flax-style dict, any pytree of float
arrays), raveled once into the flat θ ∈ R^d the rest of sgdsde works on (theory/function-models.md, FMOD-1)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._layout import AbstractLayout
from .._validation import check_int_range
from .base import AbstractModel


class _Template:
    """The parameter pytree's structure and its values θ₀, raveled: a hashable constant (a static field of
    ``FunctionModel``, so the template never becomes a traced leaf), equal by structure and by a sha256 of θ₀;
    its repr is short (a configuration record names it by digest, not by its d numbers)."""

    def __init__(
        self, treedef, paths: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], flat: np.ndarray
    ):
        self.treedef, self.paths, self.shapes = treedef, paths, shapes
        self.flat = flat
        self.flat.setflags(write=False)
        h = hashlib.sha256(f"{flat.dtype.str}{flat.shape}{treedef}{shapes}".encode())
        h.update(np.ascontiguousarray(flat).tobytes())
        self.digest = h.hexdigest()[:16]

    def __hash__(self) -> int:
        return hash((self.treedef, self.shapes, self.digest))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, _Template)
            and self.treedef == other.treedef
            and self.shapes == other.shapes
            and self.digest == other.digest
        )

    def __repr__(self) -> str:
        return (
            f"params(d={self.flat.size}, leaves={len(self.shapes)}, {self.flat.dtype}, sha256={self.digest})"
        )


class _ModuleApply:
    """``apply`` of an equinox module: its arrays (``eqx.partition`` by ``is_inexact_array``) are the params, the
    rest is kept here; ``apply(params, x) = eqx.combine(params, rest)(x)``."""

    def __init__(self, rest):
        self.rest = rest

    def __call__(self, params, x):
        return eqx.combine(params, self.rest)(x)

    def __repr__(self) -> str:
        return f"module_apply({type(self.rest).__name__})"


def _leaf_error(path: str, leaf) -> str | None:
    """Why ``leaf`` cannot be a trained parameter (None if it can: a real floating array)."""
    if isinstance(leaf, (str, bytes)):
        return f"a string {leaf!r:.40}"
    try:
        arr = np.asarray(leaf)
    except (TypeError, ValueError):
        return f"a {type(leaf).__name__}"
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        return f"dtype {arr.dtype} (shape {arr.shape})"
    if arr.size == 0:
        return "an empty array"
    return None


class FunctionModel(AbstractModel):
    """A model given as a JAX function of a parameter pytree: $f(\\theta; x) = \\mathrm{apply}(\\mathrm{unravel}(\\theta), x)$.

    ``apply(params, x)`` takes the pytree ``params`` (an equinox module's arrays, a flax-style dict, any pytree
    of real floating arrays) and ONE input x of shape (p,) = (``input_dim``,), and returns a scalar (one output;
    a shape-(1,) result counts as a scalar) or a (K,) vector, K ≥ 2 (``n_outputs`` = K: logits for
    ``CrossEntropyLoss``). A CNN reshapes x inside ``apply``. The leaves are raveled once, in
    ``jax.tree.leaves`` order, each row-major, into θ ∈ R^d (FMOD-1); ``init()`` is the raveled ``params``,
    ``unravel(θ)`` gives θ (or an ensemble (N, d), or any (…, d)) back as the pytree. An equinox module
    enters by ``FunctionModel.from_module(module)``.

    ``apply`` is a static part of the model (a jitted problem compiles once per function); the template's
    values are a constant known by their sha256. A run's configuration records the model as that digest and a
    digest of ``apply``'s jaxpr at the template (``apply_digest``), so a checkpoint of one function is refused
    for another even with equal params.

    Cost at size: SGD's stochastic gradients and the SDE's diffusion product A(θ)w are one vector–Jacobian
    product over the rows (no d × n Jacobian, no d × d matrix; theory/function-models.md, FMOD-2), and the
    stability check takes λ_max by power iteration on Hessian-vector products above
    ``MAX_PARAMS_FOR_STABILITY_CHECK`` = 512 parameters (FMOD-4): memory O(N·d) for a block of N paths plus the
    activations of one VJP (FMOD-3). Dense forms (``covariance_factor``, ``output_gradients``, ``hessian``,
    Stratonovich solvers' corrections) still form d × n or d × d arrays when called.

    Args:
        apply: ``apply(params, x)`` → scalar or (K,).
        params: the initial parameter pytree θ₀ (real floating leaves, at least one entry).
        input_dim: p, the length of one input x (the Problem's X is (n, p)).
    """

    apply: Callable = eqx.field(static=True)
    input_dim_: int = eqx.field(static=True)
    template: _Template = eqx.field(static=True)
    n_outputs_: int = eqx.field(static=True)
    scalar: bool = eqx.field(static=True)
    apply_digest: str = eqx.field(static=True)

    def __init__(self, apply: Callable, params: PyTree, input_dim: int):
        if not callable(apply):
            raise ValueError(f"apply must be a callable apply(params, x), got {type(apply).__name__}")
        p = check_int_range("input_dim", input_dim, 1)
        template = _template(params)
        spec = _unravel_spec(template, jnp.result_type(template.flat.dtype))
        x = jax.ShapeDtypeStruct((p,), spec[0].dtype if spec else jnp.result_type(float))
        params_spec = jax.tree.unflatten(template.treedef, spec)
        try:
            closed = jax.make_jaxpr(apply)(params_spec, x)
            out = jax.eval_shape(apply, params_spec, x)
        except Exception as e:  # the user's function: any error it raises on these shapes
            raise ValueError(
                f"apply(params, x) failed on the given params and one input x of shape ({p},) (input_dim={p}): "
                f"{type(e).__name__}: {e}"
            ) from e
        if not isinstance(out, jax.ShapeDtypeStruct) or not jnp.issubdtype(out.dtype, jnp.floating):
            raise ValueError(f"apply must return one real floating array (a scalar or (K,)), got {out}")
        if out.shape in ((), (1,)):
            K, scalar = 1, True
        elif len(out.shape) == 1:
            K, scalar = out.shape[0], False
        else:
            raise ValueError(
                f"apply must return a scalar (one output) or a (K,) vector (K outputs) for one input x of shape "
                f"({p},), got shape {out.shape}"
            )
        h = hashlib.sha256(str(closed.jaxpr).encode())
        for c in closed.consts:
            h.update(np.ascontiguousarray(np.asarray(c)).tobytes())
        self.apply, self.input_dim_, self.template = apply, p, template
        self.n_outputs_, self.scalar, self.apply_digest = K, scalar, h.hexdigest()[:16]

    @classmethod
    def from_module(cls, module: eqx.Module, input_dim: int | None = None) -> FunctionModel:
        """The model of a callable equinox module ``module(x)``: its inexact arrays are θ, the rest is fixed;
        ``unravel(θ)`` gives a module back. ``input_dim`` defaults to ``module.in_size`` (eqx.nn.MLP, Linear)."""
        if not isinstance(module, eqx.Module) or not callable(module):
            raise ValueError(f"module must be a callable equinox Module, got {type(module).__name__}")
        if input_dim is None:
            input_dim = getattr(module, "in_size", None)
            if not isinstance(input_dim, int) or isinstance(input_dim, bool):
                raise ValueError(
                    f"input_dim must be given for a {type(module).__name__} (it has no integer in_size)"
                )
        params, rest = eqx.partition(module, eqx.is_inexact_array)
        return cls(_ModuleApply(rest), params, input_dim)

    @property
    def n_params(self) -> int:
        return int(self.template.flat.size)

    @property
    def input_dim(self) -> int:
        return self.input_dim_

    @property
    def n_outputs(self) -> int:
        return self.n_outputs_

    def output(self, theta, x):
        return self._apply(self._unravel_params(theta), x)

    def _apply(self, params, x):
        out = self.apply(params, x)
        return out.reshape(()) if self.scalar else out

    def layout(self) -> ParamsLayout:
        """SGD carries an ensemble's θ as the params pytree, each leaf stacked over the paths (FMOD-5)."""
        return ParamsLayout(self)

    def init(self, key=None) -> Float[Array, " d"]:
        """θ₀: the given params, raveled (``key`` is not used)."""
        return jnp.asarray(self.template.flat)

    def _unravel_params(self, theta):
        t = self.template
        leaves, start = [], 0
        for shape in t.shapes:
            size = math.prod(shape)
            leaves.append(theta[..., start : start + size].reshape(theta.shape[:-1] + shape))
            start += size
        return jax.tree.unflatten(t.treedef, leaves)

    def unravel(self, theta) -> PyTree:
        """θ (d,) — or any (…, d), an ensemble (N, d) — as the user's pytree, each leaf with the leading axes
        of θ (a module for ``from_module``). Inverse of the raveling: ``unravel(init())`` is the given params."""
        theta = jnp.asarray(theta)
        if theta.ndim == 0 or theta.shape[-1] != self.n_params:
            raise ValueError(
                f"theta must have last dimension {self.n_params} (the model's d), got {theta.shape}"
            )
        params = self._unravel_params(theta)
        if isinstance(self.apply, _ModuleApply):
            return eqx.combine(params, self.apply.rest)
        return params

    def param_names(self) -> list[str]:
        """``path[i,j]`` for each entry of each leaf, in θ's order (``layers[0].weight[3,2]``); made on call
        (O(d) strings)."""
        names: list[str] = []
        for path, shape in zip(self.template.paths, self.template.shapes, strict=True):
            if shape == ():
                names.append(path)
            else:
                names.extend(f"{path}[{','.join(map(str, i))}]" for i in np.ndindex(*shape))
        return names

    def check_data(self, X) -> None:
        """Raise ValueError naming X if ``apply`` cannot take X's rows (dtype or shape), or naming params if the
        outputs at θ₀ are not finite on X."""
        theta = jnp.asarray(self.template.flat, X.dtype)
        try:
            jax.eval_shape(self.outputs, theta, X)
        except Exception as e:  # the user's function on X's dtype and shape
            raise ValueError(
                f"X: apply(params, x) failed on the rows of X (shape {X.shape}, dtype {X.dtype}; the model's "
                f"input_dim is {self.input_dim_}): {type(e).__name__}: {e}"
            ) from e
        out = np.asarray(_outputs(self, theta, X))
        if not np.all(np.isfinite(out)):
            rows = int(np.sum(~np.isfinite(out.reshape(out.shape[0], -1)).all(axis=1)))
            raise ValueError(
                f"params: the model's outputs at theta0 (the given params) are not finite on {rows} of the "
                f"{out.shape[0]} rows of X"
            )


class ParamsLayout(AbstractLayout):
    """θ as the model's params pytree, each leaf with θ's leading axes: (…, d) ↔ leaves (…, *shape). SGD carries
    an ensemble this way, so the step's products read each leaf in place where slices of a row-major (N, d)
    θ would be copied out before every product, and the stochastic gradient comes out leaf by leaf (FMOD-5)."""

    model: FunctionModel

    def pack(self, theta):
        return self.model._unravel_params(theta)

    def unpack(self, params):
        leaves = jax.tree.leaves(params)
        shapes = self.model.template.shapes
        lead = leaves[0].shape[: leaves[0].ndim - len(shapes[0])]
        flat = [leaf.reshape(lead + (math.prod(s),)) for leaf, s in zip(leaves, shapes, strict=True)]
        # materialized, as the flat carry is: XLA would otherwise rewrite a reduction of the concatenation (a
        # record's ‖θ‖², a moment's mean) as a sum of per-leaf reductions, another rounding
        return jax.lax.optimization_barrier(flat[0] if len(flat) == 1 else jnp.concatenate(flat, axis=-1))

    def problem(self, problem):
        return eqx.tree_at(lambda p: p.model, problem, _ParamsModel(self.model))


class _ParamsModel(AbstractModel):
    """A ``FunctionModel`` whose θ is the params pytree itself: f(P; x) = apply(P, x). Only SGD's stochastic
    gradients see it (``ParamsLayout.problem``): the gradient through its outputs is the params pytree's."""

    model: FunctionModel

    @property
    def n_params(self) -> int:
        return self.model.n_params

    @property
    def input_dim(self) -> int:
        return self.model.input_dim

    @property
    def n_outputs(self) -> int:
        return self.model.n_outputs

    def output(self, theta, x):
        return self.model._apply(theta, x)

    def param_names(self) -> list[str]:
        return self.model.param_names()


@eqx.filter_jit
def _outputs(model, theta, X):
    return model.outputs(theta, X)


def _template(params) -> _Template:
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves_with_paths:
        raise ValueError("params must hold at least one real floating array, got an empty pytree")
    paths, arrays = [], []
    for path, leaf in leaves_with_paths:
        name = jax.tree_util.keystr(path).lstrip(".") or "params"
        why = _leaf_error(name, leaf)
        if why is not None:
            raise ValueError(f"params: every leaf must be a real floating array, but {name} is {why}")
        paths.append(name)
        arrays.append(np.asarray(leaf))
    dtype = np.result_type(*arrays)
    flat = np.concatenate([a.astype(dtype).ravel() for a in arrays])
    if not np.all(np.isfinite(flat)):
        raise ValueError("params must be finite")
    return _Template(treedef, tuple(paths), tuple(a.shape for a in arrays), flat)


def _unravel_spec(template: _Template, dtype) -> list[Any]:
    return [jax.ShapeDtypeStruct(s, dtype) for s in template.shapes]
