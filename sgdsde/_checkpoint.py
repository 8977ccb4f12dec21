"""Checkpoints of a running ensemble: the whole engine state in one atomically written ``.ckpt.npz``.

A checkpoint holds θ and the sampler/solver state of every path of the current chunk, the running moments
and records of the finished chunks, the divergence and event records, and the position (chunk, block) in
the deterministic key sequence (step k of chunk c always draws from fold_in(run key of c, k)), plus a
fingerprint of the run (configuration, problem and noise arrays, θ₀, key, record plan, package versions).
Resuming from it continues bit for bit; a checkpoint of another run, or a damaged file, is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import jax
import numpy as np

from ._results import _atomic_write, _jsonable

FORMAT = 1


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
    leaves = [x for x in jax.tree.leaves(stepper) if isinstance(x, jax.Array)]
    return digest(*[np.asarray(x) for x in leaves if x.is_fully_addressable or x.is_fully_replicated])


def fingerprint_json(fingerprint: dict) -> str:
    return json.dumps(fingerprint, sort_keys=True, default=_jsonable)


def save_checkpoint(path: str, fingerprint: dict, position: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` with the run's fingerprint and ``position`` to ``path`` (temporary file, fsync,
    rename: a kill at any moment leaves the previous checkpoint or this one, never half of one)."""
    meta = {"format": FORMAT, "fingerprint": fingerprint, "position": position}
    payload = dict(arrays, __meta__=np.array(json.dumps(meta, sort_keys=True, default=_jsonable)))
    _atomic_write(path, lambda f: np.savez(f, **payload), binary=True)


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
    if meta.get("format") != FORMAT:
        raise ValueError(f"resume: {path!r} has checkpoint format {meta.get('format')}, expected {FORMAT}")
    saved = json.loads(fingerprint_json(meta["fingerprint"]))
    wanted = json.loads(fingerprint_json(fingerprint))
    if saved != wanted:
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        first = diff[0]
        raise ValueError(
            f"resume: the checkpoint {path!r} was made by another run: {', '.join(diff)} differ "
            f"({first}: checkpoint {_short(saved.get(first))}, this run {_short(wanted.get(first))})"
        )
    return meta["position"], arrays


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=_jsonable)
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
