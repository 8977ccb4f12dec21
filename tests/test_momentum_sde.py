"""The SDE state beyond θ (init_state / theta_of / with_theta), the optimizer registry of ``SDE(optimizer=)``,
and Li–Tai–E's momentum SME checked exactly on quadratics (theory/momentum-sde.md)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdsde as sd
from sgdsde._sde import FunctionSDE, SDEStepper


def _langevin(gamma=1.0, sigma=0.5):
    """Underdamped Langevin in (θ, v) ∈ R², θ the first coordinate: dθ = v dt, dv = (−θ − γv) dt + σ dW."""
    drift = lambda y, eta: jnp.stack([y[1], -y[0] - gamma * y[1]])
    factor = lambda y: jnp.array([[0.0], [sigma]], y.dtype)
    return FunctionSDE(drift, factor, noise_type="additive", theta_dim=1, state_dim=2)


def test_function_sde_state_beyond_theta_records_theta_only():
    """A FunctionSDE in (θ, v) runs on the engine: saved paths and observables are θ's (d = 1), the state
    has p = 2 and its exact mean from (θ₀, 0) (a damped oscillator, no noise in the mean) is matched by
    Euler to O(dt). [theory: MSDE-1]"""
    sde = _langevin()
    assert sde.state_dim(1) == 2 and sde.check_shapes(1, jnp.float64) == 1
    res = sd.simulate(
        sd.SDE(stepping=sd.Fixed(substeps=4)),
        sde,
        np.array([1.0]),
        lr=0.01,
        n_steps=200,
        key=0,
        ensemble=sd.Ensemble(n_paths=256, dtype=np.float64),
        record=sd.Record(every=200, observables={"theta": lambda p, t: t[0]}, n_saved_paths=4),
    )
    assert res.paths.shape[-1] == 1
    # exact mean of θ at t = 2: e^{Ft}(1, 0), F = [[0, 1], [−1, −γ]]
    F = np.array([[0.0, 1.0], [-1.0, -1.0]])
    exact = (jax.scipy.linalg.expm(jnp.asarray(F * 2.0)) @ jnp.array([1.0, 0.0]))[0]
    se = float(np.sqrt(res.var["theta"][-1] / res.n_paths))
    # Monte Carlo: 5 standard errors; Euler's weak bias O(dt) with dt = 0.0025 is ~1e-3, below 5 se (~0.01)
    assert abs(float(res.mean["theta"][-1]) - float(exact)) < 5 * se + 2e-3


def test_function_sde_with_theta_and_restart_keep_or_reset_the_rest():
    """with_theta replaces θ and keeps v; restart sets y = init_state(θ) on the masked paths only, in both
    layouts of the stepper. [theory: MSDE-1]"""
    sde = _langevin()
    y = jnp.array([0.3, -2.0])
    np.testing.assert_array_equal(sde.with_theta(y, jnp.array([5.0])), jnp.array([5.0, -2.0]))
    for paths_last in (True, False):
        st = SDEStepper(sde, diffrax.Euler(), 3, 1, "brownian", False, 1, paths_last)
        carry = st.init(None, jnp.array([[1.0], [2.0], [3.0]]))
        carry = st.with_theta((carry[0] + 7.0, carry[1]), jnp.array([[1.0], [2.0], [3.0]]))  # v = 7
        np.testing.assert_array_equal(st.theta(carry), [[1.0], [2.0], [3.0]])
        out = st.restart(carry, jnp.array([True, False, True]))
        y = out[0].T if paths_last else out[0]
        np.testing.assert_array_equal(y, [[1.0, 0.0], [2.0, 7.0], [3.0, 0.0]])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(theta_dim=1, state_dim=2, init_state=lambda t: t), "init_state"),
        (dict(theta_dim=2, state_dim=1), "theta_dim and state_dim"),
        (dict(theta_dim=1), "theta_dim and state_dim"),
        (dict(init_state=lambda t: t), "init_state"),
        (dict(theta_dim=2, state_dim=3), "theta_dim=2"),
    ],
)
def test_function_sde_state_shapes_mismatch_raise(kw, match):
    """An init_state whose shape is not (p,), inconsistent or half-given dimensions, and a θ₀ of another
    dimension than theta_dim → ValueError naming them. [theory: MSDE-1]"""
    drift = lambda y, eta: -y
    factor = lambda y: jnp.eye(y.shape[0], dtype=y.dtype)
    with pytest.raises(ValueError, match=match):
        sde = FunctionSDE(drift, factor, **kw)
        sd.simulate(sd.SDE(), sde, np.array([1.0]), lr=0.1, n_steps=2, key=0)
