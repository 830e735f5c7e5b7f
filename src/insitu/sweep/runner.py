"""Running a study: the points of the store that are not finished, on a process pool or Ray.

The process that calls :func:`run_study` drives the study: it records the study and its points
in the store, hands unfinished points to workers (at most ``workers`` at a time), and writes each
outcome to the store as it arrives. Workers never touch the store; each trains one point with
:func:`insitu.training.run_training` in the point's own run folder, which keeps a checkpoint after
every epoch, so a point interrupted in the middle resumes from its last finished epoch. With
``lockstep > 1`` a worker may instead train a group of points as replicas of one network
(:func:`run_group`, :mod:`insitu.sweep.lockstep`).

Backends (no scheduler of our own beyond keeping ``workers`` points in flight):

* ``workers=0``: in this process, one point after the other (debugging, tests);
* default: a local :class:`concurrent.futures.ProcessPoolExecutor` (``spawn`` start method, so
  workers do not inherit torch's thread pools), each worker with ``threads`` torch threads;
* ``address=...``: a Ray cluster (``ray.init(address=...)``; ``"local"`` starts a private local
  instance), each point a Ray task declaring ``num_cpus=threads``. Ray is imported only then.
  The run folders must be on a file system every node sees, or interrupted points restart.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, Generator, Iterator

from ..checkpoint import CorruptCheckpointError, FolderLock, load_checkpoint
from ..config import ConfigError
from .store import ResultsStore, StoreError
from .study import StudyConfig

__all__ = ["run_study", "run_point", "run_group", "group_tasks", "available_cores", "plan_workers", "store_paths"]

STORE_NAME = "study.sqlite"


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_workers(workers: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)`` so that ``workers × threads <= cores`` where possible.

    Unset values are filled in: threads default to 1 (batch-1 training of small layers gains
    nothing from more threads), workers to ``cores // threads``. ``workers = 0`` means in-process.
    """
    cores = available_cores() if cores is None else cores
    if workers is not None and (isinstance(workers, bool) or workers < 0):
        raise ConfigError(f"workers = {workers}: must be >= 0 (0 runs the points in this process).")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads = {threads}: must be >= 1.")
    if threads is None:
        threads = max(1, cores // workers) if workers else 1
    if workers is None:
        workers = max(1, cores // threads)
    if max(workers, 1) * threads > cores:
        warnings.warn(
            f"{workers} workers × {threads} threads exceed the {cores} available cores; the points will "
            f"compete for them. Use --workers {max(1, cores // threads)} or fewer threads.",
            stacklevel=2,
        )
    return workers, threads


def store_paths(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(store file, folder of the run folders)`` of a study output folder."""
    out = Path(out_dir)
    return out / STORE_NAME, out / "runs"


# -- the worker side ------------------------------------------------------------------------------
_DATA_CACHE: dict = {}


def _dataset(config, data_dir):
    """Datasets are loaded once per worker process (points of one study share them)."""
    from ..data import load_dataset

    key = (config.dataset, data_dir, config.subset, config.seed if config.subset else None)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset at a time is enough and bounds memory
        _DATA_CACHE[key] = load_dataset(config.dataset, path=data_dir, subset=config.subset, seed=config.seed)
    return _DATA_CACHE[key]


def run_point(task: dict) -> dict:
    """Train one point; called in a worker. Never raises for a failing run: the outcome says.

    Args:
        task: ``{"point_id", "config" (TrainConfig dict), "run_dir", "data_dir", "threads"}``.

    Returns:
        ``{"point_id", "status" ("completed", "diverged" or "failed"), "results" (the run's
        results dict, or None), "seconds", "error", "resumed"}``.
    """
    from ..training import TrainConfig, TrainingDiverged, run_training
    from ..update.kernels import set_threads

    set_threads(task["threads"])  # PyTorch's and the lockstep kernels' (numba's) threads
    started = time.perf_counter()
    run_dir = Path(task["run_dir"])
    checkpoint_path = run_dir / "checkpoint.pt"
    outcome = {"point_id": task["point_id"], "status": "failed", "results": None, "error": None, "resumed": False}
    try:
        config = TrainConfig.from_dict(task["config"])
        resume = checkpoint_path.exists()
        checkpoint = None
        if resume:
            try:
                checkpoint = load_checkpoint(checkpoint_path)
            except CorruptCheckpointError as exc:
                # A damaged checkpoint cannot be resumed and would fail on every rerun: the point
                # starts again from scratch (the damaged file is kept aside for inspection).
                _set_aside(checkpoint_path)
                outcome["note"] = f"restarted from scratch: {exc}"
                resume = False
        if resume:
            if checkpoint["epoch"] >= config.epochs:
                # Finished before the driver could record it (killed in between): take it as is.
                outcome.update(status="completed", results=checkpoint["results"], resumed=True)
                return outcome
            outcome["resumed"] = True
        # The image datasets are shared by a worker's points; other tasks load their own data.
        data = _dataset(config, task["data_dir"]) if config.task == "image" else None
        results = run_training(config, run_dir, data=data, resume=resume, progress=False, log=lambda line: None)
        outcome.update(status="completed", results=results)
    except TrainingDiverged as exc:
        outcome.update(status="diverged", error=str(exc), results=_read_results(run_dir))
    except Exception as exc:  # the study goes on; the store keeps the message
        outcome.update(error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}", results=_read_results(run_dir))
    finally:
        outcome["seconds"] = time.perf_counter() - started
    return outcome


def run_group(task: dict) -> list[dict]:
    """Train the points of a lockstep group together (:mod:`insitu.sweep.lockstep`); called in a
    worker. Returns one outcome per point, as :func:`run_point` does; each point's ``seconds``
    is its share (1/n) of the group's wall time.

    Args:
        task: ``{"group": [point tasks], "data_dir", "threads"}``.
    """
    from ..training import TrainConfig
    from ..update.kernels import set_threads
    from .lockstep import CHECKPOINT_NAME, run_lockstep

    set_threads(task["threads"])
    started = time.perf_counter()
    members = task["group"]
    run_dirs = [Path(m["run_dir"]) for m in members]
    outcomes = [{"point_id": m["point_id"], "status": "failed", "results": None, "error": None, "resumed": False} for m in members]
    try:
        configs = [TrainConfig.from_dict(m["config"]) for m in members]
        resume = (run_dirs[0] / CHECKPOINT_NAME).exists()
        if resume:
            try:
                load_checkpoint(run_dirs[0] / CHECKPOINT_NAME)
            except CorruptCheckpointError as exc:  # as in run_point: start the group again
                _set_aside(run_dirs[0] / CHECKPOINT_NAME)
                for outcome in outcomes:
                    outcome["note"] = f"restarted from scratch: {exc}"
                resume = False
        datasets = [_dataset(c, task["data_dir"]) for c in configs] if configs[0].subset is None else None
        results = run_lockstep(configs, run_dirs, datasets=datasets, data_dir=task["data_dir"], resume=resume, log=lambda line: None)
        for outcome, result in zip(outcomes, results):
            status = "diverged" if result.get("status") == "diverged" else "completed"
            outcome.update(status=status, results=result, resumed=resume, error=result.get("error"))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
        for outcome, run_dir in zip(outcomes, run_dirs):
            outcome.update(error=error, results=_read_results(run_dir))
    # Each member is charged its share of the group's time, so that the study's compute time
    # (the sum over points) counts the group once.
    seconds = (time.perf_counter() - started) / len(members)
    for outcome in outcomes:
        outcome["seconds"] = seconds
    return outcomes


def _set_aside(path: Path) -> None:
    """Rename a damaged checkpoint to ``<name>.corrupt`` so that the run starts afresh."""
    os.replace(path, path.with_name(path.name + ".corrupt"))


def run_task(task: dict) -> list[dict]:
    """A worker's unit of work: one point, or a lockstep group (``"group"`` in the task)."""
    return run_group(task) if "group" in task else [run_point(task)]


def _task_points(task: dict) -> list[int]:
    return [m["point_id"] for m in task["group"]] if "group" in task else [task["point_id"]]


def _read_results(run_dir: Path) -> dict | None:
    import json

    path = run_dir / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def _init_worker(threads: int) -> None:
    import threading

    from ..update.kernels import set_threads

    set_threads(threads)
    # A pool worker whose driver died (SIGKILL, terminal closed) would go on training its point
    # and race the next `sweep run` for the same run folder: it exits as soon as it is orphaned.
    parent = os.getppid()

    def exit_when_orphaned() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=exit_when_orphaned, name="insitu-orphan-watch", daemon=True).start()


# -- backends -------------------------------------------------------------------------------------
def _inline(tasks: list[dict], on_start: Callable[[dict], None]) -> Iterator[dict]:
    for task in tasks:
        on_start(task)
        yield run_task(task)


def _pool(tasks: list[dict], workers: int, threads: int, on_start: Callable[[dict], None]) -> Iterator[dict]:
    from concurrent.futures.process import BrokenProcessPool

    queue = list(tasks)
    while queue:
        context = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads,))
        in_flight: dict[cf.Future, dict] = {}
        try:
            while queue or in_flight:
                while queue and len(in_flight) < workers:
                    task = queue.pop(0)
                    on_start(task)
                    in_flight[pool.submit(run_task, task)] = task
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    # Forget the task only once its outcome is in hand: if the pool broke, the
                    # handler below must still see every task that was in flight.
                    outcome = future.result()
                    del in_flight[future]
                    yield outcome
        except BrokenProcessPool:
            # A worker died (killed, out of memory): its points fail this time (the next
            # `sweep run` retries them from their checkpoints); the rest go to a new pool.
            # Tasks that finished before the pool broke keep their outcome.
            pool.shutdown(wait=True)
            for future, task in in_flight.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    yield future.result()
                else:
                    yield [_died(point_id) for point_id in _task_points(task)]
            continue
        except BaseException:
            # Interrupted: stop the points in flight now rather than waiting for them to finish
            # (they resume from their last checkpoint, which is written atomically).
            _terminate_workers(pool)
            raise
        pool.shutdown(wait=True)


def _terminate_workers(pool: cf.ProcessPoolExecutor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    # Older Pythons have no public way to stop busy workers; the executor keeps them here.
    for process in list(getattr(pool, "_processes", {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _died(point_id: int) -> dict:
    return {
        "point_id": point_id, "status": "failed", "results": None, "seconds": 0.0, "resumed": False,
        "error": "the worker process died (killed or out of memory); the next `insitu sweep run` retries this point",
    }


def _ray(tasks: list[dict], address: str, workers: int | None, threads: int, on_start: Callable[[dict], None]) -> Iterator[dict]:
    try:
        import ray
    except ImportError:
        raise StoreError(
            "--address needs Ray, which is not installed: pip install 'insitu[cluster]' (or pip install ray). "
            "Without --address the study runs on a local process pool."
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    try:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        remote = ray.remote(num_cpus=threads)(run_task)
        queue = list(tasks)
        in_flight: dict = {}
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                task = queue.pop(0)
                on_start(task)
                in_flight[remote.remote(task)] = task
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                task = in_flight.pop(ref)
                try:
                    yield ray.get(ref)
                except ray.exceptions.RayError as exc:
                    yield [{**_died(point_id), "error": f"Ray task failed: {exc}"} for point_id in _task_points(task)]
    finally:
        if started_here:
            ray.shutdown()


# -- the driver -----------------------------------------------------------------------------------
class _StoreLock(FolderLock):
    """An exclusive lock next to the store: two `sweep run` on one store would run points twice."""

    def __init__(self, store_path: Path):
        super().__init__(
            store_path.with_name(store_path.name + ".lock"),
            f"Another `insitu sweep run` is using {store_path}; wait for it or stop it first.",
            StoreError,
        )


def run_study(
    study: StudyConfig,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    data_dir: str | None = None,
    extend: bool = False,
    lockstep: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Run every unfinished point of ``study``; results go to ``out_dir/study.sqlite``.

    Finished points (``completed``, ``diverged``) are never run again; ``pending`` ones, ``failed``
    ones, and ``running`` ones left by a killed process are (from their checkpoints).

    Args:
        study: the study.
        out_dir: output folder: the store ``study.sqlite`` and ``runs/<point>/`` run folders.
        workers: points at a time (``0``: in this process; default: cores // threads).
        threads: torch threads per point (default 1, or cores // workers).
        address: a Ray cluster address (``"auto"``, ``"ray://host:10001"``, or ``"local"`` for a
            private local instance); ``None`` uses the local process pool.
        data_dir: where the datasets are (see :func:`insitu.data.load_dataset`).
        extend: accept a changed study over an existing store (new points are added).
        lockstep: train up to this many points together as replicas in lockstep
            (:mod:`insitu.sweep.lockstep`) where they differ only in seed and in device/IO
            numbers; 1 trains every point on its own.
        log: one line per event.

    Returns:
        The number of points per status after the run.
    """
    store_path, runs_root = store_paths(out_dir)
    if address is None:
        workers, threads = plan_workers(workers, threads)
    else:
        threads = threads or 1
    # Checked before the store is created: a bad option must leave no trace.
    if isinstance(lockstep, bool) or not isinstance(lockstep, int) or lockstep < 1:
        raise ConfigError(f"lockstep = {lockstep!r}: must be an integer >= 1 (replicas per group; 1 = off).")
    with _StoreLock(store_path), ResultsStore(store_path) as store:
        store.attach_study(study, runs_root, extend=extend)
        if (reset := store.reset_interrupted()):
            log(f"{reset} point(s) left running by an interrupted run: resuming them from their checkpoints")
        # First seed of every point first: a study stopped half-way already shows every curve.
        seed_rank = {seed: k for k, seed in enumerate(study.seeds)}
        todo = [p for p in store.points() if p["status"] in ("pending", "failed")]
        todo.sort(key=lambda p: (seed_rank.get(p["seed"], len(seed_rank)), p["id"]))
        total = len(store.points())
        log(f"study '{study.name}': {total} points, {total - len(todo)} finished, {len(todo)} to run -> {store_path}")
        if isinstance(lockstep, bool) or not isinstance(lockstep, int) or lockstep < 1:
            raise ConfigError(f"lockstep = {lockstep!r}: must be an integer >= 1 (replicas per group; 1 = off).")
        tasks = [
            {"point_id": p["id"], "config": p["config"], "run_dir": p["run_dir"], "data_dir": data_dir, "threads": threads}
            for p in todo
        ]
        tasks = group_tasks(tasks, lockstep, data_dir, threads)
        if lockstep > 1:
            groups = [t for t in tasks if "group" in t]
            log(f"lockstep: {sum(len(t['group']) for t in groups)} points in {len(groups)} group(s), {len(tasks) - len(groups)} alone")
        labels = {p["id"]: _describe(p, study) for p in todo}
        in_flight: set[int] = set()

        def on_start(task: dict) -> None:
            for point_id in _task_points(task):
                store.mark_running(point_id)
                in_flight.add(point_id)

        if address is not None:
            outcomes: Generator[dict, None, None] = _ray(tasks, address, workers, threads, on_start)
        elif workers == 0:
            outcomes = _inline(tasks, on_start)
        else:
            outcomes = _pool(tasks, workers, threads, on_start)
        done = 0
        previous_handler = _raise_on_sigterm()
        try:
            for outcome_list in outcomes:
                for outcome in outcome_list:
                    store.record_result(outcome["point_id"], outcome["status"], outcome["results"], outcome["seconds"], outcome["error"])
                    in_flight.discard(outcome["point_id"])
                    done += 1
                    log(_outcome_line(outcome, labels[outcome["point_id"]], done, len(todo)))
        finally:
            # Interrupted (Ctrl-C, SIGTERM): the backend stops its workers, and the points in
            # flight go back to pending; their checkpoints stay.
            outcomes.close()
            if in_flight:
                store.mark_pending(in_flight)
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
        return store.counts()


def _pulse_load(config) -> float:
    """Expected pulses per line and unit input, ``BL · Cx = sqrt(lr · BL / dw_min)`` (Gokmen &
    Vlasov 2016, Eq. 3), the measure by which :func:`group_tasks` orders lockstep points; 0 for
    a device without a pulse step (the ideal device)."""
    tile = config.tile_config()
    if tile.device.is_ideal:
        return 0.0
    return (config.lr * tile.update.bl / tile.device.nominal_step) ** 0.5


def group_tasks(tasks: list[dict], lockstep: int, data_dir: str | None, threads: int) -> list[dict]:
    """Bundle point tasks into lockstep groups of at most ``lockstep`` points.

    A group interrupted earlier is formed again as it was (its members' ``lockstep.json``), so
    it resumes from its checkpoint; if some of its members are no longer to be run, the others
    start again on their own (their group checkpoint cannot be split). The remaining points are
    grouped by :func:`~insitu.sweep.lockstep.lockstep_group_key` and, within a key, ordered by
    pulse load (:func:`_pulse_load`), heaviest first, before they are cut into groups.
    """
    import json

    from ..training import TrainConfig
    from .lockstep import GROUP_FILE, lockstep_group_key

    # Members are matched by run folder name (unique in a study): the paths a marker recorded
    # were relative to the directory the group was started from, which may not be this one.
    by_dir = {Path(t["run_dir"]).name: t for t in tasks}
    used: set[str] = set()
    bundles: list[list[dict]] = []
    for task in tasks:
        marker = Path(task["run_dir"]) / GROUP_FILE
        if Path(task["run_dir"]).name in used or not marker.exists():
            continue
        members = [Path(m).name for m in json.loads(marker.read_text())["members"]]
        if all(m in by_dir and m not in used for m in members):
            bundles.append([by_dir[m] for m in members])
            used.update(members)
        else:
            for m in members:
                if m in by_dir and m not in used:
                    _forget_group(Path(by_dir[m]["run_dir"]))
    pending: dict[str, list[dict]] = {}
    alone: list[list[dict]] = []
    for task in tasks:
        if Path(task["run_dir"]).name in used:
            continue
        key = lockstep_group_key(TrainConfig.from_dict(task["config"])) if lockstep > 1 else None
        # A point already part-trained on its own resumes on its own.
        if key is None or (Path(task["run_dir"]) / "checkpoint.pt").exists():
            alone.append([task])
            continue
        pending.setdefault(key, []).append(task)
    for members in pending.values():
        # A group pays for the largest block of devices any of its replicas updates (each step
        # pads the replicas' blocks to the largest, and draws the longest pulse train), so
        # points of similar pulse load are grouped together: one heavy replica (a small dw_min,
        # a long BL) then slows down a few heavy ones, not a whole group of light ones. Heaviest
        # first, so that the longest group starts first when several workers share the groups.
        members = sorted(members, key=lambda t: _pulse_load(TrainConfig.from_dict(t["config"])), reverse=True)
        bundles.extend(members[i : i + lockstep] for i in range(0, len(members), lockstep))
    result = []
    for bundle in bundles + alone:
        if len(bundle) == 1 and not (Path(bundle[0]["run_dir"]) / GROUP_FILE).exists():
            result.append(bundle[0])
        else:
            result.append({"group": bundle, "data_dir": data_dir, "threads": threads})
    return result


def _forget_group(run_dir: Path) -> None:
    """A member of a group that cannot be formed again starts over on its own."""
    from .lockstep import CHECKPOINT_NAME, GROUP_FILE

    for name in (GROUP_FILE, CHECKPOINT_NAME, "results.json"):
        (run_dir / name).unlink(missing_ok=True)


def _raise_on_sigterm():
    """Make SIGTERM (a plain `kill`, a batch system's stop) end the study like Ctrl-C does, so the
    points in flight go back to pending at once; returns the previous handler to restore."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, stop)


def _describe(point: dict, study: StudyConfig) -> str:
    axes = point["axes"]
    if study.mode == "one-at-a-time" and len(axes) == 1:
        shown = {axes[0]: point["coords"][axes[0]]}
    elif study.mode == "one-at-a-time":
        shown = {}
    else:
        shown = point["coords"]
    text = ", ".join(f"{k}={v}" for k, v in shown.items()) or "baseline"
    return f"#{point['id']} {text} seed {point['seed']}"


def _outcome_line(outcome: dict, label: str, done: int, total: int) -> str:
    results = outcome["results"] or {}
    epochs = results.get("epochs") or []
    error = f"test error {100 * epochs[-1]['test_error']:.2f}%" if epochs else "no epoch finished"
    note = " (resumed)" if outcome.get("resumed") else ""
    line = f"[{done}/{total}] {label}: {outcome['status']}{note}, {error}, {outcome['seconds']:.1f} s"
    if outcome.get("note"):
        line += f"\n    {outcome['note']}"
    if outcome["status"] == "failed" and outcome["error"]:
        line += f"\n    {outcome['error'].splitlines()[0]}"
    return line
