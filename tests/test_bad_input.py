"""Bad input found on review (issue 15, items 7 and 9): each gets a ValueError naming the argument before
anything compiles, and everyday types (numpy integers, int seeds) are accepted."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdsde as sd
from sgdsde._observables import check_observables, resolve  # internal: validators, unit-tested
from sgdsde.analysis import AffineNoise, fit_order, weak_error
from sgdsde.implicit import weighted_lasso


def linear_problem(n=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return sd.Problem(sd.LinearRegression(d), X, X @ np.ones(d))


def test_numpy_integer_batch_sizes_and_int_seeds_are_everyday_types():
    """numpy integers are batch sizes like Python ints (stored as int: static fields hash alike); the data
    generators take an int seed as the simulators do."""
    for noise in (
        sd.MinibatchNoise(np.int64(2)),
        sd.LabelNoise(1.0, np.int32(2)),
        sd.MultiplicativeNoise(np.int16(2)),
        sd.FullGradientLabelNoise(1.0, np.int64(2)),
    ):
        assert type(noise.batch_size) is int and noise.batch_size == 2
    assert sd.MinibatchNoise(np.int64(2)) == sd.MinibatchNoise(2)
    a, b = sd.sparse_regression(3, 6, 4, 2), sd.sparse_regression(jax.random.key(3), 6, 4, 2)
    np.testing.assert_array_equal(a.X, b.X)
    t = sd.teacher_network(1, 5, 2, 3)
    assert t.X.shape == (5, 2)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sd.MinibatchNoise(2.0), "batch_size must be an integer"),
        (lambda: sd.MinibatchNoise(True), "batch_size must be an integer"),
        (lambda: sd.MultiplicativeNoise(0), "batch_size must be an integer >= 1"),
        (lambda: sd.LabelNoise(1.0, 0), r"batch_size must be an integer >= 1 or None"),
        (lambda: sd.FullGradientLabelNoise(1.0, 1, "shuffle"), "sampling must be"),
        (lambda: sd.FullGradientLabelNoise(-1.0), "sigma must be finite and >= 0"),
        (lambda: sd.sparse_regression("seed", 5, 3, 1), "key must be"),
        (lambda: fit_order([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]), "at least 2 distinct"),
        (lambda: weighted_lasso(np.ones((4, 2)), np.ones(3), 0.1), r"y must have shape \(4,\)"),
        (lambda: weighted_lasso(np.ones((4, 2)), np.ones(4), np.ones(3)), r"penalties must be a scalar"),
        (lambda: weighted_lasso(np.ones(4), np.ones(4), 0.1), "X must be a non-empty 2-D array"),
    ],
)
def test_bad_arguments_name_themselves(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_affine_noise_needs_a_linear_model():
    """AffineNoise.from_noise on a nonlinear model (label noise on a diagonal network has an affine factor,
    but SGD's moments do not close: ∇L is cubic) is refused naming the model."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 2))
    diag = sd.Problem(sd.DiagonalLinearNetwork(2), X, X @ np.ones(2))
    with pytest.raises(ValueError, match="DiagonalLinearNetwork is not linear"):
        AffineNoise.from_noise(diag, sd.LabelNoise(1.0))
    assert AffineNoise.from_noise(linear_problem(), sd.LabelNoise(1.0)).dim == 3


def test_weak_error_refuses_different_survivors():
    """Two ensembles that lost different numbers of paths to divergence have means over different survivors:
    weak_error refuses unless told to compare them anyway."""
    from sgdsde import EnsembleResult

    def result(diverged):
        return EnsembleResult(
            method="m",
            steps=np.arange(3),
            times=np.arange(3.0),
            mean={"x": np.zeros(3)},
            var={"x": np.ones(3)},
            count=np.full(3, 10 - diverged),
            n_paths=10,
            diverged=diverged,
            first_divergence_step=1 if diverged else None,
        )

    with pytest.raises(ValueError, match="different numbers of paths"):
        weak_error(result(0), result(2))
    assert weak_error(result(2), result(2)).max_error("x")[0] == 0.0
    assert weak_error(result(0), result(2), allow_different_survivors=True).max_error("x")[0] == 0.0


def test_observables_that_index_past_theta_are_refused():
    """JAX clamps an out-of-bounds index inside a run; the observables are evaluated once at θ₀ with JAX's
    index checks first, so `lambda p, t: t[5]` on d = 3 raises naming the observable."""
    problem = linear_problem()
    theta = jnp.zeros(3)
    check_observables(problem, resolve(["loss", "theta"]), theta)
    with pytest.raises(ValueError, match=r"observables\['fifth'\] indexes outside theta"):
        check_observables(problem, resolve({"fifth": lambda p, t: t[5]}), theta)
    with pytest.raises(ValueError, match=r"observables\['bad'\] failed at theta0"):
        check_observables(problem, resolve({"bad": lambda p, t: t @ jnp.ones(4)}), theta)
    with pytest.raises(ValueError, match=r"observables\['str'\] failed at theta0"):
        check_observables(problem, resolve({"str": lambda p, t: "x"}), theta)


def test_function_sde_shapes_are_checked_without_running():
    """A FunctionSDE whose drift or factor has the wrong shape is refused by abstract evaluation."""
    good = sd.FunctionSDE(lambda th, eta: -th, lambda th: jnp.eye(3))
    assert good.check_shapes(3, jnp.float64) == 3
    with pytest.raises(ValueError, match=r"drift\(theta, eta\) must return one array of shape \(3,\)"):
        sd.FunctionSDE(lambda th, eta: -th[:2], lambda th: jnp.eye(3)).check_shapes(3, jnp.float64)
    with pytest.raises(ValueError, match=r"factor\(theta\) must return one array of shape \(3, m\)"):
        sd.FunctionSDE(lambda th, eta: -th, lambda th: jnp.ones(3)).check_shapes(3, jnp.float64)


# --- one property over the public entry points (issue 15, item 7) ---------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

BAD_VALUES = {
    "lr": [-0.1, 0.0, float("nan"), float("inf"), "0.1", 1j, np.full(3, 0.1), [0.1, -0.1] * 5, None],
    "n_steps": [0, -1, 1.5, "10", None, np.float64(10.0), True],
    "key": [-1, 2**64, 1.5, "seed", None, np.zeros(3)],
    "theta0": [
        np.zeros(2),
        np.zeros((4, 3)),
        np.array([np.nan, 0.0, 0.0]),
        "abc",
        np.ones(3) * 1j,
        [[1, 2], [3]],
    ],
    "noise": ["label", 3, sd.Ensemble()],
    "ensemble": [dict(n_paths=2), 4, None],
    "record": [dict(every=2), 5],
    "output": ["out", 1],
}
SIMULATORS = {
    "simulate_sgd": lambda p, **kw: sd.simulate_sgd(p, **kw),
    "simulate_sde": lambda p, **kw: sd.simulate_sde(p, **kw),
    "simulate_svag": lambda p, **kw: sd.simulate_svag(p, **kw, l=2),
}


@settings(max_examples=80)
@given(
    simulator=st.sampled_from(sorted(SIMULATORS)),
    arg_and_value=st.sampled_from([(a, i) for a, vs in BAD_VALUES.items() for i in range(len(vs))]),
)
def test_every_simulator_refuses_a_bad_argument_by_name(simulator, arg_and_value):
    """Each simulator, given one bad argument (the others good), raises ValueError or TypeError whose message
    names that argument, never a failure deep in JAX or numpy (80 of the 150 combinations per run; all of them
    pass when enumerated)."""
    arg, i = arg_and_value
    bad = BAD_VALUES[arg][i]
    problem = linear_problem()
    kwargs = dict(
        noise=sd.MinibatchNoise(2),
        theta0=np.zeros(3),
        lr=0.1,
        n_steps=10,
        key=0,
        ensemble=sd.Ensemble(n_paths=2),
        record=sd.Record(),
        output=sd.Output(),
    )
    kwargs[arg] = bad
    with pytest.raises((ValueError, TypeError)) as err:
        SIMULATORS[simulator](problem, **kwargs)
    assert arg in str(err.value), (simulator, arg, bad, str(err.value))


SPECIFIC = (
    [("simulate_sde", "order", v) for v in (0, 3, 1.5, "1")]
    + [("simulate_sde", "solver", v) for v in ("euler", 3)]
    + [("simulate_sde", "stepping", v) for v in ("fixed", 2)]
    + [("simulate_sde", "increments", v) for v in ("gauss", 1)]
    + [("simulate_svag", "l", v) for v in (0, -1, 1.5, "2")]
    + [(s, "resetting", v) for s in ("simulate_sgd", "simulate_sde") for v in (0.1, "r")]
    + [(s, "first_passage", v) for s in ("simulate_sgd", "simulate_svag") for v in (1.0, "x")]
)


@pytest.mark.parametrize("simulator, arg, bad", SPECIFIC)
def test_simulator_specific_options_refuse_bad_values_by_name(simulator, arg, bad):
    """The options only some simulators take (order, solver, stepping, increments, l, resetting,
    first_passage): a bad value is a ValueError or TypeError naming the option."""
    fn = {"simulate_sgd": sd.simulate_sgd, "simulate_sde": sd.simulate_sde, "simulate_svag": sd.simulate_svag}
    kwargs = dict(noise=sd.MinibatchNoise(2), theta0=np.zeros(3), lr=0.1, n_steps=10, key=0)
    if simulator == "simulate_svag":
        kwargs["l"] = 2
    kwargs[arg] = bad
    with pytest.raises((ValueError, TypeError)) as err:
        fn[simulator](linear_problem(), **kwargs)
    assert arg in str(err.value), (simulator, arg, bad, str(err.value))


# --- issue 26 §5: the audit's categories Files, Durability, CLI and Symbolic parser ---------------------------
def _small_result(nan=False):
    from sgdsde import EnsembleResult

    mean = np.array([1.0, np.nan if nan else 0.5, 0.25])
    return EnsembleResult(
        method="m",
        steps=np.arange(3) * 10,
        times=np.arange(3) * 0.1,
        mean={"loss": mean},
        var={"loss": np.ones(3)},
        count=np.array([4, 4, 4]),
        n_paths=4,
        config={"lr": float("inf") if nan else 0.1},
    )


def test_files_save_to_that_cannot_name_a_file_is_refused_by_name(tmp_path):
    """Files: '' and 'dir/' (which wrote hidden .npz/.json files), an existing directory, a NUL byte, a name
    longer than the file system allows and a target file that is a directory are ValueErrors naming
    save_to, before anything runs (Output) and when saving."""
    (tmp_path / "taken.npz").mkdir()
    for bad, match in [
        ("", "save_to must name a file prefix"),
        ("   ", "save_to must name a file prefix"),
        (str(tmp_path) + os.sep, "not a directory: .* would write hidden files"),
        (str(tmp_path) + "/.", "not a directory"),
        (str(tmp_path), "is an existing directory"),
        (str(tmp_path / "a\0b"), "NUL byte"),
        (str(tmp_path / ("n" * 300)), "too long: 309 bytes with its suffix"),
        (str(tmp_path / "taken"), r"the target .*taken\.npz' is a directory"),
        (str(tmp_path / "missing" / "run"), "directory .* does not exist"),
        (3, "save_to must be a path"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            sd.Output(save_to=bad)
        assert str(err.value).startswith("save_to"), str(err.value)
    with pytest.raises(ValueError, match="^path: .*is an existing directory"):
        _small_result().save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["taken.npz"]  # nothing hidden was written


def test_files_a_failed_write_is_named_and_leaves_no_temporary(tmp_path, monkeypatch):
    """Files: a full disk (ENOSPC while writing) and a directory made read-only mid-run (EACCES creating
    the temporary: simulated, as root ignores modes) raise an OSError of that errno naming save_to, the file
    and the reason; no temporary file is left, and the previous file is intact."""
    import errno
    import tempfile

    from sgdsde import _results  # internal: atomic_write, the writer under test

    target = str(tmp_path / "run.npz")
    _results.atomic_write(target, lambda f: f.write(b"old"), binary=True)

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(
        OSError, match=r"^\[Errno 28\] save_to: cannot write .*run\.npz': No space left"
    ) as err:
        _results.atomic_write(target, full, binary=True)
    assert err.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["run.npz"] and (tmp_path / "run.npz").read_bytes() == b"old"

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError, match=r"save_to: cannot write .*Permission denied"):
        _small_result().save(str(tmp_path / "res"), what="save_to")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["run.npz"]


def test_files_a_killed_writer_leaves_a_named_temporary_that_the_next_write_removes(tmp_path):
    """Files: a writer killed (SIGKILL) mid-write leaves `<name>.<pid>@<host>.<random>.sgdsde-tmp`; the next
    successful write of that target removes it (its process is gone), and leaves alone the temporaries of a
    live process and of another host."""
    import signal
    import subprocess
    import sys
    import time

    from sgdsde import _results  # internal: atomic_write, the writer under test

    target = tmp_path / "run.json"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sgdsde._results import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write('{'), f.flush(), time.sleep(60)), binary=False)",
            str(target),
        ],
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 60
    while not any(n.endswith(".sgdsde-tmp") for n in os.listdir(tmp_path)):
        assert time.monotonic() < deadline and child.poll() is None, "the writer never started"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (stale,) = os.listdir(tmp_path)
    assert stale.startswith(f"run.json.{child.pid}@") and stale.endswith(".sgdsde-tmp")
    host = _results._HOST
    live = tmp_path / f"run.json.{os.getppid()}@{host}.x.sgdsde-tmp"
    other = tmp_path / f"run.json.{child.pid}@elsewhere.x.sgdsde-tmp"
    foreign = tmp_path / f"run.json.{child.pid}@{host}.x.{child.pid}@{host}.y.sgdsde-tmp"  # another target's
    for f in (live, other, foreign):
        f.write_text("")
    _results.atomic_write(str(target), lambda f: f.write("{}"), binary=False)
    assert sorted(os.listdir(tmp_path)) == sorted(["run.json", live.name, other.name, foreign.name])


@pytest.mark.parametrize(
    "damage", ["missing", "truncated", "foreign_json", "not_json", "wrong_shape", "no_npz"]
)
def test_files_loading_a_damaged_result_is_one_clear_error(tmp_path, damage):
    """Files: EnsembleResult.load of a missing, truncated or foreign file (which raised FileNotFoundError,
    BadZipFile, KeyError or JSONDecodeError) or of fields that do not fit is a ValueError naming the file and
    what is wrong."""
    prefix = str(tmp_path / "res")
    _small_result().save(prefix)
    match = {
        "missing": "no result file .*res.json",
        "no_npz": "no result file .*res.npz",
        "truncated": r"res.npz' is truncated, corrupted",
        "foreign_json": r"lacks \['method'",
        "not_json": r"res.json' is not a result's JSON record \(JSONDecodeError",
        "wrong_shape": "count is not 3 integers",
    }[damage]
    if damage == "missing":
        os.remove(prefix + ".json")
    elif damage == "no_npz":
        os.remove(prefix + ".npz")
    elif damage == "truncated":
        data = (tmp_path / "res.npz").read_bytes()
        (tmp_path / "res.npz").write_bytes(data[: len(data) // 2])
    elif damage == "foreign_json":
        (tmp_path / "res.json").write_text('{"name": "something else"}')
    elif damage == "not_json":
        (tmp_path / "res.json").write_text("{ not json")
    else:
        with np.load(prefix + ".npz") as z:
            arrays = {k: z[k] for k in z.files}
        np.savez(prefix + ".npz", **dict(arrays, count=np.zeros((3, 2), np.int64)))
    with pytest.raises(ValueError, match=rf"^EnsembleResult.load: .*{match}"):
        sd.EnsembleResult.load(prefix)


def test_durability_every_writer_fsyncs_file_and_directory_and_writes_strict_json(tmp_path, monkeypatch):
    """Durability: the promised "temporary file, fsync, rename" holds: saving a result fsyncs each file's
    data and then its directory (the rename), through one helper (os.replace appears in _results.py only);
    the JSON is strict (a NaN mean or an inf option is the string "nan"/"inf", json's allow_nan=False
    parser reads it)."""
    import json
    import pathlib
    import stat

    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    prefix = str(tmp_path / "res")
    _small_result(nan=True).save(prefix)
    assert synced == ["file", "dir", "file", "dir"]  # .npz then .json: data before rename, directory after

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    meta = json.loads((tmp_path / "res.json").read_text(), parse_constant=refuse)
    assert meta["config"]["lr"] == "inf"
    back = sd.EnsembleResult.load(prefix)
    assert np.isnan(back.mean["loss"][1]) and float(back.config["lr"]) == np.inf
    root = pathlib.Path(sd.__file__).parent
    writers = sorted(p.name for p in root.rglob("*.py") if "os.replace(" in p.read_text())
    assert writers == ["_results.py"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--methods", "gd,gd"], r"methods \(--methods\) names \['gd'\] more than once"),
        (["--seed", "-2"], r"seed \(--seed\) must be an integer >= 0, got -2"),
        (
            ["--resume", "DIR", "--lr", "0.1"],
            "--resume runs the saved job's own configuration; --lr cannot apply",
        ),
        (["--resume", "DIR", "--reload"], "--reload cannot apply"),
        (["--reload", "--steps", "10"], "--reload reprints the job saved in --out; --steps cannot apply"),
        (["--sweep-lams", "0.1,0.2"], "--sweep-lams applies to --sweep only"),
        (["--out", "FILE"], "--out: .* is an existing file, not a folder"),
        (["--out", "FILE/sub"], "--out: cannot create the folder .*FILE/sub"),
    ],
)
def test_cli_bad_flags_are_refused_by_name_before_anything_runs(tmp_path, capsys, argv, match):
    """CLI: a method named twice (which ran twice), a negative seed (reported as "key … got -1"), flags that
    cannot apply with --resume/--reload (ignored silently), and an --out that is a file or cannot be created
    (raw tracebacks) exit with status 2 and one line naming the flag."""
    from sgdsde import cli

    (tmp_path / "FILE").write_text("x")
    argv = [a.replace("DIR", str(tmp_path)).replace("FILE", str(tmp_path / "FILE")) for a in argv]
    if "--out" not in argv and "--resume" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert cli.main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgdsde: error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err


@pytest.mark.parametrize(
    "summary, match",
    [
        ("{ truncated", "JSONDecodeError"),
        ("[1, 2]", "no 'config' object"),
        ('{"config": {"model": "hadamard"}}', r"its config lacks \['dim', 'lr', 'methods'"),
        ("CONFIG_LR_TEXT", r"config\['lr'\] = '0.01' is not int or float"),
        ("CONFIG_FINISHED", r"'finished' = \['gd', 'nope'\] is not a list of methods"),
    ],
)
def test_cli_a_damaged_summary_is_one_clear_error(tmp_path, capsys, summary, match):
    """CLI: a damaged summary.json (which gave KeyError/TypeError tracebacks) is refused by --reload and
    --resume with one line naming the flag, the file and what is wrong."""
    import json

    from sgdsde import cli

    good = {"config": dict(cli.DEFAULTS, out=str(tmp_path)), "finished": ["gd"]}
    if summary == "CONFIG_LR_TEXT":
        summary = json.dumps(dict(good, config=dict(good["config"], lr="0.01")))
    elif summary == "CONFIG_FINISHED":
        summary = json.dumps(dict(good, finished=["gd", "nope"]))
    (tmp_path / "summary.json").write_text(summary)
    for argv, flag in (
        (["--reload", "--out", str(tmp_path)], "--reload"),
        (["--resume", str(tmp_path)], "--resume"),
    ):
        assert cli.main(argv + ["--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"sgdsde: error: {flag}: " in err and "is damaged or not a job's summary" in err, err
        assert __import__("re").search(match, err), err


def test_symbolic_parser_hostile_input_is_refused_by_name():
    """Symbolic parser: powers sympy would expand for minutes ((2a)^(10^10), √2^(10^11)), a float literal
    beyond float64 (1e999999) and a parameter named like a function are ValueErrors naming expr or the
    names, at once (the full list: tests/test_symbolic.py::test_parser_refuses_hostile_expressions_quickly)."""
    import sgdsde.symbolic as sy

    for text, match in [
        ("(2*a)**10**10*x", "numeric exponent of magnitude above 1000"),
        ("sqrt(2)**10**11*a*x", "numeric exponent"),
        ("1e999999*a*x", "float literal beyond float64's range"),
        ("floor(10**10000)*a*x", "digits"),
    ]:
        with pytest.raises(ValueError, match=rf"^expr: .*{match}"):
            sy.SymbolicModel(text, params=["a"], inputs=["x"])
    with pytest.raises(ValueError, match="named like a function"):
        sy.SymbolicModel("cos*x + cos(x)", params=["cos"], inputs=["x"])
