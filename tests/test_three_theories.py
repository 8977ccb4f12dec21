"""The three theories of implicit regularization (issue 13). Theory 2, kernel vs rich: gradient descent on a
diagonal linear network from scale α converges to argmin Q_α(β) subject to Xβ = y."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdsde as sd
from sgdsde.implicit import hypentropy, kernel_rich_limit, min_l1_interpolant, min_l2_interpolant


def sparse_problem(seed=0, n=20, d=50):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    beta_star = np.zeros(d)
    beta_star[:3] = [1.0, -2.0, 1.5]
    return X, X @ beta_star, beta_star


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 1.0, 10.0])
def test_kernel_rich_limit_is_the_constrained_argmin(alpha):
    """The KKT point interpolates (‖Xβ − y‖∞ ≤ 1e-10) and no feasible β does better: Q_α(β_α + Nz) ≥ Q_α(β_α)
    for 200 random null-space directions z at three scales (Q_α is strictly convex, so the KKT point is the
    unique argmin; the comparison checks the derivation independently of it). [theory: THR-1]"""
    X, y, _ = sparse_problem()
    sol = kernel_rich_limit(X, y, alpha)
    assert sol.kkt_gap <= 1e-10
    np.testing.assert_allclose(sol.beta, 2 * alpha**2 * np.sinh(X.T @ sol.nu), rtol=1e-12)
    null = np.linalg.svd(X)[2][X.shape[0] :].T  # (d, d − n) basis of ker X
    q0 = hypentropy(sol.beta, alpha)
    rng = np.random.default_rng(1)
    for scale in (1e-3, 1e-1, 1.0):
        for _ in range(200):
            other = sol.beta + scale * null @ rng.normal(size=null.shape[1])
            assert hypentropy(other, alpha) >= q0 - 1e-12 * max(1.0, abs(q0))


@pytest.mark.parametrize(
    "alpha, lr, n_steps", [(0.1, 0.01, 100_000), (1.0, 0.01, 20_000), (10.0, 1e-4, 20_000)]
)
def test_gradient_descent_converges_to_the_kernel_rich_limit(alpha, lr, n_steps):
    """GD on (1/2n)‖X(u⊙u − v⊙v) − y‖² from u = v = α𝟙 ends (training loss < 1e-20) at β_GD with
    ‖β_GD − β_α‖ = O(lr): quartering lr (4× the steps) divides the gap by 4 ± 1 (measured 3.98–4.2), and the
    gap at lr/4 is below 2e-3 (α = 0.1, 1) and 1e-7 (α = 10): gradient flow's limit is β_α and GD's bias is
    first order in the step. [theory: THR-2]"""
    X, y, _ = sparse_problem()
    target = kernel_rich_limit(X, y, alpha).beta
    gaps = []
    problem = sd.Problem(sd.DiagonalLinearNetwork(X.shape[1], alpha=alpha), X, y, jnp.float64)
    for h, T in ((lr, n_steps), (lr / 4, 4 * n_steps)):
        # GD as one fori_loop: θ equal bit for bit to simulate_sgd's GD run at all six (α, lr) (measured when
        # this replaced it; simulate_sgd's GD on this model is tested in test_reproductions.py), 0.2 s instead
        # of 0.6-3.7 s CPU a run (the simulator's compiles and stability check)
        theta = jax.lax.fori_loop(
            0, T, lambda _, th, h=h: th - h * problem.grad(th), jnp.asarray(problem.model.init(), jnp.float64)
        )
        assert float(problem.loss(theta)) < 1e-20
        beta = np.asarray(problem.model.weights(theta))
        gaps.append(np.linalg.norm(beta - target))
    assert 3 < gaps[0] / gaps[1] < 5, gaps
    assert gaps[1] < (1e-7 if alpha >= 10 else 2e-3), gaps


def test_kernel_and_rich_limits():
    """α → ∞: β_α → the min-ℓ2 interpolant (gap falls by ≥ 50× per decade of α, O(α⁻²)); α → 0: β_α → the
    min-ℓ1 interpolant (here the sparse truth), its ℓ1 norm decreasing monotonically to ‖β_ℓ1‖₁, with a gap
    that shrinks only logarithmically (× ≤ 12 per decade). [theory: THR-3]"""
    X, y, beta_star = sparse_problem()
    l2, l1 = min_l2_interpolant(X, y), min_l1_interpolant(X, y)
    np.testing.assert_allclose(l1, beta_star, atol=1e-8)  # exact recovery at n = 20, k = 3
    big = [np.linalg.norm(kernel_rich_limit(X, y, a).beta - l2) for a in (3.0, 30.0, 300.0)]
    assert big[0] / big[1] > 50 and big[1] / big[2] > 50, big
    alphas = (0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4)
    sols = [kernel_rich_limit(X, y, a).beta for a in alphas]
    norms = [np.abs(b).sum() for b in sols]
    assert all(a > b for a, b in zip(norms, norms[1:], strict=False)) and norms[-1] > np.abs(l1).sum()
    small = [np.linalg.norm(b - l1) for b in sols[3:]]
    assert small[-1] < 1e-3 and all(1 < a / b < 12 for a, b in zip(small, small[1:], strict=False)), small


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda X, y: kernel_rich_limit(X, y, 0.0), "alpha must be finite and > 0"),
        (lambda X, y: kernel_rich_limit(X, y, -1.0), "alpha must be finite and > 0"),
        (lambda X, y: kernel_rich_limit(X, y[:-1], 1.0), "X must be \\(n, d\\) and y \\(n,\\)"),
        (lambda X, y: kernel_rich_limit(np.vstack([X, X[:1]]), np.append(y, y[0]), 1.0), "full row rank"),
        (lambda X, y: hypentropy(y, 0.0), "alpha must be finite and > 0"),
    ],
)
def test_kernel_rich_bad_input(call, match):
    X, y, _ = sparse_problem()
    with pytest.raises(ValueError, match=match):
        call(X, y)


def test_kernel_rich_limit_returns_float64_arrays():
    """The solver runs in float64 (x64 on) and returns numpy arrays."""
    assert jax.config.jax_enable_x64
    X, y, _ = sparse_problem()
    sol = kernel_rich_limit(X, y, 0.5)
    assert isinstance(sol.beta, np.ndarray) and sol.beta.dtype == np.float64
    assert "kernel-rich limit at alpha=0.5" in str(sol)


# --- theory 3: SGD follows a regularized gradient flow ------------------------------------------------------

from sgdsde.analysis import fit_order  # noqa: E402
from sgdsde.implicit import (  # noqa: E402
    epoch_fixed_point,
    expected_epoch,
    modified_flow,
    modified_loss_argmin,
)

# The errors are exact (no Monte Carlo), so a fit's band only measures how far the errors are from a pure power
# law over the η range (the next order's term); we require the fitted slope within 0.15 of the theory's order (the two-layer net is the slowest to reach it),
# which still separates orders 1, 2 and 3.
ORDER_TOL = 0.15
# η = 2⁻⁵, 2⁻⁷, 2⁻⁹: the same range as the five points 2⁻⁵…2⁻⁹, whose fitted slopes these three reproduce to 0.006
# in every fit below (measured: GD 1.004/2.003, shuffled linear 2.977/1.978, shuffled two-layer 2.972/1.993, with
# replacement 2.974/1.877); the errors are exact, so the points in between only add work (each flow solve
# compiles anew).
ETAS = 2.0 ** -np.arange(5, 10, 2)


def two_layer_problem(n=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.tanh(X @ np.array([1.0, -0.5])) + 0.3 * rng.normal(size=n)
    net = sd.TwoLayerNetwork(2, 3, "tanh")
    return sd.Problem(net, X, y, jnp.float64), np.asarray(net.init(jax.random.key(seed)), np.float64)


def linear_problem(n=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = rng.normal(size=n)  # not interpolable: per-example gradients disagree at the minimum
    return sd.Problem(sd.LinearRegression(2), X, y, jnp.float64), np.array([1.0, -1.0])


def test_gd_tracks_the_modified_flow_at_order_two():
    """GD (simulate_sgd without noise) on a two-layer tanh net, horizon T = 1, η = ETAS (2⁻⁵…2⁻⁹): the distance to
    the plain gradient flow falls at order 1 and to the flow of L + (η/4)‖∇L‖² at order 2 (fit_order slopes
    within ORDER_TOL of 1 and 2).
    The flows are solved by Tsit5 at rtol 1e-12, far below the smallest error (~1e-6). [theory: THR-4]"""
    problem, theta0 = two_layer_problem()
    etas = ETAS
    errs = {"plain": [], "gd": []}
    # one compiled program for every η (lr is traced, n_steps and the record grid are not): each run takes the
    # smallest η's 1/η steps and θ at step 1/η (time 1) is read from the records every 1/η_max steps (equal bit
    # for bit to a run of 1/η steps, checked)
    n_steps, every = int(1 / etas[-1]), int(1 / etas[0])
    for eta in etas:
        res = sd.simulate_sgd(
            problem,
            None,
            theta0,
            lr=eta,
            n_steps=n_steps,
            key=0,
            record=sd.Record(every=every, n_saved_paths=1),
        )
        assert res.steps[int(1 / eta) // every] == int(1 / eta)
        gd = res.paths[int(1 / eta) // every, 0]
        for kind in errs:
            errs[kind].append(np.linalg.norm(gd - modified_flow(problem, theta0, 1.0, eta, kind)))
    plain, mod = fit_order(etas, errs["plain"]), fit_order(etas, errs["gd"])
    assert abs(plain.order - 1) < ORDER_TOL and abs(mod.order - 2) < ORDER_TOL, (plain, mod)


@pytest.mark.parametrize("name", ["linear", "two_layer"])
def test_shuffled_sgd_epoch_tracks_smiths_modified_flow_at_order_three(name):
    """One epoch of shuffled SGD (n = 4, B = 1, m = 4 steps), averaged exactly over all 24 orderings, against
    the flow over time mη: Smith et al.'s expected modified loss matches at local order 3, GD's modified loss
    only at order 2 (its missing variance term moves the epoch by O(η²)); η = ETAS (2⁻⁵…2⁻⁹; below 2⁻⁵ the local slopes are already within 0.05), slopes within
    ORDER_TOL.
    [theory: THR-5]"""
    problem, theta0 = linear_problem() if name == "linear" else two_layer_problem()
    etas = ETAS
    errs = {"smith": [], "gd": []}
    for eta in etas:
        mean = expected_epoch(problem, theta0, eta, 1, "shuffle")
        for kind in errs:
            flow = modified_flow(problem, theta0, 4 * eta, eta, kind, batch_size=1)
            errs[kind].append(np.linalg.norm(mean - flow))
    smith, gd = fit_order(etas, errs["smith"]), fit_order(etas, errs["gd"])
    assert abs(smith.order - 3) < ORDER_TOL and abs(gd.order - 2) < ORDER_TOL, (smith, gd)


def test_with_replacement_sgd_tracks_gds_modified_flow_not_smiths():
    """With replacement (all 4⁴ = 256 equally likely batch sequences of m = 4 single examples) on linear
    regression, the epoch mean matches GD's modified flow at local order 3 and Smith's only at order 2: the
    variance term belongs to shuffling (minibatch-noise.md §9.7, our derivation for linear gradients).
    [theory: THR-5]"""
    problem, theta0 = linear_problem()
    etas = ETAS
    errs = {"smith": [], "gd": []}
    for eta in etas:
        mean = expected_epoch(problem, theta0, eta, 1, "with_replacement")
        for kind in errs:
            errs[kind].append(
                np.linalg.norm(mean - modified_flow(problem, theta0, 4 * eta, eta, kind, batch_size=1))
            )
    smith, gd = fit_order(etas, errs["smith"]), fit_order(etas, errs["gd"])
    assert abs(gd.order - 3) < ORDER_TOL and abs(smith.order - 2) < ORDER_TOL, (gd, smith)


def test_modified_flow_bad_input():
    problem, theta0 = linear_problem()
    with pytest.raises(ValueError, match="kind must be one of"):
        modified_flow(problem, theta0, 1.0, 0.1, "sgd")
    with pytest.raises(ValueError, match="needs batch_size"):
        modified_flow(problem, theta0, 1.0, 0.1, "smith")
    with pytest.raises(ValueError, match="batch_size must be in \\[1, 4\\]"):
        modified_flow(problem, theta0, 1.0, 0.1, "smith", batch_size=5)
    with pytest.raises(ValueError, match="eta must be finite and > 0"):
        modified_flow(problem, theta0, 1.0, -0.1)
    with pytest.raises(ValueError, match="batch_size must divide n = 4"):
        expected_epoch(problem, theta0, 0.1, 3)
    with pytest.raises(ValueError, match="sampling must be 'shuffle' or 'with_replacement'"):
        expected_epoch(problem, theta0, 0.1, 1, "without_replacement")
    big, theta_big = linear_problem(n=10)
    with pytest.raises(ValueError, match="n! = 3628800 orderings"):
        expected_epoch(big, theta_big, 0.1, 1)

    with pytest.raises(ValueError, match="kind must be one of"):
        modified_loss_argmin(problem, theta0, 0.1, "sgd")
    with pytest.raises(ValueError, match="eta must be finite and > 0"):
        epoch_fixed_point(problem, theta0, 0.0, 1)


def long_run_problem(name):
    """n = 6 examples, B = 2 (m = 3, 720 orderings): 1-D quadratics ℓᵢ = (aᵢ/2)(θ − cᵢ)² (§9.8's case), or a
    one-unit tanh net f = a·tanh(wx) (d = 2 < n: isolated minima), started at its GD minimum."""
    rng = np.random.default_rng(0)
    if name == "quadratics":
        a, c = rng.uniform(0.5, 2, 6), rng.normal(size=6)
        return sd.Problem(sd.LinearRegression(1), np.sqrt(a)[:, None], np.sqrt(a) * c, jnp.float64), np.zeros(
            1
        )
    X = rng.normal(size=(6, 1))
    y = 1.5 * np.tanh(0.8 * X[:, 0]) + 0.3 * rng.normal(size=6)
    net = sd.TwoLayerNetwork(1, 1, "tanh")
    problem = sd.Problem(net, X, y, jnp.float64)
    # 5000 GD steps at η = 0.2 as one fori_loop: equal bit for bit to simulate_sgd's GD run (measured when this
    # replaced it), without the simulator's compile and checks (2.8 s -> 0.08 s CPU); Newton on L then
    # polishes the point to 1e-13
    theta = jax.lax.fori_loop(
        0,
        5000,
        lambda _, th: th - 0.2 * problem.grad(th),
        jnp.asarray(net.init(jax.random.key(0)), jnp.float64),
    )
    return problem, modified_loss_argmin(problem, np.asarray(theta), 1e-3, "plain")


@pytest.mark.parametrize("name", ["quadratics", "tanh"])
def test_long_run_mean_iterate_is_the_argmin_of_smiths_loss_at_order_two(name):
    """The fixed point of the exactly averaged shuffled epoch map (where the mean iterate settles) is O(η²)
    from the argmin of Smith et al.'s modified loss and only O(η) from the argmins of L and of GD's modified
    loss (whose (η/4)‖∇L‖² term vanishes to first order at the minimum); η = 2⁻⁴…2⁻⁶, exact (no Monte Carlo),
    slopes within ORDER_TOL (measured 1.97–2.0 and 0.99). [theory: THR-7]"""
    problem, theta0 = long_run_problem(name)
    etas = 2.0 ** -np.arange(4, 7)
    errs = {"plain": [], "gd": [], "smith": []}
    # L's argmin does not depend on η ("plain" ignores it): solved once, equal bit for bit to a solve per η
    argmin_l = modified_loss_argmin(problem, theta0, etas[0], "plain")
    for eta in etas:
        fp = epoch_fixed_point(problem, theta0, eta, 2)
        errs["plain"].append(np.linalg.norm(fp - argmin_l))
        for kind in ("gd", "smith"):
            errs[kind].append(
                np.linalg.norm(fp - modified_loss_argmin(problem, theta0, eta, kind, batch_size=2))
            )
    fits = {k: fit_order(etas, v) for k, v in errs.items()}
    assert abs(fits["smith"].order - 2) < ORDER_TOL, fits
    assert abs(fits["plain"].order - 1) < ORDER_TOL and abs(fits["gd"].order - 1) < ORDER_TOL, fits


# --- theory 1: escape from a minimum (the exact reference) ----------------------------------------------------

import math  # noqa: E402

from sgdsde.analysis import mean_exit_time  # noqa: E402


def test_mean_exit_time_closed_forms():
    """The quadrature against closed forms: constant drift v toward the target (reflection far away), T = L/v;
    pure diffusion reflected at a, T = (b − x₀)(b + x₀ − 2a)/σ² (both to 1e-7, the grid's O(h²)). [theory: THR-6]"""
    t = mean_exit_time(lambda x: np.full_like(x, 1.0), lambda x: np.full_like(x, 2.0), 0.0, 1.0, -30.0)
    assert t == pytest.approx(1.0, rel=1e-7)
    t = mean_exit_time(lambda x: 0 * x, lambda x: np.full_like(x, 2.0), 0.3, 1.0, 0.0)
    assert t == pytest.approx(0.7 * 1.3 / 2, rel=1e-7)
    with pytest.raises(ValueError, match="lower < x0 < target"):
        mean_exit_time(lambda x: 0 * x, lambda x: 1 + 0 * x, 2.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="diffusion_sq must be finite and > 0"):
        mean_exit_time(lambda x: 0 * x, lambda x: 0 * x, 0.5, 1.0, 0.0)


def test_kramers_is_the_small_noise_asymptote_of_the_exact_escape_time():
    """Double well U = x⁴/4 − x²/2 (ΔU = 1/4, U″ = 2 at the minimum, −1 at the saddle), isotropic noise σ²,
    escape from −1 to 0.8 (past the saddle): the exact time over Eyring–Kramers' (2π/√(U″_min|U″_max|))e^{2ΔU/σ²}
    is 1.19, 1.10, 1.043, 1.020 at 2ΔU/σ² = 2, 5, 10, 20 noise units: the prefactor's relative error falls like
    ≈ 0.4 σ²/(2ΔU), about 10% at 4 units (the issue's warning), so Monte Carlo is checked against the exact
    integral, never against Kramers. [theory: THR-6]"""
    ratios = []
    for units in (2.0, 5.0, 10.0, 20.0):
        s2 = 2 * 0.25 / units
        exact = mean_exit_time(lambda x: -(x**3 - x), lambda x, s2=s2: np.full_like(x, s2), -1.0, 0.8, -3.0)
        ratios.append(exact / (2 * math.pi / math.sqrt(2.0) * math.exp(units)))
    assert all(a > b > 1 for a, b in zip(ratios, ratios[1:], strict=False))
    assert ratios[-1] < 1.03 and ratios[0] > 1.15


def test_sde_escape_time_matches_the_exact_integral():
    """simulate_sde on the double well with σ² = 0.25 (2 noise units), dt = 0.005, FirstPassage to the saddle
    x = 0 with the bridge test, 2000 paths: the MFPT is within 4 s.e. of the exact integral (18.43; measured
    18.25 ± 0.40). Euler's drift bias is O(dt) ≈ 0.5%, a fifth of the s.e. [theory: THR-6]"""
    s2, dt = 0.25, 0.005
    exact = mean_exit_time(lambda x: -(x**3 - x), lambda x: np.full_like(x, s2), -1.0, 0.0, -3.0)
    sde = sd.FunctionSDE(
        lambda th, eta: -(th**3 - th),
        lambda th: jnp.full((1, 1), math.sqrt(s2), th.dtype),
        noise_type="additive",
    )
    res = sd.simulate_sde(
        sde,
        None,
        np.array([-1.0]),
        lr=dt,
        n_steps=int(12 * exact / dt),
        key=0,
        ensemble=sd.Ensemble(n_paths=2000, dtype=np.float64),
        first_passage=sd.FirstPassage(
            observable=lambda p, th: th[0], threshold=0.0, below=False, bridge_variance=s2
        ),
    )
    m, se = res.first_passage.mfpt()
    assert abs(m - exact) < 4 * se, (m, se, exact)


# --- theory 1: sharp and flat minima (the learned double well) --------------------------------------------

from helpers import load_script  # noqa: E402

from sgdsde.analysis import (  # noqa: E402
    AffineNoise,
    eyring_kramers_time,
    sme_coefficients,
    stationary_covariance_sde,
    stationary_covariance_sgd,
)


@pytest.fixture(scope="module")
def well():
    return load_script("fig_sharp_minima").Well()


def test_double_well_data_has_two_interpolating_minima_of_different_curvature():
    """double_well_data makes both θ₁ and θ₂ fit every example (loss 0, gradient 0) and the autodiff Hessian
    there equals the returned curvature ‖P p′(θ)‖² (= the Gauss–Newton matrix, so label noise's covariance
    σ²G/B is σ²H/B at both minima); sharp first. [theory: THR-8]"""
    data = sd.double_well_data((0.3, -1.2))
    assert data.minima == (-1.2, 0.3)
    problem = sd.Problem(sd.PolynomialCurve(3), data.X, data.y, jnp.float64)
    for theta, h in zip(data.minima, data.curvatures, strict=True):
        th = jnp.array([theta])
        assert float(problem.loss(th)) < 1e-28 and abs(float(problem.grad(th)[0])) < 1e-14
        np.testing.assert_allclose(float(problem.hessian(th)[0, 0]), h, rtol=1e-12)
        np.testing.assert_allclose(float(problem.gauss_newton(th)[0, 0]), h, rtol=1e-12)
    assert data.curvatures[0] / data.curvatures[1] > 3  # 4.196 / 1.244
    noise = sd.LabelNoise(2.0, 3, sampling="with_replacement")
    for theta, h in zip(data.minima, data.curvatures, strict=True):
        cov = float(noise.covariance(problem, jnp.array([theta]))[0, 0])
        np.testing.assert_allclose(cov, 4.0 * h / 3, rtol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sd.double_well_data((0.5, 0.5)), "minima must be two distinct points"),
        (lambda: sd.double_well_data((0.5, np.nan)), "minima must be two finite numbers"),
        (lambda: sd.double_well_data((0.5,)), "minima must be two finite numbers"),
        (lambda: sd.double_well_data((0.5, 1.0), n_samples=2), "n_samples must be"),
        (lambda: sd.PolynomialCurve(0), "degree must be"),
        (
            lambda: eyring_kramers_time(lambda x: -(x**3 - x), lambda x: np.ones_like(x), 0.0, 1.0),
            "minimum must be a minimum",
        ),
        (lambda: mean_exit_time(lambda x: -x, lambda x: np.ones_like(x), 0.0, 0.0, 1.0), "need finite lower"),
    ],
)
def test_double_well_bad_input(call, match):
    """Coincident or non-finite minima, too few samples, degree < 1, a "minimum" that is not one, a start not
    between the ends: a ValueError naming the argument. [theory: THR-8]"""
    with pytest.raises(ValueError, match=match):
        call()


def test_label_noise_escape_favours_flat_minima_exponentially_and_white_noise_does_not(well):
    """Exact SDE escape times (the integral, no Monte Carlo) on the learned double well, equal barrier from both
    minima, label noise σ = 8, η/B = 0.00125…0.0047: under label noise T_flat/T_sharp grows exponentially in B/η (× > 8 over the
    range) with log-slopes tending to 2∫L′/Σ̂ (fitted over the smallest η/B within 15% of the prediction: the
    prefactor's dependence on η/B is the gap); under isotropic noise of the same mean variance the ratio stays
    within 15% of its value (a prefactor ratio, ≈ 1.7) and both slopes match 2ΔL/s² within 3%. [theory: THR-9]"""
    ratios = (0.00125, 0.0015625, 0.001875, 0.003125, 0.0046875)
    t = {
        (k, wl, r): well.exact(k, r, 1, wl)
        for k in ("label", "iso")
        for wl in ("flat", "sharp")
        for r in ratios
    }
    label = [t["label", "flat", r] / t["label", "sharp", r] for r in ratios]
    iso = [t["iso", "flat", r] / t["iso", "sharp", r] for r in ratios]
    assert all(a > b for a, b in zip(label, label[1:], strict=False)) and label[0] / label[-1] > 8, label
    assert max(iso) / min(iso) < 1.15 and 1.4 < iso[0] < 2.0, iso
    inv = 1 / np.asarray(ratios[:3])
    for kind, tol in (("label", 0.15), ("iso", 0.03)):
        for wl in ("flat", "sharp"):
            slope = np.polyfit(inv, np.log([t[kind, wl, r] for r in ratios[:3]]), 1)[0]
            assert abs(slope / well.slope(kind, wl) - 1) < tol, (kind, wl, slope, well.slope(kind, wl))
    assert well.slope("label", "flat") > 1.2 * well.slope("label", "sharp")


def test_eyring_kramers_with_state_dependent_noise_is_the_small_noise_limit(well):
    """T_exact / T_Eyring–Kramers (with the √(D_saddle/D_min) factor of state-dependent noise) falls toward 1
    as η/B → 0 under label noise, for both minima: the asymptote's error is stated, not hidden (σ = 8; measured
    at η/B = 0.00125: 1.19 flat, 1.61 sharp; at a tenth of that within 3% and 7%). [theory: THR-9]"""
    for wl, tol in (("flat", 0.03), ("sharp", 0.07)):
        r = [
            well.exact("label", x, 1, wl) / well.kramers("label", x, 1, wl)
            for x in (0.00125, 0.0005, 0.000125)
        ]
        assert all(a > b > 1 for a, b in zip(r, r[1:], strict=False)) and r[-1] < 1 + tol, (wl, r)


def test_the_sde_depends_on_eta_over_B_only_and_discrete_sgd_does_not():
    """Linear scaling as an invariance (§9.12): with batches drawn with replacement the SME's diffusion ηΣ₁/B is
    invariant under (η, B) → (κη, κB), so its exact escape time (double well) and stationary covariance (linear
    regression, Lyapunov equation) agree to 1e-9 across κ = 1, 2, 4; without replacement the factor (n − B)/(n − 1)
    breaks it (the SDE's stationary covariance at B = 8 of n = 40 is ≈ (32/39)× that at B = 1). SGD's exact stationary covariance (its discrete
    Lyapunov equation with the multiplicative noise) moves away from the SDE's as κ grows: the relative gap grows
    with κ, ≈ linearly in η (B.2's table: 0.0581 → 0.0862 at η/B = 0.1). [theory: THR-10]"""
    data = sd.double_well_data((-1.2, 0.3))
    problem = sd.Problem(sd.PolynomialCurve(3), data.X, data.y, jnp.float64)

    def escape(lr, batch, sampling):
        mu, s2 = sme_coefficients(problem, sd.LabelNoise(4.0, batch, sampling=sampling), lr)
        return mean_exit_time(mu, s2, 0.3, -0.9, 3.0)

    base = escape(0.0125, 1, "with_replacement")
    for k in (2, 4):
        np.testing.assert_allclose(escape(0.0125 * k, k, "with_replacement"), base, rtol=1e-9)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * np.array([1.0, 0.7, 0.4])
    y = X @ np.array([1.0, -1.0, 0.5]) + 0.5 * rng.normal(size=40)
    lin = sd.Problem(sd.LinearRegression(3), X, y, jnp.float64)
    H = X.T @ X / 40
    star = np.linalg.solve(H, X.T @ y / 40)
    gaps, sde0 = [], None
    for k in (1, 2, 4, 8):
        noise = AffineNoise.from_noise(lin, sd.MinibatchNoise(k, sampling="with_replacement"))
        v_sde = stationary_covariance_sde(H, noise, lr=0.05 * k, theta_star=star)
        v_sgd = stationary_covariance_sgd(H, noise, lr=0.05 * k, theta_star=star)
        sde0 = v_sde if sde0 is None else sde0
        np.testing.assert_allclose(v_sde, sde0, rtol=1e-9)
        gaps.append(np.trace(H @ v_sgd) / np.trace(H @ v_sde) - 1)
    without = [
        stationary_covariance_sde(
            H,
            AffineNoise.from_noise(lin, sd.MinibatchNoise(k, sampling="without_replacement")),
            lr=0.05 * k,
            theta_star=star,
        )
        for k in (1, 8)
    ]
    # (n − B)/(n − 1) = 32/39 scales the noise; V is that to first order (measured 0.8144 vs 0.8205: the
    # multiplicative part of minibatch noise feeds V back into the noise)
    assert abs(np.trace(without[1]) / np.trace(without[0]) - 32 / 39) < 0.01
    assert all(0 < a < b for a, b in zip(gaps, gaps[1:], strict=False)) and gaps[0] < 0.05 < gaps[-1], gaps


def test_sgd_and_sde_escape_times_match_the_exact_integral(well):
    """Monte Carlo escape from the sharp minimum (label noise σ = 8, η/B = 0.0046875, absorbing target past the
    saddle), against the exact SDE integral (12.32; Eyring–Kramers is 4.3× below it here, THR-9): the SDE
    (Euler, dt = 0.003125, bridge test, 300 paths, s.e. ≈ 4.5%) and SGD at (η, B) = (0.0046875, 1) (600 paths,
    s.e. ≈ 3.3%) are each within 3.5 s.e. (measured with seeds 11, 12: SDE −1.2%, −1.8%; seeds 11–13: SGD −3.5%,
    −1.2%, −5.3%, its O(η) bias about one s.e.); SGD at (0.01875, 4), same η/B (300 paths), escapes faster: below the
    exact time by more than 4 s.e. and below SGD at (0.0046875, 1) by more than 3 s.e. of the difference
    (measured −33%, −30%, −25%: z = −10, −8.4, −7.1 and 6.4, 5.9, 4.0): the η/B collapse breaks linearly in η.
    Sized for the suite: at η/B = 0.0046875 the escape takes a third of the steps of η/B = 0.003125 (the
    script's full-size value, THR-10) and SGD's departure at 4η is about 2.5× as large (−25…−33% against
    −10…−13% there), so a few hundred paths resolve it. [theory: THR-9, THR-10]"""
    times = {}
    for method, lr, batch, n in (
        ("sde", 0.01875, 4, 300),
        ("sgd", 0.0046875, 1, 600),
        ("sgd", 0.01875, 4, 300),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m, se, censored, exact = well.simulate(method, "sharp", lr, batch, n, 11)
        # Euler can explode on the stiff outer wall of the sharp well (noise ∝ θ⁴ there): reported, ≤ 1%
        assert all("diverged" in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert censored <= n // 100, (method, censored)
        times[method, batch] = (m, se)
        if batch == 1 or method == "sde":
            assert abs(m - exact) < 3.5 * se, (method, m, se, exact)
    (t1, s1), (t4, s4) = times["sgd", 1], times["sgd", 4]
    assert (exact - t4) / s4 > 4, (times, exact)
    assert (t1 - t4) / math.hypot(s1, s4) > 3, (times, exact)


# --- theory 2: deep matrix factorization ----------------------------------------------------------------------

from sgdsde.implicit import effective_rank, end_to_end_velocity, singular_value_velocity  # noqa: E402


def sensing_problem(depth, n=4, m=10, seed=0):
    data = sd.matrix_sensing_data(seed, n, 2, m, kind="sensing")
    model = sd.DeepMatrixFactorization(n, depth, scale=0.5)
    return sd.Problem(model, data.X, data.y, jnp.float64), data


def end_to_end_grad(data, W):
    """∇ℓ(W) for ℓ(W) = (1/2m)Σ(⟨A_i, W⟩ − y_i)²."""
    return np.asarray(
        jax.grad(lambda w: 0.5 * jnp.mean((data.X @ w.reshape(-1) - data.y) ** 2))(jnp.asarray(W))
    )


def test_end_to_end_and_singular_value_dynamics_at_balanced_points():
    """N = 3, 4 × 4 sensing (§9.10): at a balanced θ (W_j = U_{j+1} diag σ^{1/3} U_jᵀ, σ = 2, 1, 0.5, 0.2) the
    product's exact velocity under gradient flow on the factors (a JVP along −∇L) equals
    −Σ_j (WWᵀ)^{(j−1)/N}∇ℓ(W)(WᵀW)^{(N−j)/N} to 1e-10 relative, and the singular values' velocity (JVP of the
    SVD) equals −N(σ_r²)^{1−1/N}⟨∇ℓ, u_rv_rᵀ⟩ to 1e-8; off balance the formula is wrong (> 1%), so the test can
    fail. The imbalance W_{j+1}ᵀW_{j+1} − W_jW_jᵀ has zero velocity at any θ (a conservation law of the flow;
    ≤ 1e-12). [theory: THR-11]"""
    problem, data = sensing_problem(3)
    model = problem.model
    theta = model.balanced(jnp.array([2.0, 1.0, 0.5, 0.2]), jax.random.key(3))
    W = np.asarray(model.end_to_end(theta))
    flow = -problem.grad(theta)
    W_dot = np.asarray(jax.jvp(model.end_to_end, (theta,), (flow,))[1])
    G = end_to_end_grad(data, W)
    pred = end_to_end_velocity(W, G, 3)
    assert np.linalg.norm(W_dot - pred) / np.linalg.norm(W_dot) < 1e-10
    sv = lambda t: jnp.linalg.svd(model.end_to_end(t), compute_uv=False)  # noqa: E731
    s_dot = np.asarray(jax.jvp(sv, (theta,), (flow,))[1])
    np.testing.assert_allclose(s_dot, singular_value_velocity(W, G, 3), rtol=1e-8, atol=1e-12)
    off = theta + 0.1 * jax.random.normal(jax.random.key(4), theta.shape)
    W_off = np.asarray(model.end_to_end(off))
    W_dot_off = np.asarray(jax.jvp(model.end_to_end, (off,), (-problem.grad(off),))[1])
    err = np.linalg.norm(W_dot_off - end_to_end_velocity(W_off, end_to_end_grad(data, W_off), 3))
    assert err / np.linalg.norm(W_dot_off) > 0.01

    def imbalance(t):
        Ws = model.layers(t)
        return jnp.stack([Ws[j + 1].T @ Ws[j + 1] - Ws[j] @ Ws[j].T for j in range(2)])

    assert float(jnp.max(jnp.abs(jax.jvp(imbalance, (off,), (-problem.grad(off),))[1]))) < 1e-12


def test_gradient_descent_follows_the_end_to_end_ode():
    """Simulated GD on the factors (N = 3, 4 × 4 sensing, balanced start) against the end-to-end ODE solved on
    the product alone (scipy LSODA at rtol 1e-11), horizon T = 2: the gap is O(η) (halving η halves it, ratio
    2 ± 0.3), and the factors' imbalance, zero at the start and conserved by the flow, grows only as O(η).
    [theory: THR-11]"""
    import scipy.integrate

    problem, data = sensing_problem(3)
    model = problem.model
    theta0 = model.balanced(jnp.array([1.0, 0.8, 0.3, 0.1]), jax.random.key(5))
    n = model.shape[0]

    def rhs(t, w):
        W = w.reshape(n, n)
        return end_to_end_velocity(W, end_to_end_grad(data, W), 3).reshape(-1)

    W0 = np.asarray(model.end_to_end(theta0)).reshape(-1)
    ode = scipy.integrate.solve_ivp(rhs, (0, 2.0), W0, method="LSODA", rtol=1e-11, atol=1e-13).y[:, -1]
    gaps, imbalances = [], []
    for eta in (0.01, 0.005):
        res = sd.simulate_sgd(
            problem, None, theta0, lr=eta, n_steps=int(2 / eta), key=0, record=sd.Record(n_saved_paths=1)
        )
        theta = jnp.asarray(res.paths[-1, 0])
        gaps.append(np.linalg.norm(np.asarray(model.end_to_end(theta)).reshape(-1) - ode))
        Ws = np.asarray(model.layers(theta))
        imbalances.append(max(np.linalg.norm(Ws[j + 1].T @ Ws[j + 1] - Ws[j] @ Ws[j].T) for j in range(2)))
    assert 1.7 < gaps[0] / gaps[1] < 2.3, gaps
    assert 1.7 < imbalances[0] / imbalances[1] < 2.3, imbalances


def test_depth_lowers_the_effective_rank_and_recovers_the_matrix():
    """Matrix completion, 12 × 12 rank-2 W* (‖W*‖_F = 12), 70 of 144 entries observed, GD from a balanced
    start at scale 1e-3 to training loss < 1e-6 (seeds B.4's check, smaller): depth 1 leaves the unobserved entries
    at the start (test MSE ≈ 1), depth 2 recovers them partly, depth 3 almost (measured 1.08, 0.20, 5.4e-4):
    MSE₃ < 0.01·MSE₂ < MSE₁/2; the effective rank falls with depth (7.37, 2.91, 2.04) to within 5% of W*'s
    (1.96); depth 2's nuclear norm is below W*'s (16.24 < 16.68) and depth 3's is larger than depth 2's (16.64):
    the better, lower-rank solution has the larger nuclear norm, so nuclear-norm minimization does not explain
    depth (Arora et al.: norms are not enough). [theory: THR-12]"""
    data = sd.matrix_sensing_data(0, 12, 2, 70)
    mask, W_star = np.asarray(data.observed), np.asarray(data.W_star)
    out = {}
    for depth, lr, steps in ((1, 2.9, 2000), (2, 0.58, 20000), (3, 0.29, 60000)):
        model = sd.DeepMatrixFactorization(12, depth, scale=1e-3)
        problem = sd.Problem(model, data.X, data.y, jnp.float64)
        # GD as one fori_loop (simulate_sgd's GD on this model is tested in
        # test_gradient_descent_follows_the_end_to_end_ode): θ equal to simulate_sgd's to 7e-15 at every depth
        # (measured; the compiled programs fuse differently), 0.7 s instead of 9.9 s CPU for the three runs,
        # most of it simulate_sgd's stability check (a 432 × 432 Hessian at depth 3) and compiles
        theta = jax.lax.fori_loop(
            0,
            steps,
            lambda _, th, problem=problem, lr=lr: th - lr * problem.grad(th),
            jnp.asarray(model.init(jax.random.key(1)), jnp.float64),
        )
        assert float(problem.loss(theta)) < 1e-6
        W = np.asarray(model.end_to_end(theta))
        out[depth] = (
            np.mean((W - W_star)[~mask] ** 2),
            effective_rank(W),
            np.linalg.svd(W, compute_uv=False).sum(),
        )
    mse, erank, nuc = ({d: out[d][i] for d in out} for i in range(3))
    nuc_star = np.linalg.svd(W_star, compute_uv=False).sum()
    assert mse[3] < 0.01 * mse[2] and mse[2] < mse[1] / 2, mse
    assert erank[1] > erank[2] > erank[3] and abs(erank[3] / effective_rank(W_star) - 1) < 0.05, erank
    assert nuc[2] < nuc_star and nuc[3] > nuc[2] + 0.2, (nuc, nuc_star)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sd.DeepMatrixFactorization(4, 0), "depth must be"),
        (lambda: sd.DeepMatrixFactorization((4, 3, 2), 2), "shape must be n or \\(rows, cols\\)"),
        (lambda: sd.DeepMatrixFactorization((4, 3), 2, hidden=2), "hidden must be >= 3"),
        (lambda: sd.DeepMatrixFactorization(4, 2, scale=0.0), "scale must be"),
        (lambda: sd.matrix_sensing_data(0, 4, 5, 10), "rank must be in \\[1, 4\\]"),
        (lambda: sd.matrix_sensing_data(0, 4, 2, 17), "n_measurements must be in \\[1, 16\\]"),
        (lambda: sd.matrix_sensing_data(0, 4, 2, 10, kind="phase"), "kind must be"),
        (
            lambda: sd.Problem(
                sd.DeepMatrixFactorization(5, 2), *(lambda d: (d.X, d.y))(sd.matrix_sensing_data(0, 4, 2, 10))
            ),
            "X must have 25 columns",
        ),
        (lambda: sd.DeepMatrixFactorization(4, 2).balanced(jnp.ones(3)), "singular_values must be 4 numbers"),
        (lambda: end_to_end_velocity(np.eye(3), np.eye(2), 2), "W and grad must be matrices of one shape"),
        (lambda: end_to_end_velocity(np.eye(3), np.eye(3), 0), "depth must be"),
    ],
)
def test_deep_matrix_factorization_bad_input(call, match):
    """Depth < 1, a rank or measurement count out of range, a measurement shape that does not match the model,
    mismatched matrices: a ValueError naming the argument. [theory: THR-11]"""
    with pytest.raises(ValueError, match=match):
        call()
