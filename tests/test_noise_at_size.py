"""The noise models' per-example sums at size (issue 24): above ``MAX_DENSE_PARAMS`` parameters diag Σ (the adaptive
SDEs' second-moment drift) and the Itô→Stratonovich corrections are sums over examples taken a chunk at a time,
never a d × n matrix. Each is held to the dense form on a small FunctionModel with the switch forced, for every
SDE noise of the registry, and the traced programs are searched for d·n-sized intermediates."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import NOISES
from test_function_model import _max_intermediate  # the d·n-intermediate search of FMOD-2/3, reused

import sgdsde as sd
from sgdsde import _problem  # internal: the size switch, lowered to force the chunked path
from sgdsde._noise import AbstractSDENoise, NoiseType

# n = 70 examples: three chunks of 32 (the last one partial), so the chunking and its padding are exercised;
# d = 16, so n·d = 1120 exceeds a chunk's 32·d = 512 and the dense forms' d × d = 256
N, P, WIDTH = 70, 3, 4


def _problem_and_theta(K: int = 1, p: int = P, width: int = WIDTH):
    rng = np.random.default_rng(11)
    params = {
        "W": jnp.asarray(rng.normal(size=(width, p))),
        "a": jnp.asarray(rng.normal(size=(width,) if K == 1 else (width, K))),
    }
    model = sd.FunctionModel(lambda q, x: jnp.tanh(q["W"] @ x) @ q["a"], params, p)
    X = rng.normal(size=(N, p))
    if K == 1:
        problem = sd.Problem(model, X, rng.normal(size=N))
    else:
        problem = sd.Problem(model, X, rng.integers(0, K, size=N).astype(float), loss=sd.CrossEntropyLoss())
    theta = jnp.asarray(model.init()) + 0.3 * jnp.asarray(rng.normal(size=model.n_params))
    return problem, theta


# One registry noise per branch of the chunked forms (each compiles twice, ~0.5-0.8 s): the minibatch's centred
# columns with c ≠ 1, label columns alone, both, the full gradient's label columns, Wu's centred and uncentred
# weights. The other samplings only change a scale shared with minibatch_wor; the registry's remaining SDE
# noises have no chunked form (the same program at any size).
CHUNKED_NOISES = (
    "minibatch_wor",
    "label_full_rademacher",
    "label_minibatch_gaussian",
    "label_full_gradient",
    "wu_centred",
    "wu_bernoulli",
)


def test_the_chunked_noises_are_the_registry_noises_with_a_chunked_form():
    """Every SDE noise class of the registry that overrides diag Σ or its correction has a case above, so a new
    chunked form cannot go unchecked [theory: NOISE-7]."""
    d = 16
    sde_noises = {k: NOISES[k](N, d) for k in NOISES if isinstance(NOISES[k](N, d), AbstractSDENoise)}
    generic = AbstractSDENoise.covariance_diagonal, AbstractSDENoise.ito_to_stratonovich
    chunked = {
        type(v)
        for v in sde_noises.values()
        if (type(v).covariance_diagonal, type(v).ito_to_stratonovich) != generic
        and type(v) is not sd.SphericalGaussianNoise  # σ²1 and zero: checked against A below
    }
    assert chunked == {type(sde_noises[k]) for k in CHUNKED_NOISES}


def _refuses_correction(noise, problem) -> bool:
    """Whether the noise has only the d × m × d autodiff form of its Itô→Stratonovich correction."""
    generic = type(noise).ito_to_stratonovich is AbstractSDENoise.ito_to_stratonovich
    return generic and noise.noise_type(problem) != NoiseType.ADDITIVE


def _all_sums(problem, problem_k, noises, sdes, theta, theta_k):
    """Everything NOISE-7 computes by chunks at size, in one program: each noise's diag Σ and its correction,
    the K-output mean_jp terms and the adaptive SDEs' drift (whose v-rows are diag Σ)."""
    out = {}
    for name, noise in noises.items():
        out[name, "diag"] = noise.covariance_diagonal(problem, theta)
        if not _refuses_correction(noise, problem):
            out[name, "correction"] = noise.ito_to_stratonovich(problem, theta)
    out["K3", "mean_jp_loss"] = problem_k.mean_jp_loss(theta_k)
    out["K3", "mean_jp_output"] = problem_k.mean_jp_output(theta_k)
    for sde in sdes:
        out[type(sde).__name__, "drift"] = sde.drift(sde.init_state(theta) + 0.01, 0.05)
    return out


def test_per_example_sums_at_size_equal_the_dense_forms_and_hold_no_d_by_n_array(monkeypatch):
    """Above MAX_DENSE_PARAMS, diag Σ(θ) and the Itô→Stratonovich correction of each chunked noise of the registry,
    the 3-output cross-entropy net's $\\frac1n\\sum_i\\nabla^2\\ell_i\\nabla\\ell_i$ and
    $\\frac1n\\sum_i\\nabla^2 f_i\\nabla f_i$, and the Adam SDE's drift under label noise on minibatches equal
    the dense forms to float64 rounding (1e-12 relative: the same sums in another order). The program at size holds nothing of d·n entries, the dense one does, so the search
    can fail [theory: NOISE-7, FMOD-2]."""
    problem, theta = _problem_and_theta()
    # d = 10 with K = 3: a chunk's per-example Jacobians (32·K·d = 960) stay under the d = 16 problem's n·d
    problem_k, theta_k = _problem_and_theta(K=3, p=2, width=2)
    noises = {name: NOISES[name](N, problem.n_params) for name in (*CHUNKED_NOISES, "spherical")}
    for noise in noises.values():
        noise.check(problem)
    label = sd.LabelNoise(0.5, 4, "with_replacement", "gaussian")
    sdes = (
        sd.AdamSDE(problem, label, 0.9, 0.99, 1e-6),
    )  # RMSprop's drift takes diag Σ from the same base method
    args = (problem, problem_k, noises, sdes, theta, theta_k)
    d = problem.n_params

    def run():  # traced afresh per mode (the switch is read when tracing), the traced program then compiled
        closed, out_struct, _ = eqx.filter_make_jaxpr(_all_sums)(*args)
        leaves = [x for x in jax.tree.leaves(eqx.filter(args, eqx.is_array))]
        flat = jax.jit(lambda *xs: jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *xs))(*leaves)
        values = jax.tree.unflatten(jax.tree.structure(out_struct), flat)
        return {k: np.asarray(v) for k, v in values.items()}, _max_intermediate(closed.jaxpr)

    dense, dense_size = run()
    monkeypatch.setattr(_problem, "MAX_DENSE_PARAMS", 0)
    chunked, size = run()
    assert size < d * N <= dense_size, (size, dense_size)
    assert len(dense) == len(chunked) > 2 * len(noises)
    for key, value in dense.items():
        scale = max(1e-300, float(np.max(np.abs(value))))
        np.testing.assert_allclose(chunked[key], value, rtol=1e-12, atol=1e-14 * scale, err_msg=str(key))
    # the one override below the size (σ²1 for σI) against the row sums of A∘A
    A = np.asarray(noises["spherical"].covariance_factor(problem, theta))
    np.testing.assert_allclose(dense["spherical", "diag"], np.sum(A * A, axis=1), rtol=1e-15)


def test_a_correction_with_only_the_autodiff_form_is_refused_at_size(monkeypatch):
    """A state-dependent Gaussian noise's correction is a d × m × d Jacobian: at size it is refused with a
    ValueError naming the solver, never run out of memory [theory: NOISE-7]."""
    problem, theta = _problem_and_theta()
    noise = NOISES["gaussian_state"](N, problem.n_params)
    assert _refuses_correction(noise, problem)
    monkeypatch.setattr(_problem, "MAX_DENSE_PARAMS", 0)
    with pytest.raises(
        ValueError, match=r"solver: .* d × m × d Jacobian, refused at d = 16 > MAX_DENSE_PARAMS"
    ):
        noise.ito_to_stratonovich(problem, theta)
