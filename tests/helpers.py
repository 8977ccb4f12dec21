"""Registries of models and noise models: a new class joins every conformance test by one line here."""

from __future__ import annotations

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgdsde as sd
from sgdsde import _progress  # the progress bar is where a Ctrl-C is simulated

# name -> function(dim) building a model with input dimension `dim`.
MODELS = {
    "linear": lambda p: sd.LinearRegression(p),
    "diagonal_signed": lambda p: sd.DiagonalLinearNetwork(p, alpha=0.7),
    "diagonal_unsigned": lambda p: sd.DiagonalLinearNetwork(p, alpha=0.7, signed=False),
    "two_layer_tanh": lambda p: sd.TwoLayerNetwork(p, 3, "tanh"),
    "two_layer_relu": lambda p: sd.TwoLayerNetwork(p, 3, "relu"),
    "two_layer_quadratic": lambda p: sd.TwoLayerNetwork(p, 2, "quadratic"),
    "two_layer_sigmoid_fixed": lambda p: sd.TwoLayerNetwork(p, 3, "sigmoid", train_second_layer=False),
    "polynomial_curve": lambda p: sd.PolynomialCurve(p),
    "deep_matrix": lambda p: sd.DeepMatrixFactorization((1, p), 3, scale=0.5, hidden=2),
    "normalized_tanh": lambda p: sd.NormalizedTwoLayerNetwork(p, 2, mean=(0.1, -0.2), var=(1.2, 0.8)),
}


def _two_layer_params(p: int, width: int, K: int = 1) -> dict:
    """TwoLayerNetwork(p, width, ..., n_outputs=K).init()'s θ as a dict pytree {"W": (m, p), "a": (m,) or (m, K)}:
    "W" < "a" in the leaves' (sorted-key) order, so the raveled pytree is the built-in's θ = (vec W, a)."""
    theta = np.asarray(sd.TwoLayerNetwork(p, width, "tanh", n_outputs=K).init())
    a = theta[width * p :]
    return {
        "W": jnp.asarray(theta[: width * p].reshape(width, p)),
        "a": jnp.asarray(a if K == 1 else a.reshape(width, K)),
    }


def _two_layer_apply(params, x):
    return jnp.tanh(params["W"] @ x) @ params["a"]


# name -> (function(p) building a FunctionModel, function(p) building the built-in model it equals, θ₀ included).
# A separate registry from MODELS: joining MODELS would run every model-product test on it (the pytree model's
# own product with the noises, losses and optimizers is tests/test_function_model.py).
FUNCTION_MODELS = {
    "two_layer_dict": (
        lambda p: sd.FunctionModel(_two_layer_apply, _two_layer_params(p, 2), p),
        lambda p: sd.TwoLayerNetwork(p, 2, "tanh"),
    ),
    "two_layer_ce": (
        lambda p: sd.FunctionModel(_two_layer_apply, _two_layer_params(p, 2, 3), p),
        lambda p: sd.TwoLayerNetwork(p, 2, "tanh", n_outputs=3),
    ),
    # θ = (u, v): "u" < "v"
    "diagonal_dict": (
        lambda p: sd.FunctionModel(
            lambda q, x: (q["u"] ** 2 - q["v"] ** 2) @ x, {"u": jnp.full(p, 0.7), "v": jnp.full(p, 0.7)}, p
        ),
        lambda p: sd.DiagonalLinearNetwork(p, alpha=0.7),
    ),
}

# name -> function(n, d) building a noise model for n data points and d parameters.
NOISES = {
    "none": lambda n, d: sd.NoNoise(),
    "minibatch_wr": lambda n, d: sd.MinibatchNoise(2, "with_replacement"),
    "minibatch_wor": lambda n, d: sd.MinibatchNoise(2, "without_replacement"),
    "minibatch_shuffle": lambda n, d: sd.MinibatchNoise(2, "shuffle"),
    "label_full_rademacher": lambda n, d: sd.LabelNoise(0.6),
    "label_minibatch_gaussian": lambda n, d: sd.LabelNoise(0.6, 2, "with_replacement", "gaussian"),
    "label_minibatch_wor": lambda n, d: sd.LabelNoise(0.4, 3, "without_replacement"),
    "label_full_gradient": lambda n, d: sd.FullGradientLabelNoise(0.7, 2, "with_replacement", "gaussian"),
    "gaussian_constant": lambda n, d: sd.GaussianNoise(np.diag(np.linspace(0.2, 1.0, d))),
    "gaussian_state": lambda n, d: sd.GaussianNoise(factor=lambda th: 0.3 * jnp.diag(1 + th**2)),
    "spherical": lambda n, d: sd.SphericalGaussianNoise(0.5),
    "wu_fisher": lambda n, d: sd.MultiplicativeNoise(2, "gaussian_fisher"),
    "wu_centred": lambda n, d: sd.MultiplicativeNoise(2, "gaussian_centred"),
    "wu_bernoulli": lambda n, d: sd.MultiplicativeNoise(2, "bernoulli"),
}


# name -> optimizer, one per state structure: a new optimizer joins every noise (test_optimizers.py) and the
# resume check by one line here
# (Nesterov and weight decay share Momentum's structure, AdamW Adam's; test_optimizers.py checks their numbers)
OPTIMIZERS = {
    "momentum": lambda: sd.Momentum(0.9),
    "rmsprop": lambda: sd.RMSprop(0.9, 1e-6),
    "adam": lambda: sd.Adam(),
    "optax_clip_adam": lambda: sd.Optax(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1.0))),
}


# Noises with the SGD side only (no closed-form covariance, not AbstractSDENoise): simulate_sgd only; their own tests live with their issue
# (PreactivationNoise: tests/test_large_lr.py).
SGD_ONLY_NOISES = {
    "preactivation": lambda n, d: sd.PreactivationNoise(0.5, 2, anneal_step=3),
}

# Noises that need a model of their own (BatchNormNoise: a NormalizedTwoLayerNetwork): name -> (model name in
# MODELS, function(n, d) building the noise); their own tests live with their issue (tests/test_batch_norm.py).
MODEL_NOISES = {
    "batch_norm": ("normalized_tanh", lambda n, d: sd.BatchNormNoise(2, p=0.5)),
}


def batch_gradient(problem: sd.Problem, theta, rows, labels=None) -> jnp.ndarray:
    """$\\frac1B\\sum_b \\nabla_\\theta\\ell(f(\\theta; x_{i_b}), \\tilde y_b)$, by autodiff of the batch's mean loss: the
    definition a per-example noise's gradient is held to. ``labels``: ỹ in place of the rows' own (flipped
    labels, or y + ε for additive label noise on the squared loss)."""
    xb = problem.X[rows]
    yb = problem.y[rows] if labels is None else labels

    def batch_loss(t):
        return jnp.mean(jax.vmap(lambda x, y: problem.loss_fn(problem.model.output(t, x), y))(xb, yb))

    return jax.grad(batch_loss)(theta)


def make_problem(model_name: str, n: int, p: int, seed: int) -> sd.Problem:
    """A random regression problem with n examples for the named model (float64)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    X = jax.random.normal(k1, (n, p), jnp.float64)
    y = jax.random.normal(k2, (n,), jnp.float64)
    return sd.Problem(MODELS[model_name](p), X, y)


def random_theta(problem: sd.Problem, seed: int) -> jnp.ndarray:
    return 0.8 * jax.random.normal(jax.random.key(seed + 1000), (problem.n_params,), jnp.float64)


# name -> (loss, number of outputs K, the labels it takes): a new loss joins test_losses.py by one line here.
LOSSES = {
    "squared": (sd.SquaredLoss(), 1, (-0.7, 0.0, 1.3)),
    "logistic": (sd.LogisticLoss(), 1, (-1.0, 1.0)),
    "cross_entropy": (sd.CrossEntropyLoss(), 3, (0, 1, 2)),
}


def _logistic_problem():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(3, 2))
    return sd.Problem(sd.TwoLayerNetwork(2, 2, "tanh"), X, np.array([1.0, -1.0, 1.0]), loss=sd.LogisticLoss())


def _ce_problem():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(3, 2))
    return sd.Problem(
        sd.TwoLayerNetwork(2, 2, "tanh", n_outputs=3), X, np.array([0, 2, 1]), loss=sd.CrossEntropyLoss()
    )


# name -> function building a small classification problem (float64) for label-flip and loss tests.
CLASSIFICATION_PROBLEMS = {"logistic": _logistic_problem, "ce3": _ce_problem}


def _transition(K: int) -> np.ndarray:
    """A K × K row-stochastic class-transition matrix, not symmetric ([[0.8, 0.2], [0.1, 0.9]] for K = 2)."""
    if K == 2:
        return np.array([[0.8, 0.2], [0.1, 0.9]])
    T = np.full((K, K), 0.1 / (K - 1)) + np.diag(np.linspace(0.7, 0.85, K) - 0.1 / (K - 1))
    T[0] = np.r_[0.7, 0.3, np.zeros(K - 2)]
    return T / T.sum(axis=1, keepdims=True)


# name -> function(n, d, K=2) building a noise model for a classification problem with K classes
# (CLASSIFICATION_PROBLEMS): label flips need class labels, so they have their own registry; every
# conformance test runs over both.
CLASSIFICATION_NOISES = {
    "label_flip_full": lambda n, d, K=2: sd.LabelFlipNoise(0.3),
    "label_flip_minibatch": lambda n, d, K=2: sd.LabelFlipNoise(0.2, 2, "with_replacement"),
    "label_flip_transition": lambda n, d, K=2: sd.LabelFlipNoise(
        None, 2, "without_replacement", transition=_transition(K)
    ),
}


def load_script(name: str):
    """scripts/<name>.py as a module (tests reuse a figure script's setting instead of copying it)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_latex(tex: str, where: str = "") -> None:
    """AssertionError unless ``tex``'s braces (outside \\{ \\}) nest and close and \\left/\\right pair up."""
    depth = 0
    for ch in tex.replace("\\{", "").replace("\\}", ""):
        depth += (ch == "{") - (ch == "}")
        assert depth >= 0, f"{where}: unbalanced braces in {tex!r}"
    assert depth == 0, f"{where}: unbalanced braces in {tex!r}"
    lefts = len(re.findall(r"\\left(?![a-zA-Z])", tex))
    rights = len(re.findall(r"\\right(?![a-zA-Z])", tex))
    assert lefts == rights, f"{where}: {lefts} \\left against {rights} \\right in {tex!r}"


def run_script(name: str, *args, cwd) -> str:
    """Run scripts/<name> with ``args`` in a subprocess in ``cwd``; its stdout (AssertionError on failure)."""
    import os
    import subprocess
    import sys

    scripts = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
    out = subprocess.run(
        [sys.executable, os.path.join(scripts, name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@contextlib.contextmanager
def interrupted_at_update(n: int):
    """A Ctrl-C at the run's n-th progress update (the end of a block of records, inside a chunk): the body must
    raise KeyboardInterrupt there; the progress bar's update is restored afterwards."""
    calls = {"n": 0}
    original = _progress.Progress.update

    def update(self, done):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        original(self, done)

    _progress.Progress.update = update
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        _progress.Progress.update = original
