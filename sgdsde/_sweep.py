"""Sweeps: a grid of hyperparameters run as one compiled program per batch size.

Every grid point is the run ``simulate(problem, noise_i, θ₀, lr=η_i, key=key, …)`` would make, bit for
bit (measured exception: Gaussian draws added to the gradient, ``GaussianNoise`` and ``SphericalGaussianNoise``,
differ by 1–4 ulps; ASDE-8): the points share the key (common random numbers, so differences between points are not noise), and the
traced hyperparameters (a constant lr, σ and the other array fields of the noise, a resetting rate) are vmapped over; the batch
size changes shapes, so each batch size is one group, one compiled program.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from numpy.typing import DTypeLike

from ._ensemble import run_plans
from ._method import AbstractMethod, check_noise, legacy_events
from ._noise import NoNoise
from ._options import Ensemble, Output, Record
from ._problem import Problem
from ._resetting import Resetting
from ._results import EnsembleResult
from ._sde.base import FunctionSDE
from ._sde.simulate import SDE, _input_dtype, simulate_sde
from ._sde.svag import SVAG, simulate_svag
from ._sgd import SGD, simulate_sgd

SIMULATORS = (simulate_sgd, simulate_sde, simulate_svag)
GROUP_KEYS = ("batch_size",)  # hyperparameters that change shapes: one compiled program per value
EVENT_KEYS = ("reset_rate",)  # the rate of the ``resetting`` option


@dataclasses.dataclass
class SweepResult:
    """The runs of a sweep: ``points[i]`` (a dict of the grid's hyperparameters) ran as ``results[i]``;
    ``axes`` maps each grid name to its values (the points are their Cartesian product, last name fastest)."""

    axes: dict[str, list]
    points: list[dict[str, Any]]
    results: list[EnsembleResult]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> EnsembleResult:
        return self.results[i]

    def final(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard error) of observable ``name`` at the last record, shaped like the grid."""
        pairs = [r.final(name) for r in self.results]
        mean = np.stack([np.asarray(m) for m, _ in pairs])
        se = np.stack([np.asarray(s) for _, s in pairs])
        return mean.reshape(self.shape + mean.shape[1:]), se.reshape(self.shape + se.shape[1:])

    def table(self) -> dict[str, np.ndarray]:
        """One row per grid point: its hyperparameters, then the final mean and standard error of every
        scalar observable and the diverged-path count; ``pandas.DataFrame(sweep.table())`` in one call."""
        cols: dict[str, list | np.ndarray] = {name: [p[name] for p in self.points] for name in self.axes}
        for name in self.results[0].observables:
            if np.ndim(self.results[0].mean[name][-1]) == 0:
                mean, se = self.final(name)
                cols[f"{name}_mean"], cols[f"{name}_stderr"] = mean.ravel(), se.ravel()
        cols["diverged"] = [r.diverged for r in self.results]
        return {k: _column(v) for k, v in cols.items()}

    def to_xarray(self):
        """An xarray.Dataset with one dimension per grid name plus ``step``: the mean and standard error of
        each observable over the run (needs xarray)."""
        try:
            import xarray as xr  # pyright: ignore[reportMissingImports]  (optional; not installed for type checking)
        except ImportError:
            raise ImportError("to_xarray needs xarray (pip install xarray)") from None

        r0 = self.results[0]
        data = {}
        for name in r0.observables:
            mean = np.stack([r.mean[name] for r in self.results])
            se = np.stack([r.stderr(name) for r in self.results])
            extra = tuple(f"{name}_dim{i}" for i in range(mean.ndim - 2))
            dims = (*self.axes, "step", *extra)
            data[f"{name}_mean"] = (dims, mean.reshape(self.shape + mean.shape[1:]))
            data[f"{name}_stderr"] = (dims, se.reshape(self.shape + se.shape[1:]))
        coords: dict[str, Any] = {"step": r0.steps}
        for k, v in self.axes.items():  # an array-valued axis (m0, v0): indexed 0, 1, …, its values beside
            if v and isinstance(v[0], tuple):
                values = np.asarray(v)
                coords[k] = np.arange(len(v))
                dims = (k, *(f"{k}_dim{i}" for i in range(values.ndim - 1)))
                coords[f"{k}_value"] = (dims, values)
            else:
                coords[k] = np.asarray(v)
        return xr.Dataset(data, coords=coords)


def _column(values) -> np.ndarray:
    """A table column: numbers as a 1-D array, array values (a warm start's v0) as an object array of tuples."""
    values = list(values)
    if values and isinstance(values[0], tuple):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values)


def _resolve(method: AbstractMethod, name) -> tuple[tuple[str, ...], str] | None:
    """Where grid name ``name`` lives in the method: (path of the object holding it, field name); a dotted
    name is a path from the method ("noise.sigma"), a bare one a field of the method or of its noise."""
    if not isinstance(name, str) or not name:
        return None
    parts = tuple(name.split("."))
    candidates = [parts] if len(parts) > 1 else [parts, ("noise", *parts)]
    for path in candidates:
        owner = method
        for attr in path[:-1]:
            owner = getattr(owner, attr, None) if dataclasses.is_dataclass(owner) else None
        if dataclasses.is_dataclass(owner) and path[-1] in {f.name for f in dataclasses.fields(owner)}:
            return path[:-1], path[-1]
    return None


def _owner(method, path):
    for attr in path:
        method = getattr(method, attr)
    return method


def _with_field(method: AbstractMethod, path: tuple[str, ...], field: str, value) -> AbstractMethod:
    """The method with ``field`` of the object at ``path`` set to ``value``: the owner rebuilt by
    ``dataclasses.replace`` (its converters and checks run, as for a single run's object), then put in place
    with ``eqx.tree_at``."""
    owner = _owner(method, path)
    try:
        new = dataclasses.replace(owner, **{field: value})
    except TypeError:
        raise ValueError(f"grid: {type(owner).__name__} has no field among {[field]} to sweep") from None
    if not path:
        return new
    return eqx.tree_at(lambda m: _owner(m, path), method, new)


def _check_grid(
    grid, method: AbstractMethod, dtype: DTypeLike = np.float64, events=(), sde_params=()
) -> dict[str, list]:
    """The grid's axes as lists of Python numbers, checked: known names, finite numbers, no value given twice
    (also none that the run's ``dtype`` cannot tell apart, such as 0.01 and float32(0.01) in float32)."""
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"grid must be a non-empty mapping name → values, got {grid!r}")
    noise = getattr(method, "noise", None) or NoNoise()
    axes = {}
    for name, values in grid.items():
        shape: tuple[int, ...] = ()  # a value's shape: () for numbers, the leaf's for an array leaf (m0, v0)
        if name == "lr" or name in sde_params:
            pass
        elif name in GROUP_KEYS:
            if _resolve(method, name) is None:
                raise ValueError(f"grid: {type(noise).__name__} has no field among {[name]} to sweep")
        elif name == "reset_rate":
            if not any(isinstance(e, Resetting) for e in events):
                raise ValueError(
                    "grid: 'reset_rate' sweeps the rate of resetting=sgdsde.Resetting(...); give one"
                )
        else:
            where = _resolve(method, name)
            if where is None:
                raise ValueError(
                    f"grid: unknown hyperparameter {name!r}; sweepable: lr, batch_size, reset_rate, the params of "
                    f"a FunctionSDE ({', '.join(sde_params) or 'none'}) and the array leaves of the method "
                    f"{type(method).__name__} ({', '.join(_traced_fields(method)) or 'none'})"
                )
            owner = _owner(method, where[0])
            leaf = getattr(owner, where[1])
            if not isinstance(leaf, jax.Array):
                raise ValueError(
                    f"grid: {name!r} is not a traced hyperparameter of {type(owner).__name__} (not an array leaf: "
                    "it changes the compiled program); sweep it in a Python loop"
                )
            shape = tuple(leaf.shape)
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise ValueError(f"grid[{name!r}] must be a sequence of values, got {values!r}")
        values = list(np.asarray(values).tolist()) if isinstance(values, np.ndarray) else list(values)
        if not values:
            raise ValueError(f"grid[{name!r}] is empty")
        if shape:  # an array leaf (a warm start's m0, v0): each value an array of the leaf's shape
            values = [_array_value(name, v, shape) for v in values]
        for v in values if not shape else ():
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"grid[{name!r}] must hold numbers, got {v!r}")
            if not math.isfinite(float(v)):
                raise ValueError(f"grid[{name!r}] must be finite, got {v!r}")
        values = [v.item() if isinstance(v, np.generic) else v for v in values]  # NumPy scalars → Python
        seen: dict = {}
        for v in values:
            if shape:
                as_run = tuple(np.asarray(v, dtype).ravel().tolist())
            else:
                as_run = v if isinstance(v, int) and name in GROUP_KEYS else np.asarray(v, dtype).item()
            if as_run in seen:
                same = (
                    ""
                    if seen[as_run] == v
                    else f" ({seen[as_run]!r} and {v!r} are one {np.dtype(dtype).name})"
                )
                raise ValueError(f"grid[{name!r}] repeats a value{same}: give each point once, got {values}")
            seen[as_run] = v
        axes[name] = values
    return axes


def _array_value(name: str, value, shape: tuple[int, ...]) -> tuple:
    """One grid value of an array leaf (an Adam warm start's ``v0``): finite reals of the leaf's shape, kept as
    a (nested) tuple of Python floats; ValueError naming ``grid[name]`` otherwise."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"grid[{name!r}] must hold arrays of shape {shape} (the leaf's), got {value!r}"
        ) from None
    if isinstance(value, (str, bytes)) or a.shape != shape:
        raise ValueError(f"grid[{name!r}] must hold arrays of shape {shape} (the leaf's), got {value!r}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"grid[{name!r}] must be finite, got {value!r}")
    return _nested_tuple(a.tolist())


def _nested_tuple(x):
    return tuple(_nested_tuple(v) for v in x) if isinstance(x, list) else x


def _format(value) -> str:
    """A grid value in a label: a number as ``{:g}``, an array value as ``[a, b, …]``."""
    if isinstance(value, tuple):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return f"{value:g}"


def _traced_fields(method) -> list[str]:
    """The names of the method's array leaves a grid may sweep (a noise's fields by their bare name)."""
    out = []
    for owner in (method, getattr(method, "noise", None)):
        if dataclasses.is_dataclass(owner):
            out += [
                f.name
                for f in dataclasses.fields(owner)
                if isinstance(getattr(owner, f.name, None), jax.Array)
            ]
    return out


def _legacy_method(simulate, noise, options: dict) -> AbstractMethod:
    """The method of the spelling ``sweep(simulate_x, problem, noise, θ₀, ...)`` (its options popped)."""
    if simulate is simulate_sgd:
        return SGD(check_noise(noise))
    if simulate is simulate_svag:
        return SVAG(check_noise(noise), options.pop("l", 1))
    kw = {k: options.pop(k) for k in ("order", "solver", "stepping", "increments") if k in options}
    if "order" in kw and kw["order"] == 1:
        kw["order"] = None
    return SDE(check_noise(noise), **kw)


def sweep(
    method,
    problem,
    *args,
    grid: Mapping[str, Sequence[float]],
    output: Output = Output(),
    bitwise: bool = True,
    **options,
) -> SweepResult:
    """Run ``method`` at every point of ``grid`` (the Cartesian product of its values), one jitted, vmapped
    program per batch size: ``sweep(SGD(noise), problem, θ₀, grid=..., lr=..., n_steps=..., key=...)``.

    Point i equals ``simulate(method_i, problem, theta0, lr=η_i, **options)`` bit for bit, with method_i the
    method with point i's values in its array leaves (the owner rebuilt with ``dataclasses.replace``, put in
    place with ``eqx.tree_at``); all points share ``key`` (common random numbers). The older spelling
    ``sweep(simulate_sgd | simulate_sde | simulate_svag, problem, noise, θ₀, ...)`` works as before.

    Args:
        method: ``SGD(noise)``, ``SDE(noise, ...)``, ``SVAG(noise, l)`` (or one of the three simulators,
            followed by the noise).
        grid: name → values; ``lr`` (constant step sizes), ``batch_size`` (one program per value),
            ``reset_rate`` (the rate of the ``Resetting`` event: traced, vmapped), an entry of a ``FunctionSDE``'s
            ``params`` (traced, vmapped) or an array leaf of the method: a field of its noise by name
            (``sigma``) or any leaf by its path (``noise.sigma``). A leaf that is an array (a warm start's
            ``optimizer.v0``, ``optimizer.m0``) takes arrays of its shape as values, stacked like the numbers
            (point labels ``v0=[1, 2]``; the table holds them as tuples). A first-passage event applies to every
            point alike.
        bitwise: True: every point equals its single run bit for bit (the data are stacked once per point, so
            that XLA multiplies on a single run's shapes); False: the data are kept once (memory O(n·d)
            instead of O(G·n·d), and faster), the points equal their single runs up to rounding.
        output: ``save_to`` is a prefix: point i's result goes to ``{save_to}.point{i}`` and the checkpoint of
            batch-size group j to ``{save_to}.group{j}.ckpt.npz``; progress and resume as for one run.
        **options: the other keyword arguments of ``simulate`` (n_steps, key, ensemble, record, events, ...;
            with a simulator also its own: resetting, first_passage, order, solver, l, ...).
    """
    method, theta0, kind = _method_and_start(method, args, options)
    events = legacy_events(
        options.pop("resetting", None), options.pop("first_passage", None), options.pop("events", ())
    )
    ensemble = options.get("ensemble")
    dtype = getattr(ensemble, "dtype", None)
    if dtype is None:  # the run's default: the problem's data, or θ₀'s for an SDE without a problem
        dtype = problem.X.dtype if isinstance(problem, Problem) else _input_dtype(theta0)
    sde_params = tuple(problem.params) if isinstance(problem, FunctionSDE) and problem.params else ()
    axes = _check_grid(grid, method, np.dtype(dtype), events, sde_params)
    if "lr" in axes and "lr" in options:
        raise ValueError("give lr either in grid or as an argument, not both")
    if "lr" not in axes and "lr" not in options:
        raise ValueError("lr is required (as an argument or a grid axis)")
    if not isinstance(bitwise, bool):
        raise ValueError(f"bitwise must be True or False, got {bitwise!r}")
    if not isinstance(output, Output):
        raise ValueError(f"output must be a sgdsde.Output(...), got {type(output).__name__}")
    points = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    groups: dict[tuple, list[int]] = {}
    for i, point in enumerate(points):
        groups.setdefault(tuple(point.get(k) for k in GROUP_KEYS), []).append(i)
    results: dict[int, EnsembleResult] = {}  # point index -> its result; every point is run
    for j, members in enumerate(groups.values()):
        plans = [
            _point_plan(method, problem, theta0, points[i], events, sde_params, output, kind, j, options)
            for i in members
        ]
        names = None if output.save_to is None else [f"{output.save_to}.point{i}" for i in members]
        for i, res in zip(members, run_plans(plans, save_names=names, share=not bitwise), strict=True):
            results[i] = res
    return SweepResult(axes=axes, points=points, results=[results[i] for i in range(len(points))])


def _run_options(kw: dict) -> dict:
    """The keyword arguments of ``AbstractMethod.plan`` (ensemble, record default as in ``simulate``);
    TypeError naming an unknown one."""
    known = ("lr", "n_steps", "key", "ensemble", "record")
    unknown = sorted(set(kw) - set(known))
    if unknown:
        raise TypeError(f"sweep: unknown options {unknown}; valid: {list(known)}, output, events")
    return {"ensemble": Ensemble(), "record": Record(), **kw}


def _method_and_start(method, args: tuple, options: dict) -> tuple[AbstractMethod, Any, str]:
    """(method, θ₀, the label's stem) from ``sweep(method, problem, θ₀)`` or the simulator spelling
    ``sweep(simulate_x, problem, noise, θ₀)`` (its method options popped from ``options``)."""
    if isinstance(method, AbstractMethod):
        if len(args) != 1:
            raise ValueError(
                f"sweep(method, problem, theta0, ...) takes theta0 only after problem, got {len(args)}"
            )
        return method, args[0], type(method).__name__.lower()
    if method in SIMULATORS:
        if len(args) != 2:
            raise ValueError(f"sweep({method.__name__}, problem, noise, theta0, ...) needs noise and theta0")
        noise, theta0 = args
        return _legacy_method(method, noise, options), theta0, method.__name__.removeprefix("simulate_")
    raise ValueError(
        "simulate must be a method (sgdsde.SGD(noise), SDE(...), SVAG(...)) or sgdsde.simulate_sgd, "
        f"simulate_sde or simulate_svag, got {getattr(method, '__name__', method)!r}"
    )


def _point_plan(
    method, problem, theta0, point: dict, events, sde_params, output, kind: str, group: int, options
):
    """The RunPlan of one grid point: the method with the point's leaves, the problem with its SDE params,
    the events with its reset rate, the output labelled by the point."""
    method_i = method
    for k, v in point.items():
        if k != "lr" and k not in EVENT_KEYS and k not in sde_params:
            value = np.asarray(v) if isinstance(v, tuple) else v  # an array leaf's value as an array
            method_i = _with_field(method_i, *_resolve(method, k), value)
    problem_i = (
        problem.with_params(**{k: point[k] for k in sde_params if k in point}) if sde_params else problem
    )
    label = (output.label or kind) + "[" + ", ".join(f"{k}={_format(v)}" for k, v in point.items()) + "]"
    out = dataclasses.replace(
        output, label=label, save_to=None if output.save_to is None else f"{output.save_to}.group{group}"
    )
    kw = dict(options, lr=point["lr"]) if "lr" in point else dict(options)
    if "reset_rate" in point:
        events = tuple(
            dataclasses.replace(e, rate=point["reset_rate"]) if isinstance(e, Resetting) else e
            for e in events
        )
    return method_i.plan(problem_i, theta0, output=out, events=events, **_run_options(kw))
