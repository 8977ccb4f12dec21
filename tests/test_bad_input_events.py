"""Bad input to the events, schedules, sweeps and resetting closed forms (issue 26 §5, "Events" and "Smaller"):
each is refused at set-up with a ValueError naming the argument and what is valid, before anything compiles
(or, for valid extreme input, defined and documented: an MFPT beyond float64 is inf)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import sgdsde as sd
from sgdsde.analysis import mfpt_with_resetting

PROBLEM = sd.quadratic_problem(np.eye(2), np.zeros(2))
RUN = dict(lr=0.1, n_steps=5, key=0, ensemble=sd.Ensemble(n_paths=2))


@pytest.mark.parametrize(
    "option",
    [
        lambda fn: dict(first_passage=sd.FirstPassage(observable=fn, threshold=0.0)),
        lambda fn: dict(resetting=sd.Resetting(1.0, sd.BestSoFar(fn, patience=2))),
    ],
    ids=["FirstPassage", "BestSoFar"],
)
def test_event_observable_indexing_past_theta_or_nan_is_refused(option):
    """An observable indexing past θ (d = 2; JAX would clamp th[5] to th[1] silently inside the run) or NaN
    at θ₀ (it never compares, so the event would never act) is refused naming the observable."""
    with pytest.raises(ValueError, match=r"observable indexes outside theta \(d = 2\)"):
        sd.simulate_sgd(PROBLEM, None, np.ones(2), **RUN, **option(lambda p, th: th[5]))
    with pytest.raises(ValueError, match="observable is NaN at theta0"):
        sd.simulate_sgd(PROBLEM, None, np.ones(2), **RUN, **option(lambda p, th: th[0] * jnp.nan))
    with pytest.raises(ValueError, match="target indexes outside theta"):
        sd.simulate_sgd(
            PROBLEM, None, np.ones(2), **RUN, first_passage=sd.FirstPassage(target=lambda p, th: th[7] < 0)
        )


def test_resetting_checkpoint_that_overflows_the_dtype_is_refused():
    """A fixed checkpoint beyond the run's dtype (1e300 in float32 would become inf) is refused; in float64 it
    is representable and accepted."""
    reset = sd.Resetting(1.0, checkpoint=[1e300, 0.0])
    with pytest.raises(
        ValueError, match=r"checkpoint overflows the run's dtype float32 \(\|value\| <= 3.403e\+38\)"
    ):
        sd.simulate_sgd.plan(
            PROBLEM,
            None,
            np.ones(2),
            **dict(RUN, ensemble=sd.Ensemble(n_paths=2, dtype=np.float32)),
            resetting=reset,
        )
    sd.simulate_sgd.plan(PROBLEM, None, np.ones(2), **RUN, resetting=reset)  # float64: fits


@pytest.mark.parametrize("threshold", [[0.0], np.array([0.0, 1.0]), 1j, 1 + 0j, "0", None, float("nan")])
def test_first_passage_threshold_must_be_a_real_scalar(threshold):
    match = "needs threshold" if threshold is None else r"threshold must be a finite real number \(a scalar\)"
    with pytest.raises(ValueError, match=match):
        sd.FirstPassage(observable="loss", threshold=threshold)
    assert (
        sd.FirstPassage(observable="loss", threshold=np.float32(0.5)).threshold == 0.5
    )  # a NumPy scalar is fine


def test_mfpt_with_resetting_refuses_non_numbers_and_is_inf_beyond_float64():
    """v='1' is refused like D and L; a valid input whose T(r) exceeds float64 (exponent L(√(v²+4Dr) − v)/(2D)
    = 1000 > 709.78) returns inf (documented), where math.expm1 raised OverflowError; just below it is finite
    and equals the closed form."""
    for v in ("1", b"1", True, 1j, [1.0], None):
        with pytest.raises(ValueError, match="v must be a finite real number"):
            mfpt_with_resetting(v, 1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="r must be a real number"):
        mfpt_with_resetting(1.0, 1.0, 1.0, "0.5")
    # v = 0, D = 1, r = 1: exponent = L√(4)/2 = L
    assert mfpt_with_resetting(0.0, 1.0, 1000.0, 1.0) == math.inf
    assert mfpt_with_resetting(-1e300, 1.0, 1.0, 1.0) == math.inf
    assert mfpt_with_resetting(0.0, 1.0, 700.0, 1.0) == pytest.approx(math.expm1(700.0), rel=1e-12)


@pytest.mark.parametrize(
    "schedule, match",
    [
        (lambda k: jnp.stack([k, k], axis=-1) * 0.0 + 0.1, "one step size per step"),
        (lambda k: 1 / 0, r"failed .*ZeroDivisionError"),
        (lambda k: "0.1", "must return real step sizes"),
        (lambda k: 0.1 + 0j * k, "must return real step sizes"),
    ],
    ids=["wrong-shape", "raises", "string", "complex"],
)
def test_schedule_of_the_wrong_shape_or_raising_is_refused_naming_lr(schedule, match):
    with pytest.raises(ValueError, match=f"lr: the schedule .*{match}"):
        sd.simulate_sgd.plan(PROBLEM, None, np.ones(2), **dict(RUN, lr=schedule))


@pytest.mark.parametrize("boundaries", [5, "12", 2.5, None])
def test_step_decay_boundaries_must_be_a_sequence_of_steps(boundaries):
    with pytest.raises(ValueError, match="boundaries must be"):
        sd.StepDecayLR(0.1, boundaries)


def test_sweep_refuses_values_the_run_cannot_tell_apart():
    """0.01 and float32(0.01) are one float32 step size: a float32 sweep refuses the pair naming both (it
    would run one point twice); NumPy scalars become Python numbers in the points."""
    noise = sd.SphericalGaussianNoise(0.1)
    f32 = sd.Ensemble(n_paths=2, dtype=np.float32)
    with pytest.raises(
        ValueError, match=r"grid\['lr'\] repeats a value \(0.01 and 0.0099999.* are one float32\)"
    ):
        sd.sweep(
            sd.simulate_sgd,
            PROBLEM,
            noise,
            np.ones(2),
            grid={"lr": [0.01, np.float32(0.01)]},
            n_steps=2,
            key=0,
            ensemble=f32,
        )
    with pytest.raises(ValueError, match=r"grid\['sigma'\] repeats a value"):
        sd.sweep(
            sd.simulate_sgd, PROBLEM, noise, np.ones(2), grid={"sigma": [0.5, 0.5]}, lr=0.1, n_steps=2, key=0
        )
    res = sd.sweep(
        sd.simulate_sgd,
        PROBLEM,
        noise,
        np.ones(2),
        grid={"lr": [np.float64(0.1), np.float32(0.2)]},
        n_steps=2,
        key=0,
        ensemble=sd.Ensemble(n_paths=2),
    )
    assert [type(p["lr"]) for p in res.points] == [float, float]
