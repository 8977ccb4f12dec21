"""Resume from any point (issue 14, item 3): checkpoints of the whole engine state, written atomically; a run
killed at random records and resumed equals the uninterrupted run bit for bit; damaged or foreign checkpoints
are refused by name."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import sgdsde as sd
from sgdsde import _ensemble, _progress  # internal: patched to simulate kills and count calls


def _problem():
    X = np.random.default_rng(1).normal(size=(10, 3))
    return sd.Problem(sd.DiagonalLinearNetwork(3, alpha=0.8), X, X @ np.array([1.0, -0.5, 0.2]))


def _run(prefix, sigma=1.0, every=5, checkpoint_every=2, observables=None, **output):
    problem = _problem()
    return sd.simulate_sgd(
        problem,
        sd.LabelNoise(sigma, 2, "shuffle"),
        problem.model.init(),
        lr=0.05,
        n_steps=40,
        key=3,
        ensemble=sd.Ensemble(n_paths=6, chunk_size=3),
        record=sd.Record(every=every, n_saved_paths=6, observables=observables),
        output=sd.Output(save_to=str(prefix), checkpoint_every=checkpoint_every, **output),
    )


def _assert_same(a, b):
    np.testing.assert_array_equal(a.paths, b.paths)
    np.testing.assert_array_equal(a.count, b.count)
    for k in a.mean:
        np.testing.assert_array_equal(a.mean[k], b.mean[k])
        np.testing.assert_array_equal(a.var[k], b.var[k])
    assert a.complete and b.complete and a.n_paths == b.n_paths


def _interrupted(monkeypatch, run, when):
    """``run()`` with Ctrl-C raised at the first progress update where ``when(calls, done)`` holds: (what it
    returned, its warnings), or (None, []) when the interrupt came before any chunk finished."""
    original = _progress.Progress.update
    calls = {"n": 0}

    def update(self, done):
        calls["n"] += 1
        if when(calls["n"], done):
            raise KeyboardInterrupt
        original(self, done)

    monkeypatch.setattr(_progress.Progress, "update", update)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return run(), caught
    except KeyboardInterrupt:
        return None, []
    finally:
        monkeypatch.setattr(_progress.Progress, "update", original)


@pytest.mark.parametrize("stop_after", [1, 4, 5])
def test_interrupted_run_resumes_bit_for_bit(tmp_path, monkeypatch, stop_after):
    """Ctrl-C after the ``stop_after``-th block of 4 per chunk (inside chunk 0; after its last block, before
    the chunk is added up; inside chunk 1) leaves a checkpoint; resume=True continues it to exactly the
    uninterrupted run's numbers."""
    reference = _run(tmp_path / "ref")
    prefix = tmp_path / "run"
    partial, caught = _interrupted(
        monkeypatch, lambda: _run(prefix, progress=True), lambda n, _: n == stop_after
    )
    if partial is not None:  # a finished chunk came back, the rest is in the checkpoint
        assert not partial.complete
        assert "interrupted; returning the 3 finished paths" in str(caught[0].message)
    assert os.path.isfile(str(prefix) + ".ckpt.npz")
    _assert_same(reference, _run(prefix, resume=True))
    # resuming a finished run returns it as it is
    _assert_same(reference, _run(prefix, resume=True))


def test_a_checkpoint_of_another_run_or_version_is_refused(tmp_path, monkeypatch):
    prefix = tmp_path / "run"
    _run(prefix)
    ckpt = str(prefix) + ".ckpt.npz"
    with pytest.raises(
        ValueError, match="resume: the checkpoint .* was made by another run: configs, data differ"
    ):
        _run(prefix, sigma=2.0, resume=True)
    with pytest.raises(ValueError, match="resume: .* another run: .*record"):
        _run(prefix, every=4, resume=ckpt)
    versions = _ensemble.package_versions()
    monkeypatch.setattr(_ensemble, "package_versions", lambda: dict(versions, sgdsde="0.0.0-other"))
    with pytest.raises(ValueError, match=r"versions differ \(versions: checkpoint .*"):
        _run(prefix, resume=True)
    with pytest.raises(ValueError, match="resume: no checkpoint at"):
        _run(prefix, resume=str(tmp_path / "missing.ckpt.npz"))


def test_a_checkpoint_recorded_with_other_observable_settings_is_refused(tmp_path):
    """The fingerprint holds an observable's settings, not only its name: a run recording Sharpness with 4
    Lanczos iterations does not resume one recorded with 3 (other numbers under the name "sharpness")."""
    prefix = tmp_path / "run"
    _run(prefix, observables=("loss", sd.Sharpness(3)))
    with pytest.raises(ValueError, match="resume: .* another run: .*record"):
        _run(prefix, observables=("loss", sd.Sharpness(4)), resume=True)
    with pytest.raises(ValueError, match="resume: .* another run: .*record"):
        _run(prefix, observables=("loss", sd.Sharpness(3, key=1)), resume=True)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "not_zip"])
def test_a_damaged_checkpoint_is_refused(tmp_path, damage):
    """A truncated file, a flipped byte in an array (zip CRC), an empty file or a foreign file is refused
    with a clear error, never resumed from."""
    prefix = tmp_path / "run"
    _run(prefix)
    ckpt = str(prefix) + ".ckpt.npz"
    with open(ckpt, "rb") as f:
        data = f.read()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        i = data.index(b"saved.npy") + 200  # inside the saved paths' array data
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    elif damage == "empty":
        data = b""
    else:
        data = b"not a checkpoint at all"
    with open(ckpt, "wb") as f:
        f.write(data)
    with pytest.raises(ValueError, match="resume: the checkpoint .* is truncated or corrupted"):
        _run(prefix, resume=True)


def test_checkpoint_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every needs save_to"):
        sd.Output(checkpoint_every=2)
    with pytest.raises(ValueError, match="checkpoint_every"):
        sd.Output(save_to=str(tmp_path / "a"), checkpoint_every=0)
    with pytest.raises(ValueError, match="resume=True resumes save_to"):
        sd.Output(resume=True)
    with pytest.raises(ValueError, match="resume must be"):
        sd.Output(save_to=str(tmp_path / "a"), resume=3)
    with pytest.raises(
        ValueError, match="checkpoint_every=3 must divide the number of whole record intervals, 8"
    ):
        problem = _problem()
        sd.simulate_sgd(
            problem,
            None,
            problem.model.init(),
            lr=0.05,
            n_steps=40,
            key=0,
            record=sd.Record(every=5),
            output=sd.Output(save_to=str(tmp_path / "b"), checkpoint_every=3),
        )


CHILD = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import sgdsde as sd
    X = np.random.default_rng(2).normal(size=(16, 4))
    problem = sd.Problem(sd.DiagonalLinearNetwork(4, alpha=0.8), X, X @ np.array([1.0, -0.5, 0.2, 0.0]))
    sd.simulate_sgd(
        problem, sd.LabelNoise(0.8, 4, "shuffle"), problem.model.init(), lr=0.02, n_steps=40 * 400, key=11,
        ensemble=sd.Ensemble(n_paths=8, chunk_size=4), record=sd.Record(every=400, n_saved_paths=8),
        output=sd.Output(save_to=sys.argv[1], checkpoint_every=1, resume=True),
    )
    """
)


def _position(ckpt):
    try:
        with np.load(ckpt) as z:
            meta = json.loads(str(z["__meta__"]))["position"]
        return meta["chunk"] * 40 + meta["records_done"]
    except Exception:  # noqa: BLE001 (not written yet)
        return -1


def test_sigkill_twice_at_random_records_then_resume_is_bitwise(tmp_path):
    """A run in a subprocess is killed with SIGKILL twice, at random record indices (one in each chunk),
    resumed in a new subprocess after the first kill and in this process after the second; the finished
    result equals an uninterrupted run bit for bit."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    prefix = str(tmp_path / "killed")
    ckpt = prefix + ".ckpt.npz"
    rng = np.random.default_rng(20261129)
    targets = [int(rng.integers(3, 30)), 40 + int(rng.integers(3, 30))]  # records: chunk 0, then chunk 1
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    killed_at = []
    for target in targets:
        proc = subprocess.Popen([sys.executable, str(script), prefix], env=env)
        deadline = time.time() + 120
        # the checkpoint is re-read only when its stat changes (each record replaces it): polling by np.load
        # every 2 ms cost this process seconds of CPU while the child imported JAX; the kill lands as promptly
        seen, position = None, -1
        while position < target and proc.poll() is None and time.time() < deadline:
            try:
                st = os.stat(ckpt)
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                stamp = None
            if stamp is not None and stamp != seen:
                position = _position(ckpt)
                seen = stamp if position >= 0 else None  # an unreadable file is read again
            if position < target:
                time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(_position(ckpt))
        assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    assert 0 < killed_at[0] < 40 < killed_at[1] < 80, killed_at
    exec(CHILD.replace("sys.argv[1]", repr(prefix)), {})  # resume to the end, here
    resumed = sd.EnsembleResult.load(prefix)

    code = CHILD.replace("sys.argv[1]", repr(str(tmp_path / "straight"))).replace(
        "resume=True", "resume=None"
    )
    # the uninterrupted reference runs here too (saving a JAX import and a compile, ~6 s CPU): the resumed
    # result's records up to the second kill were computed in the two killed children, so the comparison
    # still spans processes
    exec(code, {})
    _assert_same(sd.EnsembleResult.load(str(tmp_path / "straight")), resumed)


def test_interrupted_sweep_resumes_bit_for_bit(tmp_path, monkeypatch):
    """A sweep group checkpoints all its points' states in one file; interrupted inside its first chunk and
    resumed, every point equals the uninterrupted sweep's."""
    problem = _problem()

    def run(prefix, **output):
        return sd.sweep(
            sd.simulate_sgd,
            problem,
            sd.LabelNoise(1.0, 2, "shuffle"),
            problem.model.init(),
            grid={"lr": [0.03, 0.05], "sigma": [0.5, 1.5]},
            n_steps=40,
            key=3,
            ensemble=sd.Ensemble(n_paths=6, chunk_size=3),
            record=sd.Record(every=5, n_saved_paths=6),
            output=sd.Output(save_to=str(prefix), checkpoint_every=2, **output),
        )

    reference = run(tmp_path / "ref")
    assert (
        _interrupted(monkeypatch, lambda: run(tmp_path / "cut", progress=True), lambda n, _: n == 2)[0]
        is None
    )
    assert os.path.isfile(str(tmp_path / "cut") + ".group0.ckpt.npz")
    resumed = run(tmp_path / "cut", resume=True)
    for a, b in zip(reference.results, resumed.results, strict=True):
        _assert_same(a, b)
    assert sd.EnsembleResult.load(str(tmp_path / "cut") + ".point3").n_paths == 6


def test_a_schedule_resumes_and_another_schedule_is_refused(tmp_path, monkeypatch):
    """A step-decay run (the schedule evaluated inside the scan) resumes bit for bit; the same checkpoint
    with another boundary is refused by its lr fingerprint."""
    problem = _problem()

    def run(prefix, boundary=20, **output):
        return sd.simulate_sgd(
            problem,
            sd.LabelNoise(1.0, 2),
            problem.model.init(),
            lr=sd.StepDecayLR(0.08, [boundary], 0.25),
            n_steps=40,
            key=3,
            ensemble=sd.Ensemble(n_paths=4),
            record=sd.Record(every=5, n_saved_paths=4),
            output=sd.Output(save_to=str(prefix), checkpoint_every=2, **output),
        )

    reference = run(tmp_path / "ref")
    cut = _interrupted(
        monkeypatch, lambda: run(tmp_path / "cut", progress=True), lambda _, done: done >= 20 * 4
    )
    assert cut[0] is None
    with pytest.raises(ValueError, match="another run: .*lr"):
        run(tmp_path / "cut", boundary=30, resume=True)
    _assert_same(reference, run(tmp_path / "cut", resume=True))
    np.testing.assert_allclose(reference.times[-1], 20 * 0.08 + 20 * 0.02, rtol=1e-15)


def test_label_and_checkpoint_every_are_cosmetic_on_resume(tmp_path, monkeypatch):
    """The label (the method's name) and checkpoint_every do not enter a checkpoint's fingerprint: a run
    interrupted after its first block of 2 records resumes under another label with checkpoint_every 8
    (the remaining calls re-cut at record 2) to exactly the uninterrupted run's numbers."""
    import shutil

    reference = _run(tmp_path / "ref")
    prefix = tmp_path / "cut"
    assert _interrupted(monkeypatch, lambda: _run(prefix, progress=True), lambda n, _: n == 1)[0] is None
    ckpt = str(prefix) + ".ckpt.npz"
    with np.load(ckpt) as z:
        assert json.loads(str(z["__meta__"]))["position"]["records_done"] == 2
    for every in (8,):
        copy = str(tmp_path / f"copy{every}.ckpt.npz")
        shutil.copy(ckpt, copy)
        resumed = _run(tmp_path / f"resumed{every}", checkpoint_every=every, label="renamed", resume=copy)
        _assert_same(reference, resumed)
        assert resumed.method == "renamed"


def _rewrite(ckpt, arrays=None, meta=None):
    """Re-zip a checkpoint with some arrays or its meta replaced (what a hand edit or a foreign tool does)."""
    with np.load(ckpt) as z:
        data = {k: z[k] for k in z.files}
    old = json.loads(str(data["__meta__"]))
    data.update(arrays or {})
    data["__meta__"] = np.array(json.dumps(meta(old) if meta else old))
    np.savez(ckpt, **data)


def test_a_rezipped_checkpoint_with_wrong_fields_is_refused(tmp_path):
    """A checkpoint re-zipped with a wrong-shaped counter (which resumed silently), a wrong dtype, an array
    too many, or a manifest edited to match but inconsistent, or a position that does not fit the run, is
    refused by name; the intact file resumes."""
    prefix = tmp_path / "run"
    reference = _run(prefix)
    ckpt = str(prefix) + ".ckpt.npz"
    pristine = pathlib.Path(ckpt).read_bytes()

    def restore():
        pathlib.Path(ckpt).write_bytes(pristine)

    with np.load(ckpt) as z:
        count = z["acc0/count"]
    R = len(count)

    def grow_count(meta):
        meta["manifest"]["acc0/count"][1] = [len(count) + 1]
        return meta

    def far_position(meta):
        meta["position"]["chunk"] = 99
        return meta

    for arrays, meta, match in [
        (
            {"acc0/count": np.append(count, 1.0)},
            None,
            rf"acc0/count is float64\[{R + 1}\], written as <f8\[{R}\]",
        ),
        ({"acc0/count": count.astype(np.float32)}, None, "acc0/count is float32"),
        ({"extra": np.zeros(2)}, None, r"arrays \['extra'\] are not in its manifest"),
        ({"acc0/count": np.append(count, 1.0)}, grow_count, rf"acc0/mean/\w+ has \({R},\) records where"),
        (None, far_position, "its position .* does not fit this run"),
    ]:
        _rewrite(ckpt, arrays, meta)
        with pytest.raises(ValueError, match=rf"resume: the checkpoint .* is damaged: {match}"):
            _run(prefix, resume=True)
        restore()
    _assert_same(reference, _run(prefix, resume=True))


def test_resume_refuses_other_function_sde_params(tmp_path):
    """A FunctionSDE's params are part of the run: a resume with another value is refused by the fingerprint,
    the same value resumes (its params are NumPy leaves, which the digest must read too)."""
    import jax.numpy as jnp

    def run(v, **output):
        sde = sd.FunctionSDE(
            lambda th, eta, p: -p["v"] * th,
            lambda th, p: jnp.ones((1, 1), th.dtype),
            noise_type="additive",
            params={"v": v},
        )
        return sd.simulate_sde(
            sde,
            None,
            np.array([1.0]),
            lr=0.01,
            n_steps=8,
            key=0,
            record=sd.Record(every=2),
            output=sd.Output(save_to=str(tmp_path / "fsde"), checkpoint_every=1, **output),
        )

    first = run(1.0)
    _assert_same(first, run(1.0, resume=True))
    with pytest.raises(ValueError, match="another run"):
        run(5.0, resume=True)
