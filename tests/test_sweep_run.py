"""Running studies: the store, resume after interruption and SIGKILL, backends, exports, report, CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from insitu.cli import main
from insitu.config import ConfigError
from insitu.sweep import ResultsStore, StoreError, StudyConfig, export_csv, export_parquet, plan_workers, run_study, store_paths, write_report
from insitu.sweep.runner import _StoreLock
from insitu.training import TrainConfig, run_training

SRC = Path(__file__).resolve().parents[1] / "src"


def tiny_study(**changes) -> StudyConfig:
    """Six short trainings on digits (a fraction of a second each)."""
    data = {
        "name": "tiny",
        "base": {"preset": "gokmen-vlasov-2016", "dataset": "digits", "hidden": [8], "epochs": 2, "subset": 80,
                 "lr": 0.1, "lr_milestones": []},
        "axes": [{"field": "tile.device.dw_min", "values": [0.001, 0.004]}, {"field": "lr", "values": [0.1, 0.3]}],
        "seeds": [0, 1],
    }
    data.update(changes)
    return StudyConfig.from_dict(data)


def finals(store_path: Path) -> dict[str, tuple]:
    """``{point key: (status, per-epoch test errors)}`` of a store."""
    with ResultsStore(store_path, create=False) as store:
        return {p["key"]: (p["status"], tuple(e["test_error"] for e in store.epochs(p["id"]))) for p in store.points()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny study run once, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("reference")
    counts = run_study(tiny_study(), out, workers=0, log=lambda line: None)
    return out, counts


def test_run_completes_every_point_and_records_configs_epochs_and_versions(reference):
    out, counts = reference
    study = tiny_study()
    assert counts["completed"] == len(study.points()) == 6  # baseline + 1 dw_min + 1 lr, two seeds
    with ResultsStore(store_paths(out)[0], create=False) as store:
        assert store.integrity_ok()
        assert store.study().to_dict() == study.to_dict()
        assert store.meta()["insitu_version"]
        for point in store.points():
            config = TrainConfig.from_dict(point["config"])
            assert config.tile.device.dw_min == point["coords"]["tile.device.dw_min"] and config.lr == point["coords"]["lr"]
            epochs = store.epochs(point["id"])
            assert [e["epoch"] for e in epochs] == [1, 2]
            assert point["final_test_error"] == epochs[-1]["test_error"] and point["epochs_done"] == 2
            assert point["seconds"] > 0 and point["attempts"] == 1 and point["insitu_version"]
            saved = json.loads((Path(point["run_dir"]) / "results.json").read_text())
            assert saved["status"] == "completed" and saved["config"] == point["config"]


def test_a_finished_study_runs_nothing_again(tmp_path):
    lines = []
    run_study(tiny_study(seeds=[0]), tmp_path, workers=0, log=lines.append)
    with ResultsStore(store_paths(tmp_path)[0]) as store:
        before = {p["id"]: (p["finished"], p["attempts"]) for p in store.points()}
    lines.clear()
    run_study(tiny_study(seeds=[0]), tmp_path, workers=0, log=lines.append)
    assert "3 finished, 0 to run" in lines[0] and len(lines) == 1
    with ResultsStore(store_paths(tmp_path)[0]) as store:
        assert {p["id"]: (p["finished"], p["attempts"]) for p in store.points()} == before


def test_an_interrupted_point_resumes_from_its_checkpoint_with_the_same_results(tmp_path, reference):
    study = tiny_study()
    store_path, runs = store_paths(tmp_path)
    with ResultsStore(store_path) as store:
        store.attach_study(study, runs)
        first = store.points()[0]
        # What a driver killed in epoch 2 of the first point leaves: the point 'running', its run
        # folder holding the checkpoint of epoch 1.
        store.mark_running(first["id"])
        config = TrainConfig.from_dict(first["config"])
        from insitu.data import load_dataset

        run_training(config.replace(epochs=1), first["run_dir"], data=load_dataset("digits", subset=80, seed=config.seed), progress=False, log=lambda line: None)
    lines = []
    run_study(study, tmp_path, workers=0, log=lines.append)
    assert "1 point(s) left running" in lines[0]
    assert any("(resumed)" in line and f"#{first['id']} " in line for line in lines)
    assert finals(store_path) == finals(store_paths(reference[0])[0])


def test_sigkill_mid_study_leaves_a_consistent_store_and_resume_skips_finished_points(tmp_path, reference):
    study = tiny_study()
    study.to_yaml(tmp_path / "study.yaml")
    store_path = store_paths(tmp_path / "out")[0]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "insitu.cli", "sweep", "run", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "out"), "--workers", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        completed = 0
        while completed < 1 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
            if store_path.exists():
                try:
                    with sqlite3.connect(store_path, timeout=5) as db:
                        completed = db.execute("SELECT COUNT(*) FROM points WHERE status = 'completed'").fetchone()[0]
                except sqlite3.OperationalError:  # tables not created yet
                    pass
        assert completed >= 1, process.stderr.read().decode() if process.poll() is not None else "no point finished in time"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    with ResultsStore(store_path, create=False) as store:
        assert store.integrity_ok()
        points = store.points()
        finished = {p["id"]: p["finished"] for p in points if p["status"] == "completed"}
        assert 1 <= len(finished) < len(points), "the kill should land in the middle of the study"
        assert {p["status"] for p in points} <= {"completed", "running", "pending"}
        for p in points:  # a point is recorded with all its epochs or not at all
            assert len(store.epochs(p["id"])) == (2 if p["status"] == "completed" else 0)
    run_study(study, tmp_path / "out", workers=0, log=lambda line: None)
    with ResultsStore(store_path, create=False) as store:
        points = store.points()
        assert all(p["status"] == "completed" for p in points)
        for p in points:
            if p["id"] in finished:
                assert p["finished"] == finished[p["id"]] and p["attempts"] == 1  # not run again
    # Points cut by the kill resumed from their checkpoints: the results equal an uninterrupted run.
    assert finals(store_path) == finals(store_paths(reference[0])[0])


def test_process_pool_gives_the_same_results_as_in_process(tmp_path, reference):
    run_study(tiny_study(seeds=[1]), tmp_path, workers=2, threads=1, log=lambda line: None)
    pooled, inline = finals(store_paths(tmp_path)[0]), finals(store_paths(reference[0])[0])
    assert len(pooled) == 3 and all(pooled[key] == inline[key] for key in pooled)  # same configs, same keys


def test_a_changed_study_is_refused_without_losing_anything_and_extend_adds_points(tmp_path, reference):
    import shutil

    shutil.copytree(reference[0], tmp_path / "s")
    store_path = store_paths(tmp_path / "s")[0]
    before = finals(store_path)
    changed = tiny_study(seeds=[0, 1, 2])
    with pytest.raises(ConfigError, match=r"differs from the one recorded.*in: seeds.*--extend"):
        run_study(changed, tmp_path / "s", workers=0, log=lambda line: None)
    assert finals(store_path) == before
    lines = []
    run_study(changed, tmp_path / "s", workers=0, extend=True, log=lines.append)
    assert "6 finished, 3 to run" in lines[0]
    after = finals(store_path)
    assert len(after) == 9 and all(after[k] == v for k, v in before.items())


def test_a_second_driver_on_the_same_store_is_refused(tmp_path):
    with _StoreLock(store_paths(tmp_path)[0]):
        with pytest.raises(StoreError, match="Another `insitu sweep run`"):
            run_study(tiny_study(), tmp_path, workers=0, log=lambda line: None)


def test_diverged_points_are_recorded_and_final(tmp_path):
    # lr 1e20 makes the floating-point ReLU network's loss NaN at once: the point diverges, is
    # recorded as such, and is not retried by the next run.
    study = StudyConfig.from_dict({
        "name": "div", "base": {"preset": "floating-point", "dataset": "digits", "hidden": [8], "activation": "relu", "epochs": 1,
                                "subset": 60, "lr_milestones": []},
        "axes": [{"field": "lr", "values": [1e20]}], "include_baseline": False,
    })
    counts = run_study(study, tmp_path, workers=0, log=lambda line: None)
    assert counts["diverged"] == 1
    with ResultsStore(store_paths(tmp_path)[0]) as store:
        (point,) = store.points()
        assert "loss became" in point["error"]
    lines = []
    run_study(study, tmp_path, workers=0, log=lines.append)
    assert "1 finished, 0 to run" in lines[0]


def test_plan_workers_keeps_workers_times_threads_within_the_cores():
    assert plan_workers(None, None, cores=8) == (8, 1)
    assert plan_workers(None, 2, cores=8) == (4, 2)
    assert plan_workers(2, None, cores=8) == (2, 4)
    assert plan_workers(0, None, cores=8) == (0, 1)
    with pytest.warns(UserWarning, match="exceed the 2 available cores"):
        plan_workers(4, 1, cores=2)
    with pytest.raises(ConfigError):
        plan_workers(-1, None, cores=2)


def test_csv_export_has_one_row_per_point_and_per_epoch(tmp_path, reference):
    with ResultsStore(store_paths(reference[0])[0], create=False) as store:
        points = store.points()
        export_csv(store, tmp_path / "points.csv")
        export_csv(store, tmp_path / "epochs.csv", per_epoch=True)
    rows = list(csv.DictReader(open(tmp_path / "points.csv")))
    assert [int(r["id"]) for r in rows] == [p["id"] for p in points]
    for row, point in zip(rows, points):
        assert float(row["tile.device.dw_min"]) == point["coords"]["tile.device.dw_min"]
        assert float(row["lr"]) == point["coords"]["lr"] and int(row["seed"]) == point["seed"]
        assert float(row["final_test_error"]) == point["final_test_error"] and row["status"] == "completed"
        assert json.loads(row["config"]) == point["config"]
    per_epoch = list(csv.DictReader(open(tmp_path / "epochs.csv")))
    assert len(per_epoch) == 2 * len(points) and {"epoch", "test_error", "train_loss", "lr"} <= set(per_epoch[0])


def test_parquet_export_says_what_to_install(tmp_path, reference):
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        with ResultsStore(store_paths(reference[0])[0], create=False) as store:
            with pytest.raises(RuntimeError, match="pip install pandas pyarrow"):
                export_parquet(store, tmp_path / "points.parquet")
        return
    import pandas

    with ResultsStore(store_paths(reference[0])[0], create=False) as store:
        export_parquet(store, tmp_path / "points.parquet")
        assert len(pandas.read_parquet(tmp_path / "points.parquet")) == len(store.points())


def test_report_has_figures_and_one_table_per_parameter(tmp_path, reference):
    with ResultsStore(store_paths(reference[0])[0], create=False) as store:
        report = write_report(store, tmp_path / "report")
        points = store.points()
    text = report.read_text()
    for name in ("tile.device.dw_min", "lr", "all_parameters"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 1000
        assert f"({name}.png)" in text
    assert "| tile.device.dw_min | runs done / points | mean test error (%)" in text
    baseline = [p for p in points if len(p["axes"]) == 2]
    mean = 100 * sum(p["final_test_error"] for p in baseline) / len(baseline)
    assert f"| 0.001 (baseline) | 2 / 2 | {mean:.2f} |" in text
    assert (tmp_path / "report" / "points.csv").exists()


def test_a_categorical_axis_is_plotted_by_name(tmp_path):
    study = StudyConfig.from_dict({
        "name": "modes", "base": {"preset": "gokmen-vlasov-2016", "dataset": "digits", "hidden": [8], "epochs": 1, "subset": 40, "lr_milestones": []},
        "axes": [{"field": "update_mode", "values": ["sequential", "summed"]}], "include_baseline": False,
    })
    run_study(study, tmp_path, workers=0, log=lambda line: None)
    with ResultsStore(store_paths(tmp_path)[0]) as store:
        text = write_report(store, tmp_path / "report").read_text()
    assert (tmp_path / "report" / "update_mode.png").stat().st_size > 1000
    assert "| sequential | 1 / 1 |" in text and "| summed | 1 / 1 |" in text


def test_address_without_ray_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, installed or not
    with pytest.raises(StoreError, match=r"pip install 'insitu\[cluster\]'"):
        run_study(tiny_study(seeds=[0]), tmp_path, address="auto", log=lambda line: None)


def test_ray_backend_on_a_local_instance(tmp_path, reference):
    pytest.importorskip("ray")
    run_study(tiny_study(), tmp_path, address="local", threads=1, log=lambda line: None)
    assert finals(store_paths(tmp_path)[0]) == finals(store_paths(reference[0])[0])


def test_cli_quick_sweep_status_export_report_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "quick"
    result = runner.invoke(main, ["sweep", "run", "--param", "tile.device.dw_min", "--range", "1e-3,4e-3,2", "--log", "--hidden", "8",
                                  "--subset", "60", "--seeds", "0", "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "done: completed 2" in result.output
    status = runner.invoke(main, ["sweep", "status", str(out)])
    assert status.exit_code == 0 and "completed 2" in status.output
    exported = runner.invoke(main, ["sweep", "export", str(out / "study.sqlite"), "--csv", str(tmp_path / "q.csv")])
    assert exported.exit_code == 0 and len(list(csv.DictReader(open(tmp_path / "q.csv")))) == 2
    report = runner.invoke(main, ["sweep", "report", str(out), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0 and (tmp_path / "rep" / "report.md").exists()
    bad = runner.invoke(main, ["sweep", "run", "--param", "tile.device.dwmin", "--values", "0.001", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "Did you mean 'tile.device.dw_min'" in bad.output
    missing = runner.invoke(main, ["sweep", "status", str(tmp_path)])
    assert missing.exit_code == 2 and "No study store" in missing.output
    neither = runner.invoke(main, ["sweep", "run"])
    assert neither.exit_code == 2 and "--param" in neither.output


def test_status_shows_how_far_the_running_epoch_is(tmp_path):
    from insitu.sweep.report import status_text
    from insitu.training import PROGRESS_FILE, EpochProgress

    # The progress file: written when its interval has passed, not on every sample.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    progress = EpochProgress(total=200, epoch=1, epochs=3, bar=False, run_dirs=[run_dir], interval=3600.0)
    progress.update(10)
    assert not (run_dir / PROGRESS_FILE).exists()
    progress.interval = 0.0
    progress.update(70)
    saved = json.loads((run_dir / PROGRESS_FILE).read_text())
    assert (saved["epoch"], saved["epochs"], saved["samples"], saved["of"]) == (2, 3, 80, 200)
    assert saved["samples_per_second"] > 0
    # A point the store lists as running, with one epoch done and the second at 40 %.
    run_study(tiny_study(seeds=[0]), tmp_path / "out", workers=0, log=lambda line: None)
    store_path = store_paths(tmp_path / "out")[0]
    with ResultsStore(store_path, create=False) as store:
        point = store.points()[0]
        store.mark_running(point["id"])
        results = json.loads((Path(point["run_dir"]) / "results.json").read_text())
        (Path(point["run_dir"]) / "results.json").write_text(json.dumps(dict(results, epochs=results["epochs"][:1])))
        (Path(point["run_dir"]) / PROGRESS_FILE).write_text((run_dir / PROGRESS_FILE).read_text())
        text = status_text(store)
    line = next(line for line in text.splitlines() if f"running #{point['id']} " in line)
    assert "1/2 epochs, epoch 2 at 40 %" in line and "samples/s" in line, line
