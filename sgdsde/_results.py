"""Ensemble results: streaming statistics of observables on a time grid, saved as arrays + JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
from typing import Any

import numpy as np

from ._first_passage import FirstPassageReport
from ._resetting import ResetReport


def describe(obj) -> str:
    """The configuration record's text for ``obj``: equinox's tree repr with array values written out in
    full precision (up to 10⁴ elements each), so that a reloaded result says exactly what ran."""
    import equinox as eqx

    with np.printoptions(precision=17, floatmode="unique", threshold=10_000):
        return " ".join(eqx.tree_pformat(obj, short_arrays=False, width=10_000).split())


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on (recorded with every saved result)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("sgdsde", "jax", "jaxlib", "numpy", "scipy", "sympy", "diffrax", "equinox"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclasses.dataclass
class EnsembleResult:
    """Statistics of N paths recorded at steps ``steps`` (SDE time ``times`` = Σ_{j<k} η_j).

    ``mean[name]`` and ``var[name]`` have shape (R, *obs_shape): the mean over the finite paths and the
    unbiased variance across paths; ``count[r]`` is the number of finite paths at record r. ``paths`` holds
    θ of the first ``n_saved`` paths (R, n_saved, d), or None. A path whose state became non-finite is
    excluded from the statistics from then on and reported in ``diverged``/``first_divergence_step``, and
    path by path in ``diverged_paths`` (indices), ``divergence_steps`` (the first step k whose state θ_k is
    non-finite, or the record where an observable first was) and ``divergence_times`` ($t_k$).
    """

    method: str
    steps: np.ndarray
    times: np.ndarray
    mean: dict[str, np.ndarray]
    var: dict[str, np.ndarray]
    count: np.ndarray
    n_paths: int
    paths: np.ndarray | None = None
    diverged: int = 0
    first_divergence_step: int | None = None
    complete: bool = True
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    diverged_paths: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    divergence_steps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    divergence_times: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    resets: ResetReport | None = None  # with a Resetting option
    first_passage: FirstPassageReport | None = None  # with a FirstPassage option

    @property
    def observables(self) -> list[str]:
        return list(self.mean)

    def stderr(self, name: str) -> np.ndarray:
        """Standard error of the ensemble mean, $\\sqrt{\\mathrm{var}/N}$."""
        return np.sqrt(
            self.var[name] / np.maximum(self.count, 1).reshape((-1,) + (1,) * (self.var[name].ndim - 1))
        )

    def final(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard error) of ``name`` at the last record (NaN if no path survived to it: see
        ``count``)."""
        return self.mean[name][-1], self.stderr(name)[-1]

    def divergence_message(self) -> str | None:
        """A sentence naming how many paths diverged and when, or None if none did."""
        if not self.diverged:
            return None
        message = (
            f"{self.method}: {self.diverged} of {self.n_paths} paths diverged (non-finite state or recorded observable), "
            f"the first at step {self.first_divergence_step}"
        )
        if len(self.diverged_paths):
            order = np.argsort(self.divergence_steps, kind="stable")[:5]
            listed = ", ".join(
                f"{int(self.diverged_paths[i])} (step {int(self.divergence_steps[i])}, "
                f"t = {float(self.divergence_times[i]):.4g})"
                for i in order
            )
            more = (
                f" and {len(self.diverged_paths) - len(order)} more" if len(self.diverged_paths) > 5 else ""
            )
            message += f"; paths {listed}{more} (see result.diverged_paths, divergence_steps)"
        empty = np.flatnonzero(np.asarray(self.count) == 0)
        if len(empty):
            message += (
                f"; {len(empty)} records from step {int(self.steps[empty[0]])} have no surviving path (count 0: "
                "no mean, no standard error)"
            )
        return message

    def __repr__(self) -> str:
        n_rec = len(self.steps)
        parts = [
            f"method={self.method!r}",
            f"n_paths={self.n_paths}",
            f"records={n_rec} (steps {int(self.steps[0])}..{int(self.steps[-1])}, t ≤ {float(self.times[-1]):.4g})",
            f"observables={self.observables}",
        ]
        if self.diverged:
            parts.append(f"diverged={self.diverged}")
        if not self.complete:
            parts.append("complete=False")
        for name in REPORTS:
            if getattr(self, name) is not None:
                parts.append(f"{name}=…")
        return f"EnsembleResult({', '.join(parts)})"

    def select(self, t_range: tuple[float, float]) -> EnsembleResult:
        """The records with SGD time t in [t0, t1] (both ends included), as a result of the same kind; the
        per-path reports and divergence records are kept whole."""
        t0, t1 = (float(t) for t in t_range)
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 < t0:
            raise ValueError(f"t_range must be finite with t0 <= t1, got {t_range!r}")
        keep = (self.times >= t0) & (self.times <= t1)
        if not keep.any():
            raise ValueError(
                f"t_range {t_range!r} holds no record (records span t = {self.times[0]:.4g}..{self.times[-1]:.4g})"
            )
        return dataclasses.replace(
            self,
            steps=self.steps[keep],
            times=self.times[keep],
            mean={k: v[keep] for k, v in self.mean.items()},
            var={k: v[keep] for k, v in self.var.items()},
            count=self.count[keep],
            paths=None if self.paths is None else self.paths[keep],
        )

    def to_records(self) -> list[dict[str, Any]]:
        """Tidy rows, one per record × observable × component: step, time, observable, index (the
        component's flat index, 0 for a scalar), mean, stderr, count."""
        rows = []
        for name in self.observables:
            mean = self.mean[name].reshape(len(self.steps), -1)
            se = self.stderr(name).reshape(len(self.steps), -1)
            for r in range(len(self.steps)):
                for j in range(mean.shape[1]):
                    rows.append(
                        {
                            "step": int(self.steps[r]),
                            "time": float(self.times[r]),
                            "observable": name,
                            "index": j,
                            "mean": float(mean[r, j]),
                            "stderr": float(se[r, j]),
                            "count": int(self.count[r]),
                        }
                    )
        return rows

    def to_dataframe(self):
        """``to_records()`` as a pandas DataFrame (pandas is an optional dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "to_dataframe needs pandas (pip install pandas); to_records() needs nothing"
            ) from None
        return pd.DataFrame.from_records(self.to_records())

    def to_xarray(self):
        """An xarray Dataset (xarray is an optional dependency): per observable ``<name>_mean`` and
        ``<name>_stderr`` over (step, and ``<name>_dim`` for vector observables), ``count`` over step, and time as
        a coordinate along step."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError(
                "to_xarray needs xarray (pip install xarray); to_records() needs nothing"
            ) from None
        data = {"count": (("step",), self.count)}
        for name in self.observables:
            mean, se = self.mean[name], self.stderr(name)
            dims = ("step",) + tuple(f"{name}_dim{i}" for i in range(mean.ndim - 1))
            data[f"{name}_mean"], data[f"{name}_stderr"] = (dims, mean), (dims, se)
        return xr.Dataset(
            data, coords={"step": self.steps, "time": ("step", self.times)}, attrs={"method": self.method}
        )

    # --- saving -------------------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Write ``path``.npz (arrays) and ``path``.json (configuration, versions) atomically."""
        path = os.fspath(path)
        arrays = {"steps": self.steps, "times": self.times, "count": self.count}
        for k, v in self.mean.items():
            arrays[f"mean/{k}"] = v
            arrays[f"var/{k}"] = self.var[k]
        if self.paths is not None:
            arrays["paths"] = self.paths
        arrays["diverged_paths"] = self.diverged_paths
        arrays["divergence_steps"] = self.divergence_steps
        arrays["divergence_times"] = self.divergence_times
        reports = {}
        for name in REPORTS:
            report = getattr(self, name)
            if report is not None:
                arrays.update({f"{name}/{k}": v for k, v in report.arrays().items()})
                reports[name] = report.meta()
        meta = {
            "method": self.method,
            "n_paths": self.n_paths,
            "diverged": self.diverged,
            "first_divergence_step": self.first_divergence_step,
            "complete": self.complete,
            "observables": self.observables,
            "config": self.config,
            "reports": reports,
            "versions": package_versions(),
        }
        _atomic_write(path + ".npz", lambda f: np.savez(f, **arrays), binary=True)
        _atomic_write(path + ".json", lambda f: json.dump(meta, f, indent=2, default=_jsonable), binary=False)
        return path

    @classmethod
    def load(cls, path: str) -> EnsembleResult:
        """Read a result written by ``save``."""
        path = os.fspath(path)
        with open(path + ".json") as f:
            meta = json.load(f)
        with np.load(path + ".npz") as z:
            arrays = {k: z[k] for k in z.files}
        names = meta["observables"]
        reports = {
            name: REPORTS[name].from_saved(
                {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")}, saved
            )
            for name, saved in meta.get("reports", {}).items()
        }
        return cls(
            method=meta["method"],
            steps=arrays["steps"],
            times=arrays["times"],
            mean={k: arrays[f"mean/{k}"] for k in names},
            var={k: arrays[f"var/{k}"] for k in names},
            count=arrays["count"],
            n_paths=meta["n_paths"],
            paths=arrays.get("paths"),
            diverged=meta["diverged"],
            first_divergence_step=meta["first_divergence_step"],
            complete=meta["complete"],
            config=meta["config"],
            **{
                k: arrays[k]
                for k in ("diverged_paths", "divergence_steps", "divergence_times")
                if k in arrays
            },
            **reports,
        )


REPORTS = {"resets": ResetReport, "first_passage": FirstPassageReport}  # result field → report class


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return repr(x)


def _atomic_write(path: str, write, binary: bool) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class RunningMoments:
    """Chan et al.'s parallel combination of (count, mean, M2) over path chunks, in float64."""

    def __init__(self):
        self.count = None
        self.mean: dict[str, np.ndarray] = {}
        self.m2: dict[str, np.ndarray] = {}

    def add(self, count, mean: dict, m2: dict) -> None:
        count = np.asarray(count, np.float64)
        if self.count is None:
            self.count = count
            self.mean = {k: np.asarray(v, np.float64) for k, v in mean.items()}
            self.m2 = {k: np.asarray(v, np.float64) for k, v in m2.items()}
            return
        total = self.count + count
        for k in mean:
            shape = (-1,) + (1,) * (np.ndim(mean[k]) - 1)
            na, nb, nt = self.count.reshape(shape), count.reshape(shape), np.maximum(total, 1).reshape(shape)
            delta = np.asarray(mean[k], np.float64) - self.mean[k]
            self.mean[k] = self.mean[k] + delta * nb / nt
            self.m2[k] = self.m2[k] + np.asarray(m2[k], np.float64) + delta**2 * na * nb / nt
        self.count = total

    def variance(self) -> dict[str, np.ndarray]:
        out = {}
        for k, m2 in self.m2.items():
            shape = (-1,) + (1,) * (m2.ndim - 1)
            out[k] = m2 / np.maximum(self.count - 1, 1).reshape(shape)
        return out
