"""Malladi, Lyu, Panigrahi & Arora's (NeurIPS 2022, arXiv 2205.10287) SDEs of RMSprop and Adam, written on
SGD's clock $t = \\sum_k \\eta_k$ in the optimizers' own variables (theory/adaptive-sdes.md, ASDE-1..ASDE-3).

Their SDEs live in their own time $s = k\\eta^2$ (one step of RMSprop/Adam is time η²) under the scaling
$1-\\beta = c\\eta^2$, $\\varepsilon = \\varepsilon_0/\\eta$ and a gradient noise of scale $\\sigma = \\sigma_0/\\eta$, with
$u = v/\\sigma^2$ the rescaled second moment. The engine's clock gives one step time η, so $ds = \\eta\\,dt$:
an SDE $dY = B\\,ds + C\\,dW_s$ in their time is, on the engine's clock, $dY = \\eta B\\,dt + \\sqrt\\eta\\,C\\,dW_t$
($W_{s} = W_{\\eta t}$ has the law of $\\sqrt\\eta\\,W_t$). Written in the discrete variables (θ, m, v) the
constants σ₀, ε₀, c, and σ itself drop out (ASDE-3): what remains is the optimizer's (β, ε), the run's η and
the noise model's covariance factor A (Σ = AAᵀ, one step's gradient-noise covariance σ²Σ_theirs).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._noise import AbstractSDENoise, NoNoise, require_sde_side
from .._noise.base import NoiseType
from .._optimizers import Adam, RMSprop
from .._problem import Problem
from .base import AbstractAugmentedSDE


def _noise_type(noise: AbstractSDENoise, problem: Problem, *, preconditioned: bool) -> str:
    """The declared structure of an adaptive SDE's diffusion.

    Adam's noise enters m only and depends on θ only, so $(\\partial_y\\sigma_j)\\sigma_l = 0$: additive when A is
    constant, else commutative. RMSprop's θ-rows are $A/D(v)$: with a constant A or one column this is
    commutative ($(\\partial_y\\sigma_j)\\sigma_l = 0$ for a constant A: σ depends on v, which has no noise),
    otherwise general (the weights 1/D break A's own symmetry)."""
    base = noise.noise_type(problem)
    if not preconditioned:
        return NoiseType.ADDITIVE if base == NoiseType.ADDITIVE else NoiseType.COMMUTATIVE
    if base == NoiseType.ADDITIVE or noise.noise_dim(problem) == 1:
        return NoiseType.COMMUTATIVE
    return NoiseType.GENERAL


def _sqrt0(v):
    """√v for v ≥ 0 (0 for v ≤ 0) whose derivative at v = 0 is 0, not ∞: the autodiff Itô→Stratonovich
    correction and the noise-structure check differentiate the factor in all of y, v included, and v starts
    at 0 (v carries no noise, so its derivative never enters the correction; an ∞·0 would make it NaN)."""
    pos = v > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1)), 0)


def _check_problem(problem, noise, who: str) -> AbstractSDENoise:
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a sgdsde.Problem, got {type(problem).__name__}")
    noise = NoNoise() if noise is None else noise
    require_sde_side(noise, who)
    noise.check(problem)
    return noise


class _AdaptiveSDE(AbstractAugmentedSDE):
    """Shared parts: the problem, its noise (SDE side) and the mean gradient the drift follows."""

    problem_: eqx.AbstractVar[Problem]
    noise: eqx.AbstractVar[AbstractSDENoise]
    noise_type_: eqx.AbstractVar[str]

    @property
    def problem(self):
        return self.problem_

    @property
    def noise_type(self) -> str:
        return self.noise_type_

    def noise_dim(self, d: int, dtype) -> int:
        return self.noise.noise_dim(self.problem_)

    def _mean_gradient(self, theta):
        """$E\\tilde g$: ∇L for an unbiased noise, the noise's mean otherwise."""
        if self.noise.unbiased:
            return self.problem_.grad(theta)
        return self.noise.mean_gradient(self.problem_, theta)

    def _diag_sigma(self, theta):
        """diag Σ(θ), Σ = AAᵀ one step's gradient-noise covariance (the noise's own form: at size, by chunks of
        examples; NOISE-7)."""
        return self.noise.covariance_diagonal(self.problem_, theta)

    def astype(self, dtype):
        if self.problem_.X.dtype == dtype and self.problem_.y.dtype == dtype:
            return self
        return eqx.tree_at(lambda s: s.problem_, self, self.problem_.astype(dtype))


class RMSpropSDE(_AdaptiveSDE):
    """Malladi et al.'s RMSprop SDE (Itô) on SGD's clock, state y = (θ, v) ∈ R^{2d} (ASDE-1, ASDE-3):

    $d\\theta = -D^{-1}\\nabla L\\,dt + \\sqrt\\eta\\,D^{-1}A(\\theta)\\,dW$,
    $dv = \\frac{1-\\beta}{\\eta}(\\mathrm{diag}\\,\\Sigma(\\theta) - v)\\,dt$,
    $D = \\mathrm{diag}(\\sqrt v) + \\varepsilon I$.

    The discrete method (``RMSprop(beta, eps)``) is $v_{k+1} = \\beta v_k + (1-\\beta)\\tilde g_k^2$,
    $\\theta_{k+1} = \\theta_k - \\eta\\tilde g_k/(\\sqrt{v_{k+1}} + \\varepsilon)$. In their time $s = k\\eta^2$ with
    $\\sigma_0 = \\sigma\\eta$, $\\varepsilon_0 = \\varepsilon\\eta$, $c = (1-\\beta)/\\eta^2$ and $u = v/\\sigma^2$ this is their
    Definition: $d\\theta = -P^{-1}(\\nabla L\\,ds + \\sigma_0\\Sigma_1^{1/2}dW_s)$,
    $du = c(\\mathrm{diag}\\,\\Sigma_1 - u)\\,ds$, $P = \\sigma_0\\,\\mathrm{diag}(u)^{1/2} + \\varepsilon_0 I$
    (Σ₁ = Σ/σ²): multiply the drift by η and the diffusion by √η (ds = η dt) and substitute. Their SDE keeps
    diag Σ, not $E\\tilde g^2 = (\\nabla L)^2 + \\mathrm{diag}\\,\\Sigma$: the gradient's square is of lower order
    when the noise dominates (σ = σ₀/η).
    v starts at 0 (``init_state``), as optax's RMSprop does (or at ``v0``, a warm start), so the SDE starts
    with D = ε: their SDE holds for ε₀ = εη fixed as η → 0, and with a practical ε = 1e-8 its first Euler
    steps move θ by η∇L/ε (diverging),
    where the discrete step divides by $\\sqrt{v_1} = \\sqrt{1-\\beta}\\,|\\tilde g_0|$ (theory/adaptive-sdes.md,
    ASDE-1). Adam's SDE has no such start: its bias corrections normalise m and v from the first step.

    Args:
        problem: the Problem (L and the noise's A act on θ).
        noise: its gradient-noise model (SDE side), None for none.
        beta: the second-moment decay β in [0, 1).
        eps: ε > 0.
        v0: None (v starts at 0) or the initial v, a length-d array > 0 (``RMSprop(v0=...)``'s warm start,
            ASDE-8).
    """

    problem_: Problem
    noise: AbstractSDENoise
    beta: jax.Array
    eps: jax.Array
    noise_type_: str = eqx.field(static=True)
    v0: jax.Array | None = None

    def __init__(
        self,
        problem: Problem,
        noise: AbstractSDENoise | None = None,
        beta: float | jax.Array = 0.999,
        eps: float | jax.Array = 1e-8,
        v0: jax.Array | None = None,
    ):
        noise = _check_problem(problem, noise, "RMSpropSDE")
        if _concrete(beta, eps, v0):  # a sweep may trace them
            # ValueError naming beta, eps or v0 outside their ranges
            v0 = RMSprop(_f(beta), _f(eps), v0).v0
            _check_length("v0", v0, problem)
        self.problem_, self.noise = problem, noise
        self.beta, self.eps = jnp.asarray(beta), jnp.asarray(eps)
        self.v0 = v0
        self.noise_type_ = _noise_type(noise, problem, preconditioned=True)

    def extra_dim(self, d: int) -> int:
        """d: the second-moment estimate v (zero at the start, as optax's ``rmsprop``, or ``v0``)."""
        return d

    def init_state(self, theta):
        """(θ₀, v₀): v₀ = 0 or ``v0``."""
        return jnp.concatenate([theta, _start("v0", self.v0, theta)])

    def second_moment_of(self, y):
        """v of one path's state."""
        return self.rest_of(y)

    @property
    def records(self):
        return ("second_moment_mean",)

    def observe(self, y):
        """The mean of v over coordinates, as ``RMSprop`` records it."""
        return {"second_moment_mean": jnp.mean(self.second_moment_of(y))}

    def _denominator(self, y):
        return _sqrt0(self.second_moment_of(y)) + self.eps.astype(y.dtype)

    def drift(self, theta, eta):
        y = theta  # the contract's first argument is the state
        th, v = self.theta_of(y), self.second_moment_of(y)
        eta = jnp.asarray(eta, y.dtype)
        rate = (1 - self.beta.astype(y.dtype)) / eta
        return jnp.concatenate(
            [-self._mean_gradient(th) / self._denominator(y), rate * (self._diag_sigma(th) - v)]
        )

    def factor(self, theta):
        """The θ-rows $D^{-1}A(\\theta)$ over zero v-rows (2d × m): v has no noise at this order."""
        y = theta
        A = self.noise.covariance_factor(self.problem_, self.theta_of(y))
        return jnp.concatenate([A / self._denominator(y)[:, None], jnp.zeros_like(A)])

    def factor_mv(self, theta, w):
        y = theta
        a = self.noise.factor_mv(self.problem_, self.theta_of(y), w)
        return jnp.concatenate([a / self._denominator(y), jnp.zeros_like(a)])


class AdamSDE(_AdaptiveSDE):
    """Malladi et al.'s Adam SDE (Itô) on SGD's clock, state y = (θ, m, v, γ₁, γ₂) ∈ R^{3d+2} (ASDE-2, ASDE-3):

    $d\\theta = -\\big(\\frac{m/\\gamma_1}{\\sqrt{v/\\gamma_2} + \\varepsilon} + w\\theta\\big)dt$,
    $dm = \\frac{1-\\beta_1}{\\eta}(\\nabla L - m)\\,dt + \\frac{1-\\beta_1}{\\sqrt\\eta}A(\\theta)\\,dW$,
    $dv = \\frac{1-\\beta_2}{\\eta}(\\mathrm{diag}\\,\\Sigma - v)\\,dt$,
    $d\\gamma_i = \\frac{1-\\beta_i}{\\eta}(1 - \\gamma_i)\\,dt$.

    The discrete method is optax's Adam(W) (``Adam(b1, b2, eps, weight_decay)``):
    $m_{k+1} = \\beta_1 m_k + (1-\\beta_1)\\tilde g_k$, $v_{k+1} = \\beta_2 v_k + (1-\\beta_2)\\tilde g_k^2$, θ moved by
    $-\\eta(\\hat m/(\\sqrt{\\hat v} + \\varepsilon) + w\\theta)$ with $\\hat m = m/(1-\\beta_1^{k+1})$,
    $\\hat v = v/(1-\\beta_2^{k+1})$. In their time $s = k\\eta^2$ ($c_i = (1-\\beta_i)/\\eta^2$, σ₀ = ση, ε₀ = εη,
    u = v/σ²) this is their Definition: $d\\theta = -\\frac{\\sqrt{\\gamma_2}}{\\gamma_1}P^{-1}m\\,ds$,
    $dm = c_1(\\nabla L - m)\\,ds + \\sigma_0 c_1\\Sigma_1^{1/2}dW_s$, $du = c_2(\\mathrm{diag}\\,\\Sigma_1 - u)\\,ds$,
    $P = \\sigma_0\\,\\mathrm{diag}(u)^{1/2} + \\varepsilon_0\\sqrt{\\gamma_2}I$, with the bias corrections
    $\\gamma_i(s) = 1 - e^{-c_i s}$. Here γᵢ are state coordinates solving $d\\gamma_i = c_i(1-\\gamma_i)ds$ from 0,
    so the SDE needs no time argument, and Euler on the engine's clock reproduces the discrete corrections
    $1 - \\beta_i^k$ exactly. Before the first step (γ₁ = 0, m = 0) θ's drift is 0. The decoupled weight decay
    w is not in their Definition (it has none): AdamW's deterministic −ηwθ per step is added to θ's drift as
    it is, which is their scaling's drift $-(w/\\eta)\\theta\\,ds$.

    The noise enters m only and depends on θ only: commutative (additive for a constant A), zero
    Itô→Stratonovich correction.

    A warm start (``v0`` given, ``Adam(m0=..., v0=...)``'s) starts at (θ₀, m₀, v₀, 1, 1): the corrections are
    off from the start, as the discrete warm Adam's (ASDE-8).
    """

    problem_: Problem
    noise: AbstractSDENoise
    b1: jax.Array
    b2: jax.Array
    eps: jax.Array
    weight_decay: jax.Array
    noise_type_: str = eqx.field(static=True)
    m0: jax.Array | None = None
    v0: jax.Array | None = None

    def __init__(
        self,
        problem: Problem,
        noise: AbstractSDENoise | None = None,
        b1: float | jax.Array = 0.9,
        b2: float | jax.Array = 0.999,
        eps: float | jax.Array = 1e-8,
        weight_decay: float | jax.Array = 0.0,
        m0: jax.Array | None = None,
        v0: jax.Array | None = None,
    ):
        noise = _check_problem(problem, noise, "AdamSDE")
        if _concrete(b1, b2, eps, weight_decay, m0, v0):
            # ValueError naming the argument outside its range
            opt = Adam(_f(b1), _f(b2), _f(eps), _f(weight_decay), m0, v0)
            m0, v0 = opt.m0, opt.v0
            _check_length("m0", m0, problem)
            _check_length("v0", v0, problem)
        self.problem_, self.noise = problem, noise
        self.m0, self.v0 = m0, v0
        self.b1, self.b2 = jnp.asarray(b1), jnp.asarray(b2)
        self.eps, self.weight_decay = jnp.asarray(eps), jnp.asarray(weight_decay)
        self.noise_type_ = _noise_type(noise, problem, preconditioned=False)

    def extra_dim(self, d: int) -> int:
        """2d + 2: m, v and the two bias corrections γ₁, γ₂ (m = v = 0 as optax's, no correction yet)."""
        return 2 * d + 2

    def init_state(self, theta):
        """(θ₀, 0, 0, 0, 0) (optax's cold start), or (θ₀, m₀, v₀, 1, 1) for a warm start (``v0`` given)."""
        if self.v0 is None:
            return super().init_state(theta)
        m, v = _start("m0", self.m0, theta), _start("v0", self.v0, theta)
        return jnp.concatenate([theta, m, v, jnp.ones((2,), theta.dtype)])

    def parts(self, y) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """(θ, m, v, γ₁, γ₂) of one path's state."""
        d = self._d()
        return y[:d], y[d : 2 * d], y[2 * d : 3 * d], y[3 * d], y[3 * d + 1]

    @property
    def records(self):
        return ("first_moment_sq_norm", "second_moment_mean")

    def observe(self, y):
        """$\\|m\\|^2$ and the mean of v (the raw moments), as ``Adam`` records them."""
        _, m, v, _, _ = self.parts(y)
        return {"first_moment_sq_norm": jnp.sum(m * m), "second_moment_mean": jnp.mean(v)}

    def _step(self, y):
        """$\\hat m/(\\sqrt{\\hat v} + \\varepsilon)$ with $\\hat m = m/\\gamma_1$, $\\hat v = v/\\gamma_2$,
        computed as $\\sqrt{\\gamma_2}\\,m/(\\gamma_1(\\sqrt v + \\varepsilon\\sqrt{\\gamma_2}))$; 0 before the first
        step (γ₁ = 0)."""
        _, m, v, g1, g2 = self.parts(y)
        started = g1 > 0
        ratio = jnp.where(started, _sqrt0(g2) / jnp.where(started, g1, 1), 0)
        den = _sqrt0(v) + self.eps.astype(y.dtype) * _sqrt0(g2)
        return ratio * m / jnp.where(den > 0, den, 1)

    def drift(self, theta, eta):
        y = theta  # the contract's first argument is the state
        th, m, v, g1, g2 = self.parts(y)
        eta = jnp.asarray(eta, y.dtype)
        r1 = (1 - self.b1.astype(y.dtype)) / eta
        r2 = (1 - self.b2.astype(y.dtype)) / eta
        dtheta = -(self._step(y) + self.weight_decay.astype(y.dtype) * th)
        return jnp.concatenate(
            [
                dtheta,
                r1 * (self._mean_gradient(th) - m),
                r2 * (self._diag_sigma(th) - v),
                jnp.stack([r1 * (1 - g1), r2 * (1 - g2)]),
            ]
        )

    def factor(self, theta):
        """$(0, A(\\theta), 0, 0, 0)^T$ ((3d+2) × m): the noise moves m only; its scale is ``noise_scale``."""
        y = theta
        A = self.noise.covariance_factor(self.problem_, self.theta_of(y))
        z = jnp.zeros_like(A)
        return jnp.concatenate([z, A, z, jnp.zeros((2, A.shape[1]), A.dtype)])

    def factor_mv(self, theta, w):
        y = theta
        a = self.noise.factor_mv(self.problem_, self.theta_of(y), w)
        z = jnp.zeros_like(a)
        return jnp.concatenate([z, a, z, jnp.zeros(2, a.dtype)])

    def noise_scale(self, eta):
        """$(1-\\beta_1)/\\sqrt\\eta$: one step of time η gives m the noise $(1-\\beta_1)A\\xi$ of the discrete step."""
        eta = jnp.asarray(eta)
        return (1 - self.b1.astype(eta.dtype)) * jax.lax.rsqrt(eta)

    def stratonovich_correction(self, theta, eta):
        """Zero: σ depends on θ only and has zero θ-rows, so $(\\partial_y\\sigma_j)\\sigma_j = 0$."""
        return jnp.zeros_like(theta)


def _start(name: str, value, theta):
    """An initial moment in θ's dtype (zeros for None); ValueError naming ``name`` unless shaped like θ."""
    if value is None:
        return jnp.zeros_like(theta)
    if value.shape != theta.shape:
        raise ValueError(f"{name} must have the parameters' shape {theta.shape}, got {value.shape}")
    return value.astype(theta.dtype)


def _check_length(name: str, value, problem: Problem) -> None:
    """ValueError naming ``name`` unless None or of length d (the problem's parameter count)."""
    if value is not None and value.shape != (problem.n_params,):
        raise ValueError(
            f"{name} must have length d = {problem.n_params} (one entry per parameter), got shape {value.shape}"
        )


def _concrete(*values) -> bool:
    """Whether all ``values`` have values now (not tracers of a sweep)."""
    try:
        for v in values:
            np.asarray(v)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    return True


def _f(value) -> float:
    """A concrete hyperparameter as a float (0-d; the optimizer's own check then names it)."""
    return float(np.asarray(value))


def _check_order(order, name: str) -> None:
    if order not in (None, 1) or isinstance(order, bool):
        raise ValueError(
            f"order: Malladi et al.'s {name} SDE is a weak order-1 approximation (give order=None or 1), "
            f"got {order!r}"
        )


def rmsprop_sde(problem, noise, optimizer: RMSprop, order: int | None) -> RMSpropSDE:
    """The SDE of ``SDE(noise, optimizer=RMSprop(...))``: Malladi et al.'s RMSprop SDE (order 1)."""
    _check_order(order, "RMSprop")
    return RMSpropSDE(problem, noise, optimizer.beta, optimizer.eps, optimizer.v0)


def adam_sde(problem, noise, optimizer: Adam, order: int | None) -> AdamSDE:
    """The SDE of ``SDE(noise, optimizer=Adam(...))``: Malladi et al.'s Adam SDE (order 1)."""
    _check_order(order, "Adam")
    return AdamSDE(
        problem,
        noise,
        optimizer.b1,
        optimizer.b2,
        optimizer.eps,
        optimizer.weight_decay,
        optimizer.m0,
        optimizer.v0,
    )
