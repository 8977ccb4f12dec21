"""Ensemble results: streaming statistics of observables on a time grid, saved as arrays + JSON."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import platform
import re
import socket
import sys
import tempfile
import zipfile
from typing import Any

import numpy as np

from ._describe import describe as describe
from ._events import AbstractReport


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
    reports: dict[str, Any] = dataclasses.field(default_factory=dict)  # each event's report, by its name

    @property
    def resets(self):
        """The ``Resetting`` event's report (``reports["resets"]``), or None."""
        return self.reports.get("resets")

    @property
    def first_passage(self):
        """The ``FirstPassage`` event's report (``reports["first_passage"]``), or None."""
        return self.reports.get("first_passage")

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
        for name in self.reports:
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
            import pandas as pd  # pyright: ignore[reportMissingImports]  (optional; not installed for type checking)
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
            import xarray as xr  # pyright: ignore[reportMissingImports]  (optional; not installed for type checking)
        except ImportError:
            raise ImportError(
                "to_xarray needs xarray (pip install xarray); to_records() needs nothing"
            ) from None
        data: dict[str, tuple[tuple[str, ...], np.ndarray]] = {"count": (("step",), self.count)}
        for name in self.observables:
            mean, se = self.mean[name], self.stderr(name)
            dims = ("step",) + tuple(f"{name}_dim{i}" for i in range(mean.ndim - 1))
            data[f"{name}_mean"], data[f"{name}_stderr"] = (dims, mean), (dims, se)
        return xr.Dataset(
            data, coords={"step": self.steps, "time": ("step", self.times)}, attrs={"method": self.method}
        )

    # --- saving -------------------------------------------------------------------------------
    def save(self, path: str, what: str = "path") -> str:
        """Write ``path``.npz (arrays) and ``path``.json (configuration, versions; strict JSON, non-finite
        numbers as strings) with ``atomic_write`` (temporary file, fsync, rename, fsync of the directory).
        ``path`` is a prefix (its directory is created); a bad one is a ValueError, a failed write (full
        disk, no permission) an OSError, each naming ``what`` (the caller's argument), the path and why."""
        path = check_save_to(path, what, (".npz", ".json"), make_folder=True)
        arrays: dict[str, Any] = {"steps": self.steps, "times": self.times, "count": self.count}
        for k, v in self.mean.items():
            arrays[f"mean/{k}"] = v
            arrays[f"var/{k}"] = self.var[k]
        if self.paths is not None:
            arrays["paths"] = self.paths
        arrays["diverged_paths"] = self.diverged_paths
        arrays["divergence_steps"] = self.divergence_steps
        arrays["divergence_times"] = self.divergence_times
        reports, classes = {}, {}
        for name, report in self.reports.items():
            arrays.update({f"{name}/{k}": v for k, v in report.arrays().items()})
            reports[name] = report.meta()
            classes[name] = f"{type(report).__module__}:{type(report).__qualname__}"
        meta = {
            "method": self.method,
            "n_paths": self.n_paths,
            "diverged": self.diverged,
            "first_divergence_step": self.first_divergence_step,
            "complete": self.complete,
            "observables": self.observables,
            "config": self.config,
            "reports": reports,
            "report_classes": classes,
            "versions": package_versions(),
        }
        atomic_write(path + ".npz", lambda f: np.savez(f, **arrays), binary=True, what=what)
        atomic_write(path + ".json", lambda f: dump_json(meta, f, indent=2), binary=False, what=what)
        return path

    @classmethod
    def load(cls, path: str) -> EnsembleResult:
        """Read a result written by ``save`` (the prefix: ``path``.json and ``path``.npz). A missing,
        truncated or foreign file, or one whose fields do not fit together, is a ValueError naming the file
        and what is wrong."""
        path = os.fspath(path)
        try:
            return cls._load(path)
        except _LoadError as err:
            raise ValueError(f"EnsembleResult.load: {err}") from None

    @classmethod
    def _load(cls, path: str) -> EnsembleResult:
        meta_file, array_file = path + ".json", path + ".npz"
        for f in (meta_file, array_file):
            if not os.path.isfile(f):
                raise _LoadError(f"no result file {f!r} (save writes {path!r} + '.json' and '.npz')")
        try:
            with open(meta_file, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _LoadError(
                f"{meta_file!r} is not a result's JSON record ({type(err).__name__}: {err})"
            ) from None
        try:
            # np.load's default refuses pickled objects
            with open(array_file, "rb") as fh, np.load(fh) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, AttributeError) as err:
            raise _LoadError(
                f"{array_file!r} is truncated, corrupted or not a result's arrays ({type(err).__name__}: {err})"
            ) from None
        return cls._from_saved(path, meta, arrays)

    @classmethod
    def _from_saved(cls, path: str, meta, arrays: dict) -> EnsembleResult:
        def need(cond, what):
            if not cond:
                raise _LoadError(f"{path!r} is not a result written by EnsembleResult.save: {what}")

        fields = (
            "method",
            "n_paths",
            "diverged",
            "first_divergence_step",
            "complete",
            "observables",
            "config",
        )
        need(isinstance(meta, dict), "its JSON record is not an object")
        missing = [k for k in fields if k not in meta]
        need(not missing, f"its JSON record lacks {missing}")
        names = meta["observables"]
        need(
            isinstance(names, list) and all(isinstance(k, str) for k in names),
            "observables is not a list of names",
        )
        need(isinstance(meta["n_paths"], int) and meta["n_paths"] >= 0, "n_paths is not a count")
        need(isinstance(meta["diverged"], int) and meta["diverged"] >= 0, "diverged is not a count")
        wanted = ["steps", "times", "count"] + [f"{m}/{k}" for k in names for m in ("mean", "var")]
        missing = [k for k in wanted if k not in arrays]
        need(not missing, f"its arrays lack {missing}")
        steps, times, count = arrays["steps"], arrays["times"], arrays["count"]
        need(
            steps.ndim == 1 and len(steps) > 0 and steps.dtype.kind in "iu",
            "steps is not a 1-D integer array",
        )
        R = len(steps)
        need(times.shape == (R,) and times.dtype.kind == "f", f"times is not {R} floats")
        need(count.shape == (R,) and count.dtype.kind in "iu", f"count is not {R} integers")
        for k in names:
            m, v = arrays[f"mean/{k}"], arrays[f"var/{k}"]
            need(m.shape[:1] == (R,) and m.shape == v.shape, f"mean/{k} and var/{k} are not ({R}, …) alike")
        paths = arrays.get("paths")
        need(paths is None or (paths.ndim == 3 and len(paths) == R), "paths is not (records, paths, d)")
        per_path = {
            k: arrays[k] for k in ("diverged_paths", "divergence_steps", "divergence_times") if k in arrays
        }
        need(all(v.ndim == 1 for v in per_path.values()), "the divergence records are not 1-D")
        saved_reports = meta.get("reports", {})
        classes = dict(BUILTIN_REPORTS, **meta.get("report_classes", {}))
        need(isinstance(saved_reports, dict) and set(saved_reports) <= set(classes), "unknown reports")
        try:
            reports = {
                name: _report_class(classes[name]).from_saved(
                    {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")}, saved
                )
                for name, saved in saved_reports.items()
            }
        except _LoadError as err:
            raise _LoadError(f"{path!r}: {err}") from None
        except (TypeError, KeyError, ValueError) as err:
            raise _LoadError(f"{path!r}: a saved report does not fit ({type(err).__name__}: {err})") from None
        return cls(
            method=meta["method"],
            steps=steps,
            times=times,
            mean={k: arrays[f"mean/{k}"] for k in names},
            var={k: arrays[f"var/{k}"] for k in names},
            count=count,
            n_paths=meta["n_paths"],
            paths=paths,
            diverged=meta["diverged"],
            first_divergence_step=meta["first_divergence_step"],
            complete=meta["complete"],
            config=meta["config"],
            **per_path,
            reports=reports,
        )


class _LoadError(Exception):
    """What is wrong with a saved result (EnsembleResult.load turns it into a ValueError)."""


# the report classes of results saved before the classes were recorded with them
BUILTIN_REPORTS = {
    "resets": "sgdsde._resetting:ResetReport",
    "first_passage": "sgdsde._first_passage:FirstPassageReport",
}


def _report_class(name) -> type[AbstractReport]:
    """The report class saved as ``module:qualname``; only a class already imported is used (loading a
    result never imports a module it names)."""
    module, _, qualname = str(name).partition(":")
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, AbstractReport)):
        raise _LoadError(
            f"its report class {name!r} is not an imported sgdsde.AbstractReport (import the module that "
            "defines the event before loading)"
        )
    return obj


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return repr(x)


def strict_json(x):
    """``x`` made writable as strict JSON (RFC 8259: no bare NaN or Infinity): arrays and numpy scalars as
    Python values, a non-finite float as the string ``"nan"``, ``"inf"`` or ``"-inf"`` (``float()`` reads each
    back), any other object as its repr."""
    if isinstance(x, dict):
        return {k: strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict_json(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic)):
        return strict_json(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else ("nan" if math.isnan(x) else "inf" if x > 0 else "-inf")
    if x is None or isinstance(x, (str, int)):
        return x
    return repr(x)


def dump_json(obj, f, **kwargs) -> None:
    """``obj`` as strict JSON into the text file ``f`` (non-finite numbers as strings: ``strict_json``)."""
    json.dump(strict_json(obj), f, allow_nan=False, **kwargs)


# --- writing files: one way for every writer ------------------------------------------------------------
TEMP_SUFFIX = (
    ".sgdsde-tmp"  # every temporary file a writer makes ends so: <name>.<pid>@<host>.<random>.sgdsde-tmp
)
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
_TEMP_OWNER = re.compile(r"(\d+)@([A-Za-z0-9_-]+)\.[A-Za-z0-9_]+")  # <pid>@<host>.<mkstemp's random part>


def _temp_stem(name: str) -> str:
    """The recognisable start of a temporary file for the target ``name``: the name itself (a long one cut
    to 80 characters plus 8 hex digits of its hash, so the temporary's name stays within NAME_MAX)."""
    if len(name) <= 120:
        return name
    return name[:80] + "~" + hashlib.sha256(name.encode()).hexdigest()[:8]


def check_save_to(
    save_to, what: str = "save_to", suffixes=(".npz", ".json", ".ckpt.npz"), make_folder: bool = False
) -> str:
    """``save_to`` as a path prefix whose files ``save_to + suffix`` can be created; ValueError naming
    ``what`` for an empty prefix, one ending in a separator (it would write hidden ``.npz``/``.json`` files in
    that directory), an existing directory, a NUL byte, a name too long for the file system, a missing
    (``make_folder``: created) or non-writable directory, or a target file that is a directory."""
    if not isinstance(save_to, (str, os.PathLike)):
        raise ValueError(f"{what} must be a path, got {type(save_to).__name__}")
    path = os.fspath(save_to)
    if not isinstance(path, str):
        raise ValueError(f"{what} must be a text path, got {path!r}")
    if path.strip() == "":
        raise ValueError(f"{what} must name a file prefix (e.g. 'runs/a'), got the empty string {path!r}")
    if "\0" in path:
        raise ValueError(f"{what} must not contain a NUL byte, got {path!r}")
    name = os.path.basename(path)
    if name == "" or path.endswith((os.sep, "/")) or name in (".", ".."):
        raise ValueError(
            f"{what} is a path prefix (files {what} + '.npz', '.json'), not a directory: {path!r} would write "
            f"hidden files {path + '.npz'!r}; give a name, e.g. {os.path.join(path, 'run')!r}"
        )
    if os.path.isdir(path):
        raise ValueError(
            f"{what}: {path!r} is an existing directory; {what} is a file prefix: give a name inside it, "
            f"e.g. {os.path.join(path, 'run')!r}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if make_folder and not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise OSError(
                err.errno, f"{what}: cannot create the directory {folder!r}: {err.strerror}"
            ) from err
    if not os.path.isdir(folder):
        raise ValueError(f"{what}: directory {folder!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: directory {folder!r} is not writable")
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    longest = max(len((name + s).encode()) for s in suffixes)
    if longest > name_max:
        raise ValueError(
            f"{what}: the file name {name[:40]!r}… is too long: {longest} bytes with its suffix, the file "
            f"system allows {name_max}"
        )
    for s in suffixes:
        if os.path.isdir(path + s):
            raise ValueError(f"{what}: the target {path + s!r} is a directory")
    return path


def atomic_write(path: str, write, binary: bool, what: str = "save_to") -> None:
    """Write a file so that a crash at any moment leaves the previous file or the new one, never part of one:
    ``write(f)`` into a temporary file next to ``path`` (named ``<name>.<pid>@<host>.<random>.sgdsde-tmp``),
    fsync it, rename it onto ``path``, fsync the directory (so the rename survives a power loss too).

    A failure removes the temporary file and raises an OSError of the same kind (errno) whose message names
    ``what``, the path and the reason (a full disk, a directory made read-only, …). After a successful write,
    temporary files of the same target left by killed writers on this host (their process no longer exists)
    are removed; those of live processes or other hosts are left alone.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    stem = f"{_temp_stem(name)}."
    tmp = None
    try:
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{stem}{os.getpid()}@{_HOST}.", suffix=TEMP_SUFFIX)
            with os.fdopen(fd, "wb" if binary else "w") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_directory(folder)
        except ValueError as err:  # a NUL byte in the path
            if "null" in str(err):
                raise ValueError(f"{what}: cannot write {path!r}: {err}") from None
            raise
        except OSError as err:
            reason = err.strerror or str(err)
            raise OSError(err.errno, f"{what}: cannot write {path!r}: {reason}") from err
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass
    _remove_stale_temps(folder, stem)


def _fsync_directory(folder: str) -> None:
    """fsync a directory (its entries: a rename); a no-op where directories cannot be opened (Windows, a
    directory without read permission) or the file system does not support it (EINVAL)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as err:
        if os.name == "nt" or err.errno in (errno.EACCES, errno.EPERM):
            return  # the rename is done; a directory we may not open cannot be fsynced by us
        raise
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _remove_stale_temps(folder: str, stem: str) -> list[str]:
    """Remove the temporary files ``<stem><pid>@<this host>.*.sgdsde-tmp`` whose process is gone (a killed
    writer's); returns their paths. Best effort: nothing here raises."""
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        if not (entry.startswith(stem) and entry.endswith(TEMP_SUFFIX)):
            continue
        owner = _TEMP_OWNER.fullmatch(entry[len(stem) : -len(TEMP_SUFFIX)])
        if owner is None or owner[2] != _HOST:
            continue
        pid = int(owner[1])
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            os.remove(os.path.join(folder, entry))
            removed.append(os.path.join(folder, entry))
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (True when it cannot be told: the safe answer)."""
    if os.name == "nt":  # os.kill would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True
    return True


class RunningMoments:
    """Chan et al.'s parallel combination of (count, mean, M2) over path chunks, in float64."""

    def __init__(self):
        self.count: np.ndarray | None = None
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
        if self.count is None:  # nothing added: no M2 either
            return out
        for k, m2 in self.m2.items():
            shape = (-1,) + (1,) * (m2.ndim - 1)
            out[k] = m2 / np.maximum(self.count - 1, 1).reshape(shape)
        return out
