"""Batch-normalization noise: the gradient of a minibatch normalized by its own statistics, and StochNorm's
per-unit random choice between mini-batch and moving statistics (Kou et al. 2020); its exact mean and
covariance by enumerating the batches and masks (theory/normalization.md, NORM-1..NORM-4)."""

from __future__ import annotations

import itertools
import math
from typing import ClassVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._models.normalized import NormalizedTwoLayerNetwork
from .._validation import check_int_range, check_positive
from .base import AbstractGradientNoise, AbstractSDENoise
from .sampling import BatchSampler, batch_size_arg, check_batch_size, sampling_name


def _probability(p) -> float:
    value = check_positive("p", p, allow_zero=True)  # a real number, finite, >= 0
    if value > 1:
        raise ValueError(f"p must be in [0, 1] (the probability of mini-batch statistics), got {p!r}")
    return value


class BatchNormNoise(AbstractGradientNoise, AbstractSDENoise):
    """$\\tilde g = \\nabla_\\theta \\frac1B\\sum_{b}\\ell\\big(f_{\\mathcal B, s}(\\theta; x_{i_b}), y_{i_b}\\big)$: the
    minibatch gradient of a ``NormalizedTwoLayerNetwork`` whose hidden unit j is normalized by the batch's own
    mean and variance where $s_j = 1$ and by the moving statistics where $s_j = 0$, $s_j \\sim$ Bernoulli(p)
    independently per unit and step.

    p = 1 is batch normalization (every unit uses mini-batch statistics), p = 0 the moving-statistics network
    (then ``MinibatchNoise``: the same rows from the same key, the same gradient to rounding), 0 < p < 1 StochNorm (Kou et al. 2020 use p = 0.5; their code's
    $s \\sim$ Bernoulli(p) selects the mini-batch branch). The gradient differentiates through the batch
    statistics. Its law is exact by enumeration: over the batches $\\mathcal B$ (uniform B-subsets, or the
    $n^B$ ordered draws with replacement) and the $2^m$ masks, outcome o with probability π_o has
    gradient g_o, $m(\\theta) = \\sum_o\\pi_og_o \\ne \\nabla L$ in general (``unbiased = False``) and
    $A = [\\sqrt{\\pi_o}(g_o - m)]_o$ with $AA^T = \\Sigma$ (theory/normalization.md, NORM-1, NORM-2). The SDE
    side is refused when the outcomes outnumber ``max_outcomes``. Shuffled epochs use the uniform-subset law
    of one step, as ``MinibatchNoise`` does.

    Args:
        batch_size: B (≥ 2 when p > 0: one example has no variance).
        p: the probability that a unit uses the mini-batch statistics, in [0, 1].
        sampling: "without_replacement" (default), "with_replacement" or "shuffle".
        max_outcomes: the largest number of (batch, mask) outcomes the SDE side enumerates.
    """

    batch_size: int = eqx.field(static=True)
    p: jax.Array
    sampling: str = eqx.field(static=True)
    max_outcomes: int = eqx.field(static=True)
    unbiased: ClassVar[bool] = False

    def __init__(self, batch_size, p=1.0, sampling="without_replacement", max_outcomes=4096):
        batch_size = batch_size_arg(batch_size)
        p_ = _probability(p)
        if p_ > 0 and batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 when p > 0 (mini-batch statistics of one example: its variance is "
                f"undefined), got batch_size={batch_size} with p={p_}"
            )
        self.batch_size, self.sampling = batch_size, sampling_name(sampling)
        self.max_outcomes = check_int_range("max_outcomes", max_outcomes, 1)
        # p is an array leaf: the three modes (and a sweep over p) share one compiled simulator
        self.p = jnp.asarray(p_)

    def _model(self, problem) -> NormalizedTwoLayerNetwork:
        return cast(NormalizedTwoLayerNetwork, problem.model)  # check() requires it

    def check(self, problem):
        if not isinstance(problem.model, NormalizedTwoLayerNetwork):
            raise ValueError(
                "BatchNormNoise needs a NormalizedTwoLayerNetwork (a normalization layer on the hidden "
                f"pre-activations), got {type(problem.model).__name__}"
            )
        check_batch_size(self.batch_size, problem.n_data)

    # -- the SGD side --------------------------------------------------------------------------------------

    def _sampler(self) -> BatchSampler:
        return BatchSampler(self.batch_size, self.sampling)

    def init_state(self, problem, key, n_paths, dtype):
        return self._sampler().init_state(problem.n_data, key, n_paths)

    def draw(self, problem, key, step, state, n_paths, dtype):
        # the rows from ``key`` itself, as MinibatchNoise draws them (p = 0 reproduces its paths); masks from
        # a key folded off it
        n = problem.n_data
        idx, state = self._sampler().draw(n, key, step, state, n_paths)
        if idx is None:
            idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (n_paths, n))
        m = self._model(problem).width
        p = self.p.astype(dtype)
        mask = jax.random.bernoulli(jax.random.fold_in(key, 1), p, (n_paths * m,)).reshape(n_paths, m)
        return (idx, mask), state

    def draws_ahead(self) -> bool:
        return True  # indices and booleans: exact

    def batch_gradient(self, problem, theta, rows, mask):
        """$\\nabla_\\theta$ of the mean loss of the batch ``rows`` (B,) with unit j on mini-batch statistics
        where ``mask[j]`` (autodiff through the batch statistics)."""
        model = self._model(problem)
        xb, yb = problem.X[rows], problem.y[rows]
        return jax.grad(lambda th: problem.loss_fn.mean(model.batch_outputs(th, xb, mask), yb))(theta)

    def gradient(self, problem, theta, draws):
        rows, mask = draws
        return self.batch_gradient(problem, theta, rows, mask)

    # -- the SDE side: exact enumeration -------------------------------------------------------------------

    def outcomes(self, problem) -> tuple[np.ndarray, np.ndarray, jax.Array]:
        """Every outcome of one step: (rows (K, B) int, masks (K, m) bool, probabilities π (K,)), K = the
        number of batches times the $2^m$ masks (those of probability 0 at p ∈ {0, 1} included: their
        columns of A are zero); ValueError above ``max_outcomes``."""
        n, B, m = problem.n_data, self.batch_size, self._model(problem).width
        self.check(problem)
        n_batches = n**B if self.sampling == "with_replacement" else math.comb(n, B)
        if n_batches * 2**m > self.max_outcomes:
            raise ValueError(
                f"BatchNormNoise's exact law enumerates {n_batches} batches × {2**m} masks = "
                f"{n_batches * 2**m} outcomes, more than max_outcomes={self.max_outcomes}: the SDE side "
                "(mean_gradient, covariance_factor) is for small n, B and width; the SGD side has no limit"
            )
        if self.sampling == "with_replacement":
            batches = np.array(list(itertools.product(range(n), repeat=B)), np.int32)
        else:
            batches = np.array(list(itertools.combinations(range(n), B)), np.int32)
        masks = np.array(list(itertools.product((False, True), repeat=m)))
        k = jnp.asarray(masks.sum(axis=1), self.p.dtype)
        mask_probs = self.p**k * (1 - self.p) ** (m - k)
        rows = np.repeat(batches, len(masks), axis=0)
        probs = jnp.tile(mask_probs / len(batches), len(batches))
        return rows, np.tile(masks, (len(batches), 1)), probs

    def enumerated_gradients(self, problem, theta) -> tuple[jax.Array, jax.Array]:
        """(G (K, d), π (K,)): the gradient of every outcome and its probability (``outcomes``)."""
        rows, masks, probs = self.outcomes(problem)
        return _outcome_gradients(
            self, problem, theta, jnp.asarray(rows), jnp.asarray(masks), jnp.asarray(probs)
        )

    def mean_gradient(self, problem, theta):
        """$m(\\theta) = \\sum_o \\pi_o g_o(\\theta)$, exact (NORM-2); $\\ne \\nabla L$ unless p = 0."""
        G, probs = self.enumerated_gradients(problem, theta)
        return probs @ G

    def covariance_factor(self, problem, theta):
        """$A = [\\sqrt{\\pi_o}\\,(g_o - m)]_o$ (d × K): $AA^T = \\sum_o\\pi_o(g_o - m)(g_o - m)^T = \\Sigma$ (NORM-2)."""
        G, probs = self.enumerated_gradients(problem, theta)
        return (jnp.sqrt(probs)[:, None] * (G - (probs @ G)[None, :])).T

    def noise_dim(self, problem):
        return len(self.outcomes(problem)[0])

    def latex(self):
        return (
            r"A(\theta) = \big[\sqrt{\pi_o}\,(g_o(\theta) - m(\theta))\big]_{o},\quad "
            r"m = \sum_o \pi_o\, g_o \ne \nabla L,\quad o = (\mathcal{B}, s)"
        )


@eqx.filter_jit
def _outcome_gradients(noise: BatchNormNoise, problem, theta, rows, masks, probs):
    # one compiled program for all outcomes (called eagerly, the vmapped gradient would dispatch op by op)
    G = jax.vmap(lambda r, s: noise.batch_gradient(problem, theta, r, s))(rows, masks)
    return G, probs.astype(theta.dtype)
