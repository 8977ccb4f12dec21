"""The effective regularization strength of label-noise SGD: $\\lambda = \\eta\\sigma^2/B$."""

from __future__ import annotations

from .._noise import AbstractGradientNoise, LabelNoise
from .._problem import Problem
from .._validation import check_positive


def effective_lambda(noise: AbstractGradientNoise, lr: float, problem: Problem | None = None) -> float:
    """$\\lambda = \\eta\\sigma^2/B$ for label noise of level σ on batches of size B (B = n for the full batch).

    Args:
        noise: a ``LabelNoise``; other noises have no label-noise λ (minibatch noise vanishes at
            interpolation, label-noise.md C7), so they raise.
        lr: the constant step size η.
        problem: needed when ``noise.batch_size`` is None (B = n).

    Returns:
        λ as a float (theory/implicit-regularization.md, REG-5; Damian et al. 2021).
    """
    eta = check_positive("lr", lr)
    if not isinstance(noise, LabelNoise):
        raise ValueError(
            f"noise must be a LabelNoise to define lambda = eta*sigma^2/B, got {type(noise).__name__} "
            "(minibatch noise has no implicit regularizer at interpolation)"
        )
    if noise.batch_size is None:
        if problem is None:
            raise ValueError("problem is needed for a full-batch LabelNoise (B = n)")
        batch = problem.n_data
    else:
        batch = noise.batch_size
    return eta * float(noise.sigma) ** 2 / batch
