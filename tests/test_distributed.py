"""Many hosts (issue 14, item 4): a run over 2 processes × 2 CPU devices on jax.distributed (gloo collectives
over 127.0.0.1) gives the paths of a one-process run on 4 devices bit for bit and its statistics to rounding;
only process 0 writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import sgdsde as sd

CHILD = textwrap.dedent(
    """
    import os, sys
    pid, nproc, port, out, ndev = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ndev}"
    import jax
    jax.config.update("jax_enable_x64", True)
    if nproc > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    import numpy as np
    import sgdsde as sd
    X = np.random.default_rng(3).normal(size=(12, 4))
    problem = sd.Problem(sd.DiagonalLinearNetwork(4, alpha=0.8), X, X @ np.array([1.0, -0.5, 0.2, 0.0]))
    res = sd.simulate_sgd(
        problem, sd.LabelNoise(0.8, 3, "shuffle"), problem.model.init(), lr=0.03, n_steps=60, key=5,
        ensemble=sd.Ensemble(n_paths=16, chunk_size=8, devices=None if nproc > 1 else ndev),
        record=sd.Record(every=20, n_saved_paths=16),
        output=sd.Output(save_to=out, progress=True),  # every process is given the same prefix
    )
    print("devices", res.config["devices"], "paths", res.n_paths, flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    port = str(_free_port())
    multi = str(tmp_path / "multi")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(pid), "2", port, multi, "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in (0, 1)
    ]
    single = str(tmp_path / "single")
    subprocess.run(
        [sys.executable, str(script), "0", "1", "0", single, "4"], env=env, check=True, timeout=300
    )
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert "devices 4 paths 16" in out
    assert "100.0%" in outs[0][1] and "100.0%" not in outs[1][1]  # progress from process 0 only
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["child.py", "multi.json", "multi.npz", "single.json", "single.npz"]
    )  # one result, written once
    a, b = sd.EnsembleResult.load(multi), sd.EnsembleResult.load(single)
    np.testing.assert_array_equal(a.paths, b.paths)
    np.testing.assert_array_equal(a.count, b.count)
    for k in a.mean:
        # the cross-process all-reduce sums the four shards in another order than one process does:
        # equal to rounding (a few ulps of O(1) values; 1e-12 relative)
        np.testing.assert_allclose(a.mean[k], b.mean[k], rtol=1e-12, atol=0)
        np.testing.assert_allclose(a.var[k], b.var[k], rtol=1e-10, atol=1e-18)


def test_paths_not_divisible_by_the_processes_is_refused(monkeypatch):
    from sgdsde import _ensemble  # internal: the sharding helper under test

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(
        ValueError, match=r"n_paths=5 and chunk_size=5 must be multiples of the number of processes \(2\)"
    ):
        _ensemble._path_sharding(None, 5, 5)
    with pytest.raises(ValueError, match="devices must include devices of all 2 processes"):
        _ensemble._path_sharding(None, 4, 4)
