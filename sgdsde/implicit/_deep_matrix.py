"""Theory 2 for deep matrix factorization (Arora, Cohen, Hu & Luo 2019; Arora, Cohen & Hazan 2018): the
end-to-end dynamics of W = W_N⋯W_1 under gradient flow from a balanced start, its singular-value form, and the
effective rank (theory/three-theories.md, THR-11..12)."""

from __future__ import annotations

import numpy as np

from .._validation import check_int_range


def _psd_powers(S: np.ndarray, exponents) -> list[np.ndarray]:
    """[S^p for p in exponents] for a symmetric PSD S, from one eigendecomposition (S^0 = I)."""
    lam, Q = np.linalg.eigh((S + S.T) / 2)
    lam = np.clip(lam, 0, None)
    return [(Q * (lam**p if p > 0 else np.ones_like(lam))) @ Q.T for p in exponents]


def _check(W, grad, depth: int) -> tuple[np.ndarray, np.ndarray, int]:
    W, G = np.asarray(W, np.float64), np.asarray(grad, np.float64)
    if W.ndim != 2 or G.shape != W.shape:
        raise ValueError(f"W and grad must be matrices of one shape, got {W.shape} and {G.shape}")
    return W, G, check_int_range("depth", depth, 1)


def end_to_end_velocity(W, grad, depth: int) -> np.ndarray:
    """$\\dot W = -\\sum_{j=1}^{N}(WW^T)^{\\frac{j-1}{N}}\\,\\nabla\\ell(W)\\,(W^TW)^{\\frac{N-j}{N}}$: gradient flow on
    the factors, seen on the product, from a balanced start (W_{j+1}ᵀW_{j+1} = W_jW_jᵀ, which the flow keeps);
    ``grad`` = ∇ℓ(W), the loss's gradient with respect to the end-to-end matrix."""
    W, G, N = _check(W, grad, depth)
    exponents = [j / N for j in range(N)]  # (j − 1)/N on the left, (N − j)/N on the right, j = 1..N
    left, right = _psd_powers(W @ W.T, exponents), _psd_powers(W.T @ W, exponents)
    return -sum((left[j] @ G @ right[N - 1 - j] for j in range(N)), np.zeros_like(G))


def singular_value_velocity(W, grad, depth: int) -> np.ndarray:
    """$\\dot\\sigma_r = -N(\\sigma_r^2)^{1-1/N}\\langle\\nabla\\ell(W), u_rv_r^T\\rangle$ for the singular values of W
    (descending), from the end-to-end dynamics: depth speeds up large singular values and slows small ones."""
    W, G, N = _check(W, grad, depth)
    U, s, Vt = np.linalg.svd(W)
    return -N * (s**2) ** (1 - 1 / N) * np.einsum("ir,ij,rj->r", U, G, Vt)


def effective_rank(W) -> float:
    """erank(W) = exp(H(σ/Σσ)), the entropy of the normalized singular values (Roy & Vetterli 2007)."""
    s = np.linalg.svd(np.asarray(W, np.float64), compute_uv=False)
    if s.sum() <= 0:
        raise ValueError("effective_rank needs a nonzero matrix")
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))
