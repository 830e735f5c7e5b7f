"""Fault injection (issue 19): kill -9 and SIGTERM of a training, damaged and malicious
checkpoints, concurrent runs in one folder, a full disk, a killed pool worker, malicious YAML, a
moved study, and a property test over config dicts. Each test says what must survive."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from insitu.checkpoint import CorruptCheckpointError, FolderLock, LockedError, UnsafeCheckpointError, load_checkpoint
from insitu.config import ConfigError
from insitu.data import load_dataset
from insitu.training import LOCK_FILE, TrainConfig, run_training

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return dataclasses.replace(data, train_x=data.train_x[:120], train_y=data.train_y[:120])


def _config(**changes):
    return TrainConfig(**{**dict(dataset="digits", hidden=(8,), epochs=2, lr=0.1, lr_milestones=(), seed=5), **changes})


def _train(out, data, **kwargs):
    return run_training(kwargs.pop("config", _config()), out, data=data, progress=False, log=lambda s: None, **kwargs)


class _Exploit:
    """Unpickling this calls ``Path.touch`` on a marker file (a stand-in for ``os.system``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"epoch": 1, "results": _Exploit(marker)}, path)


def _study(name: str, epochs: int):
    """A one-point study on 60 digits."""
    from insitu.sweep import StudyConfig

    return StudyConfig.from_dict({
        "name": name, "base": {"dataset": "digits", "hidden": [8], "epochs": epochs, "subset": 60, "lr_milestones": []},
        "axes": [{"field": "lr", "values": [0.1]}], "seeds": [0], "include_baseline": False,
    })


# -- checkpoints ---------------------------------------------------------------------------------
def test_a_malicious_checkpoint_runs_nothing_and_says_why(tmp_path, digits):
    _train(tmp_path / "run", digits, config=_config(epochs=1))
    marker = tmp_path / "pwned"
    _malicious_checkpoint(tmp_path / "run" / "checkpoint.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"checkpoint\.pt was not loaded.*could run code"):
        _train(tmp_path / "run", digits, resume=True)
    assert not marker.exists()


def test_a_malicious_checkpoint_in_a_sweep_point_runs_nothing(tmp_path):
    from insitu.sweep.runner import run_point

    run_dir = tmp_path / "p1"
    run_dir.mkdir()
    marker = tmp_path / "pwned"
    _malicious_checkpoint(run_dir / "checkpoint.pt", marker)
    outcome = run_point({"point_id": 1, "config": _config(subset=60).to_dict(), "run_dir": str(run_dir), "data_dir": None, "threads": 1})
    assert outcome["status"] == "failed" and "UnsafeCheckpointError" in outcome["error"]
    assert not marker.exists()


def test_the_cli_refuses_a_malicious_checkpoint_with_a_clear_error(tmp_path):
    from click.testing import CliRunner

    from insitu.cli import main

    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    _malicious_checkpoint(run / "checkpoint.pt", marker)
    result = CliRunner().invoke(
        main, ["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--out", str(run), "--resume", "--no-progress"]
    )
    assert result.exit_code == 2, result.output
    assert "was not loaded" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # garbled: random bytes over the middle
        rng = random.Random(0)
        middle = len(data) // 3
        path.write_bytes(data[:middle] + bytes(rng.randrange(256) for _ in range(middle)) + data[2 * middle :])


@pytest.mark.parametrize("how", ["empty", "truncated", "garbled"])
def test_a_damaged_checkpoint_gives_a_clear_error_naming_the_file(tmp_path, digits, how):
    _train(tmp_path / "run", digits, config=_config(epochs=1))
    ckpt = tmp_path / "run" / "checkpoint.pt"
    _damage(ckpt, how)
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint\.pt is not a readable checkpoint.*delete it"):
        _train(tmp_path / "run", digits, resume=True)
    with pytest.raises(CorruptCheckpointError, match=str(ckpt)):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_a_sweep_restarts_a_point_with_a_damaged_checkpoint_from_scratch_and_says_so(tmp_path, how):
    from insitu.sweep import ResultsStore, run_study, store_paths

    study = _study("damaged", epochs=2)
    run_study(study, tmp_path, workers=0, log=lambda line: None)
    store_path = store_paths(tmp_path)[0]
    with ResultsStore(store_path) as store:
        (point,) = store.points()
        reference = [e["test_error"] for e in store.epochs(point["id"])]
        # What a crash in the middle leaves: the point pending, its checkpoint damaged.
        store.db.execute("UPDATE points SET status = 'pending' WHERE id = ?", (point["id"],))
    _damage(Path(point["run_dir"]) / "checkpoint.pt", how)
    lines = []
    counts = run_study(study, tmp_path, workers=0, log=lines.append)
    assert counts["completed"] == 1
    assert any("restarted from scratch" in line and "checkpoint.pt" in line for line in lines), lines
    assert (Path(point["run_dir"]) / "checkpoint.pt.corrupt").exists()
    with ResultsStore(store_path) as store:
        assert [e["test_error"] for e in store.epochs(point["id"])] == reference  # same seed, same run


# -- run folders -------------------------------------------------------------------------------
def test_a_second_run_in_a_busy_folder_stops_with_a_clear_error(tmp_path, digits):
    out = tmp_path / "run"
    with FolderLock(out / LOCK_FILE, "held by the test"):
        with pytest.raises(LockedError, match="Another `insitu train` is running in"):
            _train(out, digits)
        with pytest.raises(LockedError):
            _train(out, digits, resume=False)
    assert not (out / "checkpoint.pt").exists()
    _train(out, digits)  # the lock is gone with its holder
    assert json.loads((out / "results.json").read_text())["status"] == "completed"


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "insitu", "train", "--dataset", "digits", "--hidden", "16", "--lr-milestones", "none",
            "--lr", "0.1", "--threads", "1", "--no-progress", "--out", str(out), *extra]


def _env():
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _wait_for(predicate, timeout: float, process=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process is not None and process.poll() is not None:
            return predicate()
        time.sleep(0.05)
    return False


def _epochs_done(out: Path) -> int:
    try:
        return len(json.loads((out / "results.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


def test_kill_9_at_a_random_point_then_resume_loses_nothing_and_blocks_a_second_run(tmp_path):
    """A training subprocess (4 short epochs on digits) is killed at a random moment after its
    first epoch; meanwhile a second run on the same folder is refused. The resumed run then ends
    with every epoch, and the epochs written before the kill are kept as they were. (On the torch
    update backend: what is tested does not depend on it, and each process would otherwise spend
    about 14 s compiling the kernels.)"""
    out = tmp_path / "run"
    args = ("--epochs", "4", "--backend", "torch")  # the same run each time
    process = subprocess.Popen(_cli(out, *args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: _epochs_done(out) >= 1, 180, process), process.stderr.read().decode() if process.poll() is not None else "no epoch in 180 s"
        # Held still (with its lock) while the second run starts: a Python start takes seconds,
        # about as long as the first run's remaining epochs, so it could otherwise end first.
        process.send_signal(signal.SIGSTOP)
        try:
            if process.poll() is None:
                second = subprocess.run(_cli(out, *args, "--resume"), env=_env(), capture_output=True, text=True, timeout=180)
                assert second.returncode == 2 and "Another `insitu train` is running" in second.stderr, second.stderr
        finally:
            process.send_signal(signal.SIGCONT)
        time.sleep(random.Random().uniform(0.0, 1.0))
        process.kill()
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    before = json.loads((out / "results.json").read_text())["epochs"]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == len(before)  # results and checkpoint agree
    resumed = subprocess.run(_cli(out, *args, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = json.loads((out / "results.json").read_text())
    assert after["status"] == "completed" and [e["epoch"] for e in after["epochs"]] == [1, 2, 3, 4]
    assert after["epochs"][: len(before)] == before


def test_sigterm_ends_a_training_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(_cli(out, "--epochs", "50"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: _epochs_done(out) >= 1, 180, process)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted" and "signal" in results["error"], results.get("error")
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] >= 1


def test_a_full_disk_keeps_the_previous_checkpoint_and_results(tmp_path, digits, monkeypatch):
    out = tmp_path / "run"
    _train(out, digits, config=_config(epochs=1))
    checkpoint_before = (out / "checkpoint.pt").read_bytes()
    import insitu.training as training

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # part of the file gets written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _train(out, digits, config=_config(epochs=2), resume=True)
    monkeypatch.undo()
    assert (out / "checkpoint.pt").read_bytes() == checkpoint_before
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed" and "No space left" in results["error"] and len(results["epochs"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "results.json", LOCK_FILE, "test_error.png"]  # no temp files
    _train(out, digits, config=_config(epochs=2), resume=True)  # space again: the run goes on
    assert len(json.loads((out / "results.json").read_text())["epochs"]) == 2


# -- sweeps ---------------------------------------------------------------------------------------
def _spawned_workers() -> list[int]:
    """Pids of this process's multiprocessing spawn workers (Linux /proc)."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                pids.append(int(pid))
    return pids


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_killed_pool_worker_loses_no_point_in_flight(tmp_path):
    import threading

    from insitu.sweep.runner import _pool

    tasks = [
        {"point_id": i, "config": _config(epochs=30, subset=400, seed=i).to_dict(), "run_dir": str(tmp_path / f"p{i}"),
         "data_dir": None, "threads": 1}
        for i in (1, 2)
    ]
    started = []

    def kill_one_worker():
        assert _wait_for(lambda: len(_spawned_workers()) == 2 and all((tmp_path / f"p{i}").exists() for i in (1, 2)), 60)
        os.kill(_spawned_workers()[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker)
    outcomes = []
    for batch in _pool(tasks, 2, 1, lambda task: (started.append(task["point_id"]), started == [1, 2] and killer.start())):
        outcomes.extend(batch)
    killer.join()
    assert sorted(o["point_id"] for o in outcomes) == [1, 2]  # before the fix: one of them was lost
    assert any(o["status"] == "failed" and "worker process died" in o["error"] for o in outcomes)


def test_a_study_resumed_from_another_directory_keeps_its_run_folders(tmp_path, monkeypatch):
    from insitu.sweep import ResultsStore, run_study, store_paths

    study = _study("moved", epochs=1)
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    run_study(study, "study", workers=0, log=lambda line: None)
    stored = ResultsStore(Path("study/study.sqlite")).db.execute("SELECT run_dir FROM points").fetchone()[0]
    assert stored.startswith("runs") and not Path(stored).is_absolute()  # relative to the study folder
    (tmp_path / "a" / "study").rename(tmp_path / "moved")  # the study folder is moved ...
    monkeypatch.chdir(tmp_path)  # ... and used from elsewhere
    with ResultsStore(store_paths("moved")[0], create=False) as store:
        (point,) = store.points()
        assert Path(point["run_dir"]).resolve() == (tmp_path / "moved" / "runs" / Path(stored).name).resolve()
        assert (Path(point["run_dir"]) / "results.json").exists()


def test_an_old_store_with_working_directory_relative_run_folders_still_finds_them(tmp_path, monkeypatch):
    from insitu.sweep import ResultsStore, run_study

    study = _study("old", epochs=1)
    monkeypatch.chdir(tmp_path)
    run_study(study, "studies/old", workers=0, log=lambda line: None)
    with ResultsStore(Path("studies/old/study.sqlite")) as store:  # written as before issue 19
        name = Path(store.points()[0]["run_dir"]).name
        store.db.execute("UPDATE points SET run_dir = ?", (f"studies/old/runs/{name}",))
    for cwd in (tmp_path, tmp_path / "studies"):
        monkeypatch.chdir(cwd)
        store_file = Path("studies/old/study.sqlite") if cwd == tmp_path else Path("old/study.sqlite")
        with ResultsStore(store_file, create=False) as store:
            assert (Path(store.points()[0]["run_dir"]) / "results.json").exists()


# -- configs --------------------------------------------------------------------------------------
def test_a_yaml_tag_in_a_config_file_runs_nothing(tmp_path):
    from insitu.tile import TileConfig

    marker = tmp_path / "pwned"
    path = tmp_path / "tile.yaml"
    path.write_text(f"device: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="tile.yaml"):
        TileConfig.from_file(path)
    assert not marker.exists()


# -- property test over config dicts ---------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["mnist", "digits", "sigmoid", "mlp", "sequential", "sgd", "svd", "gokmen-vlasov-2016"]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


def _config_dicts(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    return st.dictionaries(st.one_of(st.sampled_from(names), st.text(max_size=8)), _VALUES, max_size=5)


def _check_builds_or_names_a_field(cls, data):
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        config = cls.from_dict(data)
    except ConfigError as exc:
        message = str(exc)
        # The message names the field (or the unknown key / the nested config) it is about.
        assert any(name in message for name in names | set(map(str, data))), message
        return
    config.validate()
    assert type(config).from_dict(config.to_dict()) == config


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config_dicts(TrainConfig))
def test_any_train_config_dict_builds_or_raises_a_config_error_naming_a_field(data):
    _check_builds_or_names_a_field(TrainConfig, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_tile_config_dict_builds_or_raises_a_config_error_naming_a_field(draw):
    from insitu.devices import ConstantStepDevice
    from insitu.io import IOConfig
    from insitu.tile import TileConfig
    from insitu.update import PulseUpdateConfig

    data = draw.draw(_config_dicts(TileConfig))
    # Nested configs: a dict of the right kind's fields (with junk values) for some of them.
    for field, cls in (("device", ConstantStepDevice), ("forward", IOConfig), ("update", PulseUpdateConfig)):
        if draw.draw(st.booleans()):
            data[field] = draw.draw(_config_dicts(cls))
    _check_builds_or_names_a_field(TileConfig, data)


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00" + bytes(range(256)) * 8, b"not a database at all" * 100])
def test_a_damaged_store_is_a_clear_store_error(tmp_path, content):
    from insitu.sweep import ResultsStore, StoreError

    path = tmp_path / "study.sqlite"
    path.write_bytes(content)
    try:
        with ResultsStore(path) as store:  # an empty file is a new, empty store
            assert content == b"" and store.integrity_ok()
    except StoreError as exc:
        assert "study.sqlite is not a usable study store" in str(exc)
