"""The ensemble engine shared by the SGD and SDE simulators.

A stepper advances N paths by one step; the engine scans it under one jit, records observables every
``record_every`` steps as ensemble mean and M2 (memory O(N·d) whatever the number of steps), chunks
paths, flags non-finite paths, shows progress and saves finished chunks.

Keys: chunk c uses fold_in(key, c); its initial state uses split(.)[0] and step k uses
fold_in(split(.)[1], k), so the same key, configuration and chunking give the same numbers.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PyTree

from ._checkpoint import (
    checkpoint_path,
    digest,
    flatten,
    load_checkpoint,
    save_checkpoint,
    stepper_digest,
    unflatten,
)
from ._observables import BUILTIN, AbstractObservable, check_observables, resolve
from ._options import Ensemble, Output, Record
from ._progress import Progress
from ._results import EnsembleResult, RunningMoments, describe, package_versions
from ._schedules import BLOCK, Clock, DeviceSchedule, rates
from ._validation import check_dtype, check_int_range

if TYPE_CHECKING:
    from ._problem import Problem

# Row length from which the per-step divergence check reduces a float sum (finite_paths).
LONG_ROW = 128


def finite_paths(x: Array, axis: int) -> Bool[Array, " N"]:
    """Whether every coordinate of each path is finite, reducing over the coordinate ``axis`` of x.

    Under ``LONG_ROW`` coordinates a boolean ``all``, not a float sum, which XLA's CPU reduction over the
    short major axis made 2x slower than the whole Euler step (scripts/bench_sde.py). From ``LONG_ROW`` on, the
    sum of x − x: 0 where x is finite and NaN where it is ±inf or NaN, so the sum is finite exactly when the
    whole path is; XLA fuses it into one pass over x, where ``all`` writes a boolean array and reduces it in
    windows: 13% of a d = 200 label-noise SGD step against 7% (scripts/bench_sgd.py), and +3% on the d = 200
    label-noise SDE (scripts/bench_sde.py); on 2, 20 and 64 coordinates ``all`` was 2-5% the faster."""
    if x.shape[axis] >= LONG_ROW:
        return jnp.isfinite(jnp.sum(x - x, axis=axis))
    return jnp.all(jnp.isfinite(x), axis=axis)


class AbstractStepper(eqx.Module):
    """Advances all N paths of one chunk by one step: $\\theta_{k+1} = \\Phi(\\theta_k, k, \\eta_k, \\text{key}_k)$.

    ``absorbs_divergence``: True for a stepper whose update adds to the checked state (y ← y + Δ, or y kept),
    so that a path non-finite at one step stays non-finite at every later one (inf + x, NaN + x, inf − inf are
    never finite); a run without events then checks divergence once per block instead of after every step
    (``_run_chunk``), with the same marks."""

    absorbs_divergence: ClassVar[bool] = False

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

    def segment_inputs(self, carry: PyTree, run_key, ks) -> PyTree | None:
        """What ``step_with`` needs for the steps ``ks`` (step k's key is fold_in(run_key, k)), made for a
        whole segment of steps in one vectorized call, with a leading axis over ``ks``; None (the default):
        the stepper draws step by step in ``step``. On CPU each threefry call runs as a rolled loop whose fixed
        cost dwarfs its arithmetic at few paths, so a segment's keys and draws made at once are several times
        cheaper than per step (scripts/bench_sgd.py, the few-paths cases); the numbers are the same."""
        return None

    def step_with(self, carry: PyTree, k, eta, inputs: PyTree) -> PyTree:
        """The carry after step k from the step's slice of ``segment_inputs`` (same numbers as ``step``)."""
        raise NotImplementedError(f"{type(self).__name__} makes no segment inputs")

    @property
    def records(self) -> tuple[str, ...]:
        """Names of the per-path values of the stepper's own state it records (``observe``), e.g. an
        optimizer's momentum norm."""
        return ()

    def observe(self, carry: PyTree) -> dict[str, Array]:
        """Per-path values of the stepper's state beyond θ, recorded beside the observables (names:
        ``records``)."""
        return {}

    def restart(self, carry: PyTree, mask: Bool[Array, " N"]) -> PyTree:
        """The carry with the state beyond θ of the paths in ``mask`` restarted as at step 0 from their current
        θ (a reset that restores an optimizer's state)."""
        raise NotImplementedError(f"{type(self).__name__} has no state beyond theta to restart")

    def in_lockstep(self) -> AbstractStepper:
        """This stepper for a run in which no event restarts a path (``restart`` is never called), so that what
        every path's state holds equal at step 0 stays equal (an optimizer's step count) and may be shared;
        the same numbers. The default: itself."""
        return self

    def path_finite(self, carry: PyTree) -> Bool[Array, " N"]:
        """Whether every coordinate of each path is finite, for the per-step divergence check (``finite_paths``).
        Steppers override it to reduce in their own layout (a transpose here doubled the cost of a d = 10 SDE
        step)."""
        return finite_paths(self.theta(carry), axis=1)

    @property
    @abc.abstractmethod
    def problem(self) -> Problem | None:
        """The Problem the observables are evaluated on (None: an SDE not tied to one)."""

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


def _initial_record_body(stepper, observables, events, carry, bad_step, n_saved):
    theta = stepper.theta(carry)
    ev_state = tuple(e.init(stepper.problem, theta) for e in events)
    extra = {**stepper.observe(carry), **_observed(events, ev_state)}
    rec, bad = _stats(stepper.problem, observables, theta, bad_step, 0, n_saved, extra)
    return rec, bad, ev_state


_initial_record = eqx.filter_jit(_initial_record_body)


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
    restarts = [m for m in (e.restarted(s) for e, s in zip(events, new_state, strict=True)) if m is not None]
    if restarts:
        carry = stepper.restart(carry, functools.reduce(jnp.logical_or, restarts))
    return carry, tuple(new_state)


def _advance(
    stepper, events, carry, bad, ev, k, eta, run_key, event_key, steps_per_call, inputs=None, check=True
):
    """One stepper call on every path (steps k … k + steps_per_call − 1), the divergence marks (``check``),
    the events; skipped (everything kept as it is) once an event that can stop the run is done (a first
    passage every path has made). ``inputs``: the step's slice of the stepper's ``segment_inputs`` (None: step
    by step)."""
    done = [d for d in (e.done(s) for e, s in zip(events, ev, strict=True)) if d is not None]
    args = (k, eta, run_key, event_key, steps_per_call, inputs, check)
    if not done:
        return _advance_all(stepper, events, carry, bad, ev, *args)
    return jax.lax.cond(
        functools.reduce(jnp.logical_or, done),
        lambda c, b, e: (c, b, e),
        lambda c, b, e: _advance_all(stepper, events, c, b, e, *args),
        carry,
        bad,
        ev,
    )


def _advance_all(
    stepper, events, carry, bad, ev, k, eta, run_key, event_key, steps_per_call, inputs=None, check=True
):
    before = stepper.theta(carry) if events else None
    if inputs is None:
        carry = stepper.step(carry, k, eta, jax.random.fold_in(run_key, k))
    else:
        carry = stepper.step_with(carry, k, eta, inputs)
    if check:
        bad = jnp.where((bad < 0) & ~stepper.path_finite(carry), k + steps_per_call, bad)
    if events:
        dt = eta * steps_per_call  # a multi-step call has a constant lr
        key = jax.random.fold_in(event_key, k)
        carry, ev = _apply_events(stepper, events, ev, before, carry, k + steps_per_call, dt, key)
    return carry, bad, ev


def _record_stats(stepper, observables, events, carry, bad, ev, end, n_saved):
    extra = {**stepper.observe(carry), **_observed(events, ev)}
    return _stats(stepper.problem, observables, stepper.theta(carry), bad, end, n_saved, extra)


def _grid_stats(batched, shared, observables, events, carry, bad, ev, end, n_saved):
    """A grid's record statistics point by point (lax.map, not vmap): each point's reductions then run on
    exactly the shapes of a single run, so a sweep's statistics equal the single runs' bit for bit."""

    def one(xs):
        bt, c, b, e = xs
        s, evs = eqx.combine(bt, shared)
        return _record_stats(s, observables, evs, c, b, e, end, n_saved)

    return jax.lax.map(one, (batched, carry, bad, ev))


def _run_block_body(
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
    eta_axis=None,
    check_steps=True,
    counts=None,
):
    """Scan over records (first steps ``starts``), each a scan over its ``calls`` stepper calls, with each
    step's lr (``etas``, records × calls) or ``eta_const`` (one lr or a ``DeviceSchedule`` evaluated at each
    step: no per-step array); events (resetting, first passage) act after every call.

    ``check_steps=False`` skips the per-step divergence check (a stepper whose non-finite paths stay
    non-finite, ``AbstractStepper.absorbs_divergence``, without events): the last output then says whether a
    path finite at the start of the block (``bad_step`` < 0) ends it non-finite, and the caller runs the block
    again with the check to mark its first step (``_run_checked_block``).

    ``eta_axis`` given: ``stepper`` is a sweep group's (batched, shared) parts (``_Grid``) of each point's
    (stepper, events) pair, ``events`` unused; each step is vmapped over the grid (η_const batched along
    ``eta_axis``) and the statistics are taken point by point. ``counts``: see ``_records``."""
    if eta_axis is None:
        seg = _segment_length(stepper, carry, run_key, calls)

        # each branch defines the same two callbacks for its stepping mode (one point, or a vmapped grid)
        def advance(carry, bad, ev, k, eta, inputs):  # pyright: ignore[reportRedeclaration]
            rest = (k, eta, run_key, event_key, steps_per_call, inputs, check_steps)
            return _advance(stepper, events, carry, bad, ev, *rest)

        def stats(carry, bad, ev, end):  # pyright: ignore[reportRedeclaration]
            return _record_stats(stepper, observables, events, carry, bad, ev, end, n_saved)

        def nonfinite(carry):  # pyright: ignore[reportRedeclaration]
            return ~stepper.path_finite(carry)

    else:
        batched, shared = stepper
        eta_in = 0 if eta_axis == 0 else None
        seg = None  # a grid steps point by point (vmapped)

        def advance(carry, bad, ev, k, eta, inputs):
            def one(bt, c, b, e, eta):
                s, evs = eqx.combine(bt, shared)  # each point's stepper and events (a swept resetting rate)
                return _advance(
                    s, evs, c, b, e, k, eta, run_key, event_key, steps_per_call, None, check_steps
                )

            return eqx.filter_vmap(one, in_axes=(0, 0, 0, 0, eta_in))(batched, carry, bad, ev, eta)

        def stats(carry, bad, ev, end):
            return _grid_stats(batched, shared, observables, events, carry, bad, ev, end, n_saved)

        def nonfinite(carry):
            return eqx.filter_vmap(lambda bt, c: ~eqx.combine(bt, shared)[0].path_finite(c))(batched, carry)

    def one_step(state, xs):
        carry, bad, ev = state
        k, eta, inputs = xs
        return advance(carry, bad, ev, k, eta, inputs), None

    def one_step_constant(state, inputs):
        inner, k = state
        eta = eta_const(k) if isinstance(eta_const, DeviceSchedule) else eta_const
        inner, _ = one_step(inner, (k, eta, inputs))
        return (inner, k + steps_per_call), None

    def run_calls(state, start, es, n):
        """n stepper calls from step ``start`` (``es``: their lrs, None: ``eta_const``), with the inputs the
        stepper makes for them at once where it does (``seg``)."""
        ks = start + steps_per_call * jnp.arange(n, dtype=start.dtype)
        inputs = None if seg is None else stepper.segment_inputs(state[0], run_key, ks)
        if etas is None:
            (state, _), _ = jax.lax.scan(one_step_constant, (state, start), inputs, length=n)
        else:
            state, _ = jax.lax.scan(one_step, state, (ks, es, inputs))
        return state

    def one_record(state, xs):
        start, es = xs
        state = _in_segments(run_calls, state, start, es, calls, seg, steps_per_call)
        end = start + steps_per_call * calls
        carry, bad, ev = state
        rec, bad = stats(carry, bad, ev, end)
        return (carry, bad, ev), rec

    bad_in, state = bad_step, (carry, bad_step, ev_state)
    inputs, loop = (starts, etas, eta_const), (calls, counts, seg, steps_per_call, run_key)
    (carry, bad_step, ev_state), recs = _records(one_record, advance, stats, stepper, state, inputs, loop)
    unmarked = jnp.zeros((), bool) if check_steps else jnp.any(nonfinite(carry) & (bad_in < 0))
    return carry, ev_state, bad_step, recs, unmarked


def _in_segments(run_calls, state, start, es, calls: int, seg: int | None, steps_per_call: int):
    """A record's ``calls`` stepper calls from step ``start`` (``es``: their lrs or None) as whole segments of
    ``seg`` calls, then the rest; seg None: all at once. ``run_calls(state, first, es, n)`` runs n calls."""
    if seg is None or seg >= calls:
        return run_calls(state, start, es, calls)
    n_seg, tail = divmod(calls, seg)
    firsts = start + steps_per_call * seg * jnp.arange(n_seg, dtype=start.dtype)
    es_seg = None if es is None else es[: n_seg * seg].reshape(n_seg, seg)
    state, _ = jax.lax.scan(lambda st, xs: (run_calls(st, *xs, seg), None), state, (firsts, es_seg))
    if tail:
        rest = None if es is None else es[n_seg * seg :]
        state = run_calls(state, start + steps_per_call * seg * n_seg, rest, tail)
    return state


def _records(one_record, advance, stats, stepper, state, inputs, loop):
    """A block's records: a scan of ``one_record`` over (starts, etas), ``inputs`` = (starts, etas, eta_const);
    with ``counts`` (traced int32 (n_records, last_calls), in ``loop`` = (calls, counts, seg, steps_per_call,
    run_key)) loops with traced trip counts instead, so that one program runs every block of a run
    (``_records_dynamic``)."""
    calls, counts, seg, steps_per_call, run_key = loop
    if counts is None:
        return jax.lax.scan(one_record, state, inputs[:2])
    return _records_dynamic(
        advance, stats, stepper, state, inputs, calls, counts, seg, steps_per_call, run_key
    )


def _records_dynamic(advance, stats, stepper, state, inputs, calls, counts, seg, steps_per_call, run_key):
    """``_run_block_body``'s records with traced trip counts ``counts`` = (n_records, last_calls): only the first
    n_records of ``starts`` run, each of ``calls`` stepper calls but the last, of last_calls, in loops in place
    of the scans; the records are written into buffers of ``len(starts)`` rows (the rows past n_records are
    zeros, for the caller to drop), so that one program runs every block of a run (``_dynamic_counts``): the
    same steps in the same order, the same numbers. ``advance`` and ``stats`` are that body's callbacks,
    ``inputs`` = (starts, etas, eta_const). Returns ((carry, bad, ev), the record buffers)."""
    starts, etas, eta_const = inputs

    def calls_from(state, start, es, n, inputs):
        """n (traced) stepper calls from step ``start``, with their lrs ``es`` or ``eta_const`` and the
        stepper's ``inputs`` for them (None: step by step), in a loop of n iterations."""

        def body(i, st):
            k = start + steps_per_call * i
            at = functools.partial(jax.lax.dynamic_index_in_dim, index=i, keepdims=False)  # as scan does
            if es is not None:
                eta = at(es)
            elif isinstance(eta_const, DeviceSchedule):
                eta = eta_const(k)
            else:
                eta = eta_const
            step_in = None if inputs is None else jax.tree.map(at, inputs)
            carry, bad, ev = st
            return advance(carry, bad, ev, k, eta, step_in)

        return jax.lax.fori_loop(0, n, body, state)

    n_records, last_calls = counts

    def one_record_dynamic(r, loop_state):
        state, bufs = loop_state
        start = jax.lax.dynamic_index_in_dim(starts, r, keepdims=False)
        es = None if etas is None else jax.lax.dynamic_index_in_dim(etas, r, keepdims=False)
        n = jnp.where(r == n_records - 1, last_calls, calls).astype(start.dtype)
        state = _in_segments_dynamic(calls_from, stepper, state, start, es, n, seg, steps_per_call, run_key)
        carry, bad, ev = state
        rec, bad = stats(carry, bad, ev, start + steps_per_call * n)
        bufs = jax.tree.map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, r, 0), bufs, rec)
        return (carry, bad, ev), bufs

    shapes = jax.eval_shape(lambda: stats(*state, starts[0])[0])
    bufs = jax.tree.map(lambda x: jnp.zeros((starts.shape[0], *x.shape), x.dtype), shapes)
    return jax.lax.fori_loop(0, n_records, one_record_dynamic, (state, bufs))


def _in_segments_dynamic(
    calls_from, stepper, state, start, es, n, seg: int | None, steps_per_call: int, run_key
):
    """A record's n (traced) stepper calls from step ``start`` (``es``: their lrs or None): seg None, one loop
    of n calls; else ⌈n / seg⌉ segments of at most ``seg`` calls, each with the inputs the stepper makes for
    ``seg`` calls at once (``_dynamic_counts`` runs this only where seg divides a full record's calls, so that
    only a shorter last record makes inputs it does not use)."""
    if seg is None:
        return calls_from(state, start, es, n, None)

    def one_segment(j, st):
        first = start + steps_per_call * seg * j
        ks = first + steps_per_call * jnp.arange(seg, dtype=start.dtype)
        inputs = stepper.segment_inputs(st[0], run_key, ks)
        es_j = None if es is None else jax.lax.dynamic_slice_in_dim(es, j * seg, seg)
        return calls_from(st, first, es_j, jnp.minimum(seg, n - seg * j), inputs)

    return jax.lax.fori_loop(0, (n + seg - 1) // seg, one_segment, state)


_run_block = eqx.filter_jit(_run_block_body)

# Elements of one segment's inputs (AbstractStepper.segment_inputs) at most: 1 MB of float32.
SEGMENT_ELEMENTS = 1 << 18


def _segment_length(stepper, carry, run_key, calls: int) -> int | None:
    """Stepper calls per segment whose inputs the stepper makes at once (at most ``SEGMENT_ELEMENTS``
    elements), or None: step by step (the stepper makes none, or a segment would hold under two calls)."""
    one = jax.eval_shape(stepper.segment_inputs, carry, run_key, jnp.zeros(1, jnp.int32))
    if one is None:
        return None
    size = sum(math.prod(x.shape) for x in jax.tree.leaves(one))
    seg = min(calls, SEGMENT_ELEMENTS // max(size, 1))
    return seg if seg >= 2 else None


# Steps × paths × parameters of a chunk from which divergence is checked per block (SGD-5). Below it the per-step
# reductions cost under about 0.05 s on a CPU core: deferring saves little there, and a diverging run (common in
# short checks) would pay the block's second compile (about a second).
DEFER_MIN_WORK = 10**8

EVENT_STREAM = 0x5E7E7  # the events' keys: fold_in(chunk key, EVENT_STREAM), apart from the stepper's


def chunk_keys(key, chunk: int) -> tuple:
    """(init, run, event) keys of chunk ``chunk``: step k of the run draws from fold_in(run key, k)."""
    chunk_key = jax.random.fold_in(key, chunk)
    init_key, run_key = jax.random.split(chunk_key)
    return init_key, run_key, jax.random.fold_in(chunk_key, EVENT_STREAM)


def _path_sharding(devices: int | Sequence[Any] | None, n_paths: int, chunk: int):
    """The NamedSharding that splits the path axis over ``devices`` (None: one device, no sharding; in a
    multi-process run, None is every device of every process)."""
    if devices is None:
        if jax.process_count() == 1:
            return None
        devices = jax.device_count()
    available = jax.devices()
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        devices = available[: check_int_range("devices", int(devices), 1, len(available))]
    else:
        devices = list(cast("Sequence[Any]", devices))  # Ensemble rejects a bool
        if not devices or not all(isinstance(dv, jax.Device) for dv in devices):
            raise ValueError("devices must be an int or a non-empty list of jax devices")
    n_proc = jax.process_count()
    if n_proc > 1:
        if n_paths % n_proc or chunk % n_proc:
            raise ValueError(
                f"n_paths={n_paths} and chunk_size={chunk} must be multiples of the number of processes ({n_proc})"
            )
        if {dv.process_index for dv in devices} != set(range(n_proc)):
            raise ValueError(
                f"devices must include devices of all {n_proc} processes of this multi-process run"
            )
    k = len(devices)
    if n_paths % k or chunk % k:
        raise ValueError(
            f"n_paths={n_paths} and chunk_size={chunk} must be multiples of the number of devices ({k})"
        )
    mesh = jax.sharding.Mesh(np.array(devices), ("paths",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("paths", None))


def to_host(x) -> np.ndarray:
    """A device array on this host: as is when this process holds all of it (one process, or a statistic
    replicated on every device), else gathered from all processes (a collective: every process calls it)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _replicated(tree, sharding):
    """``tree`` with its leaves on one device (a step count made outside jit) replicated over ``sharding``'s
    mesh, as the first block returns them: the second block then reuses the first one's program (one process;
    None: no sharding)."""
    if sharding is None or jax.process_count() > 1:
        return tree
    everywhere = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    single = lambda x: isinstance(x, jax.Array) and isinstance(x.sharding, jax.sharding.SingleDeviceSharding)
    return jax.tree.map(lambda x: jax.device_put(x, everywhere) if single(x) else x, tree)


def _block_records(n_records: int, cap: int | None = None) -> int:
    """Records per jitted call, ~20 progress updates (at most ``cap``): a divisor of n_records if one is at least
    half the target (blocks of one shape), else the target itself with a shorter last block (a prime count never
    means one call per record; the blocks of a short run are still one program, ``_dynamic_counts``)."""
    target = max(1, n_records // 20)
    if cap is not None:
        target = max(1, min(target, cap))
    best = max(r for r in range(1, target + 1) if n_records % r == 0)
    return best if 2 * best >= target else target


def _record_plan(
    n_steps: int, every: int, per_block: int | None = None, max_steps: int | None = None
) -> list[tuple[int, int, int]]:
    """The jitted calls: (first record, records in the call, steps per record); whole intervals of ``every``
    steps first (``per_block`` records per call: the checkpoint interval, else ~20 calls of at most
    ``max_steps`` steps where given: a schedule's per-step lr array stays that small), then the shorter last
    interval when ``every`` does not divide n_steps."""
    n_full, tail = divmod(n_steps, every)
    plan = []
    if n_full:
        cap = None if max_steps is None else max(1, max_steps // every)
        per_block = _block_records(n_full, cap) if per_block is None else per_block
        plan = [(b, min(per_block, n_full - b), every) for b in range(0, n_full, per_block)]
    if tail:
        plan.append((n_full, 1, tail))
    return plan


class _Single:
    """One run's jitted pieces, called directly; host copies get a leading grid axis of length 1."""

    def __init__(self, stepper: AbstractStepper):
        self.stepper = stepper

    def init(self, key, theta):
        return self.stepper.init(key, theta)

    def initial_record(self, *args):
        return _initial_record(self.stepper, *args)

    def run_block(self, *args, check_steps=True, counts=None):
        return _run_block(self.stepper, *args, check_steps=check_steps, counts=counts)

    def segment_length(self, carry, run_key, calls: int) -> int | None:
        return _segment_length(self.stepper, carry, run_key, calls)

    def solver_stats(self, carry) -> dict:
        return {k: to_host(v)[None] for k, v in self.stepper.solver_stats(carry).items()}

    # host copies in the grid layout: records (R, G, ...), per-path arrays (G, N, ...)
    @staticmethod
    def record0(tree):
        return jax.tree.map(lambda x: to_host(x)[None, None], tree)

    @staticmethod
    def records(tree):
        return jax.tree.map(lambda x: to_host(x)[:, None], tree)

    @staticmethod
    def per_path(tree):
        return jax.tree.map(lambda x: to_host(x)[None], tree)


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, jax.Array) and isinstance(b, jax.Array):
        return a.shape == b.shape and a.dtype == b.dtype and bool(jnp.all(a == b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 (an object without a truth value of == is not the same)
        return False


class _Grid:
    """G runs that differ only in array leaves of their steppers and events (traced hyperparameters: σ, noise
    scales, a resetting rate) and in a constant lr, as one program: each step is vmapped over the grid, and
    the keys are shared (every point sees the same draws: common random numbers). ``steppers`` are the points'
    (stepper, events) pairs.

    Every array leaf is stacked G times (``batched``), the data too: XLA then runs each point's products on
    the shapes of a single run, and the points equal the single runs bit for bit. ``share=True`` keeps leaves
    that are equal across the grid (the data) once (``shared``): less memory and faster (one larger product),
    equal to the single runs only up to rounding (XLA blocks the larger product differently)."""

    def __init__(self, steppers: list[tuple[AbstractStepper, tuple]], eta_batched: bool, share: bool = False):
        parts = [eqx.partition(s, eqx.is_array) for s in steppers]
        static_leaves, static_def = jax.tree.flatten(parts[0][1])
        dyn_def = jax.tree.structure(parts[0][0])
        for dyn, static in parts[1:]:
            leaves, tdef = jax.tree.flatten(static)
            if (
                tdef != static_def
                or jax.tree.structure(dyn) != dyn_def
                or not all(_same(x, y) for x, y in zip(leaves, static_leaves, strict=True))
            ):
                raise ValueError(
                    "grid: a swept hyperparameter changes a static (non-array) field of the simulator, so it "
                    "cannot be traced; sweep it as a group key (batch_size) or in a Python loop"
                )
        columns = zip(*(jax.tree.leaves(dyn) for dyn, _ in parts), strict=True)
        batched, shared = [], []
        for col in columns:
            same = share and all(_same(x, col[0]) for x in col[1:])
            batched.append(None if same else jnp.stack(col))
            shared.append(col[0] if same else None)
        self.n = len(steppers)
        self.batched = jax.tree.unflatten(dyn_def, batched)
        self.shared = eqx.combine(jax.tree.unflatten(dyn_def, shared), parts[0][1])
        self.eta_axis = 0 if eta_batched else 1  # 1: η is shared (any value other than None and 0)

    def init(self, key, theta):
        return _grid_init(self.batched, self.shared, key, theta)

    def initial_record(self, observables, events, carry, bad, n_saved):
        return _grid_initial_record(self.batched, self.shared, observables, events, carry, bad, n_saved)

    def run_block(self, *args, check_steps=True, counts=None):
        return _grid_run_block(
            (self.batched, self.shared), *args, eta_axis=self.eta_axis, check_steps=check_steps, counts=counts
        )

    @staticmethod
    def segment_length(carry, run_key, calls: int) -> None:
        return None  # a grid steps point by point (vmapped)

    def solver_stats(self, carry) -> dict:
        def one(bt, c):
            return eqx.combine(bt, self.shared)[0].solver_stats(c)

        return {k: to_host(v) for k, v in eqx.filter_vmap(one)(self.batched, carry).items()}

    @staticmethod
    def record0(tree):
        return jax.tree.map(lambda x: to_host(x)[None], tree)

    @staticmethod
    def records(tree):  # the statistics are mapped inside the scan over records: already (R, G, ...)
        return jax.tree.map(to_host, tree)

    @staticmethod
    def per_path(tree):
        return jax.tree.map(to_host, tree)


@eqx.filter_jit
def _grid_init(batched, shared, key, theta):
    return eqx.filter_vmap(lambda bt: eqx.combine(bt, shared)[0].init(key, theta))(batched)


@eqx.filter_jit
def _grid_initial_record(batched, shared, observables, events, carry, bad, n_saved):
    n = jax.tree.leaves(carry)[0].shape[0]
    theta = jax.lax.map(lambda xs: eqx.combine(xs[0], shared)[0].theta(xs[1]), (batched, carry))

    def init_events(xs):
        s, evs = eqx.combine(xs[0], shared)
        return tuple(e.init(s.problem, xs[1]) for e in evs)

    ev_state = jax.lax.map(init_events, (batched, theta))
    bad = jnp.broadcast_to(bad, (n, *bad.shape))
    rec, bad = _grid_stats(batched, shared, observables, events, carry, bad, ev_state, 0, n_saved)
    return rec, bad, ev_state


_grid_run_block = eqx.filter_jit(_run_block_body)


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


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a simulator asks the engine to run: a stepper for n paths and its validated arguments
    (``finish``: the simulator's look at the result, e.g. a warning)."""

    stepper_for_chunk: Callable[[int], AbstractStepper]
    method: str
    theta0: Any
    n_params: int
    lr: Any
    n_steps: int
    key: Any
    ensemble: Ensemble
    record: Record
    output: Output
    dtype: Any
    config: dict[str, Any]
    steps_per_call: int = 1
    step_unit: int = 1
    events: tuple = ()
    finish: Callable[[EnsembleResult], EnsembleResult] | None = None


def run_plan(plan: RunPlan) -> EnsembleResult:
    return run_plans([plan])[0]


def simulator(plan: Callable[..., RunPlan]) -> Callable[..., EnsembleResult]:
    """The public simulator of a planning function ``plan_x``: ``simulate_x`` with its signature and
    docstring, running the plan; ``simulate_x.plan`` is ``plan_x`` (what a sweep batches)."""

    @functools.wraps(plan)
    def simulate(*args, **kwargs) -> EnsembleResult:
        return run_plan(plan(*args, **kwargs))

    simulate.__name__ = simulate.__qualname__ = plan.__name__.replace("plan_", "simulate_")
    # functools.wraps's _Wrapped type declares neither attribute; a function object takes both
    simulate.__signature__ = inspect.signature(plan).replace(return_annotation=EnsembleResult)  # pyright: ignore[reportAttributeAccessIssue]
    simulate.plan = plan  # pyright: ignore[reportAttributeAccessIssue]
    return simulate


_SHARED = (
    "theta0",
    "n_params",
    "n_steps",
    "ensemble",
    "record",
    "output",
    "dtype",
    "steps_per_call",
    "step_unit",
)


def _check_grid(plans: list[RunPlan]) -> None:
    p0 = plans[0]
    for p in plans[1:]:
        for name in _SHARED:
            a, b = getattr(p, name), getattr(p0, name)
            if name == "theta0":
                same = np.array_equal(np.asarray(a), np.asarray(b))
            elif name == "output":  # the label names the point
                same = dataclasses.replace(a, label=None) == dataclasses.replace(b, label=None)
            else:
                same = a == b
            if not same:
                raise ValueError(f"grid: the points differ in {name}, which the sweep cannot batch")
    kinds = [tuple(type(e) for e in p.events) for p in plans]
    if any(k != kinds[0] for k in kinds[1:]):
        raise ValueError(
            "grid: the points differ in their events (resetting, first_passage), which a sweep cannot batch"
        )
    if not all(p.lr.constant for p in plans):
        first = plans[0].lr.take(np.arange(p0.n_steps))
        if not all(np.array_equal(p.lr.take(np.arange(p0.n_steps)), first) for p in plans[1:]):
            raise ValueError("grid: lr can be swept as constant values only (a schedule must be the same)")


class _Accumulator:
    """One run's host-side totals over finished chunks (float64 moments, saved paths, divergences, events)."""

    def __init__(self, n_events: int):
        self.moments = RunningMoments()
        self.saved: np.ndarray | None = None
        self.bad_paths = np.zeros(0, np.int64)
        self.bad_steps = np.zeros(0, np.int64)
        self.solver_stats: dict[str, int] = {}
        self.events: list[dict[str, np.ndarray]] = [{} for _ in range(n_events)]

    def add_chunk(self, g: int, lo: int, records: tuple, keep: int, per_path, stats, bad) -> None:
        """Add point g's part of a finished chunk (paths from ``lo``): its records (count, mean, m2, saved,
        each (R, G, ...)), ``keep`` saved paths, the events' per-path arrays, solver totals, divergence marks."""
        count, mean, m2, saved = records
        self.moments.add(
            count[:, g], {k: v[:, g] for k, v in mean.items()}, {k: v[:, g] for k, v in m2.items()}
        )
        if keep:
            self.saved = (
                saved[:, g] if self.saved is None else np.concatenate([self.saved, saved[:, g]], axis=1)
            )
        for i, arrays in enumerate(per_path):
            for name, v in arrays.items():
                ev = self.events[i]
                ev[name] = v[g] if name not in ev else np.concatenate([ev[name], v[g]])
        for name, v in stats.items():
            self.solver_stats[name] = self.solver_stats.get(name, 0) + int(v[g])
        idx = np.flatnonzero(bad >= 0)
        self.bad_paths = np.concatenate([self.bad_paths, (lo + idx).astype(np.int64)])
        self.bad_steps = np.concatenate([self.bad_steps, bad[idx].astype(np.int64)])

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}/bad_paths": self.bad_paths, f"{prefix}/bad_steps": self.bad_steps}
        if self.moments.count is not None:
            out[f"{prefix}/count"] = self.moments.count
            out.update(flatten(f"{prefix}/mean", self.moments.mean))
            out.update(flatten(f"{prefix}/m2", self.moments.m2))
        if self.saved is not None:
            out[f"{prefix}/saved"] = self.saved
        for i, ev in enumerate(self.events):
            out.update(flatten(f"{prefix}/event{i}", ev))
        return out

    def restore(self, prefix: str, arrays: dict, solver_stats: dict) -> None:
        self.bad_paths, self.bad_steps = arrays[f"{prefix}/bad_paths"], arrays[f"{prefix}/bad_steps"]
        if f"{prefix}/count" in arrays:
            self.moments.count = arrays[f"{prefix}/count"]
            self.moments.mean = unflatten(f"{prefix}/mean", arrays)
            self.moments.m2 = unflatten(f"{prefix}/m2", arrays)
        self.saved = arrays.get(f"{prefix}/saved")
        self.events = [unflatten(f"{prefix}/event{i}", arrays) for i in range(len(self.events))]
        self.solver_stats = dict(solver_stats)


def _state_leaves(tree) -> list[np.ndarray]:
    """Device state on the host, PRNG keys as their key data."""
    out = []
    for x in jax.tree.leaves(tree):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(to_host(x))
    return out


def _restore_state(fresh, leaves: list[np.ndarray]):
    """``fresh`` (the state a chunk starts from, for its structure, dtypes and shardings) with the saved
    leaves; a mismatch means the checkpoint is of another run."""
    flat, tdef = jax.tree.flatten(fresh)
    if len(flat) != len(leaves):
        raise ValueError("resume: the checkpoint's state does not fit this run (another simulator or noise)")
    out = []
    for x, v in zip(flat, leaves, strict=True):
        key = jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
        like = jax.random.key_data(x) if key else x
        if v.shape != like.shape or v.dtype != like.dtype:
            raise ValueError(
                f"resume: the checkpoint's state has {v.dtype}{list(v.shape)} where this run has "
                f"{like.dtype}{list(like.shape)} (another run)"
            )
        # placed as the fresh state is, committed to its devices or not: jit compiles the two apart
        y = jax.device_put(v, like.sharding) if like.committed else jax.device_put(v)
        out.append(jax.random.wrap_key_data(y, impl=jax.random.key_impl(x)) if key else y)
    return jax.tree.unflatten(tdef, out)


@dataclasses.dataclass
class _Setup:
    """The settings of a run (or a sweep group), validated once: shared by its plans."""

    plans: list[RunPlan]
    n_steps: int
    record_every: int
    n_saved: int
    dtype: Any
    sharding: Any
    etas: list
    eta_batched: bool
    obs: tuple
    key: Any
    th0: np.ndarray
    plan: list[tuple[int, int, int]]
    record_steps: np.ndarray
    clocks: list
    configs: list[dict]

    @property
    def p0(self) -> RunPlan:
        return self.plans[0]

    @property
    def events(self) -> tuple:
        return self.p0.events

    @property
    def n_paths(self) -> int:
        return self.p0.ensemble.n_paths

    @property
    def chunk(self) -> int:
        return self.p0.ensemble.chunk

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_paths / self.chunk)

    @property
    def n_records(self) -> int:
        return sum(n_rec for _, n_rec, _ in self.plan)


def _prepare(plans: list[RunPlan]) -> _Setup:
    """Everything checked that needs the options together (n_steps with record.every, θ₀ with n_paths, the
    devices with the chunks, the observables at θ₀ and against the events' records, the checkpoint interval),
    and the record plan and configuration records."""
    p0 = plans[0]
    if len(plans) > 1:
        _check_grid(plans)
    n_steps, record_every = check_steps(p0.n_steps, p0.record, p0.steps_per_call)
    n_paths, chunk = p0.ensemble.n_paths, p0.ensemble.chunk
    n_saved = check_int_range("n_saved_paths", p0.record.n_saved_paths, 0, n_paths)
    dtype = check_dtype(p0.dtype)
    sharding = _path_sharding(p0.ensemble.devices, n_paths, chunk)
    etas = [rates(p.lr, n_steps) for p in plans]
    eta_batched = len(plans) > 1 and etas[0].constant and len({e.first for e in etas}) > 1
    obs = resolve(p0.record.observables)
    key = to_key(p0.key)
    th0 = check_theta0(p0.theta0, p0.n_params, n_paths)
    check_observables(
        p0.stepper_for_chunk(1).problem,
        tuple((k, f) for k, f in obs if f is not BUILTIN.get(k)),
        jnp.asarray(th0.reshape(-1, p0.n_params)[0], dtype),
    )
    own = p0.stepper_for_chunk(1).records
    if {k for k, _ in obs} & set(own):
        raise ValueError(
            f"observables: {sorted({k for k, _ in obs} & set(own))} is recorded by the method's own state; "
            "rename it"
        )
    for event in p0.events:
        clash = {k for k, _ in obs} & set(event.records)
        if clash:
            raise ValueError(f"observables: {sorted(clash)} is recorded by the {event.name} event; rename it")
    n_full = n_steps // record_every
    ckpt_every = p0.output.checkpoint_every
    if ckpt_every is not None and n_full and n_full % ckpt_every:
        raise ValueError(
            f"checkpoint_every={ckpt_every} must divide the number of whole record intervals, "
            f"{n_full} (n_steps={n_steps}, record.every={record_every})"
        )
    plan = _record_plan(n_steps, record_every, ckpt_every, None if etas[0].constant else BLOCK)
    n_records = sum(n_rec for _, n_rec, _ in plan)
    configs = [
        dict(
            p.config,
            n_steps=n_steps,
            n_paths=n_paths,
            record_every=record_every // p0.step_unit,
            dtype=str(dtype),
            chunk_size=chunk,
            devices=1 if sharding is None else sharding.num_devices,
            key_data=np.asarray(jax.random.key_data(key)).tolist(),
        )
        for p in plans
    ]
    return _Setup(
        plans=plans,
        n_steps=n_steps,
        record_every=record_every,
        n_saved=n_saved,
        dtype=dtype,
        sharding=sharding,
        etas=etas,
        eta_batched=eta_batched,
        obs=obs,
        key=key,
        th0=th0,
        plan=plan,
        record_steps=np.minimum(np.arange(n_records + 1) * record_every, n_steps),
        clocks=[Clock(e) for e in etas],  # t_k = Σ_{j<k} η_j, k = 0..n_steps, computed on demand
        configs=configs,
    )


class _Checkpointer:
    """The run's checkpoint file: its fingerprint (what must match for a resume), writing the whole state
    (process 0 only) and reading it back."""

    def __init__(self, setup: _Setup, accs: list[_Accumulator], writer: bool):
        output = setup.p0.output
        self.setup, self.accs, self.writer = setup, accs, writer
        self.every = output.checkpoint_every
        self.file = checkpoint_path(output.save_to) if output.save_to is not None else None
        self.resume: Literal[True] | str | None = None if output.resume is False else output.resume
        self.fingerprint: dict[str, Any] | None = None
        if self.every is not None or self.resume is not None:
            plans, events = setup.plans, setup.events
            # the label (the method's name) and checkpoint_every are cosmetic: a resume may change them
            self.fingerprint = {
                "configs": setup.configs,
                "data": [stepper_digest(p.stepper_for_chunk(1)) for p in plans],
                "theta0": digest(setup.th0),
                "lr": [_lr_fingerprint(e) for e in setup.etas],
                "record": [
                    setup.n_saved,
                    [_observable_fingerprint(k, f) for k, f in setup.obs],
                    setup.record_every,
                ],
                "events": [describe(e) for e in events]
                if len(plans) == 1
                else [[describe(e) for e in p.events] for p in plans],
                "processes": jax.process_count(),
                "versions": package_versions(),
            }

    def save(self, c: int, records_done: int, done_paths: int, recs=None, state=None) -> None:
        arrays: dict[str, np.ndarray] = {}
        for g, acc in enumerate(self.accs):
            arrays.update(acc.arrays(f"acc{g}"))
        if recs is not None:
            rec = _concat_records(recs)
            arrays.update(flatten("recs", {"count": rec[0], "mean": rec[1], "m2": rec[2], "saved": rec[3]}))
            for i, leaf in enumerate(_state_leaves(state)):
                arrays[f"state/{i}"] = leaf
        if self.writer:
            if self.file is None or self.fingerprint is None:
                raise ValueError(
                    "checkpoint_every needs save_to (the checkpoint is written next to the result)"
                )
            position = {
                "chunk": c,
                "done_paths": done_paths,
                "solver_stats": [acc.solver_stats for acc in self.accs],
                "records_done": int(records_done),
            }
            save_checkpoint(self.file, self.fingerprint, position, arrays)

    def load(self) -> tuple[int, int, int, Any]:
        """(first chunk, first record, finished paths, the unfinished chunk's records and state or None) to
        start from: the checkpoint's, restoring the accumulators, or a fresh start."""
        if (
            self.resume is None or self.fingerprint is None
        ):  # the fingerprint is made whenever resume is given
            return 0, 0, 0, None
        if self.resume is True:
            if self.file is None:
                raise ValueError(
                    "resume=True resumes save_to's checkpoint; give save_to (or a checkpoint path)"
                )
            path = self.file
        else:
            path = os.fspath(self.resume)
        if self.resume is True and not os.path.isfile(path):
            return 0, 0, 0, None
        position, arrays = load_checkpoint(path, self.fingerprint)
        for g, acc in enumerate(self.accs):
            acc.restore(f"acc{g}", arrays, position["solver_stats"][g])
        start_chunk, start_record, done_paths = (
            position["chunk"],
            position["records_done"],
            position["done_paths"],
        )
        s = self.setup
        if (
            start_chunk > s.n_chunks
            or start_record >= max(s.n_records, 1)
            or done_paths != min(start_chunk * s.chunk, s.n_paths)
        ):
            raise ValueError(
                f"resume: the checkpoint {path!r} is damaged: its position {position} does not fit this run"
            )
        resumed = None
        if "state/0" in arrays:
            recs = unflatten("recs", arrays)
            leaves = [arrays[f"state/{i}"] for i in range(sum(k.startswith("state/") for k in arrays))]
            resumed = ((recs["count"], recs["mean"], recs["m2"], recs["saved"]), leaves)
        return start_chunk, start_record, done_paths, resumed


def _result(setup: _Setup, g: int, acc: _Accumulator, done_paths: int, complete: bool) -> EnsembleResult:
    """Point g's result from its accumulated chunks."""
    steps_bad = acc.bad_steps
    if acc.moments.count is None:
        raise RuntimeError(f"{setup.p0.method}: no finished chunk to make a result from")
    count = acc.moments.count.astype(np.int64)
    clock = setup.clocks[g]
    step_unit = setup.p0.step_unit
    plan = setup.plans[g]
    config = setup.configs[g]
    return EnsembleResult(
        method=plan.method,
        steps=setup.record_steps // step_unit,
        times=clock[setup.record_steps],
        mean=_no_survivors_nan(acc.moments.mean, count),
        var=_no_survivors_nan(acc.moments.variance(), count),
        count=count,
        n_paths=done_paths,
        paths=acc.saved if setup.n_saved else None,
        diverged=len(steps_bad),
        first_divergence_step=int(-(-steps_bad.min() // step_unit)) if len(steps_bad) else None,
        complete=complete,
        config=dict(config, solver_stats=dict(acc.solver_stats)) if acc.solver_stats else config,
        diverged_paths=acc.bad_paths,
        divergence_steps=-(-steps_bad // step_unit),  # the (SGD) step during which it diverged
        divergence_times=clock[steps_bad],
        reports={
            e.name: e.report(arrays, clock, step_unit)
            for e, arrays in zip(plan.events, acc.events, strict=True)
            if arrays
        },
    )


def _run_chunk(setup: _Setup, c: int, share: bool, resumed, start_record: int, on_block) -> tuple:
    """Chunk c from its first record (or from a checkpoint's ``resumed`` records and state at
    ``start_record``) to the end: (ops, final carry, event states, divergence marks, host records).
    ``on_block(block index, blocks, first record after it, records, state)`` runs after each jitted call."""
    p0, plans = setup.p0, setup.plans
    lo, hi = c * setup.chunk, min(setup.n_paths, (c + 1) * setup.chunk)
    n = hi - lo
    init_key, run_key, event_key = chunk_keys(setup.key, c)
    th = np.asarray(np.broadcast_to(setup.th0, (setup.n_paths, p0.n_params))[lo:hi], setup.dtype)
    th = jnp.asarray(th) if setup.sharding is None else jax.device_put(th, setup.sharding)
    steppers = [p.stepper_for_chunk(n) for p in plans]
    if not any(e.restarts_paths for e in setup.events):
        steppers = [s.in_lockstep() for s in steppers]
    if len(plans) == 1:
        ops = _Single(steppers[0])
    else:
        ops = _Grid([(s, p.events) for s, p in zip(steppers, plans, strict=True)], setup.eta_batched, share)
    events, obs, etas, dtype, spc = setup.events, setup.obs, setup.etas, setup.dtype, p0.steps_per_call
    # divergence checked once per block (the block run again if a path diverged in it): same marks, no per-step
    # reduction over (N, d), which cost 15-25% of a few-paths SGD step (scripts/bench_sgd.py, case (c)); only
    # for runs long enough that the reduction outweighs the second compile a diverging run then needs
    deferred = (
        not events
        and all(type(s).absorbs_divergence for s in steppers)
        and setup.n_steps * n * p0.n_params >= DEFER_MIN_WORK
    )
    carry = _replicated(ops.init(init_key, th), setup.sharding)
    bad = jnp.full((n,), -1, jnp.int32)
    keep = max(0, min(setup.n_saved - lo, n))
    # every chunk records the first min(n_saved, n) paths, the host keeping ``keep`` of them: one program for
    # the chunks that save all, some or none of their paths
    n_saved = min(setup.n_saved, n)
    rec0, bad, ev_state = ops.initial_record(obs, events, carry, bad, n_saved)
    recs = [_trim(ops.record0(rec0), 1, keep)]
    chunk_plan = setup.plan
    if resumed is not None:
        recs = [resumed[0]]
        carry, ev_state, bad = _restore_state((carry, ev_state, bad), resumed[1])
        chunk_plan = _plan_from(setup.plan, start_record)
    counts = _dynamic_counts(setup, start_record, lambda calls: ops.segment_length(carry, run_key, calls))
    schedule = None if etas[0].constant else etas[0].device_schedule(dtype)
    eta_const = None
    if len(plans) > 1 and setup.eta_batched:
        eta_const = jnp.asarray([e.first for e in etas], dtype)
    for bi, (b, n_rec, length) in enumerate(chunk_plan):
        start = b * setup.record_every
        starts = start + length * np.arange(n_rec)
        rows, calls = n_rec, length // spc
        if counts is not None:  # one program for every block: n_rec of its rows, the last with length steps
            rows, calls = counts
            starts = np.concatenate([starts, np.full(rows - n_rec, starts[-1])])
        if etas[0].constant:
            block_etas = None
            if not setup.eta_batched:
                eta_const = jnp.asarray(etas[0].first, dtype)
        elif schedule is not None:
            block_etas, eta_const = None, schedule
        else:
            idx = starts[:n_rec, None] + np.arange(0, length, spc)[None, :]
            lrs = np.asarray(etas[0].take(idx))
            lrs = np.pad(lrs, ((0, rows - n_rec), (0, calls - length // spc)))  # unused: zeros
            block_etas, eta_const = jnp.asarray(lrs, dtype), None
        args = (
            jnp.asarray(starts, jnp.int32),
            block_etas,
            eta_const,
            calls,
            run_key,
            event_key,
            n_saved,
            spc,
        )
        dynamic = None if counts is None else (jnp.int32(n_rec), jnp.int32(length // spc))
        out = ops.run_block(
            obs, events, carry, ev_state, bad, *args, check_steps=not deferred, counts=dynamic
        )
        if deferred and bool(out[-1]):  # a path diverged in the block: again, marking its first step
            out = ops.run_block(obs, events, carry, ev_state, bad, *args, check_steps=True, counts=dynamic)
        carry, ev_state, bad, rec, _ = out
        recs.append(_trim(ops.records(rec), n_rec, keep))
        on_block(bi, len(chunk_plan), b + n_rec, start + n_rec * length, recs, (carry, ev_state, bad))
    return ops, carry, ev_state, bad, recs, keep


def run_plans(
    plans: list[RunPlan], *, save_names: Sequence[str | None] | None = None, share: bool = False
) -> list[EnsembleResult]:
    """Run one plan, or G plans that differ only in traced hyperparameters as one vmapped program (a sweep
    group, ``_Grid``, ``share``: keep equal leaves once); with ``output.checkpoint_every`` the whole state is
    checkpointed every that many records and ``output.resume`` continues from a checkpoint bit for bit.
    ``save_names``: each point's result prefix (default the output's ``save_to``)."""
    setup = _prepare(plans)
    p0, G, n_steps = setup.p0, len(plans), setup.n_steps
    save_names = [p0.output.save_to] * G if save_names is None else save_names
    writer = jax.process_index() == 0  # in a multi-process run only process 0 writes and reports
    accs = [_Accumulator(len(setup.events)) for _ in plans]
    ckpt = _Checkpointer(setup, accs, writer)
    bar = Progress(
        p0.method if G == 1 else f"sweep of {G}",
        G * n_steps * setup.n_paths,
        enabled=p0.output.progress and writer,
    )
    start_chunk, start_record, done_paths, resumed = ckpt.load()
    try:
        for c in range(start_chunk, setup.n_chunks):
            lo, hi = c * setup.chunk, min(setup.n_paths, (c + 1) * setup.chunk)

            def on_block(bi, n_blocks, records_done, steps_done, recs, state, c=c, lo=lo, hi=hi):
                if ckpt.every is not None and bi + 1 < n_blocks:
                    ckpt.save(c, records_done, lo, recs, state)  # lo: the paths finished before it
                bar.update(G * (lo * n_steps + steps_done * (hi - lo)))

            here = resumed if c == start_chunk else None
            ops, carry, ev_state, bad, recs, keep = _run_chunk(setup, c, share, here, start_record, on_block)
            per_path = [
                ops.per_path(event.per_path(state))
                for event, state in zip(setup.events, ev_state, strict=True)
            ]
            bad_h, stats = ops.per_path(bad), ops.solver_stats(carry)
            for g, acc in enumerate(accs):
                acc.add_chunk(g, lo, _concat_records(recs), keep, per_path, stats, bad_h[g])
            done_paths = hi
            if ckpt.every is not None:
                ckpt.save(c + 1, 0, done_paths)
            if writer:
                for g in range(G):
                    if (name := save_names[g]) is not None:
                        _result(setup, g, accs[g], done_paths, hi == setup.n_paths).save(name, what="save_to")
    except KeyboardInterrupt:
        if done_paths == 0:
            raise
        warnings.warn(f"{p0.method}: interrupted; returning the {done_paths} finished paths", stacklevel=2)
        return [_result(setup, g, accs[g], done_paths, False) for g in range(G)]
    out = []
    for g in range(G):
        res = _result(setup, g, accs[g], done_paths, True)
        if (message := res.divergence_message()) is not None:  # None exactly when no path diverged
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        finish = plans[g].finish
        out.append(res if finish is None else finish(res))
    return out


# Stepper calls of a run up to which its blocks run as one program with traced trip counts (_dynamic_counts).
# On CPU such a loop cost what a scan does per step at 10⁴ paths × d = 200 (label-noise SGD, 2,000 steps: 8.4-8.6 s
# either way) and on 8-path SDE steps, and ~3% more on 8-path SGD steps with draws made ahead (6.8 µs against
# 6.6 µs): at most 10⁵ calls × 0.3 µs = 0.03 s, against the 0.5-3 s of the compile it saves. An accelerator may
# pay more per iteration of a loop whose trip count it does not know (a read-back of the loop condition; no
# unrolling), which the bound keeps below about a compile's time.
DYNAMIC_MAX_CALLS = 100_000


def _dynamic_counts(
    setup: _Setup, start_record: int, segment_length: Callable[[int], int | None]
) -> tuple[int, int] | None:
    """(rows, calls): the record buffer and calls per record of the one program that runs every block of the
    run, where its blocks would otherwise be two or more programs (a shorter last interval when ``every`` does
    not divide n_steps, a shorter last block, a block cut by a resume from record ``start_record``) and the run
    is short (at most ``DYNAMIC_MAX_CALLS`` stepper calls); None: each block its own static program (the run is
    one program, or long enough that one more compile is nothing beside it, while a loop with a known trip
    count may cost less per step on an accelerator, whose runtime can then skip reading the loop condition
    back at every step; or the stepper's segments, ``segment_length(calls)``, do not divide a record's calls).

    The program's loops run the same steps in the same order as the static ones: the same numbers. Extra work:
    a shorter last interval makes the stepper's segment inputs (its draws, where it makes them ahead) for at
    most one segment of calls it does not use, once per chunk."""
    resumed = _plan_from(setup.plan, start_record) if start_record else []
    shapes = {(n_rec, length) for _, n_rec, length in [*setup.plan, *resumed]}
    spc = setup.p0.steps_per_call
    calls = setup.record_every // spc
    if len(shapes) < 2 or setup.n_steps // spc > DYNAMIC_MAX_CALLS:
        return None
    seg = segment_length(calls)
    if seg is not None and calls % seg:
        return None
    return max(n_rec for _, n_rec, _ in setup.plan), calls


def _trim(records: tuple, n_rec: int, keep: int) -> tuple:
    """Host records (count, mean, m2, saved), each (R, G, ...), cut to the first ``n_rec`` records and
    ``keep`` saved paths."""
    count, mean, m2, saved = jax.tree.map(lambda x: x[:n_rec], records)
    return count, mean, m2, saved[:, :, :keep]


def _plan_from(plan: list[tuple[int, int, int]], done: int) -> list[tuple[int, int, int]]:
    """The calls of ``plan`` from record ``done`` on, the call holding it cut there (a checkpoint written
    with another ``checkpoint_every`` resumes in this run's blocks: the steps and keys are the same)."""
    out = []
    for b, n, length in plan:
        if b + n > done:
            out.append((b, n, length) if b >= done else (done, b + n - done, length))
    return out


def _observable_fingerprint(name: str, fn) -> Any:
    """What fixes a recorded observable: its name, and for an ``AbstractObservable`` its settings and arrays
    (``Sharpness(iters=10)`` and ``Sharpness(iters=30)`` record other numbers under one name)."""
    if not isinstance(fn, AbstractObservable):
        return name  # a built-in, or a user's function (its code is not compared)
    return [name, describe(eqx.filter(fn, eqx.is_array, inverse=True)), stepper_digest(fn)]


def _lr_fingerprint(etas) -> Any:
    """What fixes a run's step sizes: the constant, the digest of a given array, or the schedule's
    description with the clock it gives at its block starts (a schedule with the same text but other
    values, e.g. a closure, then differs too)."""
    if etas.constant:
        return etas.value
    if etas.array is not None:
        return digest(etas.array)
    return [describe(etas.fn), etas.rep, digest(etas.block_starts)]


def _concat_records(recs: list) -> tuple:
    """(count, mean, m2, saved) of a chunk's host records (each (R, G, ...)), concatenated over records."""
    return jax.tree.map(lambda *xs: np.concatenate(xs), *recs)
