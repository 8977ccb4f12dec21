"""Label flips for classification losses: each sampled example's label is redrawn from a class-transition
matrix every step; the flips bias the gradient (theory/losses.md, FLIP-1..FLIP-3)."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_positive
from .base import AbstractGradientNoise, AbstractSDENoise
from .per_example import batch_gradient, outputs_vjp
from .sampling import (
    BatchSampler,
    batch_size_arg,
    check_batch_size,
    is_full_batch,
    sampling_name,
    sampling_scale,
)


class LabelFlipNoise(AbstractGradientNoise, AbstractSDENoise):
    """$\\tilde g = \\frac1B\\sum_{b}\\nabla_\\theta\\,\\ell(f_{i_b}, \\tilde y_b)$, $\\tilde y_b \\sim T[y_{i_b}, \\cdot]$
    independently each step: with probability p a label is replaced by a uniformly drawn other class
    (``transition=None``), or by a draw from row y of a given K × K class-transition matrix T.

    The flips bias the gradient: $E\\tilde g = \\frac1n\\sum_i J_i^T \\bar g_i$ with
    $\\bar g_i = \\sum_c T_{y_i c}\\,\\partial_f\\ell(f_i, c)$ (``mean_gradient``; ``bias`` = that − ∇L), and
    $\\Sigma = \\frac{c_B}{B}\\Sigma_1[\\bar\\ell] + \\frac{1}{nB}\\sum_i J_i^T C_i J_i$ with
    $C_i = \\sum_c T_{y_i c}(\\partial_f\\ell(f_i,c) - \\bar g_i)(\\cdot)^T$, exact by enumerating the classes
    (theory/losses.md, FLIP-1, FLIP-2). For LogisticLoss the classes are y = −1, +1 (a flip changes the sign).
    ``batch_size=None`` is the full batch (every example, each label flipped independently).
    """

    p: jax.Array
    transition: jax.Array | None
    batch_size: int | None = eqx.field(static=True)
    sampling: str = eqx.field(static=True, converter=sampling_name)
    unbiased: ClassVar[bool] = False

    def __init__(self, p=None, batch_size=None, sampling="without_replacement", transition=None):
        if transition is None:
            p = check_positive("p", 0.0 if p is None else p, allow_zero=True)
            if p > 1:
                raise ValueError(f"p must be in [0, 1], got {p}")
            self.transition = None
        else:
            if p is not None:
                raise ValueError(
                    f"give either p (a uniform flip rate) or transition (a K × K matrix), not both; got p={p!r} "
                    "and a transition matrix"
                )
            T = np.asarray(transition, np.float64)
            if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] < 2:
                raise ValueError(f"transition must be a K × K matrix (K >= 2), got shape {T.shape}")
            if not np.all(np.isfinite(T)) or np.any(T < 0) or not np.allclose(T.sum(axis=1), 1.0, atol=1e-12):
                raise ValueError("transition must be row-stochastic: entries >= 0, each row summing to 1")
            self.transition = jnp.asarray(T)
            p = 0.0
        sampling = sampling_name(sampling)
        # p and T are array leaves, so a sweep over the flip rate reuses the compiled simulator.
        self.p = jnp.asarray(float(p))
        self.batch_size = batch_size_arg(batch_size, allow_none=True)
        self.sampling = sampling

    def n_classes(self, problem) -> int:
        return problem.loss_fn.n_classes(problem.model.n_outputs)

    def check(self, problem):
        K = self.n_classes(problem)
        if K < 2:
            raise ValueError(
                f"LabelFlipNoise needs a classification loss (LogisticLoss, CrossEntropyLoss), got "
                f"{type(problem.loss_fn).__name__}"
            )
        if self.transition is not None and self.transition.shape != (K, K):
            raise ValueError(
                f"transition must be {K} × {K} for this problem's {K} classes, got {self.transition.shape}"
            )
        check_batch_size(self.batch(problem), problem.n_data)

    def batch(self, problem) -> int:
        return problem.n_data if self.batch_size is None else self.batch_size

    def matrix(self, problem, dtype=None) -> jax.Array:
        """T (K × K): row y is the law of the label that replaces y."""
        K = self.n_classes(problem)
        if self.transition is not None:
            return self.transition if dtype is None else self.transition.astype(dtype)
        p = self.p if dtype is None else self.p.astype(dtype)
        eye = jnp.eye(K, dtype=p.dtype)
        return (1 - p) * eye + (p / (K - 1)) * (1 - eye)

    def _class_index(self, problem, y):
        """Class index of each label (binary ±1 labels → 0/1)."""
        if problem.loss_fn.label_kind == "binary":
            return ((y + 1) // 2).astype(jnp.int32)
        return y.astype(jnp.int32)

    def _label(self, problem, c, like):
        if problem.loss_fn.label_kind == "binary":
            return (2 * c - 1).astype(like.dtype)
        return c.astype(like.dtype)

    def init_state(self, problem, key, n_paths, dtype):
        return BatchSampler(self.batch(problem), self.sampling).init_state(problem.n_data, key, n_paths)

    def draw(self, problem, key, step, state, n_paths, dtype):
        kb, kc = jax.random.split(key)
        n, B = problem.n_data, self.batch(problem)
        idx, state = BatchSampler(B, self.sampling).draw(n, kb, step, state, n_paths)
        rows = jnp.arange(n, dtype=jnp.int32)[None, :] if idx is None else idx
        cls = self._class_index(problem, problem.y)[jnp.broadcast_to(rows, (n_paths, B))]
        logT = jnp.log(self.matrix(problem, jnp.float32 if dtype == jnp.float32 else dtype))
        new = jax.random.categorical(kc, logT[cls], axis=-1)  # (N, B) class indices
        return (idx, self._label(problem, new, problem.y)), state

    def through_outputs(self) -> bool:
        return True  # one VJP of the outputs (per_example_vjp)

    def gradient(self, problem, theta, draws):
        idx, labels = draws
        return batch_gradient(problem, theta, idx, labels=labels)

    def _per_class(self, problem, theta):
        """(out, g[c] = ∂_fℓ(f_i, class c) for every class, w[i, c] = T[y_i, c])."""
        return self._per_class_at(problem, problem.outputs(theta))

    def _per_class_at(self, problem, out):
        """``_per_class`` at the outputs f = ``out``."""
        K = self.n_classes(problem)
        T = self.matrix(problem, out.dtype)
        w = T[self._class_index(problem, problem.y)]  # (n, K)
        g = jnp.stack(
            [
                problem.loss_fn.residuals(
                    out, jnp.full(problem.y.shape, problem.loss_fn.class_label(c), problem.y.dtype)
                )
                for c in range(K)
            ]
        )  # (K, n) or (K, n, K_out)
        return out, g, w

    def _mean_dloss(self, problem, theta):
        return self._mean_dloss_at(problem, problem.outputs(theta))

    def _mean_dloss_at(self, problem, out):
        """(ḡ_i = Σ_c T[y_i, c] g[c]_i, g, w) at the outputs f = ``out``."""
        _, g, w = self._per_class_at(problem, out)
        wt = w.T.reshape(w.T.shape + (1,) * (g.ndim - 2))
        return jnp.sum(wt * g, axis=0), g, w

    def mean_cotangent(self, problem):
        """ḡ/n: the biased mean $\\frac1n J^T\\bar g$ as a cotangent of the outputs (SDE-10)."""
        n = problem.n_data
        return lambda out, dl: self._mean_dloss_at(problem, out)[0] / n

    def mean_gradient(self, problem, theta):
        """$E\\tilde g = \\frac1n\\sum_i J_i^T\\bar g_i$, $\\bar g_i = \\sum_c T_{y_ic}\\partial_f\\ell(f_i, c)$ (FLIP-1)."""
        gbar, _, _ = self._mean_dloss(problem, theta)
        return problem.output_vjp(theta, gbar) / problem.n_data

    def covariance_factor(self, problem, theta):
        n, B = problem.n_data, self.batch(problem)
        gbar, g, w = self._mean_dloss(problem, theta)
        J = problem.output_gradients(theta)  # (d, n) or (d, n, K)
        dev = g - gbar[None]  # (K, n, …)
        wt = jnp.sqrt(w.T).reshape(w.T.shape + (1,) * (g.ndim - 2))
        scaled = wt * dev
        if J.ndim == 3:
            flip = jnp.einsum("dnk,cnk->dcn", J, scaled)
        else:
            flip = J[:, None, :] * scaled[None]
        flip = flip.reshape(J.shape[0], -1) / math.sqrt(n * B)
        if is_full_batch(self.sampling, B, n):
            return flip
        m = jnp.einsum("dnk,nk->dn", J, gbar) if J.ndim == 3 else J * gbar[None, :]
        c = sampling_scale(self.sampling, B, n)
        sampling = math.sqrt(c / (n * B)) * (m - jnp.mean(m, axis=1, keepdims=True))
        return jnp.concatenate([sampling, flip], axis=1)

    def noise_dim(self, problem):
        n, K = problem.n_data, self.n_classes(problem)
        return K * n if is_full_batch(self.sampling, self.batch(problem), n) else (K + 1) * n

    def factor_mv(self, problem, theta, w):
        """A(θ)w as one VJP of the outputs, with the columns of ``covariance_factor`` (sampling i, then flip
        (c, i) at c·n + i), the cotangent of row i being
        $\\sqrt{c/(nB)}(w_i - \\bar w)\\bar g_i + \\frac{1}{\\sqrt{nB}}\\sum_c \\sqrt{T_{y_ic}}(\\partial_f\\ell(f_i, c) - \\bar g_i)w_{c,i}$
        (theory/function-models.md, FMOD-2)."""
        if not problem.derivatives.matrix_free:
            return self.covariance_factor(problem, theta) @ w
        return outputs_vjp(problem, theta, self._coefficients(problem, w))

    def factor_cotangent(self, problem, w):
        return self._coefficients(problem, w) if problem.derivatives.matrix_free else None

    def _coefficients(self, problem, w):
        """``factor_mv``'s cotangent (f, ℓ′) ↦ c (the formula above)."""
        n, B = problem.n_data, self.batch(problem)
        full = is_full_batch(self.sampling, B, n)

        def coefficients(out, dl):
            gbar, g, wT = self._mean_dloss_at(problem, out)
            K = g.shape[0]
            w_flip = (w if full else w[n:]).reshape(K, n)
            tail = (1,) * (g.ndim - 2)
            wt = jnp.sqrt(wT.T).reshape(wT.T.shape + tail)
            coef = jnp.sum(wt * (g - gbar[None]) * w_flip.reshape(w_flip.shape + tail), axis=0) / math.sqrt(
                n * B
            )
            if not full:
                c = sampling_scale(self.sampling, B, n)
                w_s = w[:n]
                coef = coef + math.sqrt(c / (n * B)) * (w_s - jnp.mean(w_s)).reshape((n,) + tail) * gbar
            return coef

        return coefficients

    def latex(self):
        return (
            r"A(\theta) = \Big[\sqrt{\tfrac{c}{nB}}\,\big[J_i^T\bar g_i - \overline{J^T\bar g}\big]_i,\ "
            r"\tfrac{1}{\sqrt{nB}}\big[\sqrt{T_{y_i c}}\,J_i^T(\partial_f\ell(f_i, c) - \bar g_i)\big]_{i,c}\Big],"
            r"\quad \bar g_i = \sum_c T_{y_i c}\,\partial_f\ell(f_i, c)"
        )
