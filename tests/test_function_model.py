"""Any JAX model as an sgdsde model (issue 24, items 1-2): ``FunctionModel(apply, params, input_dim)`` and
``FunctionModel.from_module`` through SGD with every noise, the SDE, the verdict, sweeps, checkpoints and
resetting; the matrix-free diffusion product; power iteration for λ_max; bad input named."""

from __future__ import annotations

import functools
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CLASSIFICATION_NOISES, FUNCTION_MODELS, NOISES, OPTIMIZERS

import sgdsde as sd
from sgdsde import _progress  # internal: patched to interrupt a run
from sgdsde._hvp import power_iteration_lambda_max
from sgdsde._layout import FLAT
from sgdsde._models.function import FunctionModel, ParamsLayout
from sgdsde._sgd import SGDStepper
from sgdsde._stability import warn_if_unstable

P, M, N = 3, 2, 6  # input dim, width, examples


def _data(n=N, p=P, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p)), rng.normal(size=n)


def _pair(name, loss=None, labels=None):
    """(FunctionModel problem, equal built-in problem) on the same data."""
    fm, builtin = FUNCTION_MODELS[name]
    X, y = _data()
    y = y if labels is None else labels
    kw = {} if loss is None else {"loss": loss}
    return sd.Problem(fm(P), X, y, **kw), sd.Problem(builtin(P), X, y, **kw)


def _mlp_problem():
    mlp = eqx.nn.MLP(P, "scalar", 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    X, y = _data(8)
    return sd.Problem(sd.FunctionModel.from_module(mlp), X, y)


def test_raveling_and_unravel():
    """θ is the leaves raveled in ``jax.tree.leaves`` order, row-major; ``unravel`` inverts it for one θ and for
    an ensemble (N, d); names follow the key paths; a module comes back as a module [theory: FMOD-1]."""
    params = {"b": jnp.arange(2.0), "W": jnp.arange(6.0).reshape(2, 3) + 10}
    model = sd.FunctionModel(lambda q, x: q["b"] @ jnp.tanh(q["W"] @ x), params, 3)
    np.testing.assert_array_equal(model.init(), np.r_[np.arange(6.0) + 10, np.arange(2.0)])  # "W" < "b"
    assert model.param_names()[:2] == ["['W'][0,0]", "['W'][0,1]"] and model.param_names()[-1] == "['b'][1]"
    back = model.unravel(model.init())
    np.testing.assert_array_equal(back["W"], params["W"])
    ens = model.unravel(jnp.stack([model.init(), 2 * model.init()]))
    assert ens["W"].shape == (2, 2, 3)
    np.testing.assert_array_equal(ens["b"][1], 2 * params["b"])
    mlp = eqx.nn.MLP(3, 2, 4, 1, key=jax.random.key(1))
    fm = sd.FunctionModel.from_module(mlp)
    assert fm.n_outputs == 2 and fm.n_params == 4 * 3 + 4 + 2 * 4 + 2
    assert fm.param_names()[0] == "layers[0].weight[0,0]"
    again = fm.unravel(fm.init())
    x = jnp.linspace(-1.0, 1.0, 3)
    np.testing.assert_array_equal(again(x), mlp(x))
    np.testing.assert_array_equal(fm.output(fm.init(), x), mlp(x))


def _one_path(draws):
    return jax.tree.map(lambda a: a[0], draws)


def test_stochastic_gradient_equals_builtin_for_every_noise():
    """For every registered noise (and the label flips with K = 3 outputs under cross-entropy) the stochastic
    gradient SGD takes on the hand-written pytree model equals the built-in model's it spells out, on the same
    draws, and so do ∇L and a biased noise's mean; taken on the params pytree (SGD's carry where the gradient
    comes through the outputs) it is the flat one bit for bit [theory: FMOD-1, FMOD-5]."""
    reg = _pair("two_layer_dict")
    ce = _pair("two_layer_ce", sd.CrossEntropyLoss(), np.arange(N) % 3)
    cases = [(NOISES[n](N, reg[0].n_params), reg) for n in sorted(NOISES)]
    cases += [(CLASSIFICATION_NOISES[n](N, ce[0].n_params, 3), ce) for n in sorted(CLASSIFICATION_NOISES)]
    key = jax.random.key(7)
    for noise, (fm, bi) in cases:
        noise.check(fm)
        state = noise.init_state(fm, key, 1, jnp.float64)
        draws, _ = noise.draw(fm, key, 0, state, 1, jnp.float64)
        theta = bi.model.init() + 0.1
        a = noise.gradient(fm, theta, _one_path(draws))
        b = noise.gradient(bi, theta, _one_path(draws))
        layout = sd.SGD(noise).stepper(fm, 1).layout  # the params pytree where the gradient allows it
        assert isinstance(layout, ParamsLayout) == noise.through_outputs(), type(noise).__name__
        tree = noise.gradient(layout.problem(fm), layout.pack(theta), _one_path(draws))
        np.testing.assert_array_equal(layout.unpack(tree), a, err_msg=type(noise).__name__)  # [FMOD-5]
        # rounding only: vmap of one example's output against the built-in's batched X @ Wᵀ
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=type(noise).__name__)
        assert np.all(np.isfinite(a))
        if isinstance(noise, sd.AbstractSDENoise) and not noise.unbiased:  # the unbiased ones' mean is ∇L
            np.testing.assert_allclose(
                noise.mean_gradient(fm, theta), noise.mean_gradient(bi, theta), rtol=0, atol=1e-12
            )
    th = reg[1].model.init() + 0.1
    np.testing.assert_allclose(reg[0].grad(th), reg[1].grad(th), rtol=0, atol=1e-12)


def test_the_diagonal_nets_pair_layout_takes_every_noises_gradient():
    """For every registered noise on the signed diagonal net, SGD's layout is the (u, v) pair exactly where the
    gradient comes through the outputs, and the gradient taken on the pair is the flat one (to rounding:
    1e-14 relative, other fusions) [theory: FMOD-5]."""
    X = np.random.default_rng(2).normal(size=(N, 3))
    problem = sd.Problem(sd.DiagonalLinearNetwork(3, 0.8), X, X @ np.array([1.0, -0.5, 0.2]))
    key, theta = jax.random.key(7), problem.model.init() + jnp.linspace(-0.2, 0.3, 6)
    for name in sorted(NOISES):
        noise = NOISES[name](N, problem.n_params)
        noise.check(problem)
        layout = sd.SGD(noise).stepper(problem, 1).layout
        assert (layout != FLAT) == noise.through_outputs(), name
        draws, _ = noise.draw(problem, key, 0, noise.init_state(problem, key, 1, jnp.float64), 1, jnp.float64)
        flat = noise.gradient(problem, theta, _one_path(draws))
        pair = noise.gradient(layout.problem(problem), layout.pack(theta), _one_path(draws))
        np.testing.assert_allclose(layout.unpack(pair), flat, rtol=1e-14, atol=1e-15, err_msg=name)


_SDE_NOISES = [(n, "reg") for n in sorted(NOISES)] + [(n, "ce") for n in sorted(CLASSIFICATION_NOISES)]


def test_factor_mv_is_one_vjp_equal_to_dense():
    """For every SDE noise on a small FunctionModel, the matrix-free A(θ)w (the noise's ``factor_mv`` and the
    Euler form's, one VJP) equals ``covariance_factor(θ) @ w``, and ``noise_dim`` is A's column count
    [theory: FMOD-2]."""
    reg, _ = _pair("two_layer_dict")
    ce, _ = _pair("two_layer_ce", sd.CrossEntropyLoss(), np.arange(N) % 3)
    rng = np.random.default_rng(5)
    for name, kind in _SDE_NOISES:
        problem = reg if kind == "reg" else ce
        d = problem.n_params
        noise = NOISES[name](N, d) if kind == "reg" else CLASSIFICATION_NOISES[name](N, d, 3)
        theta = problem.model.init() + 0.3 * rng.normal(size=d)
        A = noise.covariance_factor(problem, theta)
        assert noise.noise_dim(problem) == A.shape[1], name
        w = jnp.asarray(rng.normal(size=A.shape[1]))
        for got in (
            noise.factor_mv(problem, theta, w),
            noise.euler_form(problem).factor_mv(problem, theta, w),
        ):
            np.testing.assert_allclose(got, A @ w, rtol=1e-12, atol=1e-12, err_msg=name)


def test_sgd_and_optimizers_equal_builtin():
    """simulate_sgd on the pytree model equals it on the built-in model, with heavy-ball momentum (the other
    optimizers on the pytree model: test_sgd_in_the_models_layout_equals_the_flat_layout) [theory: FMOD-1]."""
    fm, bi = _pair("two_layer_dict")
    kw = dict(lr=0.05, n_steps=3, key=2, ensemble=sd.Ensemble(n_paths=2), record=sd.Record(n_saved_paths=2))
    noise = sd.LabelNoise(0.5, 2, "with_replacement", "gaussian")
    a = sd.simulate_sgd(fm, noise, fm.model.init(), optimizer=sd.Momentum(0.9), **kw)
    b = sd.simulate_sgd(bi, noise, bi.model.init(), optimizer=sd.Momentum(0.9), **kw)
    np.testing.assert_allclose(a.paths, b.paths, rtol=0, atol=1e-12)


def test_eqx_mlp_sde_sweep_resetting():
    """An equinox MLP through the SDE (Euler, order 1 and 2 drifts by autodiff), a sweep over lr (each point equal
    to its single run) and resetting; θ comes back as a module [theory: FMOD-1, FMOD-2]."""
    problem = _mlp_problem()
    th0 = problem.model.init()
    noise = sd.LabelNoise(0.5, 2)
    kw = dict(n_steps=4, key=1, ensemble=sd.Ensemble(n_paths=3), record=sd.Record(n_saved_paths=3))
    sde = sd.simulate_sde(problem, noise, th0, lr=0.05, order=2, **kw)
    assert np.all(np.isfinite(sde.paths))
    sw = sd.sweep(sd.SGD(noise), problem, th0, grid={"lr": [0.02, 0.05]}, **kw)
    assert np.all(np.isfinite(sw.results[1].paths)) and not np.array_equal(
        sw.results[1].paths, sw.results[0].paths
    )
    reset = sd.simulate_sgd(problem, noise, th0, lr=0.05, resetting=sd.Resetting(10.0), **kw)
    assert reset.resets is not None and np.all(np.isfinite(reset.paths))
    module = problem.model.unravel(sw.results[1].paths[-1, 0])  # (records, paths, d)
    assert isinstance(module, eqx.nn.MLP)


def _steps(stepper, n_steps):
    """``n_steps`` SGD steps from two points near the model's θ₀, scanned as a run is: the flat θ, the stepper's
    records and its divergence check of θ with one entry set to inf."""

    @jax.jit
    def run():
        th = stepper.problem.model.init()
        key = jax.random.key(4)
        carry = stepper.init(key, jnp.stack([th + 0.1, th - 0.2]))
        step = lambda c, k: (stepper.step(c, k, 0.3, jax.random.fold_in(key, k)), None)  # noqa: E731
        carry, _ = jax.lax.scan(step, carry, jnp.arange(n_steps))
        theta = stepper.theta(carry)
        bad = stepper.with_theta(carry, theta.at[1, theta.shape[1] - 1].set(jnp.inf))
        return theta, stepper.observe(carry), stepper.path_finite(bad)

    return run()


@pytest.mark.parametrize("which", ["function_model", "diagonal_net"])
def test_sgd_in_the_models_layout_equals_the_flat_layout(which):
    """With no optimizer and every registered optimizer whose update acts entry by entry (momentum, RMSprop warm
    started from a given v₀, Adam) SGD carries the model's own layout (a FunctionModel's params pytree, the
    signed diagonal net's (u, v) pair) and its moments, and takes the flat layout's steps; records and the
    divergence check too. The params pytree: bit for bit except Adam, to rounding; the (u, v) pair: to
    rounding, within a few ulp after 2 steps (XLA contracts and reassociates differently in the per-leaf
    fusions). A user's optax transformation keeps the flat θ [theory: FMOD-5]."""
    if which == "function_model":
        problem, _ = _pair("two_layer_dict")
        noise = NOISES["minibatch_wr"](N, problem.n_params)
    else:
        X = np.random.default_rng(2).normal(size=(N, 3))
        problem = sd.Problem(sd.DiagonalLinearNetwork(3, 0.8), X, X @ np.array([1.0, -0.5, 0.2]))
        noise = NOISES["label_minibatch_gaussian"](N, problem.n_params)
    d = problem.n_params
    optimizers = {k: OPTIMIZERS[k]() for k in sorted(OPTIMIZERS)}
    optimizers["rmsprop"] = sd.RMSprop(0.9, 1e-6, v0=np.linspace(0.5, 1.5, d))  # v₀ packed as the params
    optimizers["none"] = None
    for name, opt in optimizers.items():
        stepper = sd.SGD(noise, opt).stepper(problem, 2)
        assert (stepper.layout == FLAT) == (name == "optax_clip_adam"), name
        if stepper.layout == FLAT:
            continue
        assert isinstance(stepper.layout, ParamsLayout) == (which == "function_model")
        a = _steps(stepper, 2)
        b = _steps(SGDStepper(problem, noise, 2, stepper.optimizer, FLAT), 2)
        assert a[1].keys() == set(() if opt is None else opt.records), name
        if name == "adam" or which == "diagonal_net":
            # XLA turns the bias correction's division by a scalar into a product with its reciprocal,
            # reassociated differently in the per-leaf fusions: within a few ulp after 2 steps
            np.testing.assert_allclose(a[0], b[0], rtol=4e-15, atol=1e-15)
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-14), a[1], b[1])
        else:
            jax.tree.map(np.testing.assert_array_equal, a[:2], b[:2])
        np.testing.assert_array_equal(a[2], [True, False])
        np.testing.assert_array_equal(a[2], b[2])


def _run_ckpt(problem, prefix, **output):
    return sd.simulate_sgd(
        problem,
        sd.MinibatchNoise(2, "shuffle"),
        problem.model.init(),
        lr=0.05,
        n_steps=12,
        key=3,
        ensemble=sd.Ensemble(n_paths=4, chunk_size=2),
        record=sd.Record(every=3, n_saved_paths=4),
        output=sd.Output(save_to=str(prefix), checkpoint_every=1, **output),
    )


def test_checkpoint_resume_and_fingerprint(tmp_path, monkeypatch):
    """A run of the equinox MLP (SGD carries its params pytree) interrupted after its first chunk resumes bit
    for bit, equal to the run in the flat layout (records, saved paths); a checkpoint is refused for another
    function with the same params (the apply digest in the fingerprint) [theory: FMOD-1, FMOD-5]."""
    problem = _mlp_problem()
    with monkeypatch.context() as m:
        m.setattr(FunctionModel, "layout", lambda self: FLAT)
        reference = _run_ckpt(problem, tmp_path / "ref")
    original = _progress.Progress.update
    calls = {"n": 0}

    def update(self, done):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        original(self, done)

    monkeypatch.setattr(_progress.Progress, "update", update)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the interrupted run's note that it saved a checkpoint
        _run_ckpt(problem, tmp_path / "a")
    monkeypatch.setattr(_progress.Progress, "update", original)
    resumed = _run_ckpt(problem, tmp_path / "a", resume=True)
    np.testing.assert_array_equal(resumed.paths, reference.paths)
    for k in reference.mean:
        np.testing.assert_array_equal(resumed.mean[k], reference.mean[k])
    # the same params under another function: sin in place of tanh
    m = problem.model
    other = sd.FunctionModel(lambda q, x: jnp.sin(m.apply(q, x)), _params_of(m), P)
    assert other.apply_digest != m.apply_digest and other.template == m.template
    with pytest.raises(ValueError, match="resume: the checkpoint .* another run: configs"):
        _run_ckpt(sd.Problem(other, problem.X, problem.y), tmp_path / "a", resume=True)


def _params_of(model):
    """The params pytree a from_module model's apply takes (the module's arrays)."""
    return eqx.partition(model.unravel(model.init()), eqx.is_inexact_array)[0]


def test_verdict():
    """The L + λR prediction on the pytree model is a stationary point of the built-in model's L + λR (the
    exact reference: its gradient there is ~0), and the verdict runs on a run of the pytree model
    [theory: FMOD-1]."""
    fm, bi = _pair("diagonal_dict")
    noise = sd.LabelNoise(0.5, 2)
    reg = sd.implicit.HessianTraceRegularizer()
    pred = sd.implicit.predict(fm, noise, 0.05, bi.model.init(), regularizers=[reg], method="newton")
    point = pred.point()
    assert point.converged
    lam = pred.lam
    grad = jax.grad(lambda t: bi.loss(t) + lam * reg.value(bi, t))(jnp.asarray(point.theta))
    assert float(jnp.linalg.norm(grad)) < 1e-8  # the solve's gtol 1e-9, and rounding between the two models
    rec = sd.Record(observables=["theta"])
    run = sd.simulate_sgd(
        fm, noise, point.theta, lr=0.05, n_steps=4, key=1, ensemble=sd.Ensemble(n_paths=2), record=rec
    )
    report = sd.implicit.check_convergence(fm, [run], pred)
    assert len(report.verdicts) == 1


def test_power_iteration_lambda_max():
    """Power iteration on Hessian-vector products: λ_max of a matrix whose dominant eigenvalue is negative
    (the shifted second stage), and ``Problem.sharpness`` above 512 parameters against the dense Hessian's
    eigenvalues; the stability warning at that size [theory: FMOD-4]."""
    H = jnp.diag(jnp.array([-5.0, 1.0, 2.0]))
    lam = power_iteration_lambda_max(
        lambda v: H @ v, 3, jax.random.key(0), jnp.float64, iters=2000, rtol=1e-12
    )
    np.testing.assert_allclose(lam, 2.0, rtol=1e-6)
    # a linear FunctionModel with d = 520 > 512: H = XᵀX/n exactly (squared loss), a dense reference from NumPy
    d, n = 520, 30
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(n, d)), rng.normal(size=n)
    problem = sd.Problem(sd.FunctionModel(lambda q, x: q["w"] @ x, {"w": jnp.zeros(d)}, d), X, y)
    th = problem.model.init()
    exact = float(np.linalg.eigvalsh(X.T @ X / n)[-1])
    got = problem.sharpness(th)
    # the Rayleigh quotient is ≤ λ_max; the stopping rule (relative change 1e-4 per iteration) leaves it within
    # 1e-3 relatively here (gap λ₂/λ₁ ≈ 0.95)
    assert got <= exact * (1 + 1e-12) and got >= exact * (1 - 1e-3)
    with pytest.warns(RuntimeWarning, match="stability limit"):  # what SGD's plan calls before compiling
        warn_if_unstable(problem, th, np.array([2.2 / exact]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unstable(problem, th, np.array([1.8 / exact]))


def _scalar_apply(q, x):
    return q["w"] @ x


@pytest.mark.parametrize(
    "params, match",
    [
        ({"w": jnp.arange(3)}, r"params: every leaf .* \['w'\] is dtype int"),
        ({"w": np.array([True, False, True])}, "dtype bool"),
        ({"w": np.ones(3, complex)}, "dtype complex"),
        ({}, "params must hold at least one"),
        ({"w": np.ones(3), "s": "tanh"}, r"\['s'\] is a string"),
        ({"w": np.array([1.0, np.nan, 0.0])}, "params must be finite"),
    ],
)
def test_bad_params(params, match):
    with pytest.raises(ValueError, match=match):
        sd.FunctionModel(_scalar_apply, params, 3)


def test_bad_apply_and_data():
    """apply not callable, failing on one input, returning a matrix; a loss that does not fit its outputs;
    outputs not finite at θ₀; rows of X that apply cannot take: each a ValueError naming the argument."""
    w = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="apply must be a callable"):
        sd.FunctionModel(None, w, 3)
    with pytest.raises(ValueError, match="input_dim must be"):
        sd.FunctionModel(_scalar_apply, w, 0)
    with pytest.raises(ValueError, match=r"apply\(params, x\) failed .*input_dim=4"):
        sd.FunctionModel(_scalar_apply, w, 4)  # (3,) @ (4,)
    with pytest.raises(ValueError, match=r"scalar .* or a \(K,\) vector .* got shape \(3, 3\)"):
        sd.FunctionModel(lambda q, x: jnp.outer(q["w"], x), w, 3)
    X, y = _data()
    scalar = sd.FunctionModel(_scalar_apply, w, 3)
    with pytest.raises(ValueError, match="CrossEntropyLoss needs a model with K >= 2 outputs, got 1"):
        sd.Problem(scalar, X, np.arange(N) % 2, loss=sd.CrossEntropyLoss())
    vector = sd.FunctionModel(lambda q, x: q["w"] * x, w, 3)
    with pytest.raises(ValueError, match="needs a one-output model"):
        sd.Problem(vector, X, np.sign(y), loss=sd.LogisticLoss())
    log = sd.FunctionModel(lambda q, x: jnp.log(q["w"] @ x), w, 3)
    with pytest.raises(ValueError, match="params: the model's outputs at theta0 .* not finite on"):
        sd.Problem(log, X, y)

    def float32_only(q, x):
        if x.dtype != jnp.float32:
            raise TypeError(f"expects float32 inputs, got {x.dtype}")
        return q["w"].astype(jnp.float32) @ x

    f32 = sd.FunctionModel(float32_only, {"w": np.ones(3, np.float32)}, 3)
    with pytest.raises(ValueError, match=r"X: apply\(params, x\) failed on the rows of X .* float64"):
        sd.Problem(f32, X, y)
    with pytest.raises(ValueError, match="module must be a callable equinox Module"):
        sd.FunctionModel.from_module(lambda x: x)
    with pytest.raises(ValueError, match="theta must have last dimension 3"):
        scalar.unravel(np.ones(4))


def _max_intermediate(jaxpr) -> int:
    """The largest array size among the variables of ``jaxpr`` and of every jaxpr nested in its equations."""
    best = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            best = max(best, int(np.prod(getattr(v.aval, "shape", ()))))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    best = max(best, _max_intermediate(inner))
    return best


def test_no_d_by_n_array_in_sgd_or_the_sde_step():
    """At size nothing of d × n (or d × d) entries is formed: in the traced program of each matrix-free noise's
    stochastic gradient, A(θ)w and the SME's Euler product and whole increment, every intermediate has fewer
    than d·n entries (here d = 2·(p + 1)·w ≫ the model's activations n × w) [theory: FMOD-2, FMOD-3]."""
    p, width, n = 30, 4, 40
    rng = np.random.default_rng(3)
    params = {"W": jnp.asarray(rng.normal(size=(width, p))), "a": jnp.asarray(rng.normal(size=(width, 3)))}
    fm = sd.FunctionModel(lambda q, x: jnp.tanh(q["W"] @ x) @ q["a"], params, p)
    X = rng.normal(size=(n, p))
    reg = sd.Problem(
        sd.FunctionModel(lambda q, x: jnp.tanh(q["W"] @ x) @ q["a"][:, 0], params, p), X, X[:, 0]
    )
    ce = sd.Problem(fm, X, np.arange(n) % 3, loss=sd.CrossEntropyLoss())
    d = fm.n_params
    dense = {"gaussian_constant", "gaussian_state"}  # a user-given d × m factor is dense by construction
    cases = [(NOISES[k](n, d), reg) for k in sorted(NOISES) if k not in dense]
    cases += [(CLASSIFICATION_NOISES[k](n, d, 3), ce) for k in sorted(CLASSIFICATION_NOISES)]
    theta = jax.ShapeDtypeStruct((d,), jnp.float64)
    key = jax.random.key(0)
    for noise, problem in cases:
        name = type(noise).__name__
        draws, _ = noise.draw(problem, key, 0, noise.init_state(problem, key, 1, jnp.float64), 1, jnp.float64)
        one = _one_path(draws)
        grad = jax.make_jaxpr(functools.partial(noise.gradient, problem))(theta, one)
        assert _max_intermediate(grad.jaxpr) < d * n, f"{name}: SGD gradient"
        m = noise.noise_dim(problem)
        w = jax.ShapeDtypeStruct((m,), jnp.float64)
        sme = sd.SME(problem, noise).euler_form()
        for what, fn in (
            ("factor_mv", functools.partial(noise.factor_mv, problem)),
            ("Euler", sme.factor_mv),
            ("Euler increment", lambda t, w, sme=sme: sme.euler_increment(t, 0.1, 0.1, w)),  # SDE-10
        ):
            jaxpr = jax.make_jaxpr(fn)(theta, w).jaxpr
            assert _max_intermediate(jaxpr) < max(d * n, m + 1), f"{name}: {what}"
