"""The symbolic layer reproduces autodiff: drifts, diffusion factors, Stratonovich corrections, regularizers.

Deterministic checks in float64: generated code and autodiff evaluate the same formula in different
orders, so they agree to rounding (tolerances below are ~1e3 ulps of the quantities' scale).
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from helpers import check_latex
from hypothesis import given, settings, strategies as st

import sgdsde as sd
import sgdsde.symbolic as sy

N, P = 6, 3  # fixed shapes: one compile per model × noise pair
RTOL, ATOL = 1e-10, 1e-11

MODELS = {
    "linear": lambda: sd.LinearRegression(P),
    "diagonal_signed": lambda: sd.DiagonalLinearNetwork(P, alpha=0.7),
    "diagonal_unsigned": lambda: sd.DiagonalLinearNetwork(P, alpha=0.7, signed=False),
    "two_layer_tanh": lambda: sd.TwoLayerNetwork(P, 2, "tanh"),
    "two_layer_relu": lambda: sd.TwoLayerNetwork(P, 3, "relu"),
    "two_layer_quadratic": lambda: sd.TwoLayerNetwork(P, 2, "quadratic"),
    "two_layer_sigmoid_fixed": lambda: sd.TwoLayerNetwork(P, 2, "sigmoid", train_second_layer=False),
    "two_layer_softplus": lambda: sd.TwoLayerNetwork(
        P, 2, "softplus", second_layer=(0.5, -1.5), train_second_layer=False
    ),
    "two_layer_linear": lambda: sd.TwoLayerNetwork(P, 2, "linear"),
    "user_expression": lambda: sy.SymbolicModel(
        "a*sin(b*x_0) + c*x_1*x_2**2 + exp(-a*c)", params=["a", "b", "c"], inputs=["x_0", "x_1", "x_2"]
    ).to_model(),
}

NOISES = {
    "none": lambda d: sd.NoNoise(),
    "minibatch_wr": lambda d: sd.MinibatchNoise(2, "with_replacement"),
    "minibatch_wor": lambda d: sd.MinibatchNoise(2, "without_replacement"),
    "minibatch_shuffle": lambda d: sd.MinibatchNoise(3, "shuffle"),
    "label_full": lambda d: sd.LabelNoise(0.6),
    "label_minibatch_wr": lambda d: sd.LabelNoise(0.6, 2, "with_replacement", "gaussian"),
    "label_minibatch_wor": lambda d: sd.LabelNoise(0.4, 3, "without_replacement"),
    "gaussian_constant": lambda d: sd.GaussianNoise(np.diag(np.linspace(0.2, 1.0, d))),
    "gaussian_state": lambda d: sd.GaussianNoise(factor=lambda th: 0.3 * jnp.diag(1 + th**2)),
    "spherical": lambda d: sd.SphericalGaussianNoise(0.5),
    "wu_fisher": lambda d: sd.MultiplicativeNoise(2, "gaussian_fisher"),
    "wu_centred": lambda d: sd.MultiplicativeNoise(2, "gaussian_centred"),
    "wu_bernoulli": lambda d: sd.MultiplicativeNoise(2, "bernoulli"),
}

_MODEL_CACHE: dict = {}
_NOISE_CACHE: dict = {}


def model(name):
    # One instance per name, so the symbolic caches (keyed by model structure) are hit across examples.
    if name not in _MODEL_CACHE:
        _MODEL_CACHE[name] = MODELS[name]()
    return _MODEL_CACHE[name]


def noise(name, d):
    if (name, d) not in _NOISE_CACHE:
        _NOISE_CACHE[(name, d)] = NOISES[name](d)
    return _NOISE_CACHE[(name, d)]


def problem(name, seed, zero_loss=False):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    m = model(name)
    X = jax.random.normal(k1, (N, P), jnp.float64)
    theta = 0.8 * jax.random.normal(k3, (m.n_params,), jnp.float64)
    y = m.outputs(theta, X) if zero_loss else jax.random.normal(k2, (N,), jnp.float64)
    return sd.Problem(m, X, y), theta


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


seeds = st.integers(0, 2**16)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_symbolic_model_matches_numeric_model(name):
    """The expression of each model, in param_names() order, gives the numeric outputs. [theory: SYM-1]"""
    prob, theta = problem(name, 0)
    sm = sy.symbolic_model(prob.model)
    assert sm.param_names() == prob.model.param_names()
    f = sy.to_jax(sm.expr, [sm.params, sm.inputs])
    close(jax.vmap(f, in_axes=(None, 0))(theta, prob.X), prob.outputs(theta))
    k = sy.kernels(prob.model)
    close(k.batched("output")(theta, prob.X), prob.outputs(theta))


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=2)
@given(seed=seeds, eta=st.floats(0.01, 0.5))
def test_drift_matches_autodiff(name, seed, eta):
    """Order-1 drift is −∇L; order-2 drift is −∇L − (η/2)∇²L∇L, against Problem.grad and jax.hessian.
    [theory: SME-1, SME-2, SYM-2]"""
    prob, theta = problem(name, seed)
    g, H = jax.jit(lambda t: (prob.grad(t), prob.hessian(t)))(theta)
    close(sy.derive_sme(prob, None, 1).drift(theta, eta), -g)
    want = -(g + (eta / 2) * H @ g)
    close(sy.derive_sme(prob, None, 2).drift(theta, eta), want)


def _neuron_layouts():
    """Neuron models (f = Σ_j a_j c_j tanh(w_jᵀx), unit ũ(Z, a, c)) whose parameters sit in θ in different
    layouts: one unit with shuffled parameters, units interleaved (w_0, a_0, c_0, w_1, …), and the weights
    column-major. The fast path reads θ by slices, strided slices or gathers accordingly."""
    w = sp.symbols("w_0 w_1", real=True)
    x = sp.symbols("x_0 x_1", real=True)
    a, c = sp.symbols("a c", real=True)
    u = a * c * sp.tanh(w[0] * x[0] + w[1] * x[1])
    th = sp.symbols("t_0:6", real=True)
    one = sy.SymbolicModel(
        "c*a*tanh(w_1*x_1 + w_0*x_0)", params=["w_1", "a", "w_0", "c"], inputs=["x_0", "x_1"]
    )
    interleaved = sy.Units(u, (*w, a, c), x, (), ((0, 1, 2, 3), (4, 5, 6, 7)), ((0, 1),) * 2, ((),) * 2)
    th8 = sp.symbols("t_0:8", real=True)
    column_major = sy.Units(u, (*w, a), x, (c,), ((0, 2, 4), (1, 3, 5)), ((0, 1),) * 2, ((0.5,), (-2.0,)))
    return {
        "one_unit_shuffled": one,
        "interleaved": sy.SymbolicModel(interleaved.instantiate(th8, x), th8, x, units=interleaved),
        "column_major": sy.SymbolicModel(column_major.instantiate(th, x), th, x, units=column_major),
    }


@pytest.mark.parametrize("layout", ["one_unit_shuffled", "interleaved", "column_major"])
def test_neuron_fast_path_any_parameter_layout(layout):
    """The neuron fast path (ũ's derivatives on (n, m) arrays, sums over data as matmuls) gives autodiff's
    drifts whatever the order of the parameters in θ. [theory: SYM-2]"""
    sm = _neuron_layouts()[layout]
    assert sy.kernels(sm).linear is not None  # the fast path, not the per-example unit path
    X = jax.random.normal(jax.random.key(1), (N, 2), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (N,), jnp.float64)
    theta = 0.8 * jax.random.normal(jax.random.key(3), (sm.n_params,), jnp.float64)
    prob = sd.Problem(sm.to_model(), X, y)  # autodiff of the generated f (no generated derivative)
    g, H = prob.grad(theta), prob.hessian(theta)
    close(sy.derive_sme(prob, None, 1).drift(theta, 0.3), -g)
    close(sy.derive_sme(prob, None, 2).drift(theta, 0.3), -(g + 0.15 * H @ g))
    close(sy.kernels(sm).mean("hvp_loss", theta, X, y, jnp.cos(theta)), H @ jnp.cos(theta))


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=1)
@given(seed=seeds, eta=st.floats(0.01, 0.5))
def test_diffusion_factor_and_stratonovich_correction(name, seed, eta):
    """For every noise model: A Aᵀ equals the numeric noise model's covariance(problem, θ), and the
    Itô→Stratonovich correction equals −(η/2)Σ_j (∂A_j/∂θ)A_j from jax.jacfwd of the numeric factor.
    [theory: SME-3, SME-4]"""
    prob, theta = problem(name, seed)
    smes = {nn: sy.derive_sme(prob, noise(nn, prob.n_params), 1) for nn in NOISES}

    @jax.jit
    def every_noise(theta, eta):
        # One compile for all noise models of this model (the SME's jitted functions inline here).
        out = {}
        for nn, sme in smes.items():
            nz = noise(nn, prob.n_params)
            assert sme.is_symbolic
            A = sme.factor(theta)
            An = nz.covariance_factor(prob, theta)
            dA = jax.jacfwd(lambda t, nz=nz: nz.covariance_factor(prob, t))(theta)
            out[nn] = (
                A @ A.T,
                nz.covariance(prob, theta),
                sme.stratonovich_correction(theta, eta),
                -(eta / 2) * jnp.einsum("ijk,kj->i", dA, An),
            )
        return out

    for nn, (AAt, Sigma, strat, want) in every_noise(theta, eta).items():
        assert AAt.shape == (prob.n_params, prob.n_params), nn
        close(AAt, Sigma)
        close(strat, want)


@settings(max_examples=5)
@given(seed=seeds, sigma=st.floats(0.0, 2.0), batch=st.sampled_from([1, 2, 3, 6]))
def test_label_noise_covariance_identity(seed, sigma, batch):
    """Label noise adds (σ²/B)G(θ) to the minibatch covariance at every θ (not only at zero loss), and the
    full batch without replacement leaves (σ²/n)G exactly. [theory: SME-5]"""
    prob, theta = problem("two_layer_tanh", seed)
    G = prob.gauss_newton(theta)
    mb = sd.MinibatchNoise(batch, "with_replacement")
    ln = sd.LabelNoise(sigma, batch, "with_replacement")
    sme_ln, sme_mb = sy.derive_sme(prob, ln), sy.derive_sme(prob, mb)
    A = sme_ln.factor(theta)
    Amb = sme_mb.factor(theta)
    close(A @ A.T, Amb @ Amb.T + (sigma**2 / batch) * G)
    full = sy.derive_sme(prob, sd.LabelNoise(sigma))
    Af = full.factor(theta)
    assert Af.shape == (prob.n_params, N)
    close(Af @ Af.T, (sigma**2 / N) * G)


@settings(max_examples=5)
@given(seed=seeds, eta=st.floats(0.001, 1.0))
def test_quadratic_order2_drift_is_exact(seed, eta):
    """For L = ½(θ−θ*)ᵀH(θ−θ*) the order-2 drift is exactly −(H + (η/2)H²)(θ − θ*). [theory: SME-2]"""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(P, P))
    H = M @ M.T / P + 0.1 * np.eye(P)
    ts = rng.normal(size=P)
    prob = sd.quadratic_problem(H, ts, dtype=jnp.float64)
    theta = jnp.asarray(rng.normal(size=P))
    b = sy.derive_sme(prob, None, 2).drift(theta, eta)
    close(b, -(H + (eta / 2) * H @ H) @ (np.asarray(theta) - ts), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=2)
@given(seed=seeds)
def test_trace_hessian_and_gradient_match_autodiff(name, seed):
    """tr∇²L = (1/n)Σ(‖∇f_i‖² + r_iΔf_i) and its gradient, tr G and Blanc's Σ‖∇f_i‖², against
    jax.hessian / Problem.gauss_newton. [theory: SREG-5]"""
    prob, theta = problem(name, seed)
    R = sy.derive_regularizers(prob.model)
    args = (theta, prob.X, prob.y)

    @jax.jit
    def reference(t):
        def tr(t):
            return jnp.trace(prob.hessian(t))

        def trG(t):
            return jnp.trace(prob.gauss_newton(t))

        return tr(t), jax.grad(tr)(t), trG(t), jax.grad(trG)(t), prob.hessian(t)

    tr, grad_tr, trG, grad_trG, H = reference(theta)
    close(R.trace_hessian(*args), tr)
    close(R.grad_trace_hessian(*args), grad_tr, rtol=1e-9, atol=1e-10)
    close(R.trace_gauss_newton(*args), trG)
    close(R.grad_trace_gauss_newton(*args), grad_trG)
    close(R.blanc(*args), N * trG)
    close(R.hessian(*args), H)


def _damian_numeric(prob, eta):
    def R(t):
        h = jnp.linalg.eigvalsh(prob.hessian(t))
        return -jnp.sum(jnp.log(1 - (eta / 2) * h)) / (2 * eta)

    return R


@pytest.mark.parametrize("name", ["linear", "diagonal_signed", "two_layer_tanh", "two_layer_softplus"])
@settings(max_examples=3)
@given(seed=seeds, scale=st.floats(0.05, 0.9))
def test_damian_regularizer(name, seed, scale):
    """Damian's R = −(1/2η) tr log(I − (η/2)∇²L): exact value, series with its geometric tail bound, the
    small-η limit ¼tr∇²L, and the gradient identity ∇R = ½∇³L[(2I − η∇²L)⁻¹] against jax.grad.
    [theory: SREG-1, SREG-2, SREG-3, SREG-4]"""
    prob, theta = problem(name, seed)
    args = (theta, prob.X, prob.y)
    h = np.linalg.eigvalsh(np.asarray(jax.jit(lambda t: prob.hessian(t))(theta)))
    hmax = float(np.max(np.abs(h)))
    eta = scale / hmax  # η|h|/2 ≤ 0.45 < 1: R is finite and the series converges
    R = sy.derive_regularizers(prob.model)
    exact = R.damian(*args, eta)
    Rn = _damian_numeric(prob, eta)
    value, grad = jax.jit(jax.value_and_grad(Rn))(theta)
    close(exact, value)
    q = eta * np.abs(h) / 2
    for K in (1, 2, 4):
        # |Σ_{k>K} η^{k−1}h^k/(2^{k+1}k)| ≤ Σ_h (|h|/4) q^K/(1 − q): the geometric tail.
        tail = float(np.sum(np.abs(h) / 4 * q**K / (1 - q)))
        assert abs(float(exact - R.damian_series(*args, eta, order=K))) <= tail + 1e-12
    small = 1e-7 / hmax
    close(R.damian(*args, small), R.trace_hessian(*args) / 4, rtol=1e-6, atol=1e-9)
    close(R.damian_gradient(*args, eta), grad, rtol=1e-8, atol=1e-9)
    # R blows up at the stability edge λ_max = 2/η.
    assert np.isinf(float(R.damian(*args, 2.0 / float(np.max(h)) * 1.01))) or np.max(h) <= 0


@settings(max_examples=5)
@given(seed=seeds)
def test_diagonal_net_trace_at_zero_loss(seed):
    """C8: for β = u⊙u − v⊙v at zero loss, tr∇²L = tr G = 4Σ_j D_jj(u_j² + v_j²), D = diag(XᵀX/n).
    [theory: SREG-6]"""
    prob, theta = problem("diagonal_signed", seed, zero_loss=True)
    R = sy.derive_regularizers(prob.model)
    D = np.diag(np.asarray(prob.X).T @ np.asarray(prob.X)) / N
    u, v = np.asarray(theta[:P]), np.asarray(theta[P:])
    want = 4 * np.sum(D * (u**2 + v**2))
    close(R.trace_hessian(theta, prob.X, prob.y), want)
    close(R.trace_gauss_newton(theta, prob.X, prob.y), want)


PHI = {
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2, lambda z: -2 * np.tanh(z) * (1 - np.tanh(z) ** 2)),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float), lambda z: 0 * z),
    "quadratic": (lambda z: z**2, lambda z: 2 * z, lambda z: 2 + 0 * z),
    "sigmoid": (
        lambda z: 1 / (1 + np.exp(-z)),
        lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2,
        lambda z: (1 / (1 + np.exp(-z))) * (1 - 1 / (1 + np.exp(-z))) * (1 - 2 / (1 + np.exp(-z))),
    ),
    "softplus": (
        lambda z: np.log1p(np.exp(z)),
        lambda z: 1 / (1 + np.exp(-z)),
        lambda z: (1 / (1 + np.exp(-z))) * (1 - 1 / (1 + np.exp(-z))),
    ),
}


@pytest.mark.parametrize("activation", sorted(PHI))
@settings(max_examples=3)
@given(seed=seeds, zero_loss=st.booleans())
def test_two_layer_trace_formula(activation, seed, zero_loss):
    """C8 two-layer formula: tr∇²L = (1/n)Σ_iΣ_j[φ(z_ij)² + a_j²φ′(z_ij)²‖x_i‖²] + (1/n)Σ_i r_iΣ_j a_jφ″(z_ij)‖x_i‖²;
    the last term vanishes at zero loss, and always for ReLU (φ″ = 0 a.e.). [theory: TL-1, TL-2, TL-3]"""
    m = sd.TwoLayerNetwork(P, 3, activation)
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    X = jax.random.normal(k1, (N, P), jnp.float64)
    theta = 0.8 * jax.random.normal(k3, (m.n_params,), jnp.float64)
    y = m.outputs(theta, X) if zero_loss else jax.random.normal(k2, (N,), jnp.float64)
    prob = sd.Problem(m, X, y)
    W, a = (np.asarray(t) for t in m.split(theta))
    Xn = np.asarray(X)
    Z = Xn @ W.T
    phi, dphi, ddphi = PHI[activation]
    nx = np.sum(Xn**2, axis=1)
    zero_loss_part = np.mean(np.sum(phi(Z) ** 2 + a**2 * dphi(Z) ** 2 * nx[:, None], axis=1))
    r = np.asarray(prob.residuals(theta))
    curvature = np.mean(r * np.sum(a * ddphi(Z), axis=1) * nx)
    R = sy.derive_regularizers(m)
    got = R.trace_hessian(theta, X, y)
    close(got, zero_loss_part + curvature, rtol=1e-9, atol=1e-10)
    close(got, jnp.trace(jax.jit(lambda t: prob.hessian(t))(theta)), rtol=1e-9, atol=1e-10)
    if zero_loss or activation == "relu":
        close(got, zero_loss_part, rtol=1e-9, atol=1e-10)


@settings(max_examples=4)
@given(seed=seeds, eta=st.floats(0.01, 0.5))
def test_gd_modified_loss_gradient_is_order2_drift(seed, eta):
    """∇(L + (η/4)‖∇L‖²) = −(order-2 drift), by jax.grad through the generated loss. [theory: SREG-7]"""
    prob, theta = problem("two_layer_tanh", seed)
    R = sy.derive_regularizers(prob.model)
    g = jax.grad(lambda t: R.gd_modified_loss(t, prob.X, prob.y, eta))(theta)
    close(g, -sy.derive_sme(prob, None, 2).drift(theta, eta))
    close(R.loss(theta, prob.X, prob.y), prob.loss(theta))


def _partitions(n, B):
    """Every partition of range(n) into n/B unordered batches of size B (exact enumeration)."""
    out = set()
    for perm in itertools.permutations(range(n)):
        out.add(frozenset(frozenset(perm[i : i + B]) for i in range(0, n, B)))
    return [np.array([sorted(b) for b in sorted(part, key=sorted)]) for part in out]


@settings(max_examples=3)
@given(seed=seeds, eta=st.floats(0.01, 0.5))
def test_smith_modified_loss(seed, eta):
    """Smith et al.'s per-batch loss L + (η/4m)Σ_k‖∇L̂_k‖², averaged over all 15 partitions of 6 examples into
    batches of 2, equals L + (η/4)‖∇L‖² + ((n−B)/(n−1))(η/4B)Γ. [theory: SREG-8]"""
    prob, theta = problem("two_layer_tanh", seed)
    R = sy.derive_regularizers(prob.model)
    parts = _partitions(N, 2)
    assert len(parts) == 15
    avg = np.mean([float(R.smith_modified_loss(theta, prob.X, prob.y, eta, b)) for b in parts])
    close(avg, R.smith_expected_modified_loss(theta, prob.X, prob.y, eta, 2))
    # One batch holding everything is GD's modified loss.
    one = np.arange(N)[None, :]
    close(
        R.smith_modified_loss(theta, prob.X, prob.y, eta, one), R.gd_modified_loss(theta, prob.X, prob.y, eta)
    )


def test_codegen_backends_agree_and_relu_has_no_nan():
    """lambdify and sympy2jax generate the same numbers; ReLU's Heaviside gives finite derivatives at z = 0
    with JAX's convention φ′(0) = 0. [theory: SYM-3]"""
    sm = sy.symbolic_model(sd.TwoLayerNetwork(2, 2, "relu"))
    ka = sy.SymbolicKernels(sm, "lambdify")
    kb = sy.SymbolicKernels(sm, "sympy2jax")
    theta = jnp.array([1.0, -1.0, 0.5, 0.5, 2.0, -3.0])
    X = jnp.array([[1.0, 1.0], [2.0, -1.0], [0.3, 0.2]])  # first row: w_0ᵀx = 0 exactly
    y = jnp.array([0.1, -0.2, 0.3])
    prob = sd.Problem(sd.TwoLayerNetwork(2, 2, "relu"), X, y)
    for name in ("grad_loss", "hvp_loss", "jp_loss", "grad_trace_hessian_loss", "grad_quadform_loss"):
        a = ka.mean(name, theta, X, y, theta)
        assert np.all(np.isfinite(np.asarray(a)))
        close(a, kb.mean(name, theta, X, y, theta))
    close(ka.mean("grad_loss", theta, X, y), prob.grad(theta))
    with pytest.raises(ValueError, match="backend"):
        sy.to_jax(sp.Symbol("x"), [sp.Symbol("x")], backend="numpy")
    # batched=True evaluates the same program on whole arrays (a group on the leading axis); constant
    # outputs are broadcast; ranks must match (no implicit rank promotion).
    z, b, c = sp.symbols("z b c", real=True)
    exprs = [b * sp.tanh(z) + c, sp.Heaviside(z) * b, sp.Integer(2)]
    Z = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
    bc = jnp.stack([jnp.arange(1.0, 5.0), -jnp.arange(1.0, 5.0)])[:, None, :]  # (2, 1, 4)
    for backend in sy.BACKENDS:
        batched = sy.to_jax(exprs, [z, (b, c)], backend=backend, batched=True)(Z, bc)
        point = sy.to_jax(exprs, [z, (b, c)], backend=backend)
        each = jax.vmap(jax.vmap(point, in_axes=(0, None)), in_axes=(1, 0), out_axes=1)(Z, bc[:, 0, :].T)
        assert batched.shape == (3, 3, 4)
        close(batched, jnp.moveaxis(each, -1, 0))
    with pytest.raises(ValueError, match="one rank"):
        sy.to_jax(exprs, [z, (b, c)], batched=True)(Z, bc[:, 0, :])


def test_cached_and_not_recompiled_across_sweeps():
    """Deriving twice reuses the same kernels; sweeping η and σ through one jitted SME function compiles
    nothing new (they are array leaves and arguments, not structure). Counted with jax.monitoring's
    backend-compile events. [theory: SYM-4]"""
    from jax import monitoring

    prob, theta = problem("two_layer_tanh", 1)
    s1 = sy.derive_sme(prob, sd.LabelNoise(0.3, 2), 2)
    s2 = sy.derive_sme(sd.Problem(sd.TwoLayerNetwork(P, 2, "tanh"), prob.X, prob.y), sd.LabelNoise(0.9, 2), 2)
    assert s1.problem.derivatives.kernels is s2.problem.derivatives.kernels

    @eqx.filter_jit
    def both(sme, theta, eta):
        return sme.drift(theta, eta), sme.factor(theta), sme.stratonovich_correction(theta, eta)

    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda name, *a, **k: (
            compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None
        )
    )
    both(s1, theta, jnp.asarray(0.1))
    n0 = len(compiles)
    for eta, sigma in [(0.2, 0.1), (0.05, 1.5), (0.3, 0.0)]:
        both(sy.derive_sme(prob, sd.LabelNoise(sigma, 2), 2), theta, jnp.asarray(eta))
    assert len(compiles) == n0, compiles[n0:]


def test_fallback_to_numeric_beyond_size_limit():
    """A unit template beyond MAX_SYMBOLIC_PARAMS is not derived symbolically: the SME says it is numeric
    and still gives autodiff's numbers; symbolic=False forces the same. [theory: SYM-5]"""
    q = sy.MAX_SYMBOLIC_PARAMS + 1
    names = [f"t_{k}" for k in range(q)]
    expr = sp.Add(*[sp.Symbol(n) * sp.Symbol("x_0") ** (k % 3) for k, n in enumerate(names)])
    big = sy.SymbolicModel(expr, params=names, inputs=["x_0"]).to_model()
    X = jnp.linspace(-1, 1, N)[:, None]
    y = jnp.sin(X[:, 0])
    sme = sy.derive_sme(sd.Problem(big, X, y), sd.MinibatchNoise(2), 1)
    assert not sme.is_symbolic and "numeric" in sme.reason
    theta = jnp.linspace(-0.5, 0.5, q)
    close(sme.drift(theta, 0.1), -jax.jit(lambda t: sd.Problem(big, X, y).grad(t))(theta))
    assert "numeric" in sme.latex()
    prob, _ = problem("two_layer_tanh", 0)
    small = sy.derive_sme(prob, None, 1, symbolic=False)
    assert not small.is_symbolic
    assert sy.derive_sme(prob, None, 1).is_symbolic


def test_user_expression_and_bad_input():
    """User expressions: derivatives match autodiff of the generated f; bad input raises naming the culprit.
    [theory: SYM-1]"""
    sm = sy.SymbolicModel("a*tanh(b*x_0) + b**2*x_0", params=["a", "b"], inputs=["x_0"])
    m = sm.to_model()
    X = jnp.array([[0.5], [-1.0], [2.0]])
    y = jnp.array([0.0, 1.0, -1.0])
    theta = jnp.array([0.3, -0.7])
    prob = sd.Problem(m, X, y)
    close(sy.derive_sme(prob, None, 1).drift(theta, 0.1), -sd.Problem(m, X, y).grad(theta))
    assert "tanh" in sy.derive_sme(prob, None, 2).latex()
    with pytest.raises(ValueError, match="'c'"):
        sy.SymbolicModel("a*x_0 + c", params=["a"], inputs=["x_0"])
    with pytest.raises(ValueError, match="label"):
        sy.SymbolicModel("a*x_0 + y", params=["a"], inputs=["x_0"])
    with pytest.raises(ValueError, match="not differentiable in a"):
        floor = sy.SymbolicModel("floor(a)*x_0", params=["a"], inputs=["x_0"]).to_model()
        sy.derive_sme(sd.Problem(floor, X, y), None, 1).drift(jnp.ones(1), 0.1)
    with pytest.raises(ValueError, match="batch_size"):
        sy.derive_sme(prob, sd.MinibatchNoise(7), 1)
    with pytest.raises(ValueError, match="order"):
        sy.derive_sme(prob, None, 3)
    with pytest.raises(ValueError, match="noise"):
        sy.derive_sme(prob, "minibatch", 1)
    with pytest.raises(ValueError, match="problem must be a sgdsde.Problem"):
        sy.derive_sme(sm, None, 1)
    with pytest.raises(ValueError, match="backend"):
        sy.derive_sme(prob, None, 1, backend="numba")
    with pytest.raises(ValueError, match="model"):
        sy.symbolic_model(object())
    with pytest.raises(ValueError, match="symbolic"):
        sy.kernels(sm, symbolic="maybe")


def test_latex_of_drift_diffusion_regularizers():
    """LaTeX is printed from the derived expressions (Heaviside as H, not θ), with balanced braces and
    \\left/\\right pairs."""
    X = jnp.linspace(-1.0, 1.0, 6).reshape(3, 2)
    sme = sy.derive_sme(
        sd.Problem(sd.TwoLayerNetwork(2, 2, "relu"), X, jnp.ones(3)), sd.LabelNoise(0.5, 1), 2
    )
    tex = sme.latex()
    assert r"\frac{\eta}{2}\nabla^2 L" in tex and r"H\left(" in tex and r"\sigma" in tex
    R = sy.derive_regularizers(sd.DiagonalLinearNetwork(2))
    check_latex(tex, "sme")
    for name in ("trace_hessian", "damian", "damian_series", "blanc", "smith_modified_loss"):
        assert len(R.latex(name)) > 20
        check_latex(R.latex(name), name)
    assert r"u_{j}^{2} - v_{j}^{2}" in R.latex("trace_hessian")


@pytest.mark.parametrize("order", [1, 2])
def test_generated_sme_simulates_like_the_numeric_sme(order):
    """simulate_sde integrates the SME the symbolic layer derived (the same ``SME`` class on the symbolic
    back end): on the same key it gives the numeric SME's paths (same increments) to float64 rounding.
    [theory: SME-1, SME-2, SME-6]"""
    data = sd.sparse_regression(jax.random.key(0), 12, 6, 2)
    problem = sd.Problem(sd.DiagonalLinearNetwork(6, 0.7), data.X, data.y)
    noise = sd.LabelNoise(1.0, 4, "with_replacement")
    sme = sy.derive_sme(problem, noise, order)
    assert sme.is_symbolic
    kw = dict(
        lr=0.02,
        n_steps=50,
        key=3,
        ensemble=sd.Ensemble(n_paths=8, dtype=np.float64),
        record=sd.Record(every=10, n_saved_paths=8),
    )
    numeric = sd.simulate_sde(problem, noise, problem.model.init(), order=order, **kw)
    generated = sd.simulate_sde(sme, None, problem.model.init(), **kw)
    # 50 Euler steps of O(1) arithmetic: rounding differences of the two programs stay below 1e-12
    np.testing.assert_allclose(generated.paths, numeric.paths, rtol=0, atol=1e-12)


def test_activation_tables_agree():
    """Every numeric activation has a symbolic twin (one list of names; the import fails otherwise) whose
    generated value and first two derivatives equal JAX's on a grid (relu: a.e., away from 0). Float64
    rounding: 1e-12. [theory: SYM-1]"""
    from sgdsde._models.activations import ACTIVATIONS  # internal: the two activation tables
    from sgdsde.symbolic._functions import SYMBOLIC_ACTIVATIONS, diff  # internal (as above)

    z = sp.Symbol("z", real=True)
    grid = jnp.linspace(-2.1, 1.9, 9)  # avoids 0 (relu's kink)
    assert set(ACTIVATIONS) == set(SYMBOLIC_ACTIVATIONS)
    for name, phi in ACTIVATIONS.items():
        e = SYMBOLIC_ACTIVATIONS[name](z)
        for k, ref in enumerate((phi, jax.grad(phi), jax.grad(jax.grad(phi)))):
            expr = e if k == 0 else diff(e, z) if k == 1 else diff(diff(e, z), z)
            got = jax.vmap(sy.to_jax(expr, [z]))(grid)
            close(got, jax.vmap(ref)(grid), rtol=1e-12, atol=1e-12)


# --- the parser's limits (issue 26 §5) ----------------------------------------------------------------------
HOSTILE = [
    ("(2*a)**10**10", "numeric exponent of magnitude above 1000"),
    ("(2*a)**10**6", "numeric exponent of magnitude above 1000"),
    ("sqrt(2)**10**11", "numeric exponent of magnitude above 1000"),
    ("sqrt(2)**10**10", "numeric exponent of magnitude above 1000"),
    ("a**1e300", "numeric exponent of magnitude above 1000"),
    ("1e999999*a", "float literal beyond float64's range"),
    ("1e-999999*a", "float literal beyond float64's range"),
    ("floor(10**10000)*a", r"power of numbers with ~1e\+04 digits \(more than 308\)"),
    ("10**5000*a", r"power of numbers with ~5e\+03 digits"),
    ("(10*a)**1000", "number beyond float64's range"),
    ("10**200*10**200*a", "number beyond float64's range"),
    ("7" * 400 + "*a", "integer literal of 400 digits"),
    ("*".join(["(10**300*a)"] * 3000), "product of numbers beyond 2\\*\\*1024"),
    ("+".join(f"1/{k}" for k in range(1, 300)), "common denominator exceeds 2\\*\\*1024"),
    ("a+" * 300_000 + "a", "more than the limit 500,000"),
]


@pytest.mark.parametrize("text, match", HOSTILE, ids=lambda v: v[:24] if isinstance(v, str) else None)
def test_parser_refuses_hostile_expressions_quickly(text, match):
    """Inputs that hung or exhausted memory (powers sympy would expand exactly, inf/0 float literals, numbers
    beyond float64, an over-long text) are ValueErrors naming expr and the limit, each in well under a second
    (measured here: a few ms; the bound 1 s is loose for a shared CI core). [theory: SYM-6]"""
    import time

    from sgdsde.symbolic._parse import parse_expression  # internal: the parser under test

    syms = {"a": sp.Symbol("a", real=True)}
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"^expr: .*{match}"):
        parse_expression(text, syms)
    assert time.perf_counter() - t0 < 1.0


def test_parser_is_linear_on_long_sums_and_products():
    """A 20,000-term flat sum and a 5,000-factor product parse in linear time (before: quadratic, 2,000 terms
    took 8 s) and give sympy's one-step objects; a mixed sum equals, srepr for srepr, sympy's step-by-step
    build, and a short product is built step by step as Python's a*b*c. [theory: SYM-6]"""
    import time

    from sgdsde.symbolic._parse import parse_expression  # internal: the parser under test

    xs = sp.symbols("x0:20000", real=True)
    syms = {s.name: s for s in xs}
    t0 = time.perf_counter()
    total = parse_expression("+".join(s.name for s in xs), syms)
    product = parse_expression("*".join(s.name for s in xs[:5000]), syms)
    assert time.perf_counter() - t0 < 20  # ~1.5 s here; quadratic would be ~800 s
    assert total == sp.Add(*xs) and product == sp.Mul(*xs[:5000])
    # a mixed sum: coefficients that collect, cancel, fractions, floats, nested sums
    rng = np.random.default_rng(0)
    pieces = ["x0", "2*x1", "x0/3", "0.5*x2", "-(x1 + x3)", "x3**2", "1/7", "0.25", "x2*x0", "-x0"]
    text = pieces[0] + "".join(rng.choice(["+", "-"]) + rng.choice(pieces) for _ in range(300))
    stepwise = None
    for sign, piece in [("+", pieces[0])] + [(t[0], t[1:]) for t in _split_terms(text[len(pieces[0]) :])]:
        term = parse_expression(piece, syms)
        stepwise = term if stepwise is None else (stepwise + term if sign == "+" else stepwise - term)
    assert sp.srepr(parse_expression(text, syms)) == sp.srepr(stepwise)
    assert sp.srepr(parse_expression("(x0 + x1)*2*x2", syms)) == sp.srepr((xs[0] + xs[1]) * 2 * xs[2])


def _split_terms(text):
    """'+a-b+…' (no sign inside a term but in parentheses) as [('+a'), ('-b'), …]."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch in "+-" and depth == 0 and i > start and text[i - 1] not in "+-*/(":
            out.append(text[start:i])
            start = i
    out.append(text[start:])
    return out


def test_names_like_functions_are_refused():
    """A parameter named like a function ('cos*x + cos(x)') crashed at trace time (the generated code called
    the symbol); it is refused by name, for strings and sympy expressions alike, and a string's symbol named
    like a constant (E, pi) is refused as ambiguous. [theory: SYM-6]"""
    from sgdsde.symbolic._parse import parse_expression  # internal: the parser under test

    with pytest.raises(ValueError, match=r"must not be named like a function; rename \['cos'\]"):
        sy.SymbolicModel("cos*x + cos(x)", params=["cos"], inputs=["x"])
    c, x = sp.symbols("exp x", real=True)
    with pytest.raises(ValueError, match=r"named like a function; rename \['exp'\]"):
        sy.SymbolicModel(c * x + sp.exp(x), params=[c], inputs=[x])
    with pytest.raises(ValueError, match=r"^expr: the symbols \['E'\] are named like"):
        parse_expression("E*x", {"E": sp.Symbol("E"), "x": x})
