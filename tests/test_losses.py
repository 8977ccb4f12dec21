"""Losses as data: each loss's derivatives, the Problem's gradient/G/Hessian for every loss × model, the
K-output head, and label flips (exact mean, bias and covariance by enumerating every label configuration)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CLASSIFICATION_PROBLEMS, LOSSES, batch_gradient

import sgdsde as sd
import sgdsde.symbolic as sy


def close(a, b, tol=1e-11):
    # float64 identities between two exact computations: rounding only
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_derivatives_match_autodiff(name):
    """∂ℓ/∂f and ∂²ℓ/∂f² in closed form = jax.grad / jax.hessian of ℓ, at random outputs and every label.
    [theory: LOSS-2, LOSS-3, LOSS-4]"""
    loss, K, labels = LOSSES[name]
    rng = np.random.default_rng(0)
    for y in labels:
        for _ in range(3):
            f = jnp.asarray(rng.normal(size=() if K == 1 else (K,)) * 3)
            close(loss.grad_f(f, y), jax.grad(loss.__call__)(f, y))
            close(loss.hess_f(f, y), jax.hessian(loss.__call__)(f, y))


@pytest.mark.parametrize("name", sorted(CLASSIFICATION_PROBLEMS) + ["squared"])
def test_problem_derivatives_for_every_loss(name):
    """∇L (one VJP of ℓ′) = jax.grad of L; the per-example loss gradients average to ∇L; G is the generalized
    Gauss–Newton (1/n)ΣJᵢᵀ∂²ℓJᵢ = ∇²L minus the (1/n)Σ ℓ′·∇²f term; hvp = ∇²L v. [theory: LOSS-1, LOSS-5]"""
    problem = CLASSIFICATION_PROBLEMS[name]() if name != "squared" else _squared()
    theta = 0.7 * jax.random.normal(jax.random.key(1), (problem.n_params,), jnp.float64)
    v = jnp.cos(jnp.arange(problem.n_params, dtype=jnp.float64))

    @jax.jit  # one compile for every quantity (op by op, the Hessians took seconds per loss)
    def quantities(theta):
        # ∇²L = G + (1/n)Σ_i Σ_k ℓ′_ik ∇²f_ik: the second term by autodiff of ℓ′-weighted outputs
        dl = jax.lax.stop_gradient(problem.residuals(theta))
        second = jax.hessian(lambda t: jnp.sum(dl * problem.outputs(t)) / problem.n_data)(theta)
        g = problem.grad(theta)
        return (
            g,
            jax.grad(problem.loss)(theta),
            problem.loss_gradients(theta),
            problem.hessian(theta),
            (problem.hvp(theta, v), problem.gauss_newton(theta) + second),
        )

    g, g_auto, per_example, H, (hv, gn_plus_second) = quantities(theta)
    close(g, g_auto)
    close(jnp.mean(per_example, axis=1), g)
    close(hv, H @ v)
    close(gn_plus_second, H, tol=1e-10)


def _squared():
    rng = np.random.default_rng(3)
    return sd.Problem(sd.TwoLayerNetwork(2, 3, "tanh"), rng.normal(size=(5, 2)), rng.normal(size=5))


def test_k_output_head():
    """K = 1 keeps today's layout, names and outputs; K = 3 gives f = Aᵀφ(Wx) with A (m × K). [theory: LOSS-4]"""
    X = jax.random.normal(jax.random.key(0), (4, 3), jnp.float64)
    one = sd.TwoLayerNetwork(3, 2, "tanh")
    th = jax.random.normal(jax.random.key(1), (one.n_params,), jnp.float64)
    W, a = th[:6].reshape(2, 3), th[6:]
    close(one.outputs(th, X), jnp.tanh(X @ W.T) @ a)
    assert one.n_params == 8 and one.param_names()[-1] == "a_1" and one.n_outputs == 1
    three = sd.TwoLayerNetwork(3, 2, "tanh", n_outputs=3)
    th3 = jax.random.normal(jax.random.key(2), (three.n_params,), jnp.float64)
    A = th3[6:].reshape(2, 3)
    close(three.outputs(th3, X), jnp.tanh(X @ th3[:6].reshape(2, 3).T) @ A)
    assert three.n_params == 12 and three.param_names()[-1] == "a_1_2"
    assert three.output_gradients(th3, X).shape == (12, 4, 3)
    with pytest.raises(ValueError, match="train_second_layer=True"):
        sd.TwoLayerNetwork(3, 2, n_outputs=3, train_second_layer=False)


def _enumerate(problem, noise, theta):
    """Mean and covariance of the stochastic gradient by enumerating every batch and label configuration."""
    n, B = problem.n_data, noise.batch(problem)
    T = np.asarray(noise.matrix(problem))
    K = T.shape[0]
    cls = np.asarray(noise._class_index(problem, problem.y))
    if B == n and noise.sampling != "with_replacement":
        batches = [tuple(range(n))]
    elif noise.sampling == "with_replacement":
        batches = list(itertools.product(range(n), repeat=B))
    else:
        batches = list(itertools.combinations(range(n), B))
    grads, probs = [], []
    for b in batches:
        for new in itertools.product(range(K), repeat=B):
            pr = np.prod([T[cls[i], c] for i, c in zip(b, new, strict=True)]) / len(batches)
            labels = noise._label(problem, jnp.asarray(new), problem.y)
            grads.append(np.asarray(batch_gradient(problem, theta, jnp.asarray(b), labels)))
            probs.append(pr)
    g, p = np.array(grads), np.array(probs)
    mean = p @ g
    c = g - mean
    return mean, (c * p[:, None]).T @ c


@pytest.mark.parametrize(
    "name, build",
    [
        ("ce3", lambda: sd.LabelFlipNoise(0.3)),
        ("ce3", lambda: sd.LabelFlipNoise(0.3, 1, "with_replacement")),
        ("ce3", lambda: sd.LabelFlipNoise(transition=[[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])),
        ("logistic", lambda: sd.LabelFlipNoise(0.2)),
        ("logistic", lambda: sd.LabelFlipNoise(0.2, 2, "without_replacement")),
    ],
)
def test_label_flip_mean_bias_and_covariance_by_enumeration(name, build):
    """Enumerating every batch × every flipped-label configuration with its probability: the mean is
    ``mean_gradient`` (≠ ∇L: flips bias the gradient, ``bias`` = mean − ∇L) and the covariance is A Aᵀ, to
    float64 rounding. [theory: FLIP-1, FLIP-2]"""
    problem = CLASSIFICATION_PROBLEMS[name]()
    noise = build()
    noise.check(problem)
    theta = 0.7 * jax.random.normal(jax.random.key(4), (problem.n_params,), jnp.float64)
    mean, cov = _enumerate(problem, noise, theta)
    close(mean, noise.mean_gradient(problem, theta))
    close(cov, noise.covariance(problem, theta))
    bias = noise.bias(problem, theta)
    close(bias, noise.mean_gradient(problem, theta) - problem.grad(theta))
    assert float(jnp.max(jnp.abs(bias))) > 1e-3  # flips do bias the gradient here


def test_label_flip_bias_closed_forms():
    """Logistic loss: a flip of y adds y∇f (ℓ(f, −y) − ℓ(f, y) = yf), so the bias is (p/n)Σᵢ yᵢ∇fᵢ; cross-entropy
    with uniform flips: ḡᵢ = softmax(fᵢ) − [(1−p)e_y + p/(K−1)(𝟙 − e_y)], so the bias is
    (p/n)ΣᵢJᵢᵀ(e_y − (𝟙 − e_y)/(K−1)). [theory: FLIP-3]"""
    lg = CLASSIFICATION_PROBLEMS["logistic"]()
    theta = 0.5 * jax.random.normal(jax.random.key(5), (lg.n_params,), jnp.float64)
    p = 0.3
    close(sd.LabelFlipNoise(p).bias(lg, theta), p * lg.output_gradients(theta) @ lg.y / lg.n_data)
    ce = CLASSIFICATION_PROBLEMS["ce3"]()
    theta = 0.5 * jax.random.normal(jax.random.key(6), (ce.n_params,), jnp.float64)
    e = jax.nn.one_hot(ce.y, 3, dtype=jnp.float64)
    want = p * jnp.einsum("dnk,nk->d", ce.output_gradients(theta), e - (1 - e) / 2) / ce.n_data
    close(sd.LabelFlipNoise(p).bias(ce, theta), want)
    assert float(jnp.max(jnp.abs(sd.LabelFlipNoise(0.0).bias(ce, theta)))) < 1e-15


def test_label_flip_draws_monte_carlo():
    """The simulator's own draw + gradient: mean within 4.5 standard errors of ``mean_gradient`` per
    coordinate and the flipped fraction within 4.5 binomial s.e. of p (60,000 draws, fixed key). [theory: FLIP-1]"""
    problem = CLASSIFICATION_PROBLEMS["ce3"]()
    noise = sd.LabelFlipNoise(0.3, 2, "with_replacement")
    theta = 0.7 * jax.random.normal(jax.random.key(7), (problem.n_params,), jnp.float64)
    N = 60_000
    draws, _ = noise.draw(problem, jax.random.key(8), 0, None, N, jnp.float64)
    idx, labels = draws
    flipped = float(jnp.mean(labels != problem.y[idx]))
    assert abs(flipped - 0.3) <= 4.5 * math.sqrt(0.3 * 0.7 / (2 * N))
    g = np.asarray(jax.vmap(noise.gradient, in_axes=(None, None, 0))(problem, theta, draws))
    se = g.std(axis=0) / math.sqrt(N)
    assert np.all(
        np.abs(g.mean(axis=0) - np.asarray(noise.mean_gradient(problem, theta))) <= 4.5 * se + 1e-12
    )


@pytest.mark.parametrize("name", sorted(CLASSIFICATION_PROBLEMS))
def test_classification_runs_through_sgd_sde_and_derive_sme(name):
    """Logistic and cross-entropy problems with label flips run through simulate_sgd and simulate_sde (finite,
    the loss recorded), and the SME's drift and diffusion factor on the derivative back end of the symbolic
    layer (sympy, for the one-output logistic model and the K-output cross-entropy head alike) equal the
    autodiff SME's, orders 1 and 2. [theory: SME-6, LOSS-1, LOSS-6, LOSS-7]"""
    problem = CLASSIFICATION_PROBLEMS[name]()
    noise = sd.LabelFlipNoise(0.2, 2, "with_replacement")
    th0 = problem.model.init(jax.random.key(0)).astype(jnp.float64)
    kw = dict(lr=0.05, n_steps=20, key=0, ensemble=sd.Ensemble(n_paths=16), record=sd.Record(every=10))
    for run in (sd.simulate_sgd(problem, noise, th0, **kw), sd.simulate_sde(problem, noise, th0, **kw)):
        assert run.diverged == 0 and np.all(np.isfinite(run.mean["loss"]))
    for order in (1, 2):
        numeric, derived = sd.SME(problem, noise, order), sy.derive_sme(problem, noise, order)
        close(derived.drift(th0, 0.05), numeric.drift(th0, 0.05))
        close(derived.factor(th0), numeric.factor(th0))
    assert derived.is_symbolic, derived.reason


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: sd.Problem(sd.LinearRegression(2), np.eye(2), [1.0, 0.5], loss=sd.LogisticLoss()),
            r"\{-1, \+1\}",
        ),
        (
            lambda: sd.Problem(
                sd.TwoLayerNetwork(2, 2, n_outputs=3), np.eye(2), [0, 3], loss=sd.CrossEntropyLoss()
            ),
            r"integer classes in \[0, 2\]",
        ),
        (
            lambda: sd.Problem(sd.LinearRegression(2), np.eye(2), [0, 1], loss=sd.CrossEntropyLoss()),
            "K >= 2 outputs",
        ),
        (lambda: sd.Problem(sd.TwoLayerNetwork(2, 2, n_outputs=3), np.eye(2), [0, 1]), "one-output model"),
        (
            lambda: sd.Problem(sd.LinearRegression(2), np.eye(2), [0, 1], loss="logistic"),
            "loss must be an sgdsde loss",
        ),
        (lambda: sd.LabelFlipNoise(1.5), r"p must be in \[0, 1\]"),
        (lambda: sd.LabelFlipNoise(transition=[[0.5, 0.6], [0.5, 0.5]]), "row-stochastic"),
        (lambda: sd.LabelFlipNoise(0.1).check(_squared()), "needs a classification loss"),
        (
            lambda: sd.Problem(sd.LinearRegression(2), [["a", "b"], ["c", "d"]], [0.0, 1.0]),
            "X must be a real",
        ),
        (lambda: sd.Problem(sd.LinearRegression(2), np.eye(2) * 1j, [0.0, 1.0]), "X must be a real"),
    ],
)
def test_bad_losses_and_labels(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_integer_inputs_are_converted():
    """Integer X and y are converted to the default float (issue 15.9), giving the float problem's numbers."""
    a = sd.Problem(sd.LinearRegression(2), np.array([[1, 2], [3, 4]]), np.array([1, 0]))
    b = sd.Problem(sd.LinearRegression(2), np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, 0.0]))
    assert a.X.dtype == b.X.dtype == jnp.float64
    close(a.grad(jnp.ones(2)), b.grad(jnp.ones(2)))


@pytest.mark.parametrize("model_name", ["two_layer_tanh", "diagonal_signed", "linear"])
def test_symbolic_kernels_of_a_general_loss_match_autodiff(model_name):
    """For the logistic loss every per-example kernel sympy assembles from ℓ′, ℓ″, ℓ‴ (derived from ℓ's
    sympy form) and f's unit derivatives equals the autodiff kernel of ℓ∘f, averaged over the data.
    [theory: LOSS-6]"""
    from helpers import MODELS

    from sgdsde.symbolic._kernels import KERNELS, NumericKernels  # internal: the autodiff reference

    model = MODELS[model_name](2)
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.normal(size=(4, 2)))
    y = jnp.asarray([1.0, -1.0, -1.0, 1.0])
    theta = 0.6 * jax.random.normal(jax.random.key(2), (model.n_params,), jnp.float64)
    v = jnp.sin(jnp.arange(model.n_params, dtype=jnp.float64))
    sym = sy.kernels(model, loss=sd.LogisticLoss())
    num = NumericKernels(model, loss=sd.LogisticLoss())
    assert sym.is_symbolic
    for name in KERNELS:
        if name == "output":
            continue
        close(sym.mean(name, theta, X, y, v), num.mean(name, theta, X, y, v), tol=1e-10)


def _k_output_models():
    return {
        "two_layer_tanh_k3": sd.TwoLayerNetwork(2, 2, "tanh", n_outputs=3),
        "two_layer_relu_k2": sd.TwoLayerNetwork(3, 2, "relu", n_outputs=2),
        "expression_k3": sy.SymbolicModel(
            ["a*x + b**2*z", "sin(a*b)*x", "a*b*z"], ["a", "b"], ["x", "z"]
        ).to_model(),
    }


@pytest.mark.parametrize("model_name", sorted(_k_output_models()))
def test_symbolic_kernels_of_a_k_output_cross_entropy_match_autodiff(model_name):
    """For K-output models under cross-entropy, every per-example kernel sympy assembles from the loss's
    ∂ℓ, ∂²ℓ, ∂³ℓ in the K logits (derived from ℓ's sympy form with a one-hot label) and the units' derivatives
    of each output equals the autodiff kernel of ℓ∘f, averaged over the data; the outputs and the (d × K)
    Jacobian too. Rounding only (float64): tolerance 1e-10. [theory: LOSS-7]"""
    from sgdsde.symbolic._kernels import KERNELS, NumericKernels  # internal: the autodiff reference

    model = _k_output_models()[model_name]
    K = model.n_outputs
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.normal(size=(5, model.input_dim)))
    y = jnp.asarray(np.arange(5) % K, dtype=jnp.int32)
    theta = 0.6 * jax.random.normal(jax.random.key(2), (model.n_params,), jnp.float64)
    v = jnp.sin(jnp.arange(model.n_params, dtype=jnp.float64))
    sym = sy.kernels(model, loss=sd.CrossEntropyLoss())
    num = NumericKernels(model, loss=sd.CrossEntropyLoss())
    assert sym.is_symbolic, sym.reason
    out = jax.vmap(sym.function("output"), in_axes=(None, 0))(theta, X)
    assert out.shape == (5, K)
    close(out, jax.vmap(model.output, in_axes=(None, 0))(theta, X))
    for name in KERNELS:
        if name != "output":
            close(sym.mean(name, theta, X, y, v), num.mean(name, theta, X, y, v), tol=1e-10)
    # a shift-invariant loss is evaluated at f − max f: huge logits give finite derivatives
    huge = jnp.asarray([800.0, -5.0] + [0.0] * (K - 2))
    derivs = sym.loss_derivatives()(huge, jax.nn.one_hot(1, K, dtype=jnp.float64))
    assert all(bool(jnp.all(jnp.isfinite(d))) for d in derivs)
    close(derivs[1], sd.CrossEntropyLoss().grad_f(huge, 1))


def test_k_output_symbolic_models_are_checked():
    """A K-output SymbolicModel needs K >= 2 expressions; units whose output blocks overlap are refused; the
    K-output two-layer head's symbolic f equals the numeric model's; a K-output model has no default (squared)
    loss. [theory: LOSS-7]"""
    with pytest.raises(ValueError, match="K >= 2 expressions"):
        sy.SymbolicModel(["a*x"], ["a"], ["x"])
    sm = sy.SymbolicModel(["a*x", "b*x"], ["a", "b"], ["x"])
    assert sm.n_outputs == 2 and sm.to_model().n_outputs == 2
    U = sm.units
    bad = sy.Units(
        U.expr, U.params, U.inputs, U.constants, ((0, 0), (0, 1)), U.input_index, U.constant_values, (0, 1)
    )
    with pytest.raises(ValueError, match="disjoint"):
        sy.SymbolicModel(["a*x", "b*x"], ["a", "b"], ["x"], units=bad)
    with pytest.raises(ValueError, match="K-class loss"):
        sy.kernels(sd.TwoLayerNetwork(2, 2, n_outputs=3))
    with pytest.raises(ValueError, match="no default loss"):
        _ = sm.loss
    model = sd.TwoLayerNetwork(2, 3, "sigmoid", n_outputs=2)
    th = model.init(jax.random.key(3)).astype(jnp.float64)
    x = jnp.asarray([0.3, -1.2])
    close(sy.symbolic_model(model).to_model().output(th, x), model.output(th, x))


def test_regularizers_and_latex_of_a_k_output_cross_entropy():
    """The symbolic regularizers of a K-output cross-entropy model are the Problem's (tr∇²L and its gradient
    against autodiff of the exact Hessian, Damian's tr log from its eigenvalues); (1/n)Σ‖∇f_i‖² is refused as
    tr G off the squared loss; the SME's LaTeX states the loss, its ∂ℓ drift, and a biased noise's mean
    drift. Float64 rounding: tolerance 1e-10. [theory: LOSS-7]"""
    problem = CLASSIFICATION_PROBLEMS["ce3"]()
    theta = 0.7 * jax.random.normal(jax.random.key(4), (problem.n_params,), jnp.float64)
    X, y = problem.X, problem.y
    R = sy.derive_regularizers(problem.model, loss=sd.CrossEntropyLoss())
    assert R.is_symbolic, R.reason
    close(R.hessian(theta, X, y), problem.hessian(theta), tol=1e-10)
    close(R.trace_hessian(theta, X, y), jnp.trace(problem.hessian(theta)), tol=1e-10)
    close(
        R.grad_trace_hessian(theta, X, y), jax.grad(lambda t: jnp.trace(problem.hessian(t)))(theta), tol=1e-10
    )
    eta = 0.1
    h = jnp.linalg.eigvalsh(problem.hessian(theta))
    close(R.damian(theta, X, y, eta), -jnp.sum(jnp.log(1 - eta / 2 * h)) / (2 * eta), tol=1e-10)
    with pytest.raises(ValueError, match="only for the squared loss"):
        R.trace_gauss_newton(theta, X, y)
    assert r"\partial_f^2\ell_i" in R.latex("trace_hessian")
    tex = sy.derive_sme(problem, sd.MinibatchNoise(2), 1).latex()
    assert r"\partial_f\ell" in tex and sd.CrossEntropyLoss().latex() in tex and "r_i" not in tex
    assert r"m = E\,\tilde g \ne \nabla L" in sy.derive_sme(problem, sd.LabelFlipNoise(0.2), 2).latex()


def test_loss_noise_frictions_are_refused_or_defined():
    """Issue 26 §5 (loss × noise): additive label noise on class labels is refused by name on every entry
    point (noise, SME, λ, predict); cross-entropy regularizers on a one-output model are refused; label flips
    given both p and a transition are refused; tr G of a logistic problem is the generalized Gauss–Newton
    trace, tr of ``Problem.gauss_newton`` (float64 rounding). [theory: NOISE-6, LOSS-5]"""
    lg, ce = CLASSIFICATION_PROBLEMS["logistic"](), CLASSIFICATION_PROBLEMS["ce3"]()
    theta = 0.5 * jnp.ones(lg.n_params)
    for problem in (lg, ce):
        name = type(problem.loss_fn).__name__
        for noise in (sd.LabelNoise(0.5), sd.LabelNoise(0.5, 3), sd.FullGradientLabelNoise(0.0)):
            with pytest.raises(ValueError, match=f"not for {name}.*LabelFlipNoise"):
                noise.check(problem)
            with pytest.raises(ValueError, match=name):
                sd.SME(problem, noise)
            with pytest.raises(ValueError, match=name):
                noise.effective_lambda(0.1, problem)
    with pytest.raises(ValueError, match="LogisticLoss"):
        sd.implicit.predict(lg, sd.LabelNoise(0.5), 0.1, theta)
    dln = sd.Problem(sd.DiagonalLinearNetwork(2, alpha=1.0), lg.X[:, :2], lg.y, loss=sd.LogisticLoss())
    with pytest.raises(ValueError, match="label_noise_lasso.*LogisticLoss"):
        sd.implicit.label_noise_lasso(dln, None, 0.1, lam=0.1)
    with pytest.raises(ValueError, match="limiting flow.*LogisticLoss"):
        sd.implicit.limiting_flow(dln, jnp.ones(4), c=1.0, duration=1.0, n_steps=2)
    with pytest.raises(ValueError, match="K >= 2 outputs"):
        sy.derive_regularizers(sd.TwoLayerNetwork(2, 2, "tanh"), loss=sd.CrossEntropyLoss())
    with pytest.raises(ValueError, match="not both"):
        sd.LabelFlipNoise(0.2, transition=[[0.9, 0.1], [0.1, 0.9]])
    with pytest.raises(ValueError, match="not both"):
        sd.LabelFlipNoise(0.0, transition=[[0.9, 0.1], [0.1, 0.9]])
    for problem in (lg, ce):
        th = 0.5 * jnp.cos(jnp.arange(problem.n_params, dtype=jnp.float64))
        close(problem.trace_gauss_newton(th), jnp.trace(problem.gauss_newton(th)))
        res = sd.simulate_sgd(
            problem,
            None,
            th,
            lr=0.1,
            n_steps=1,
            key=jax.random.key(0),
            record=sd.Record(observables=("trace_gauss_newton",)),
        )
        close(res.mean["trace_gauss_newton"][0], jnp.trace(problem.gauss_newton(th)))
