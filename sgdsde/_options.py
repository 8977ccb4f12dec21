"""Run options, grouped as diffrax groups SaveAt and step-size controllers: each object validates itself once
(``__check_init__``), and the three simulators take the same ones.

    simulate_sgd(problem, noise, theta0, *, lr, n_steps, key, ensemble=Ensemble(), record=Record(), output=Output())
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ._observables import resolve
from ._results import check_save_to
from ._validation import check_dtype, check_int_range


def _optional_int(name: str, value, low: int):
    return None if value is None else check_int_range(name, value, low)


class Ensemble(eqx.Module):
    """How many paths, in which chunks, on which devices, in which precision.

    Args:
        n_paths: ensemble size N (≥ 1).
        chunk_size: paths per jitted call (memory O(chunk·d)); None: all at once.
        devices: None (one device), an int k (the first k of ``jax.devices()``) or a list of devices: each
            chunk's paths are sharded across them (n_paths and chunk_size multiples of their number).
        dtype: float32 or float64; None: the problem's dtype (never a silent downcast).
    """

    n_paths: int = 1
    chunk_size: int | None = None
    devices: Any = None
    dtype: Any = None

    def __check_init__(self):
        check_int_range("n_paths", self.n_paths, 1)
        _optional_int("chunk_size", self.chunk_size, 1)
        if self.dtype is not None:
            check_dtype(self.dtype)
        d = self.devices
        if d is not None and not (isinstance(d, (int, np.integer)) and not isinstance(d, bool)):
            if isinstance(d, (str, bytes)) or not isinstance(d, Sequence) or not d:
                raise ValueError("devices must be None, an int or a non-empty list of jax devices")
            if not all(isinstance(dv, jax.Device) for dv in d):
                raise ValueError("devices must be None, an int or a non-empty list of jax devices")

    @property
    def chunk(self) -> int:
        return self.n_paths if self.chunk_size is None else self.chunk_size

    def resolved_dtype(self, default) -> np.dtype:
        """``dtype``, or ``default`` (the problem's) when None, checked (float64 needs jax_enable_x64)."""
        return check_dtype(default if self.dtype is None else self.dtype)


class Record(eqx.Module):
    """What is recorded, and how often.

    Args:
        every: record every k steps and at the end (the last interval is shorter when k does not divide
            n_steps); None: the start and the end only.
        observables: names of built-ins or a mapping name → f(problem, θ); None: loss and ‖θ‖² (‖θ‖² alone
            for an SDE without a problem).
        n_saved_paths: keep θ of this many whole paths at each record (≤ n_paths).
    """

    every: int | None = None
    observables: Sequence[str] | Mapping[str, Any] | None = None
    n_saved_paths: int = 0

    def __check_init__(self):
        _optional_int("every", self.every, 1)
        check_int_range("n_saved_paths", self.n_saved_paths, 0)
        if self.observables is not None:
            if isinstance(self.observables, str):
                raise ValueError(
                    f"observables must be a list of names or a mapping, got the string {self.observables!r}"
                )
            resolve(self.observables)


class Output(eqx.Module):
    """Where results go and how the run reports itself.

    Args:
        save_to: path prefix; finished chunks are saved there (npz + json) as they complete. Its directory
            must exist and be writable, and it must name a file in it (checked before any compute: '' or
            'dir/' would write hidden files, a NUL byte or a name too long cannot be written; ValueError).
            A write that fails later (full disk, directory made read-only) raises an OSError naming
            save_to, the file and the reason, and leaves no temporary file.
        progress: print a progress line on stderr.
        label: the method's name in reports.
        checkpoint_every: with ``save_to``, write the whole run state to ``save_to + ".ckpt.npz"`` every that
            many records (and after each chunk), atomically; it must divide the number of whole record
            intervals.
        resume: continue from a checkpoint, bit for bit as if never interrupted: a checkpoint path, or True
            for ``save_to``'s own (started afresh when there is none yet). A checkpoint of another run
            (problem, noise, options, key, package versions) or a damaged file is refused.
    """

    save_to: str | None = None
    progress: bool = False
    label: str | None = None
    checkpoint_every: int | None = None
    resume: bool | str | None = None

    def __check_init__(self):
        if self.save_to is not None:
            check_save_to(self.save_to)
        if not isinstance(self.progress, (bool, np.bool_)):
            raise ValueError(f"progress must be True or False, got {self.progress!r}")
        if self.label is not None and not isinstance(self.label, str):
            raise ValueError(f"label must be a string, got {type(self.label).__name__}")
        _optional_int("checkpoint_every", self.checkpoint_every, 1)
        if self.checkpoint_every is not None and self.save_to is None:
            raise ValueError("checkpoint_every needs save_to (the checkpoint is written next to the result)")
        r = self.resume
        if r is not None and not isinstance(r, (bool, str, os.PathLike)):
            raise ValueError(f"resume must be None, True or a checkpoint path, got {r!r}")
        if r is True and self.save_to is None:
            raise ValueError("resume=True resumes save_to's checkpoint; give save_to (or a checkpoint path)")


def check_options(ensemble, record, output) -> None:
    """The simulators' option arguments are the option objects (a flat keyword or a dict is refused by name)."""
    for name, value, cls in (
        ("ensemble", ensemble, Ensemble),
        ("record", record, Record),
        ("output", output, Output),
    ):
        if not isinstance(value, cls):
            raise ValueError(f"{name} must be a sgdsde.{cls.__name__}(...), got {type(value).__name__}")
