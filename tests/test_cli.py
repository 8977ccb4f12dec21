"""The main job end to end, CI-sized."""

import json

import numpy as np
import pytest

import sgdsde as sd
from sgdsde import cli


def test_main_job_quick(tmp_path, capsys):
    """The default flagship at reduced size: table, figure, summary and reloadable results are written."""
    # d = 50 (still > n = 40: underdetermined, as the default d = 100): the L + λR solves, run once for the job
    # and again on --reload, cost O(d³) per Newton step; 50 s -> 41 s CPU, the compiles unchanged
    code = cli.main(
        [
            "--steps",
            "400",
            "--paths",
            "8",
            "--record-every",
            "100",
            "--dim",
            "50",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    for name in ("GD", "label-noise SGD", "label-noise SDE", "spherical-noise GD", "R_trace_log", "verdict"):
        assert name in out
    assert "±" in out
    assert (tmp_path / "test_error.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["batch_size"] == 40 and np.isclose(summary["config"]["sigma"], np.sqrt(40))
    assert "jax" in summary["versions"] and np.isclose(summary["verdict"]["prediction"]["lam"], 0.01)
    res = sd.EnsembleResult.load(str(tmp_path / "run_label"))
    assert res.n_paths == 8 and res.steps[-1] == 400 and res.complete
    # the saved job reloads and reports the same verdict without simulating
    assert cli.main(["--reload", "--out", str(tmp_path)]) == 0
    again = capsys.readouterr().out
    assert again.split("wrote")[0].strip() == out.split("wrote")[0].strip()


def test_divergence_is_reported_not_tabulated(tmp_path, capsys):
    """A diverging run is warned about (past the stability limit, then the divergence) and reported as
    DIVERGED, never tabulated as numbers; its summary.json is strict JSON."""
    with pytest.warns(RuntimeWarning) as caught:
        code = cli.main(
            [
                "--lr",
                "0.5",
                "--steps",
                "200",
                "--paths",
                "4",
                "--record-every",
                "100",
                "--quiet",
                "--methods",
                "gd",
                "--out",
                str(tmp_path),
            ]
        )
    messages = " | ".join(str(w.message) for w in caught)
    assert "stability limit" in messages and "paths diverged" in messages
    assert code == 0
    out = capsys.readouterr().out
    assert "DIVERGED" in out and "nan" not in out.lower()

    # summary.json is strict JSON (it held bare NaN): the diverged mean is the string "nan"
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert summary["results"]["GD"]["final"]["train loss"]["mean"] == "nan"


def test_bad_option_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["--batch-size", "41", "--quiet", "--out", str(tmp_path)]) == 2
    assert "batch_size must be in [1, 40]" in capsys.readouterr().err
    assert cli.main(["--lr", "nan", "--quiet", "--out", str(tmp_path)]) == 2


def test_interrupted_job_leaves_a_summary_that_reloads(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the third method (the SDE): exit code 130, summary.json (written atomically) lists the
    two finished methods and says the job is incomplete, and --reload reports exactly those two."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sd, "simulate_sde", interrupted)
    argv = ["--steps", "200", "--paths", "4", "--record-every", "100", "--quiet", "--out", str(tmp_path)]
    # a small problem (as the resume test's): --reload solves L + λR for the finished label-noise run, O(d³)
    argv += ["--dim", "20", "--n-samples", "10", "--sparsity", "2"]
    assert cli.main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["finished"] == ["gd", "label"] and not summary["complete"]
    assert not (tmp_path / "summary.json.tmp").exists()
    assert cli.main(["--reload", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "GD" in out and "label-noise SGD" in out and "label-noise SDE" not in out


def test_reload_reuses_the_saved_prediction_unless_it_is_for_another_configuration(
    tmp_path, capsys, monkeypatch
):
    """--reload prints the job's report from the prediction summary.json holds, without solving L + λR again
    (predict is made to fail); a saved prediction for another η is not used: it is solved again, and the
    report is the job's all the same (JSON keeps floats exactly)."""
    import sgdsde.implicit

    argv = ["--steps", "200", "--paths", "4", "--record-every", "100", "--quiet", "--methods", "label"]
    argv += ["--dim", "20", "--n-samples", "10", "--sparsity", "2", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    job = capsys.readouterr().out.split("wrote")[0].strip()
    assert "prediction for" in job and "R_trace_log" in job
    original, calls = sgdsde.implicit.predict, []

    def refuse(*args, **kwargs):
        raise AssertionError("--reload solved L + lambda R again")

    monkeypatch.setattr(sgdsde.implicit, "predict", refuse)
    assert cli.main(["--reload", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == job
    path = tmp_path / "summary.json"
    summary = json.loads(path.read_text())
    summary["verdict"]["prediction"]["lr"] *= 2  # a prediction for another η: solved again
    path.write_text(json.dumps(summary))
    monkeypatch.setattr(sgdsde.implicit, "predict", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert cli.main(["--reload", "--out", str(tmp_path)]) == 0
    assert calls == [1] and capsys.readouterr().out.strip() == job


def test_reload_without_a_job_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["--reload", "--out", str(tmp_path / "none")]) == 2
    assert "no summary.json" in capsys.readouterr().err


def test_killed_job_resumes_from_its_checkpoints(tmp_path, capsys, monkeypatch):
    """Ctrl-C in the middle of the SDE run (after its second record): `sgdsde --resume DIR` reloads the two
    finished methods, continues the SDE from its checkpoint and runs the rest; every final row equals an
    uninterrupted job's exactly."""
    from sgdsde import _progress  # internal: the progress bar is where a Ctrl-C is simulated

    argv = ["--steps", "300", "--paths", "4", "--record-every", "100", "--quiet", "--methods", "gd,label,sde"]
    argv += ["--dim", "20", "--n-samples", "10", "--sparsity", "2", "--no-verdict"]
    assert cli.main(argv + ["--out", str(tmp_path / "straight")]) == 0
    original, calls = _progress.Progress.update, {"sde": 0}

    def update(self, done):
        if "SDE" in self.label:
            calls["sde"] += 1
            if calls["sde"] == 2:
                raise KeyboardInterrupt
        original(self, done)

    monkeypatch.setattr(_progress.Progress, "update", update)
    out = str(tmp_path / "killed")
    assert cli.main(argv + ["--out", out]) == 130
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "killed" / "run_sde.ckpt.npz").exists()
    monkeypatch.setattr(_progress.Progress, "update", original)
    assert cli.main(["--resume", out, "--quiet"]) == 0
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert resumed["complete"] and resumed["results"] == straight["results"]
    assert cli.main(["--resume", str(tmp_path / "none")]) == 2


def test_sweep_prints_the_convergence_study(tmp_path, capsys):
    """`sgdsde --sweep` (CI-sized): the study's table for SGD and the SDE, the fitted power laws, sweep.json
    with the fits and sweep.png; a bad λ list is a clear error."""
    argv = ["--sweep", "--sweep-steps", "400", "--paths", "8", "--record-every", "100", "--quiet"]
    argv += ["--dim", "20", "--n-samples", "10", "--sparsity", "2"]
    assert cli.main(argv + ["--sweep-lams", "0.01,0.03", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SGD (time average" in out and "SDE (time average" in out and "λ^" in out
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert np.allclose(record["study"]["lams"], [0.01, 0.03])
    assert "total:R_trace_log" in record["study"]["methods"]["SGD"]["fits"]
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    assert cli.main(argv + ["--sweep-lams", "0.01", "--out", str(tmp_path)]) == 2
    assert "sweep_lams must hold at least two" in capsys.readouterr().err
