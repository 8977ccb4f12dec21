"""Curvature and accuracy observables at size: no d × d matrix, no d × n Jacobian (theory/curvature.md).

Each is an ``AbstractObservable``: a callable (problem, θ) ↦ array recorded per path every ``Record.every``
steps like ``"loss"``. Randomness (Lanczos's start vector, Hutchinson's probes) comes from the observable's own
key, the same at every record and on every path (common random numbers: differences between paths and records
are not blurred by new probes).
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._ensemble import to_key
from ._hvp import power_iteration as _power
from ._observables import AbstractObservable
from ._validation import check_int_range


def _key_data(key) -> Array:
    return jax.random.key_data(to_key(key))


def _unit(v):
    return v / jnp.linalg.norm(v)


def lanczos_ritz_values(matvec, v0, iters: int, key) -> Array:
    """The Ritz values (ascending) of ``iters`` Lanczos steps on a symmetric operator from v0 (CURV-1):
    ``lanczos(…)[0]`` (by eigvalsh of the tridiagonal T)."""
    return jnp.linalg.eigvalsh(_tridiagonal(*_lanczos_coefficients(matvec, v0, iters, key)))


def lanczos(matvec, v0, iters: int, key) -> tuple[Array, Array]:
    """The Ritz values θ_k (ascending) of ``iters`` Lanczos steps on a symmetric operator H from v0, and their
    residual bounds $r_k = |\\beta_m s_{mk}|$ = ‖Hx_k − θ_k x_k‖ for the unit Ritz vector x_k (s_k: T's eigenvector,
    β_m: the coupling to the next Lanczos vector): H has an eigenvalue within r_k of θ_k (CURV-1, CURV-5).
    The smallest Ritz value is ≥ λ_min(H) (interlacing), the largest ≤ λ_max(H)."""
    alpha, beta = _lanczos_coefficients(matvec, v0, iters, key)
    ritz, S = jnp.linalg.eigh(_tridiagonal(alpha, beta))
    return ritz, jnp.abs(beta[-1] * S[-1, :])


def _tridiagonal(alpha, beta):
    off = beta[:-1]
    return jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)


def _lanczos_coefficients(matvec, v0, iters: int, key) -> tuple[Array, Array]:
    """The diagonal α and the couplings β (β[-1]: to the next, unused vector) of ``iters`` Lanczos steps.

    Full reorthogonalization (classical Gram–Schmidt, twice) keeps the basis orthogonal in floating point;
    when the Krylov space closes (an invariant subspace, e.g. fewer distinct eigenvalues than steps) the next
    vector is a random one orthogonal to the basis and its coupling is 0, so T is block diagonal and every
    Ritz value stays an eigenvalue estimate of the operator. ``iters`` ≤ d."""
    d = v0.shape[0]
    dt = v0.dtype
    tol = 100 * jnp.finfo(dt).eps
    # restart candidates: cyclic shifts of one Gaussian vector (generically independent; one draw, not one per
    # step, keeps the compiled loop small)
    restart = jax.random.normal(key, (d,), dt)

    def orth(V, w):
        w = w - V.T @ (V @ w)
        return w - V.T @ (V @ w)

    def body(j, state):
        V, alpha, beta, v, v_prev, b_prev, scale = state
        V = V.at[j].set(v)
        w = matvec(v)
        a = jnp.vdot(v, w)
        w = orth(V, w - a * v - b_prev * v_prev)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(a) + b_prev)
        ok = b > tol * scale
        r = orth(V, jnp.roll(restart, j))
        v_next = jnp.where(ok, w / jnp.where(ok, b, 1), _unit(r))
        b = jnp.where(ok, b, 0)
        return V, alpha.at[j].set(a), beta.at[j].set(b), v_next, v, b, scale

    zero = jnp.zeros((), dt)
    init = (
        jnp.zeros((iters, d), dt),
        jnp.zeros(iters, dt),
        jnp.zeros(iters, dt),
        _unit(v0),
        v0 * 0,
        zero,
        zero,
    )
    _, alpha, beta, *_ = jax.lax.fori_loop(0, iters, body, init)
    return alpha, beta


def power_iteration(matvec, v0, iters: int) -> Array:
    """The Rayleigh quotient $v_k^T H v_k$ after k = ``iters`` − 1 normalised products $v_{j+1} = Hv_j/\\|Hv_j\\|$
    (``iters`` products in all, fewer only once it repeats exactly; CURV-2): ``_hvp.power_iteration``
    without a shift or a tolerance."""
    return _power(matvec, v0, jnp.zeros((), v0.dtype), iters, 0.0)[0]


class Sharpness(AbstractObservable):
    """$\\lambda_{\\max}(\\nabla^2 L(\\theta))$ from Hessian-vector products, never forming ∇²L (CURV-1, CURV-2).

    ``method="lanczos"`` (default): the largest Ritz value of ``iters`` Lanczos steps with full
    reorthogonalization; it is a lower bound of λ_max that converges like Chebyshev polynomials (exact once
    ``iters`` reaches the number of distinct eigenvalues), and it finds the top of the spectrum even where
    negative eigenvalues are larger in modulus. ``method="power"``: power iteration's Rayleigh quotient, whose
    error shrinks like $(\\lambda_2/\\lambda_1)^{2k}$ and which converges to the eigenvalue of largest modulus
    (λ_max near a minimum). The start vector is Gaussian from ``key``.

    Cost per record and path: ``iters`` HVPs (each about two to four gradient evaluations of L over the n
    examples), plus O(iters²·d) for Lanczos's reorthogonalization; memory O(iters·d) (Lanczos) or O(d)
    (power).

    Args:
        iters: Hessian-vector products per evaluation (≥ 1; capped at d).
        method: "lanczos" or "power".
        key: a JAX key or an int seed for the start vector.
        name: the record's name.
    """

    iters: int = eqx.field(static=True)
    method: Literal["lanczos", "power"] = eqx.field(static=True)
    key: Array
    name: str = eqx.field(static=True)

    def __init__(self, iters: int = 20, *, method: str = "lanczos", key=0, name: str = "sharpness"):
        self.iters = check_int_range("iters", iters, 1)
        if method not in ("lanczos", "power"):
            raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
        self.method = method  # type: ignore[assignment]
        self.key = _key_data(key)
        self.name = _check_name(name)

    def start_vector(self, d: int, dtype) -> Array:
        """The start vector v₀ ~ N(0, I_d) (before normalising)."""
        return jax.random.normal(jax.random.wrap_key_data(self.key), (d,), dtype)

    def __call__(self, problem, theta):
        theta = jnp.asarray(theta)
        d = theta.shape[-1]
        v0 = self.start_vector(d, theta.dtype)
        matvec = lambda v: problem.hvp(theta, v)  # noqa: E731
        if self.method == "power":
            return power_iteration(matvec, v0, self.iters)
        restart = jax.random.fold_in(jax.random.wrap_key_data(self.key), 1)
        return lanczos_ritz_values(matvec, v0, min(self.iters, d), restart)[-1]


class HutchinsonTrace(AbstractObservable):
    """Hutchinson's estimate $\\frac1P\\sum_{p=1}^P z_p^T M z_p$ of tr M with Rademacher probes z_p, for
    M = ∇²L(θ) (``matrix="hessian"``) or the Gauss–Newton matrix G(θ) (``matrix="gauss_newton"``; CURV-3).

    Unbiased; its variance is $2(\\|M\\|_F^2 - \\sum_i M_{ii}^2)/P$ (exact for diagonal M). For G the quadratic
    form is $z^TGz = \\frac1n\\sum_i (J_iz)^T\\partial_f^2\\ell_i\\,(J_iz)$: one Jacobian-vector product of the
    outputs per probe, no Hessian of f.

    Cost per record and path: P HVPs (hessian) or P forward-mode products of the n outputs (gauss_newton,
    about one forward pass each); memory O(P·d) plus P times one product's activations (probes are vmapped).

    Args:
        probes: P ≥ 1.
        matrix: "hessian" or "gauss_newton".
        key: a JAX key or an int seed for the probes (the same probes at every record and path).
        name: the record's name (default "trace_hessian" or "trace_gauss_newton_hutchinson").
    """

    probes: int = eqx.field(static=True)
    matrix: Literal["hessian", "gauss_newton"] = eqx.field(static=True)
    key: Array
    name: str = eqx.field(static=True)

    def __init__(self, probes: int = 8, *, matrix: str = "hessian", key=0, name: str | None = None):
        self.probes = check_int_range("probes", probes, 1)
        if matrix not in ("hessian", "gauss_newton"):
            raise ValueError(f"matrix must be 'hessian' or 'gauss_newton', got {matrix!r}")
        self.matrix = matrix  # type: ignore[assignment]
        self.key = _key_data(key)
        default = "trace_hessian" if matrix == "hessian" else "trace_gauss_newton_hutchinson"
        self.name = _check_name(default if name is None else name)

    def probe_vectors(self, d: int, dtype) -> Array:
        """The P Rademacher probes (P, d)."""
        return jax.random.rademacher(jax.random.wrap_key_data(self.key), (self.probes, d), dtype)

    def quadratic_forms(self, problem, theta) -> Array:
        """$z_p^T M z_p$ for each probe (P,)."""
        theta = jnp.asarray(theta)
        Z = self.probe_vectors(theta.shape[-1], theta.dtype)
        if self.matrix == "hessian":
            return jax.vmap(lambda z: jnp.vdot(z, problem.hvp(theta, z)))(Z)
        h = problem.loss_curvatures(theta)

        def gn(z):
            jz = jax.jvp(problem.outputs, (theta,), (z,))[1]
            if jz.ndim == 2:
                return jnp.mean(jnp.einsum("nk,nkl,nl->n", jz, h, jz))
            return jnp.mean(h * jz * jz)

        return jax.vmap(gn)(Z)

    def __call__(self, problem, theta):
        return jnp.mean(self.quadratic_forms(problem, theta))


class Accuracy(AbstractObservable):
    """The fraction of examples classified right: $\\frac1m\\sum_j [\\arg\\max_k f_k(\\theta; x_j) = y_j]$ for K
    outputs (integer classes), $\\frac1m\\sum_j [\\operatorname{sign} f(\\theta; x_j) = y_j]$ for one output
    (y ∈ {±1}: logistic loss, or the squared loss on ±1 targets).

    ``X``, ``y``: the data to score (a validation or test set); None: the problem's own training data.
    Cost per record and path: one forward pass over the m examples. 1 − accuracy is the error.
    """

    X: Array | None
    y: Array | None
    name: str = eqx.field(static=True)
    label_range: tuple[int, int] | None = eqx.field(static=True)

    def __init__(self, X=None, y=None, *, name: str = "accuracy"):
        if (X is None) != (y is None):
            raise ValueError(
                "give both X and y (the data to score), or neither (the problem's training data)"
            )
        self.name = _check_name(name)
        if X is None:
            self.X = self.y = None
            self.label_range = None
            return
        Xa = np.asarray(X)
        if Xa.ndim != 2 or not np.issubdtype(Xa.dtype, np.number) or np.iscomplexobj(Xa):
            raise ValueError(f"X must be a real 2-D array (m, p), got dtype {Xa.dtype} shape {Xa.shape}")
        if not np.all(np.isfinite(Xa)):
            raise ValueError("X must be finite")
        ya = np.asarray(y)
        if ya.shape != (Xa.shape[0],):
            raise ValueError(f"y must have shape ({Xa.shape[0]},) to match X, got {ya.shape}")
        if not (np.issubdtype(ya.dtype, np.integer) or np.issubdtype(ya.dtype, np.floating)) or not np.all(
            np.isfinite(ya) & (np.mod(ya, 1) == 0)
        ):
            raise ValueError("y must hold integer labels (classes 0..K−1, or ±1 for a one-output model)")
        self.X = jnp.asarray(Xa)
        self.y = jnp.asarray(ya.astype(np.int32))
        self.label_range = (int(ya.min()), int(ya.max())) if ya.size else (0, 0)

    def __call__(self, problem, theta):
        theta = jnp.asarray(theta)
        K = problem.model.n_outputs
        if self.X is None or self.y is None:
            X, y = problem.X, problem.y
        else:
            X, y = self.X, self.y
            if X.shape[1] != problem.model.input_dim:
                raise ValueError(
                    f"Accuracy: X must have {problem.model.input_dim} columns (the model's input dim), got "
                    f"{X.shape}"
                )
            lo, hi = self.label_range or (0, 0)
            if K > 1 and (lo < 0 or hi >= K):
                raise ValueError(f"Accuracy: y must hold classes in [0, {K - 1}], got labels in [{lo}, {hi}]")
            if K == 1 and not {lo, hi} <= {-1, 1}:
                raise ValueError(f"Accuracy: y must be ±1 for a one-output model, got labels in [{lo}, {hi}]")
        f = problem.model.outputs(theta, X.astype(theta.dtype))
        if K > 1:
            right = jnp.argmax(f, axis=-1).astype(jnp.int32) == y.astype(jnp.int32)
        else:
            right = jnp.where(f >= 0, 1, -1).astype(jnp.int32) == y.astype(jnp.int32)
        return jnp.mean(right.astype(theta.dtype))


def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    return name


# MINRES stops as a least-squares solve once ‖Hr‖ ≤ this·‖H‖_F-estimate·‖r‖ (an inconsistent singular system)
MINRES_LS_RTOL = 1e-9


def minres(matvec, b, rtol, max_iters: int) -> tuple[Array, Array, Array]:
    """MINRES (Paige & Saunders 1975) from x₀ = 0 on a symmetric, possibly indefinite or singular H given by its
    products: x_k minimizes ‖b − Hx‖ over the Krylov space K_k(H, b) (CURV-6). It stops once the residual is
    ≤ ``rtol`` (absolute; a traced scalar), at a breakdown (the Krylov space is invariant: x_k is then the least
    squares solution on it), or after ``max_iters`` products. Returns (x, ‖b − Hx‖ by the recurrence, products
    used). Short recurrences: memory seven d-vectors, whatever the number of steps (unlike GMRES's basis)."""
    dt = b.dtype
    tiny = jnp.finfo(dt).tiny
    beta1 = jnp.linalg.norm(b)
    zero = jnp.zeros_like(b)
    scal = lambda x: jnp.asarray(x, dt)  # noqa: E731

    def cond(state):
        k, *_, beta, phibar, _, ls = state
        return (k < max_iters) & (phibar > rtol) & (beta > 0) & ~ls

    def body(state):
        k, x, w, w2, r1, r2, y, oldb, dbar, epsln, cs, sn, beta, phibar, tnorm2, _ = state
        v = y / beta
        y = matvec(v)
        y = y - jnp.where(k > 0, beta / jnp.where(oldb > 0, oldb, 1), 0) * r1
        alfa = jnp.vdot(v, y)
        y = y - (alfa / beta) * r2
        r1, r2 = r2, y
        oldb, beta = beta, jnp.linalg.norm(y)
        tnorm2 = tnorm2 + alfa**2 + oldb**2 + beta**2
        oldeps = epsln
        delta = cs * dbar + sn * alfa
        gbar = sn * dbar - cs * alfa
        epsln = sn * beta
        dbar = -cs * beta
        root = jnp.hypot(gbar, dbar)  # ‖H r_k‖ / ‖r_k‖ (the least-squares test)
        gamma = jnp.maximum(jnp.hypot(gbar, beta), tiny)
        cs, sn = gbar / gamma, beta / gamma
        phi, phibar = cs * phibar, sn * phibar
        w1, w2 = w2, w
        w = (v - oldeps * w1 - delta * w2) / gamma
        # ‖H r‖ ≤ MINRES_LS_RTOL·‖H‖‖r‖: x is (to that accuracy) a least-squares solution of an inconsistent
        # system, where further steps only grow x along H's near-null space
        ls = root <= MINRES_LS_RTOL * jnp.sqrt(tnorm2)
        x = x + phi * w
        return k + 1, x, w, w2, r1, r2, y, oldb, dbar, epsln, cs, sn, beta, phibar, tnorm2, ls

    z = scal(0)
    init = (
        jnp.int32(0),
        zero,
        zero,
        zero,
        b,
        b,
        b,
        z,
        z,
        z,
        scal(-1),
        z,
        beta1,
        beta1,
        z,
        jnp.asarray(False),
    )
    k, x, *_, phibar, _, _ = jax.lax.while_loop(cond, body, init)
    return x, phibar, k


def steihaug_cg(matvec, g, radius, rtol, max_iters: int) -> tuple[Array, Array, Array, Array]:
    """Steihaug–Toint truncated CG for the trust-region subproblem $\\min_{\\|p\\| \\le \\Delta} g^Tp + \\tfrac12 p^THp$
    (CURV-7) on a symmetric, possibly indefinite H given by its products, from p₀ = 0.

    CG on Hp = −g until the residual ‖g + Hp‖ ≤ ``rtol`` (absolute; a traced scalar), or a direction of
    non-positive curvature dᵀHd ≤ 0 appears, or the next iterate leaves the ball ‖p‖ ≤ Δ = ``radius``: then it
    steps along the current direction to the boundary and stops; after ``max_iters`` products it returns the last
    iterate. Each iterate lowers the model m(p) = gᵀp + ½pᵀHp and ‖p‖ grows along the way (Steihaug 1983), so the
    first iterate (the Cauchy point along −g, clipped to the ball) already gives the decrease that makes a
    trust-region method converge. Returns (p, the model decrease −m(p) ≥ 0, products used, whether p is on
    the boundary). Memory: five d-vectors besides g, whatever the number of steps."""
    dt = g.dtype
    radius = jnp.asarray(radius, dt)

    def to_boundary(z, d):
        # the root τ ≥ 0 of ‖z + τd‖ = Δ (‖z‖ < Δ), in the form without cancellation
        a, b, c = jnp.vdot(d, d), jnp.vdot(z, d), jnp.vdot(z, z) - radius**2
        disc = jnp.sqrt(jnp.maximum(b * b - a * c, 0.0))
        return jnp.where(
            b > 0, -c / jnp.where(b + disc > 0, b + disc, 1), (disc - b) / jnp.where(a > 0, a, 1)
        )

    def cond(state):
        j, *_, done, _ = state
        return ~done & (j < max_iters)

    def body(state):
        j, z, r, d, rr, _, _ = state
        hd = matvec(d)
        dhd = jnp.vdot(d, hd)
        alpha = rr / jnp.where(dhd > 0, dhd, 1)
        hit = (dhd <= 0) | (jnp.linalg.norm(z + alpha * d) >= radius)
        step = jnp.where(hit, to_boundary(z, d), alpha)
        z = z + step * d
        r = r + step * hd  # r = g + Hz throughout
        rr_new = jnp.vdot(r, r)
        d = -r + (rr_new / jnp.where(rr > 0, rr, 1)) * d
        return j + 1, z, r, d, rr_new, hit | (jnp.sqrt(rr_new) <= rtol), hit

    rr0 = jnp.vdot(g, g)
    init = (jnp.int32(0), jnp.zeros_like(g), g, -g, rr0, jnp.sqrt(rr0) <= rtol, jnp.asarray(False))
    j, z, r, _, _, _, hit = jax.lax.while_loop(cond, body, init)
    # m(z) = gᵀz + ½zᵀHz with Hz = r − g: no extra product
    decrease = -(jnp.vdot(g, z) + 0.5 * jnp.vdot(z, r - g))
    return z, decrease, j, hit
