"""Li–Tai–E's SME of heavy-ball momentum SGD, written on SGD's clock $t = \\sum_k \\eta_k$ in the state
y = (θ, m), m the momentum buffer of ``sgdsde.Momentum`` (theory/momentum-sde.md, MSDE-2)."""

from __future__ import annotations

from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._noise import AbstractSDENoise, NoNoise, require_sde_side
from .._noise.base import NoiseType
from .._optimizers import Momentum
from .._problem import Problem
from .base import AbstractAugmentedSDE
from .sme import fused_increment


class MomentumSME(AbstractAugmentedSDE):
    """The SME of momentum SGD (Itô), y = (θ, m): $d\\theta = -m\\,dt$,
    $dm = \\eta^{-1}\\big(\\nabla L(\\theta) + w\\theta - (1-\\beta)m\\big)dt - \\eta^{-1/2}A(\\theta)\\,dW$.

    The discrete method is $m_{k+1} = \\beta m_k + \\tilde g_k + w\\theta_k$, $\\theta_{k+1} = \\theta_k - \\eta m_{k+1}$
    (``Momentum(beta, weight_decay=w)``, PyTorch's and optax's form). With $h = \\sqrt\\eta$, the rescaled
    velocity $V = -h\\,m$, damping $\\gamma = (1-\\beta)/h$ and the time $s = t/h = kh$, this is Li, Tai & E's
    (JMLR 2019) MSGD SME $dX = V\\,ds$, $dV = -(\\gamma V + \\nabla f(X))\\,ds + (h\\Sigma)^{1/2}dW_s$, an order-1
    weak approximation in h (their scaling: γ fixed, β = 1 − γh). On SGD's clock the drift carries 1/η and the
    diffusion $s(\\eta) = \\eta^{-1/2}$ (``noise_scale``), so that one step of time η moves m by
    $\\nabla L - (1-\\beta)m$ plus noise of covariance Σ = AAᵀ and θ by −ηm, as the discrete step does.

    The noise enters m only and depends on θ only: $(\\partial_y\\sigma_j)\\sigma_l = 0$ for all columns, so the
    noise is commutative (additive when A is constant) and the Itô→Stratonovich correction is exactly zero
    (MSDE-2).

    Args:
        problem: the Problem (L and the noise's A act on θ).
        noise: its gradient-noise model (SDE side), None for none (the heavy-ball ODE).
        beta: momentum β in [0, 1).
        weight_decay: w ≥ 0, added to the gradient as the discrete ``Momentum`` does.
    """

    problem_: Problem
    noise: AbstractSDENoise
    beta: jax.Array
    weight_decay: jax.Array
    noise_type_: str = eqx.field(static=True, default="")

    def __init__(
        self,
        problem: Problem,
        noise: AbstractSDENoise | None = None,
        beta: float | jax.Array = 0.9,
        weight_decay: float | jax.Array = 0.0,
    ):
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
        noise = NoNoise() if noise is None else noise
        require_sde_side(noise, "MomentumSME")
        noise.check(problem)
        if all(_concrete(v) for v in (beta, weight_decay)):  # a sweep may trace them
            Momentum(
                cast(float, beta), weight_decay=cast(float, weight_decay)
            )  # ValueError unless beta in [0, 1), weight_decay >= 0
        self.problem_, self.noise = problem, noise
        self.beta, self.weight_decay = jnp.asarray(beta), jnp.asarray(weight_decay)
        self.noise_type_ = (
            NoiseType.ADDITIVE if noise.noise_type(problem) == NoiseType.ADDITIVE else NoiseType.COMMUTATIVE
        )

    @property
    def problem(self):
        return self.problem_

    @property
    def noise_type(self) -> str:
        return self.noise_type_

    def extra_dim(self, d: int) -> int:
        """d: the momentum m (zero at the start, as optax's and PyTorch's)."""
        return d

    def momentum_of(self, y):
        """m of one path's state."""
        return self.rest_of(y)

    @property
    def records(self):
        return ("momentum_sq_norm",)

    def observe(self, y):
        """$\\|m\\|^2$, as ``Momentum`` records it."""
        m = self.momentum_of(y)
        return {"momentum_sq_norm": jnp.sum(m * m)}

    def _gradient(self, theta):
        g = (
            self.problem_.grad(theta)
            if self.noise.unbiased
            else self.noise.mean_gradient(self.problem_, theta)
        )
        return g + self.weight_decay.astype(theta.dtype) * theta

    def drift(self, theta, eta):
        y = theta  # the contract's first argument is the state
        th, m = self.theta_of(y), self.momentum_of(y)
        eta = jnp.asarray(eta, y.dtype)
        one_minus_beta = 1 - self.beta.astype(y.dtype)
        return jnp.concatenate([-m, (self._gradient(th) - one_minus_beta * m) / eta])

    def factor(self, theta):
        """(0; −A(θ)), p × m: the noise moves the momentum only."""
        th = self.theta_of(theta)
        A = self.noise.covariance_factor(self.problem_, th)
        return jnp.concatenate([jnp.zeros_like(A), -A])

    def euler_increment(self, theta, eta, dt, w):
        """Euler's increment of y = (θ, m): θ moves by $-m\\,\\Delta t$, m by
        $\\frac{\\Delta t}{\\eta}(\\bar g(\\theta) + w\\theta - (1-\\beta)m) - \\eta^{-1/2}A(\\theta)\\xi$, the noise's
        mean ḡ and Aξ in one VJP of the outputs where the noise allows (SDE-10); else the drift and diffusion
        products."""
        y = theta
        eta = jnp.asarray(eta, y.dtype)
        dt = jnp.asarray(dt, y.dtype)
        th, m = self.theta_of(y), self.momentum_of(y)
        a = fused_increment(self.problem_, self.noise, th, dt / eta, -self.noise_scale(eta), w)
        if a is None:
            return super().euler_increment(theta, eta, dt, w)
        rest = (self.weight_decay.astype(y.dtype) * th - (1 - self.beta.astype(y.dtype)) * m) * (dt / eta)
        return jnp.concatenate([-m * dt, a + rest])

    def factor_mv(self, theta, w):
        th = self.theta_of(theta)
        a = self.noise.factor_mv(self.problem_, th, w)
        return jnp.concatenate([jnp.zeros_like(a), -a])

    def noise_dim(self, d: int, dtype) -> int:
        return self.noise.noise_dim(self.problem_)

    def noise_scale(self, eta):
        """$\\eta^{-1/2}$: one step of time η gives the momentum the step's noise covariance Σ."""
        return jax.lax.rsqrt(eta)

    def stratonovich_correction(self, theta, eta):
        """Zero: σ has no momentum dependence and zero θ-rows, so $(\\partial_y\\sigma_j)\\sigma_j = 0$ (MSDE-2)."""
        return jnp.zeros_like(theta)

    def latex(self) -> str:
        """The momentum SME in LaTeX, from the strings its parts give (sympy-free, like ``SME.latex``): the
        (θ, m) system, the gradient written for its loss (or the noise's biased mean), ``loss.latex()``,
        ``noise.latex()`` (A(θ)), the vanishing Itô→Stratonovich correction and the derivatives back end's
        model lines (the expressions sympy derived, on ``SymbolicDerivatives``)."""
        if self.noise.unbiased:
            gradient = (
                r"\text{the gradient, as SGD's SME writes its drift: } "
                + self.problem_.loss_fn.sme_drift_latex(1)
            )
        else:
            gradient = r"\nabla L \to E\,\tilde g(\theta)\ \text{(the noise's biased mean)}"
        parts = [
            _SYSTEM_LATEX,
            gradient,
            self.problem_.loss_fn.latex(),
            self.noise.latex(),
            _STRATONOVICH_LATEX,
            self.problem_.derivatives.latex(self.problem_),
        ]
        return " \\\\\n".join(parts)

    def astype(self, dtype):
        if self.problem_.X.dtype == dtype and self.problem_.y.dtype == dtype:
            return self
        return eqx.tree_at(lambda s: s.problem_, self, self.problem_.astype(dtype))


_SYSTEM_LATEX = (
    r"d\theta_t = -m_t\,dt,\quad dm_t = \frac{1}{\eta}\big(\nabla L(\theta_t) + w\,\theta_t - (1-\beta)\,m_t\big)\,dt"
    r" - \frac{1}{\sqrt{\eta}}\,A(\theta_t)\,dW_t"
)
_STRATONOVICH_LATEX = (
    r"\text{It\^o}\to\text{Stratonovich: no correction, } (\partial_y\sigma_j)\,\sigma_l = 0"
    r"\ \text{(the noise moves } m \text{ only and depends on } \theta \text{ only)}"
)


def _concrete(value) -> bool:
    """Whether ``value`` has a value now (not a tracer of a sweep)."""
    try:
        np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    return True


def momentum_sme(problem, noise, optimizer: Momentum, order: int | None) -> MomentumSME:
    """The SDE of ``SDE(noise, optimizer=Momentum(...))``: Li–Tai–E's order-1 SME, for heavy ball and for
    Nesterov alike: Nesterov's iterates are heavy ball's up to the telescoping term $\\eta\\beta(m_k - m_0)$, a
    weak O(η) difference (O(√η) in Li–Tai–E's scaling), the order of the SME's own error (MSDE-7)."""
    if order not in (None, 1):
        raise ValueError(f"order: the momentum SME is of order 1 (give order=None or 1), got {order!r}")
    return MomentumSME(problem, noise, optimizer.beta, optimizer.weight_decay)
