"""The symbolic layer as a derivative back end of a Problem, and SGD's SME derived with it.

$d\\theta = b(\\theta)\\,dt + \\sqrt{\\eta}\\,A(\\theta)\\,dW_t$ (theory/sme.md): the drift, the diffusion factor
and the Itô→Stratonovich correction are the noise model's own formulas (``sgdsde.SME``); here the per-example
derivatives they are made of come from sympy (``SymbolicDerivatives``), so the generated SME and the numeric
one are the same object with a different back end, held to each other by the tests.
"""

from __future__ import annotations

import jax.numpy as jnp

from .._derivatives import AbstractDerivatives
from .._optimizers import check_optimizer
from .._problem import Problem
from .._sde import SME, AbstractSDE
from .._sde.optimizer_sdes import optimizer_sde
from ._codegen import BACKENDS, DEFAULT_BACKEND
from ._kernels import AbstractKernels, kernels
from ._latex import model_latex


class SymbolicDerivatives(AbstractDerivatives):
    """A Problem's derivatives from the model's per-example kernels: sympy up to the size limit (else
    autodiff kernels, with ``reason`` saying why), compiled through ``to_jax``; sums over the data are
    JAX means (theory/symbolic.md, SYM-2; theory/sme.md, SME-6).

    Args:
        model: an sgdsde model, an ExpressionModel or a SymbolicModel.
        symbolic: True, False or "auto" (sympy up to ``MAX_SYMBOLIC_PARAMS`` per unit template).
        backend: the ``to_jax`` code generator.
        loss: the problem's per-example loss (default squared): sympy differentiates ℓ∘f.
    """

    def __init__(self, model, symbolic: bool | str = "auto", backend: str = DEFAULT_BACKEND, loss=None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self._use(kernels(model, symbolic, backend, loss))

    @classmethod
    def from_kernels(cls, k: AbstractKernels) -> SymbolicDerivatives:
        """Derivatives from given kernels (e.g. freshly derived, uncached ones in a benchmark)."""
        if not isinstance(k, AbstractKernels):
            raise ValueError(f"k must be an AbstractKernels, got {type(k).__name__}")
        out = cls.__new__(cls)
        out._use(k)
        return out

    def _use(self, k: AbstractKernels) -> None:
        self.kernels = k
        self.is_symbolic, self.reason = k.is_symbolic, k.reason

    # Equal when built on the same (cached) kernels: a jitted function of a Problem with these derivatives
    # (static structure) then compiles once per model structure, not once per derive_sme call.
    def __eq__(self, other) -> bool:
        return isinstance(other, SymbolicDerivatives) and other.kernels is self.kernels

    def __hash__(self) -> int:
        return hash((SymbolicDerivatives, id(self.kernels)))

    def __repr__(self) -> str:
        return f"SymbolicDerivatives({self.reason})"

    def _mean(self, name, problem, theta, v=None):
        return self.kernels.mean(name, theta, problem.X, problem.y, v)

    def _columns(self, name, problem, theta):
        # per-example vectors (n, d) → (d, n); K-output Jacobians (n, d, K) → (d, n, K)
        return jnp.moveaxis(
            self.kernels.batched(name)(theta, problem.X, problem.y, jnp.zeros_like(theta)), 0, 1
        )

    def grad(self, problem, theta):
        return self._mean("grad_loss", problem, theta)

    def hvp(self, problem, theta, v):
        return self._mean("hvp_loss", problem, theta, v)

    def grad_and_hvp_of_grad(self, problem, theta):
        return self.kernels.grad_and_hvp_of_grad(theta, problem.X, problem.y)

    def output_gradients(self, problem, theta):
        return self._columns("grad_output", problem, theta)

    def loss_gradients(self, problem, theta):
        return self._columns("grad_loss", problem, theta)

    def mean_jp_loss(self, problem, theta):
        return self._mean("jp_loss", problem, theta)

    def mean_jp_output(self, problem, theta):
        return self._mean("jp_output", problem, theta)

    def latex(self, problem) -> str:
        """The model's lines of ``SME.latex``: f, its unit template u and ∇u as sympy derived them (or the
        note that the kernels are autodiff, with the reason)."""
        return model_latex(self.kernels)


def derive_sme(
    problem: Problem,
    noise=None,
    order: int = 1,
    *,
    symbolic="auto",
    backend: str = DEFAULT_BACKEND,
    optimizer=None,
) -> AbstractSDE:
    """SGD's SME for ``problem`` and ``noise`` with the problem's derivatives derived by sympy.

    $d\\theta = b(\\theta)dt + \\sqrt\\eta A(\\theta)dW$ (Li, Tai, E 2017/2019; theory/sme.md SME-1..SME-6).

    Args:
        problem: a Problem (its model: an sgdsde model or ``SymbolicModel.to_model()``).
        noise: an sgdsde noise model (None: gradient descent, A = 0).
        order: 1 or 2 (weak order; order 2 adds $-\\frac\\eta2\\nabla^2L\\nabla L$).
        symbolic: True, False or "auto" (sympy up to the size limit, autodiff beyond; see ``SME.reason``).
        backend: the ``to_jax`` code generator.
        optimizer: None (SGD's SME), or an optimizer whose SDE is known (``Momentum``: Li–Tai–E's SME in
            (θ, m); ``RMSprop``, ``Adam``: Malladi et al.'s), built on the same symbolic derivatives.

    Returns:
        ``sgdsde.SME`` (or the optimizer's SDE, e.g. ``MomentumSME``) on
        ``problem.with_derivatives(SymbolicDerivatives(...))``: the same class the numeric path builds, so
        ``simulate(SDE(), sde, θ₀, ...)`` integrates it directly and ``.latex()`` prints it.
    """
    if not isinstance(problem, Problem):
        raise ValueError(
            f"problem must be a sgdsde.Problem (the SME needs the data), got {type(problem).__name__}; "
            "build Problem(model, X, y) (a SymbolicModel: Problem(sm.to_model(), X, y))"
        )
    derivatives = SymbolicDerivatives(problem.model, symbolic, backend, loss=problem.loss_fn)
    opt = check_optimizer(optimizer)
    if opt is not None:
        return optimizer_sde(problem.with_derivatives(derivatives), noise, opt, order)
    return SME(problem.with_derivatives(derivatives), noise, order)
