"""GD's local stability limit, checked before a discrete run: $\\eta_k < 2/\\lambda_{\\max}(\\nabla^2 L(\\theta_0))$."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ._checkpoint import digest
from ._problem import MAX_DENSE_PARAMS, Problem, _hessian, _power_lambda_max, lambda_max

# the dense check's limit; above it λ_max comes from power iteration on Hessian-vector products (FMOD-4)
MAX_PARAMS_FOR_STABILITY_CHECK = MAX_DENSE_PARAMS
# the check's budget at size: each product is a pass over all n rows (at d = 10⁶, n = 1000 on 2 CPU cores 200
# products took 100 s, longer than the run), and a lower bound on λ_max never warns spuriously
STABILITY_POWER_ITERS, STABILITY_POWER_RTOL = 20, 1e-3


def _lambda_max_bound(H: np.ndarray) -> float:
    """An upper bound on the largest eigenvalue of the symmetric matrix H, without LAPACK: Gershgorin's bound
    $\\max_i (H_{ii} + \\sum_{j\\ne i}|H_{ij}|\\,d_j/d_i)$ on D⁻¹HD (the same eigenvalues for any positive d),
    the least over d = 1 and a few power iterations of |H|, which bring it towards ρ(|H|). NaN if H is not
    finite."""
    if not np.all(np.isfinite(H)):
        return float("nan")
    H = (H + H.T) / 2
    A = np.abs(H)
    diag = np.diag(H)
    off = A - np.diag(np.diag(A))
    d = np.ones(len(H))
    best = np.inf
    for _ in range(8):
        best = min(best, float(np.max(diag + (off * d[None, :]).sum(axis=1) / d)))
        d = (A * d[None, :]).sum(axis=1)
        if not np.all(np.isfinite(d)) or d.max() <= 0:
            break
        d = np.maximum(d / d.max(), 1e-30)
    return best


def warn_if_unstable(problem: Problem, theta0, etas, limit: tuple[float, str] | None = (2.0, "GD")) -> None:
    """Warn when max ηₖ ≥ c/λ_max(∇²L(θ₀)), the method's local stability limit on a quadratic (``limit`` =
    (c, name): GD's c = 2; heavy-ball momentum's 2(1 + β); None: no such limit, no check). Above 512
    parameters λ_max is taken by at most 20 steps of power iteration on Hessian-vector products (no d × d
    matrix; its Rayleigh quotient is a lower bound, so a warning is never spurious, but with a small spectral
    gap it can be missed; theory/function-models.md, FMOD-4).

    A LAPACK-free upper bound on λ_max settles most runs first: the eigendecomposition of a 200 × 200
    Hessian took 2 ms on an idle 2-core machine but 40-270 ms beside other work (OpenBLAS's threads waiting
    for busy cores), up to a third of a 10,000-path, 200-step label-noise run (scripts/bench_sgd.py). The
    exact λ_max is computed only where the bound cannot rule the warning out, so the warning is the same."""
    if limit is None:
        return
    c, name = limit
    th = np.asarray(theta0, dtype=np.float64).reshape(-1, problem.n_params)[0]
    th = th.astype(problem.X.dtype)
    if problem.n_params > MAX_PARAMS_FOR_STABILITY_CHECK:
        _warn(_lambda_max_at_size(problem, th), etas, c, name)
        return
    # compiled once per problem structure (an eager jax.hessian re-dispatches op by op: 3.1 s of CPU at first
    # call on a d = 155 two-layer net against 0.44 s compiled), in X's dtype: the one λ_max below is taken in
    H_x = _hessian(problem, jnp.asarray(th))
    H = np.asarray(H_x, dtype=np.float64)
    slack = 1e-4 * float(np.max(np.abs(H).sum(axis=1)))  # ≥ 1e-4‖H‖₂: the rounding of eigvalsh in X's dtype
    if etas.max() * (_lambda_max_bound(H) + slack) < c:
        return
    _warn(lambda_max(H_x), etas, c, name)  # lambda_max(H_x) = problem.sharpness(th), without a second Hessian


# λ_max at size by (problem, θ₀): 20 Hessian-vector products over all n rows cost more than a short run (at
# d = 9·10⁶, n = 1000 on 2 shared cores about 3 minutes), and repeated runs from one start (a benchmark, a sweep,
# a resume) ask again
_AT_SIZE: dict[tuple, float] = {}


def _lambda_max_at_size(problem: Problem, th: np.ndarray) -> float:
    leaves, structure = jax.tree.flatten(problem)
    arrays = [np.asarray(x) for x in leaves if isinstance(x, jax.Array | np.ndarray)]
    key = (structure, digest(*arrays, th))
    try:
        hash(key)
    except TypeError:  # a static part without a hash: no cache
        return float(_power_lambda_max(problem, jnp.asarray(th), STABILITY_POWER_ITERS, STABILITY_POWER_RTOL))
    if key not in _AT_SIZE:
        if len(_AT_SIZE) >= 16:
            _AT_SIZE.pop(next(iter(_AT_SIZE)))
        lam = _power_lambda_max(problem, jnp.asarray(th), STABILITY_POWER_ITERS, STABILITY_POWER_RTOL)
        _AT_SIZE[key] = float(lam)
    return _AT_SIZE[key]


def _warn(lam: float, etas, c: float, name: str) -> None:
    if lam > 0 and etas.max() * lam >= c:
        cs = "2" if c == 2 else f"{c:.4g}"
        warnings.warn(
            f"lr = {etas.max():.4g} is at or past the {name} stability limit {cs}/λ_max(∇²L(θ₀)) = {c / lam:.4g}; "
            "the run may diverge (divergence is detected and reported)",
            RuntimeWarning,
            stacklevel=4,
        )
