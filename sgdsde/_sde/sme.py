"""Li–Tai–E stochastic modified equations of SGD, from a Problem and its noise model (one SME for the numeric
and the symbolic derivatives: the Problem's back end decides how they are computed)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._derivatives import Autodiff
from .._noise import AbstractSDENoise, NoNoise, require_sde_side
from .._noise.per_example import outputs_vjp
from .._problem import Problem
from .base import AbstractSDE


class SME(AbstractSDE):
    """Li–Tai–E's SME of SGD (Itô): $d\\theta = -\\big(m + \\tfrac{(o-1)\\eta}{2}\\,\\partial m\\; m\\big)dt + \\sqrt\\eta\\,A(\\theta)\\,dW$

    with m = ``noise.mean_gradient`` (= ∇L for an unbiased noise, so the order-2 drift is
    $-\\nabla(L + \\tfrac\\eta4\\|\\nabla L\\|^2)$) and A = ``noise.covariance_factor`` (Σ = AAᵀ), order o ∈ {1, 2}.
    Order 1 is a weak order-1 approximation of SGD on t = kη, order 2 a weak order-2 one (Li, Tai, E 2019;
    minibatch-noise.md §1; theory/sde.md, SDE-1, SDE-2; theory/sme.md, SME-1..SME-4). The order-2 drift uses
    one Hessian-vector product. Every noise-specific formula (factor, matrix-free product, noise type,
    Itô→Stratonovich correction) is the noise model's own; the problem's derivatives come from autodiff or,
    through ``sgdsde.symbolic.derive_sme``, from the symbolic layer.
    """

    problem_: Problem
    noise: AbstractSDENoise
    order: int = eqx.field(static=True, default=1)
    noise_type_: str = eqx.field(static=True, default="")

    def __init__(self, problem: Problem, noise: AbstractSDENoise | None = None, order: int = 1):
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
        noise = NoNoise() if noise is None else noise
        require_sde_side(noise, "SME")
        if order not in (1, 2) or isinstance(order, bool):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        noise.check(problem)
        self.problem_, self.noise, self.order = problem, noise, order
        self.noise_type_ = noise.noise_type(problem)

    @property
    def problem(self):
        return self.problem_

    @property
    def noise_type(self) -> str:
        return self.noise_type_

    @property
    def is_symbolic(self) -> bool:
        """Whether the problem's derivatives come from sympy (``reason`` says why not)."""
        return self.problem_.is_symbolic

    @property
    def reason(self) -> str:
        return self.problem_.derivatives.reason

    def drift(self, theta, eta):
        problem, noise = self.problem_, self.noise
        if noise.unbiased:
            if self.order == 1:
                return -problem.grad(theta)
            # ∇(η/4 ‖∇L‖²) = (η/2) ∇²L ∇L: one Hessian-vector product
            g, hg = problem.grad_and_hvp_of_grad(theta)
        else:
            g = noise.mean_gradient(problem, theta)
            if self.order == 1:
                return -g
            # a biased mean m: the order-2 term is (η/2) ∂m·m (SME-2)
            hg = jax.jvp(lambda t: noise.mean_gradient(problem, t), (theta,), (g,))[1]
        return -(g + 0.5 * jnp.asarray(eta, g.dtype) * hg)

    def euler_increment(self, theta, eta, dt, w):
        """$-m\\,\\Delta t + \\sqrt\\eta A(\\theta)w$; at order 1 under autodiff, for a noise whose mean and
        columns are per-example output gradients, one VJP of the outputs with the cotangent
        $-c_m\\Delta t + \\sqrt\\eta\\,c_A(w)$: drift and diffusion share one forward and one backward pass over
        the n examples (SDE-10; equal to the two products to rounding, tests/test_noise_loss_matrix.py)."""
        if self.order == 1:
            fused = fused_increment(
                self.problem_, self.noise, theta, -jnp.asarray(dt), self.noise_scale(eta), w
            )
            if fused is not None:
                return fused
        return super().euler_increment(theta, eta, dt, w)

    def factor(self, theta):
        return self.noise.covariance_factor(self.problem_, theta)

    def factor_mv(self, theta, w):
        """A(θ)w, by the noise model's matrix-free product (one vector–Jacobian product for minibatch and
        label noise); equal to ``factor(θ) @ w`` (tests/test_sde.py)."""
        return self.noise.factor_mv(self.problem_, theta, w)

    def noise_dim(self, d: int, dtype) -> int:
        return self.noise.noise_dim(self.problem_)

    def stratonovich_correction(self, theta, eta):
        """$-\\frac\\eta2\\sum_j(\\partial_\\theta A_{\\cdot j})A_{\\cdot j}$, the noise model's own form (SME-3)."""
        return jnp.asarray(eta, theta.dtype) * self.noise.ito_to_stratonovich(self.problem_, theta)

    def euler_form(self) -> SME:
        """This SME for a solver that uses only ``drift`` and ``factor_mv`` (Euler): the noise's static batch
        size is replaced by array leaves (``noise.euler_form``), so a sweep over B reuses one compiled
        simulator; ``factor`` of the result is not meaningful."""
        return eqx.tree_at(lambda s: s.noise, self, self.noise.euler_form(self.problem_))

    def astype(self, dtype):
        if self.problem_.X.dtype == dtype and self.problem_.y.dtype == dtype:
            return self
        return eqx.tree_at(lambda s: s.problem_, self, self.problem_.astype(dtype))

    def latex(self) -> str:
        """The SME in LaTeX, assembled from strings its parts give: the drift of its order (for its loss and
        noise), ``loss.latex()``, ``noise.latex()`` (A(θ)), the Itô→Stratonovich correction and the problem's
        derivatives back end (``derivatives.latex(problem)``: the per-example expressions sympy derived, for
        ``derive_sme``'s back end). No sympy is imported here."""
        parts = [
            r"d\theta_t = b(\theta_t)\,dt + \sqrt{\eta}\,A(\theta_t)\,dW_t",
            _drift_latex(self),
            self.problem_.loss_fn.latex(),
            self.noise.latex(),
            _STRATONOVICH_LATEX,
            _derivatives_latex(self.problem_),
        ]
        return " \\\\\n".join(parts)


def fused_increment(problem: Problem, noise: AbstractSDENoise, theta, a, b, w):
    """$a\\,m(\\theta) + b\\,A(\\theta)w = J^T(a\\,c_m + b\\,c_A(w))$, the noise's mean and diffusion product
    in one VJP of the outputs (SDE-10); None where either has no cotangent form (not autodiff, a Gaussian or
    user noise)."""
    if not isinstance(problem.derivatives, Autodiff):
        return None
    c_mean, c_factor = noise.mean_cotangent(problem), noise.factor_cotangent(problem, w)
    if c_mean is None or c_factor is None:
        return None
    a, b = jnp.asarray(a).astype(w.dtype), jnp.asarray(b).astype(w.dtype)
    return outputs_vjp(problem, theta, lambda out, dl: b * c_factor(out, dl) + a * c_mean(out, dl))


# -- the SME's LaTeX (sympy-free: the symbolic part, if any, is the derivatives back end's own string) ------

# a biased noise (label flips: FLIP-1) drifts along its mean m = E g̃, not ∇L (SME-6)
_BIASED_DRIFT_LATEX = {
    1: r"b(\theta) = -m(\theta),\quad m = E\,\tilde g \ne \nabla L\ \text{(the noise's bias } m - \nabla L\text{)}",
    2: r"b(\theta) = -m - \frac{\eta}{2}(\partial_\theta m)\,m,\quad m = E\,\tilde g \ne \nabla L",
}

_STRATONOVICH_LATEX = r"\text{It\^o}\to\text{Stratonovich: } b \mapsto b - \frac{\eta}{2}\sum_j (\partial_\theta A_{\cdot j}) A_{\cdot j}"


def _drift_latex(sme: SME) -> str:
    """The drift of ``sme``'s order for its loss and noise: the squared loss's residual form, any loss's
    ∂ℓ form, or the biased noise's mean."""
    if not sme.noise.unbiased:
        return _BIASED_DRIFT_LATEX[sme.order]
    return sme.problem.loss_fn.sme_drift_latex(sme.order)


def _derivatives_latex(problem: Problem) -> str:
    """The model line: the derivatives back end's own LaTeX (autodiff's is a note)."""
    return problem.derivatives.latex(problem)
