"""The ensemble engine shared by the SGD and SDE simulators.

A stepper advances N paths by one step; the engine scans it under one jit, records observables every
``record_every`` steps as ensemble mean and M2 (memory O(N·d) whatever the number of steps), chunks
paths, flags non-finite paths, shows progress and saves finished chunks.

Keys: chunk c uses fold_in(key, c); its initial state uses split(.)[0] and step k uses
fold_in(split(.)[1], k), so the same key, configuration and chunking give the same numbers.
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PyTree

from ._observables import BUILTIN, check_observables, resolve
from ._options import Ensemble, Output, Record
from ._progress import Progress
from ._results import EnsembleResult, RunningMoments
from ._schedules import Clock, rates
from ._validation import check_dtype, check_int_range


class AbstractStepper(eqx.Module):
    """Advances all N paths of one chunk by one step: $\\theta_{k+1} = \\Phi(\\theta_k, k, \\eta_k, \\text{key}_k)$."""

    @abc.abstractmethod
    def init(self, key, theta0: Float[Array, "N d"]) -> PyTree:
        """The carry (θ plus any sampler or solver state) at step 0."""

    @abc.abstractmethod
    def step(self, carry: PyTree, k, eta, key) -> PyTree:
        """The carry after step k with step size η_k."""

    @abc.abstractmethod
    def theta(self, carry: PyTree) -> Float[Array, "N d"]:
        """The parameters of every path."""

    def with_theta(self, carry: PyTree, theta: Float[Array, "N d"]) -> PyTree:
        """The carry with every path's parameters replaced by ``theta`` (events that move θ: resetting)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support events that move theta (resetting)"
        )

    def path_finite(self, carry: PyTree) -> Bool[Array, " N"]:
        """Whether every coordinate of each path is finite, for the per-step divergence check. Steppers
        override it to reduce in their own layout (a transpose here doubled the cost of a d = 10 SDE step);
        a boolean ``all`` is used, not a float sum, which XLA's CPU reduction over the short major axis made
        2x slower than the whole Euler step (scripts/bench_sde.py)."""
        return jnp.all(jnp.isfinite(self.theta(carry)), axis=1)

    @property
    @abc.abstractmethod
    def problem(self):
        """The Problem the observables are evaluated on."""

    def solver_stats(self, carry: PyTree) -> dict[str, jax.Array]:
        """Per-chunk totals a solver wants reported (e.g. accepted/rejected adaptive steps); summed over
        chunks into ``result.config["solver_stats"]``."""
        return {}


def to_key(key):
    """Accept a JAX key (a typed scalar key, or raw uint32 key data of shape (2,)) or an int seed in
    [0, 2⁶³); anything else raises ValueError naming ``key``.

    The same key gives the same random numbers whatever the start: two runs with one key from different θ₀
    share their draws (common random numbers). For independent runs pass different keys, e.g.
    ``jax.random.split(key)`` or ``jax.random.fold_in(key, i)``."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        if not 0 <= int(key) < 2**63:
            raise ValueError(f"key as an int seed must be in [0, 2**63), got {int(key)}")
        return jax.random.key(int(key))
    if not isinstance(key, jax.Array):
        raise ValueError(f"key must be a JAX PRNG key or an int seed, got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be one PRNG key (shape ()), got a key array of shape {key.shape}")
        return key
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise ValueError(f"key as raw key data must be uint32 of shape (2,), got {key.dtype} {key.shape}")
    return jax.random.wrap_key_data(key)


def _stats(problem, observables, theta, bad_step, step_index, n_saved, extra=None):
    """Per-record ensemble statistics over finite paths, and the updated divergence marks; ``extra``: per-path
    values the events record (resets so far, arrived or not)."""
    values = {name: jax.vmap(lambda th, fn=fn: fn(problem, th))(theta) for name, fn in observables}
    values.update(extra or {})
    ok = bad_step < 0
    for v in values.values():
        ok = ok & jnp.all(jnp.isfinite(v.reshape(v.shape[0], -1)), axis=1)
    bad_step = jnp.where((bad_step < 0) & ~ok, step_index, bad_step)
    count = jnp.sum(ok)
    denom = jnp.maximum(count, 1)
    mean, m2 = {}, {}
    for name, v in values.items():
        mask = ok.reshape((-1,) + (1,) * (v.ndim - 1))
        mu = jnp.sum(jnp.where(mask, v, 0), axis=0) / denom.astype(v.dtype)
        mean[name] = mu
        m2[name] = jnp.sum(jnp.where(mask, (v - mu[None]) ** 2, 0), axis=0)
    return (count, mean, m2, theta[:n_saved]), bad_step


def _observed(events, ev_state) -> dict:
    out = {}
    for event, state in zip(events, ev_state, strict=True):
        out.update(event.observe(state))
    return out


@eqx.filter_jit
def _initial_record(stepper, observables, events, carry, bad_step, n_saved):
    theta = stepper.theta(carry)
    ev_state = tuple(e.init(stepper.problem, theta) for e in events)
    rec, bad = _stats(stepper.problem, observables, theta, bad_step, 0, n_saved, _observed(events, ev_state))
    return rec, bad, ev_state


def _apply_events(stepper, events, ev_state, before, carry, k_next, dt, key):
    """Each event after the step, in order (first passage sees θ_{k+1} before a reset moves it)."""
    theta = stepper.theta(carry)
    new_state = []
    for i, (event, state) in enumerate(zip(events, ev_state, strict=True)):
        theta, state = event.after_step(
            stepper.problem, state, before, theta, k_next, dt, jax.random.fold_in(key, i)
        )
        new_state.append(state)
    if any(e.moves_theta for e in events):
        carry = stepper.with_theta(carry, theta)
    return carry, tuple(new_state)


@eqx.filter_jit
def _run_block(
    stepper,
    observables,
    events,
    carry,
    ev_state,
    bad_step,
    starts,
    etas,
    eta_const,
    calls,
    run_key,
    event_key,
    n_saved,
    steps_per_call,
):
    """Scan over records (the first steps ``starts``), each a scan over the record's ``calls`` stepper calls,
    with the lr of each step (``etas``, records × calls) or one constant lr ``eta_const`` (no per-step array:
    memory flat in the number of steps); events (resetting, first passage) act after every call."""

    def one_step(state, xs):
        carry, bad, ev = state
        k, eta = xs
        before = stepper.theta(carry) if events else None
        carry = stepper.step(carry, k, eta, jax.random.fold_in(run_key, k))
        nonfinite = ~stepper.path_finite(carry)
        bad = jnp.where((bad < 0) & nonfinite, k + steps_per_call, bad)
        if events:
            dt = eta * steps_per_call  # a multi-step call has a constant lr
            key = jax.random.fold_in(event_key, k)
            carry, ev = _apply_events(stepper, events, ev, before, carry, k + steps_per_call, dt, key)
        return (carry, bad, ev), None

    def one_step_constant(state, _):
        inner, k = state
        inner, _ = one_step(inner, (k, eta_const))
        return (inner, k + steps_per_call), None

    def one_record(state, xs):
        start, es = xs
        if etas is None:
            (state, end), _ = jax.lax.scan(one_step_constant, (state, start), None, length=calls)
        else:
            ks = start + steps_per_call * jnp.arange(calls, dtype=start.dtype)
            state, _ = jax.lax.scan(one_step, state, (ks, es))
            end = start + steps_per_call * calls
        carry, bad, ev = state
        rec, bad = _stats(
            stepper.problem, observables, stepper.theta(carry), bad, end, n_saved, _observed(events, ev)
        )
        return (carry, bad, ev), rec

    (carry, bad_step, ev_state), recs = jax.lax.scan(one_record, (carry, bad_step, ev_state), (starts, etas))
    return carry, ev_state, bad_step, recs


EVENT_STREAM = 0x5E7E7  # the events' keys: fold_in(chunk key, EVENT_STREAM), apart from the stepper's


def chunk_keys(key, chunk: int) -> tuple:
    """(init, run, event) keys of chunk ``chunk``: step k of the run draws from fold_in(run key, k)."""
    chunk_key = jax.random.fold_in(key, chunk)
    init_key, run_key = jax.random.split(chunk_key)
    return init_key, run_key, jax.random.fold_in(chunk_key, EVENT_STREAM)


def _path_sharding(devices, n_paths: int, chunk: int):
    """The NamedSharding that splits the path axis over ``devices`` (None: one device, no sharding)."""
    if devices is None:
        return None
    available = jax.devices()
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        devices = available[: check_int_range("devices", int(devices), 1, len(available))]
    else:
        devices = list(devices)
        if not devices or not all(isinstance(dv, jax.Device) for dv in devices):
            raise ValueError("devices must be an int or a non-empty list of jax devices")
    k = len(devices)
    if n_paths % k or chunk % k:
        raise ValueError(
            f"n_paths={n_paths} and chunk_size={chunk} must be multiples of the number of devices ({k})"
        )
    mesh = jax.sharding.Mesh(np.array(devices), ("paths",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("paths", None))


def _block_records(n_records: int) -> int:
    """Records per jitted call, ~20 progress updates: a divisor of n_records if one is at least half the target
    (one compile), else the target itself with a shorter last block (two compiles; a prime count never
    means one call per record)."""
    target = max(1, n_records // 20)
    best = max(r for r in range(1, target + 1) if n_records % r == 0)
    return best if 2 * best >= target else target


def _record_plan(n_steps: int, every: int) -> list[tuple[int, int, int]]:
    """The jitted calls: (first record, records in the call, steps per record); whole intervals of ``every``
    steps first, then the shorter last interval when ``every`` does not divide n_steps."""
    n_full, tail = divmod(n_steps, every)
    plan = []
    if n_full:
        per_block = _block_records(n_full)
        plan = [(b, min(per_block, n_full - b), every) for b in range(0, n_full, per_block)]
    if tail:
        plan.append((n_full, 1, tail))
    return plan


def check_theta0(theta0, n_params: int, n_paths: int) -> np.ndarray:
    """θ₀ as float64, shape (d,) or (n_paths, d), finite; else ValueError naming ``theta0``."""
    if isinstance(theta0, (str, bytes)) or np.iscomplexobj(theta0):
        raise ValueError(f"theta0 must be a real array, got {theta0!r}")
    try:
        th0 = np.asarray(theta0, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"theta0 must be a real array, got {type(theta0).__name__}") from None
    if th0.ndim == 1:
        if th0.shape != (n_params,):
            raise ValueError(
                f"theta0 must have shape ({n_params},) or (n_paths, {n_params}), got {th0.shape}"
            )
    elif th0.shape != (n_paths, n_params):
        raise ValueError(f"theta0 must have shape ({n_params},) or ({n_paths}, {n_params}), got {th0.shape}")
    if not np.all(np.isfinite(th0)):
        raise ValueError("theta0 must be finite")
    return th0


def check_steps(n_steps, record: Record, steps_per_call: int = 1) -> tuple[int, int]:
    """(n_steps, record_every), validated together: records at the multiples of ``every`` and at the end
    (``every`` need not divide n_steps; one larger than n_steps records the start and the end)."""
    n_steps = check_int_range("n_steps", n_steps, 1)
    every = n_steps if record.every is None else min(record.every, n_steps)
    if every % steps_per_call or (n_steps % every) % steps_per_call:
        raise ValueError(
            f"record.every={every} and n_steps={n_steps} must be multiples of {steps_per_call} here"
        )
    return n_steps, every


def _no_survivors_nan(stats: dict[str, np.ndarray], count: np.ndarray) -> dict[str, np.ndarray]:
    """A record with no finite path has no mean or variance: NaN there (never 0 ± 0)."""
    out = {}
    for name, v in stats.items():
        empty = (count == 0).reshape((-1,) + (1,) * (v.ndim - 1))
        out[name] = np.where(empty, np.nan, v)
    return out


def run_ensemble(
    stepper_for_chunk,
    *,
    method: str,
    theta0,
    n_params: int,
    lr,
    n_steps: int,
    key,
    ensemble: Ensemble,
    record: Record,
    output: Output,
    dtype,
    config: dict[str, Any],
    steps_per_call: int = 1,
    step_unit: int = 1,
    events: tuple = (),
) -> EnsembleResult:
    """Run ``stepper_for_chunk(n)`` (a stepper for n paths) over all chunks and gather the statistics.

    The options (``Ensemble``, ``Record``, ``Output``) validated themselves; here only what needs them together
    is checked (n_steps with record.every, θ₀ with n_paths, the devices with the chunks, the observables at
    θ₀). ``steps_per_call`` > 1: each stepper call covers that many engine steps (an adaptive solver
    integrating a whole record interval); ``step_unit``: record and divergence steps are reported in units of
    that many engine steps (SVAG: l steps per SGD step); ``events``: engine events (``AbstractEvent``: the
    resetting and first-passage options, built by the simulator), each reported in the result field of its
    ``name``."""
    n_steps, record_every = check_steps(n_steps, record, steps_per_call)
    n_paths, chunk = ensemble.n_paths, ensemble.chunk
    n_saved = check_int_range("n_saved_paths", record.n_saved_paths, 0, n_paths)
    dtype = check_dtype(dtype)
    sharding = _path_sharding(ensemble.devices, n_paths, chunk)
    etas = rates(lr, n_steps)
    obs = resolve(record.observables)
    key = to_key(key)
    th0 = check_theta0(theta0, n_params, n_paths)
    save_to, progress = output.save_to, output.progress
    check_observables(
        stepper_for_chunk(1).problem,
        tuple((k, f) for k, f in obs if f is not BUILTIN.get(k)),
        jnp.asarray(th0.reshape(-1, n_params)[0], dtype),
    )

    for event in events:
        clash = {k for k, _ in obs} & set(event.records)
        if clash:
            raise ValueError(
                f"observables: {sorted(clash)} is recorded by the {event.name} option; rename it"
            )
    plan = _record_plan(n_steps, record_every)
    n_records = sum(n_rec for _, n_rec, _ in plan)
    record_steps = np.minimum(np.arange(n_records + 1) * record_every, n_steps)
    clock = Clock(etas)  # t_k = Σ_{j<k} η_j, k = 0..n_steps, computed on demand
    times = clock[record_steps]

    moments = RunningMoments()
    saved_chunks: list[np.ndarray] = []
    bad_paths: list[np.ndarray] = []
    bad_steps: list[np.ndarray] = []
    solver_stats: dict[str, int] = {}
    event_arrays: list[dict[str, list[np.ndarray]]] = [{} for _ in events]
    done_paths = 0
    bar = Progress(method, n_steps * n_paths, enabled=progress)
    config = dict(
        config,
        n_steps=n_steps,
        n_paths=n_paths,
        record_every=record_every // step_unit,
        dtype=str(dtype),
        chunk_size=chunk,
        devices=1 if sharding is None else sharding.num_devices,
        key_data=np.asarray(jax.random.key_data(key)).tolist(),
    )

    def result(complete: bool) -> EnsembleResult:
        steps_bad = np.concatenate(bad_steps) if bad_steps else np.zeros(0, np.int64)
        paths = np.concatenate(saved_chunks, axis=1) if n_saved and saved_chunks else None
        count = moments.count.astype(np.int64)
        return EnsembleResult(
            method=method,
            steps=record_steps // step_unit,
            times=times,
            mean=_no_survivors_nan(moments.mean, count),
            var=_no_survivors_nan(moments.variance(), count),
            count=count,
            n_paths=done_paths,
            paths=paths,
            diverged=len(steps_bad),
            first_divergence_step=int(-(-steps_bad.min() // step_unit)) if len(steps_bad) else None,
            complete=complete,
            config=dict(config, solver_stats=dict(solver_stats)) if solver_stats else config,
            diverged_paths=np.concatenate(bad_paths) if bad_paths else np.zeros(0, np.int64),
            divergence_steps=-(-steps_bad // step_unit),  # the (SGD) step during which it diverged
            divergence_times=clock[steps_bad],
            **{
                e.name: e.report({k: np.concatenate(v) for k, v in arrays.items()}, clock, step_unit)
                for e, arrays in zip(events, event_arrays, strict=True)
                if arrays
            },
        )

    try:
        for c in range(math.ceil(n_paths / chunk)):
            lo, hi = c * chunk, min(n_paths, (c + 1) * chunk)
            n = hi - lo
            init_key, run_key, event_key = chunk_keys(key, c)
            th = jnp.asarray(np.broadcast_to(th0, (n_paths, n_params))[lo:hi], dtype)
            if sharding is not None:
                th = jax.device_put(th, sharding)
            stepper = stepper_for_chunk(n)
            carry = stepper.init(init_key, th)
            bad = jnp.full((n,), -1, jnp.int32)
            keep = max(0, min(n_saved - lo, n))
            rec0, bad, ev_state = _initial_record(stepper, obs, events, carry, bad, keep)
            recs = [jax.tree.map(lambda x: np.asarray(x)[None], rec0)]
            for b, n_rec, length in plan:
                start = b * record_every
                starts = start + length * np.arange(n_rec)
                if etas.constant:
                    block_etas, eta_const = None, jnp.asarray(etas.first, dtype)
                else:
                    idx = starts[:, None] + np.arange(0, length, steps_per_call)[None, :]
                    block_etas, eta_const = jnp.asarray(etas.take(idx), dtype), None
                carry, ev_state, bad, rec = _run_block(
                    stepper,
                    obs,
                    events,
                    carry,
                    ev_state,
                    bad,
                    jnp.asarray(starts, jnp.int32),
                    block_etas,
                    eta_const,
                    length // steps_per_call,
                    run_key,
                    event_key,
                    keep,
                    steps_per_call,
                )
                recs.append(jax.tree.map(np.asarray, rec))
                bar.update(lo * n_steps + (start + n_rec * length) * n)
            count = np.concatenate([np.atleast_1d(r[0]) for r in recs])
            saved = np.concatenate([r[3] for r in recs])
            mean = {k: np.concatenate([r[1][k] for r in recs]) for k in recs[0][1]}
            m2 = {k: np.concatenate([r[2][k] for r in recs]) for k in recs[0][2]}
            moments.add(count, mean, m2)
            if keep:
                saved_chunks.append(saved)
            for event, state, arrays in zip(events, ev_state, event_arrays, strict=True):
                for name, v in event.per_path(state).items():
                    arrays.setdefault(name, []).append(np.asarray(v))
            for name, v in stepper.solver_stats(carry).items():
                solver_stats[name] = solver_stats.get(name, 0) + int(v)
            bad = np.asarray(bad)
            idx = np.flatnonzero(bad >= 0)
            bad_paths.append((lo + idx).astype(np.int64))
            bad_steps.append(bad[idx].astype(np.int64))
            done_paths = hi
            if save_to is not None:
                result(complete=hi == n_paths).save(save_to)
    except KeyboardInterrupt:
        if done_paths == 0:
            raise
        warnings.warn(f"{method}: interrupted; returning the {done_paths} finished paths", stacklevel=2)
        return result(complete=False)
    res = result(complete=True)
    if res.diverged:
        warnings.warn(res.divergence_message(), RuntimeWarning, stacklevel=2)
    return res
