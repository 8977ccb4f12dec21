"""The noise contract, in two sides: what SGD needs to draw its stochastic gradient
(``AbstractGradientNoise``), and what an SDE needs from the noise's law: mean, covariance factor A(θ) and
everything built on it (``AbstractSDENoise``). A noise model has the SGD side, the SDE side or both; each
formula is defined once here."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .. import _problem
from .._problem import Problem


class NoiseType(enum.StrEnum):
    """The structure of the diffusion factor A that SDE solvers rely on (a ``str``: equal to its name's
    value, so ``noise_type == "additive"`` still holds)."""

    ADDITIVE = "additive"  # A does not depend on θ
    COMMUTATIVE = "commutative"  # (∂A_j)A_k = (∂A_k)A_j for all columns j, k
    GENERAL = "general"


NOISE_TYPES = tuple(t.value for t in NoiseType)


class AbstractGradientNoise(eqx.Module):
    """The SGD side of a noise model: how SGD's stochastic gradient $\\tilde g(\\theta)$ is drawn.

    Randomness is split from the maths so ensembles draw fast: ``draw`` makes the random numbers of one
    step for all N paths at once (flat draws, reshaped: the fast layout of ../performance.md), and
    ``gradient`` turns one path's draws into its stochastic gradient, deterministically. ``simulate_sgd``
    (and SVAG, which draws SGD's gradients) needs only this side. A noise whose law the SDE can carry
    (mean, covariance factor) also subclasses ``AbstractSDENoise``; one without it (a sampler with no
    closed-form covariance, ``PreactivationNoise``) subclasses this class alone and is refused by the SDE
    by name (``require_sde_side``).
    """

    def check(self, problem: Problem) -> None:
        """Raise ValueError if this noise does not fit ``problem`` (e.g. batch larger than n)."""

    def init_state(self, problem: Problem, key, n_paths: int, dtype) -> PyTree:
        """Sampler state carried across steps (shuffled epochs keep their permutation); None if none."""
        return None

    @abc.abstractmethod
    def draw(self, problem: Problem, key, step, state, n_paths: int, dtype) -> tuple[PyTree, Any]:
        """Random numbers of one step for all paths (leading axis N), and the new state."""

    def draws_ahead(self) -> bool:
        """Whether SGD may make the draws of many steps at once (vmapped, a speed-up at few paths) with the same
        numbers: only where every draw is exact whatever arithmetic it meets (indices, ±σ). A draw such as σξ
        with ξ ~ N(0, 1) is not: made step by step its product fuses into the gradient (an FMA, one rounding),
        made ahead it is rounded first, and the paths differ in the last bit. False unless a noise says so."""
        return False

    def through_outputs(self) -> bool:
        """Whether ``gradient`` depends on θ only through vector–Jacobian products of the model's outputs
        (``problem.model.outputs``, or ``problem.grad`` by autodiff): it then comes out in whatever
        parametrization the model's outputs take, so SGD may carry a ``FunctionModel``'s params pytree
        (theory/function-models.md, FMOD-5). False unless a noise says so (one that adds a d-vector)."""
        return False

    @abc.abstractmethod
    def gradient(self, problem: Problem, theta: Float[Array, " d"], draws: PyTree) -> Float[Array, " d"]:
        """The stochastic gradient $\\tilde g(\\theta)$ of one path given its draws."""


class AbstractSDENoise(eqx.Module):
    """The SDE side of a noise model, its law: $\\tilde g(\\theta) = m(\\theta) + \\xi$, $E\\xi = 0$,
    $\\mathrm{Cov}\\,\\xi = \\Sigma(\\theta) = A(\\theta)A(\\theta)^T$, with mean $m = \\nabla L$ unless the noise
    says otherwise (``unbiased = False``: label flips bias the gradient).

    Used by the SME (theory/sme.md), the Euler stepper and the implicit-regularization layer, in terms of the
    problem's derivatives (autodiff or the symbolic back end). ``covariance_factor`` and ``latex`` are
    required; the other methods have exact defaults (autodiff), which a subclass overrides when it knows a
    cheaper or structural form. A noise model that SGD can also draw subclasses ``AbstractGradientNoise``
    too.
    """

    # Whether E g̃ = ∇L exactly; a biased noise overrides ``mean_gradient``.
    unbiased: ClassVar[bool] = True

    def check(self, problem: Problem) -> None:
        """Raise ValueError if this noise does not fit ``problem`` (e.g. batch larger than n)."""

    @abc.abstractmethod
    def covariance_factor(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, "d m"]:
        """A(θ) with $\\Sigma(\\theta) = A A^T$, the covariance of one step's gradient noise."""

    @abc.abstractmethod
    def latex(self) -> str:
        """The covariance factor A(θ) in LaTeX, with $AA^T = \\Sigma$."""

    def covariance(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, "d d"]:
        """$\\Sigma(\\theta) = A(\\theta)A(\\theta)^T$."""
        A = self.covariance_factor(problem, theta)
        return A @ A.T

    def covariance_diagonal(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, " d"]:
        """$\\operatorname{diag}\\Sigma(\\theta) = \\sum_j A_{\\cdot j}^{\\circ 2}$, the row sums of $A\\circ A$ (the
        adaptive SDEs' second-moment drift). Per-example noises override it at size: by chunks of examples, no
        d × n matrix (NOISE-7)."""
        A = self.covariance_factor(problem, theta)
        return jnp.sum(A * A, axis=1)

    def mean_gradient(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, " d"]:
        """$E\\,\\tilde g(\\theta)$: $\\nabla L$ for an unbiased noise."""
        return problem.grad(theta)

    def bias(self, problem: Problem, theta: Float[Array, " d"]) -> Float[Array, " d"]:
        """$E\\,\\tilde g(\\theta) - \\nabla L(\\theta)$ (zero for an unbiased noise)."""
        if self.unbiased:
            return jnp.zeros_like(theta)
        return self.mean_gradient(problem, theta) - problem.grad(theta)

    def factor_mv(self, problem: Problem, theta, w: Float[Array, " m"]) -> Float[Array, " d"]:
        """$A(\\theta)w$; subclasses compute it without forming A where they can (Euler uses only this)."""
        return self.covariance_factor(problem, theta) @ w

    def mean_cotangent(self, problem: Problem) -> Callable[[Array, Array], Array] | None:
        """c with $m(\\theta) = J(\\theta)^T c(f, \\ell')$ (J the Jacobian of the n outputs f, ℓ′ the loss's
        derivatives): ℓ′/n, autodiff's ∇L, for an unbiased noise; None where m has no such form (SDE-10)."""
        if not self.unbiased:
            return None
        n = problem.n_data
        return lambda out, dl: dl / n

    def factor_cotangent(
        self, problem: Problem, w: Float[Array, " m"]
    ) -> Callable[[Array, Array], Array] | None:
        """c with $A(\\theta)w = J(\\theta)^T c(f, \\ell')$, for a noise whose columns are combinations of the
        per-example output gradients (minibatch, label, multiplicative, flips) under autodiff: Euler then takes
        its drift and diffusion in one VJP (SDE-10). None (default): A(θ)w has no such form. A subclass that
        overrides ``factor_mv`` or ``mean_gradient`` overrides these two to match (or returns None)."""
        return None

    def noise_dim(self, problem: Problem) -> int:
        """m, the number of columns of A (Brownian motions of the SDE)."""
        spec = jax.ShapeDtypeStruct((problem.n_params,), problem.X.dtype)
        return jax.eval_shape(lambda t: self.covariance_factor(problem, t), spec).shape[1]

    def noise_type(self, problem: Problem) -> NoiseType:
        """ "additive" when A cannot depend on θ by construction; else "commutative" (one noise dimension) or
        "general". One parameter dimension is not enough: with m > 1 columns, (∂A_j)A_k = A_j′A_k ≠ A_k′A_j in
        general. Subclasses declare "additive" where it holds."""
        return NoiseType.COMMUTATIVE if self.noise_dim(problem) == 1 else NoiseType.GENERAL

    def ito_to_stratonovich(self, problem: Problem, theta) -> Float[Array, " d"]:
        """$-\\frac12\\sum_j (\\partial_\\theta A_{\\cdot j})A_{\\cdot j}$ (theory/sme.md, SME-3): times η, the
        drift to add so that a Stratonovich solver solves the Itô SME. Default: forward-mode autodiff."""
        if self.noise_type(problem) == NoiseType.ADDITIVE:
            return jnp.zeros_like(theta)
        if problem.at_size:  # d × m × d entries: refused rather than run out of memory (NOISE-7)
            raise ValueError(
                f"solver: the Itô→Stratonovich correction of {type(self).__name__} is a d × m × d Jacobian, "
                f"refused at d = {problem.n_params} > MAX_DENSE_PARAMS = {_problem.MAX_DENSE_PARAMS}: use an Itô "
                "solver (Euler, the default)"
            )
        factor = lambda t: self.covariance_factor(problem, t)
        dA = jax.jacfwd(factor)(theta)  # dA[i, j, k] = ∂A_ij/∂θ_k
        return -0.5 * jnp.einsum("ijk,kj->i", dA, factor(theta))

    def effective_lambda(self, lr, problem: Problem | None = None) -> float:
        """λ of the implicit regularizer L + λR that this noise induces (theory/implicit-regularization.md);
        a noise with no such λ raises ValueError."""
        raise ValueError(
            f"{type(self).__name__} defines no implicit-regularization strength lambda (label noise does: "
            "LabelNoise, lambda = eta*sigma^2/B); give lam= explicitly where a function accepts it"
        )

    def euler_form(self, problem: Problem) -> AbstractSDENoise:
        """This noise for a stepper that uses only ``mean_gradient`` and ``factor_mv`` (Euler): numbers that
        change the program's structure (a static batch size) may be turned into array leaves, so sweeps
        reuse one compiled simulator. Default: itself."""
        return self


def require_sde_side(noise: object, what: str) -> AbstractSDENoise:
    """``noise`` if it has the SDE side of the contract (an ``AbstractSDENoise``); else a ValueError naming
    ``what`` (the caller: "SME", "effective_lambda", …), the noise, and what it lacks."""
    if isinstance(noise, AbstractSDENoise):
        return noise
    if isinstance(noise, AbstractGradientNoise):
        raise ValueError(
            f"{what} needs a noise with an SDE side (mean and covariance factor A(θ): an AbstractSDENoise), "
            f"but {type(noise).__name__} has only the SGD side (draw, gradient): it runs in simulate_sgd "
            "(and simulate_svag) only. For the SDE of SGD's own noise use MinibatchNoise; a noise of your own "
            "gains the SDE side by also subclassing sgdsde.AbstractSDENoise (covariance_factor, latex)"
        )
    raise ValueError(
        f"{what}: noise must be an sgdsde noise model (MinibatchNoise, LabelNoise, …) or None, got "
        f"{type(noise).__name__}"
    )


class NoNoise(AbstractGradientNoise, AbstractSDENoise):
    """Full-batch gradient descent: $\\tilde g = \\nabla L$, Σ = 0."""

    def draw(self, problem, key, step, state, n_paths, dtype):
        return jnp.zeros((n_paths, 0), dtype), state

    def draws_ahead(self) -> bool:
        return True

    def through_outputs(self) -> bool:
        return True

    def gradient(self, problem, theta, draws):
        return problem.grad(theta)

    def covariance_factor(self, problem, theta):
        return jnp.zeros((problem.n_params, 1), theta.dtype)

    def factor_mv(self, problem, theta, w):
        return jnp.zeros_like(theta)

    def noise_dim(self, problem):
        return 1

    def noise_type(self, problem):
        return NoiseType.ADDITIVE

    def latex(self):
        return r"A(\theta) = 0"
