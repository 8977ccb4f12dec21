"""The model contract: an output f(θ; x) (a scalar, or K outputs) of a flat parameter vector θ ∈ R^d and one
input x."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._layout import FLAT, AbstractLayout
from .units import Units


class AbstractModel(eqx.Module):
    """A model $f(\\theta; x)$ with flat parameters θ ∈ R^d, inputs x ∈ R^p and a scalar output (or K outputs,
    ``n_outputs`` > 1: logits for a K-class loss).

    Subclasses give ``n_params``, ``input_dim``, ``output`` and ``param_names``; ``outputs`` (all
    examples) and ``output_gradients`` default to vmap / autodiff of ``output``; ``sympy_units`` is the
    model's symbolic form, for ``sgdsde.symbolic`` (none by default: autodiff is the back end).
    """

    @property
    @abc.abstractmethod
    def n_params(self) -> int:
        """d, the length of θ."""

    @property
    @abc.abstractmethod
    def input_dim(self) -> int:
        """p, the length of one input x."""

    @property
    def n_outputs(self) -> int:
        """K, the number of outputs (1: a scalar f)."""
        return 1

    @abc.abstractmethod
    def output(self, theta: Float[Array, " d"], x: Float[Array, " p"]) -> Float[Array, ""]:
        """$f(\\theta; x)$ for one example."""

    @abc.abstractmethod
    def param_names(self) -> list[str]:
        """Readable names of θ's entries, in the flattened order (the symbolic layer uses them)."""

    def outputs(self, theta: Float[Array, " d"], X: Float[Array, "n p"]) -> Float[Array, " n"]:
        """$(f(\\theta; x_i))_i$ for every row of X."""
        return jax.vmap(self.output, in_axes=(None, 0))(theta, X)

    def output_gradients(self, theta: Float[Array, " d"], X: Float[Array, "n p"]) -> Float[Array, "d n"]:
        """The gradient matrix $J^T = [\\nabla_\\theta f(\\theta; x_i)]_i$ (d × n; d × n × K for K outputs)."""
        if self.n_outputs > 1:
            jac = jax.vmap(jax.jacrev(self.output), in_axes=(None, 0))(theta, X)  # (n, K, d)
            return jnp.transpose(jac, (2, 0, 1))
        return jax.vmap(jax.grad(self.output), in_axes=(None, 0), out_axes=1)(theta, X)

    def check_data(self, X: Float[Array, "n p"]) -> None:
        """Raise ValueError if the model cannot take X's rows (a ``FunctionModel`` checks its function on them);
        the Problem calls it once X is a valid (n, p) array. Default: nothing more to check."""

    def layout(self) -> AbstractLayout:
        """How SGD may carry an ensemble's θ between steps (``FLAT``, the default: θ itself; FMOD-5)."""
        return FLAT

    def init(self, key: Array | None = None) -> Float[Array, " d"]:
        """A default starting point θ₀ (deterministic unless the model documents otherwise)."""
        return jnp.zeros(self.n_params)

    def sympy_units(self) -> Units:
        """f(θ; x) as sympy for the symbolic layer: a unit template u summed over parameter blocks,
        $f = \\sum_j u(\\theta_{I_j}; x_{J_j}, c_j)$ (``Units``; theory/symbolic.md, SYM-1).

        The template's symbols are its own; ``sgdsde.symbolic.symbolic_model`` substitutes θ's symbols, named
        and ordered by ``param_names()``, and inputs $x_0, \\dots, x_{p-1}$. A model imports sympy inside this
        method only, so the numeric core loads without it. The default says the model has none.
        """
        raise ValueError(
            f"model {type(self).__name__} has no symbolic form (it defines no sympy_units); use the autodiff "
            "back end: Problem's own derivatives (sd.SME(problem, noise)) or derive_sme(..., symbolic=False), "
            "or write its output as sgdsde.symbolic.SymbolicModel(expr, params, inputs)"
        )
