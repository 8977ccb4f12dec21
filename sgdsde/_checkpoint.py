"""Checkpoints of a running ensemble: the whole engine state in one atomically written ``.ckpt.npz``.

A checkpoint holds θ and the sampler/solver state of every path of the current chunk, the running moments
and records of the finished chunks, the divergence and event records, and the position (chunk, records done) in
the deterministic key sequence (step k of chunk c always draws from fold_in(run key of c, k)), plus a
fingerprint of the run (configuration, problem and noise arrays, θ₀, key, recording, package versions; not
the label or checkpoint_every, which a resume may change) and a manifest of every array's dtype and shape.
Resuming from it continues bit for bit; a checkpoint of another run, or a damaged file, is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Any, NoReturn

import jax
import numpy as np

from ._results import atomic_write, strict_json

FORMAT = 2  # 2: a manifest of the arrays, the position by records done (issue 26)


def checkpoint_path(save_to: str) -> str:
    """The checkpoint file of a run saved to the prefix ``save_to``."""
    return os.fspath(save_to) + ".ckpt.npz"


def digest(*arrays) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes (the problem, noise and θ₀ a run was made with)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def stepper_digest(stepper) -> str:
    """The digest of a stepper's array leaves (problem data, noise scales): what a config string omits."""
    # every array leaf, NumPy too (a FunctionSDE's params): a leaf missing here would let a resume with other
    # numbers pass the fingerprint
    leaves = [x for x in jax.tree.leaves(stepper) if isinstance(x, jax.Array | np.ndarray | np.generic)]
    return digest(
        *[
            np.asarray(x)
            for x in leaves
            if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated
        ]
    )


def fingerprint_json(fingerprint: dict) -> str:
    return json.dumps(strict_json(fingerprint), sort_keys=True, allow_nan=False)


def save_checkpoint(path: str, fingerprint: dict, position: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` with the run's fingerprint, ``position`` and a manifest of every array's dtype and
    shape to ``path`` with ``atomic_write`` (temporary file, fsync, rename, fsync of the directory: a kill or
    a power loss at any moment leaves the previous checkpoint or this one, never half of one)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    manifest = {k: [v.dtype.str, list(v.shape)] for k, v in arrays.items()}
    meta = {"format": FORMAT, "fingerprint": fingerprint, "position": position, "manifest": manifest}
    payload = dict(arrays, __meta__=np.array(json.dumps(strict_json(meta), sort_keys=True, allow_nan=False)))
    # plain arrays and a JSON string, never pickles (np.load refuses them on resume); naming the flag also
    # keeps it out of the arrays' names
    atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **payload), binary=True, what="save_to")


def load_checkpoint(path: str, fingerprint: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """(position, arrays) of the checkpoint at ``path``; ValueError naming ``resume`` if the file is missing,
    truncated or corrupted, or was made by another run (configuration, data, key or package versions)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"resume: no checkpoint at {path!r}")
    try:
        # np.load's default refuses pickled objects: a checkpoint holds plain arrays and a JSON string
        with open(path, "rb") as fh, np.load(fh) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(
            f"resume: the checkpoint {path!r} is truncated or corrupted ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"resume: {path!r} has checkpoint format {found}, expected {FORMAT}")
    _check_fields(path, meta, arrays)
    saved = json.loads(fingerprint_json(meta["fingerprint"]))
    wanted = json.loads(fingerprint_json(fingerprint))
    if saved != wanted:
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        first = diff[0]
        where, a, b = _first_difference(first, saved.get(first), wanted.get(first))
        at = f"; first at {where}: checkpoint {_short(a)}, this run {_short(b)}" if where != first else ""
        raise ValueError(
            f"resume: the checkpoint {path!r} was made by another run: {', '.join(diff)} differ "
            f"({first}: checkpoint {_short(saved.get(first))}, this run {_short(wanted.get(first))}{at})"
        )
    return meta["position"], arrays


POSITION = ("chunk", "done_paths", "records_done")  # the integer fields of a checkpoint's position


def _check_fields(path: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """ValueError naming ``resume`` unless the checkpoint's fields are those it was written with: every array
    named in its manifest with that dtype and shape and no other, the position's counters non-negative
    integers, and the moments' arrays of one length (a re-zipped or hand-edited file is refused)."""

    def bad(why: str) -> NoReturn:
        raise ValueError(f"resume: the checkpoint {path!r} is damaged: {why}")

    manifest, position = meta.get("manifest"), meta.get("position")
    if not isinstance(manifest, dict) or not isinstance(meta.get("fingerprint"), dict):
        bad("no manifest or fingerprint")
    if set(manifest) != set(arrays):
        extra, missing = sorted(set(arrays) - set(manifest)), sorted(set(manifest) - set(arrays))
        bad(f"arrays {extra} are not in its manifest, {missing} are missing")
    for name, v in arrays.items():
        want = manifest[name]
        if [v.dtype.str, list(v.shape)] != want:
            bad(f"{name} is {v.dtype}{list(v.shape)}, written as {want[0]}{want[1]}")
    if not isinstance(position, dict) or not all(
        type(position.get(k)) is int and position[k] >= 0 for k in POSITION
    ):
        bad(f"its position {position!r} does not hold the counters {list(POSITION)} (integers >= 0)")
    if not isinstance(position.get("solver_stats"), list):
        bad("its position lacks the solver statistics")
    for prefix in sorted({k.split("/", 1)[0] for k in arrays if k.startswith("acc")}):
        count = arrays.get(f"{prefix}/count")
        if count is not None:
            if count.ndim != 1:
                bad(f"{prefix}/count is not 1-D")
            for k, v in arrays.items():
                if k.startswith((f"{prefix}/mean/", f"{prefix}/m2/")) and v.shape[:1] != count.shape:
                    bad(f"{k} has {v.shape[:1]} records where {prefix}/count has {count.shape}")
        a, b = arrays.get(f"{prefix}/bad_paths"), arrays.get(f"{prefix}/bad_steps")
        if a is None or b is None or a.ndim != 1 or a.shape != b.shape:
            bad(f"{prefix}/bad_paths and bad_steps are not two 1-D arrays of one length")


def _first_difference(path: str, a, b) -> tuple[str, Any, Any]:
    """The path (``configs[0].optimizer``) and the two values of the first entry where ``a`` and ``b`` differ,
    descending into dicts (sorted keys) and lists of one length; the whole values where they do not nest."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(f"{path}.{k}", a.get(k), b.get(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(f"{path}[{i}]", x, y)
    return path, a, b


def _short(value) -> str:
    text = json.dumps(strict_json(value), sort_keys=True)
    return text if len(text) <= 200 else text[:200] + "…"


def flatten(prefix: str, tree) -> dict[str, np.ndarray]:
    """Nested dicts of arrays as {"prefix/a/b": array}."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(f"{prefix}/{k}", v))
        return out
    return {prefix: np.asarray(tree)}


def unflatten(prefix: str, arrays: dict[str, np.ndarray]) -> dict:
    """The inverse of ``flatten`` for the entries under ``prefix``."""
    out: dict = {}
    for name, v in arrays.items():
        if not name.startswith(prefix + "/"):
            continue
        *parents, leaf = name[len(prefix) + 1 :].split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out
