"""The effective regularization strength λ of the implicit regularizer L + λR a noise model induces."""

from __future__ import annotations

from .._noise import AbstractGradientNoise, AbstractSDENoise, require_sde_side
from .._problem import Problem
from .._validation import check_positive


def effective_lambda(
    noise: AbstractGradientNoise | AbstractSDENoise, lr: float, problem: Problem | None = None
) -> float:
    """λ for ``noise`` at step size η: $\\lambda = \\eta\\sigma^2/B$ for label noise (the noise model's own
    ``effective_lambda``; theory/implicit-regularization.md, REG-5; Damian et al. 2021).

    Args:
        noise: a noise model that defines λ (LabelNoise); others raise ValueError (minibatch noise vanishes at
            interpolation, label-noise.md C7).
        lr: the constant step size η.
        problem: the problem (needed when λ depends on it, e.g. a full-batch LabelNoise has B = n).

    Returns:
        λ as a float.
    """
    eta = check_positive("lr", lr)
    return require_sde_side(noise, "effective_lambda").effective_lambda(eta, problem)
