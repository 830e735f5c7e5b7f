"""The results store of a study: one SQLite file (stdlib ``sqlite3``).

Tables:

* ``meta``: the study config (JSON), the insitu version that created the store, creation time;
* ``points``: one row per point: its full training config, coordinates on the axes, status
  (``pending``, ``running``, ``completed``, ``failed``, ``diverged``), run folder, timings,
  final and best test error, error message, insitu version that ran it;
* ``epochs``: per-epoch metrics of every point (test error, losses, learning rate, seconds).

The database runs in WAL mode and every change is one transaction, so a process killed at any
moment leaves the file consistent (SQLite's atomic commit): a point is either recorded with all
its epochs, or still pending/running. Only the process driving the study writes; workers return
their results to it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..config import ConfigError

__all__ = ["ResultsStore", "STATUSES", "FINAL_STATUSES", "StoreError"]

STATUSES = ("pending", "running", "completed", "failed", "diverged")
#: A point in one of these states is never run again (a diverged run would diverge again).
FINAL_STATUSES = ("completed", "diverged")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,
    coords TEXT NOT NULL,
    axes TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'diverged')),
    run_dir TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    seconds REAL,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    final_test_error REAL,
    best_test_error REAL,
    error TEXT,
    insitu_version TEXT,
    host TEXT,
    in_study INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS epochs (
    point_id INTEGER NOT NULL REFERENCES points(id),
    epoch INTEGER NOT NULL,
    lr REAL, train_loss REAL, test_error REAL, test_loss REAL,
    train_seconds REAL, seconds_per_sample REAL, rank1_writes INTEGER,
    PRIMARY KEY (point_id, epoch)
);
"""

_EPOCH_COLUMNS = ("lr", "train_loss", "test_error", "test_loss", "train_seconds", "seconds_per_sample", "rank1_writes")


class StoreError(RuntimeError):
    """The store cannot be used as asked (not a study store, another run holds it, ...)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class ResultsStore:
    """Read and write one study's SQLite file.

    Args:
        path: the ``.sqlite`` file (created with its folder if missing).
        create: allow creating a new store; otherwise the file must exist.
    """

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"No study store at {self.path}; run `insitu sweep run` first, or check the path.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            with self.transaction() as db:
                # executescript would commit on its own; the statements run one by one instead.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path} is not a usable study store ({exc}).") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- study ----------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self.db.execute("SELECT key, value FROM meta")}

    def study_dict(self) -> dict | None:
        value = self.meta().get("study")
        return json.loads(value) if value is not None else None

    def study(self):
        from .study import StudyConfig

        data = self.study_dict()
        if data is None:
            raise StoreError(f"{self.path} holds no study yet.")
        return StudyConfig.from_dict(data)

    def attach_study(self, study, run_root: str | os.PathLike, extend: bool = False) -> list[int]:
        """Record ``study`` and insert its points that the store does not have yet.

        A store belongs to one study. If the study changed since the store was made, this is an
        error (nothing is written) unless ``extend``: then the new study replaces the recorded
        one, its new points are added, and points that are no longer part of it are kept but
        marked out of the study (their results stay).

        Returns the ids of all points of ``study``, in study order.
        """
        from .. import __version__

        new = study.to_dict()
        old = self.study_dict()
        if old is not None and old != new and not extend:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"The study differs from the one recorded in {self.path} (in: {', '.join(changed)}). "
                "Nothing was changed in the store. Use another store (--out) for a different study, or "
                "pass --extend to add the new points to this one (finished points are kept)."
            )
        points = study.points()
        ids = []
        with self.transaction() as db:
            if old is None:
                db.execute("INSERT INTO meta VALUES ('created', ?)", (time.strftime("%Y-%m-%dT%H:%M:%S"),))
                db.execute("INSERT INTO meta VALUES ('insitu_version', ?)", (__version__,))
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('study', ?)", (_dumps(new),))
            db.execute("UPDATE points SET in_study = 0")
            next_id = (db.execute("SELECT COALESCE(MAX(id), 0) FROM points").fetchone()[0]) + 1
            for point in points:
                row = db.execute("SELECT id FROM points WHERE key = ?", (point.key,)).fetchone()
                if row is None:
                    run_dir = self._stored_run_dir(Path(run_root) / f"p{next_id:04d}-{point.key[:8]}")
                    db.execute(
                        "INSERT INTO points (id, key, seed, coords, axes, config, status, run_dir) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                        (next_id, point.key, point.seed, _dumps(point.coords), _dumps(list(point.axes)), _dumps(point.config.to_dict()), run_dir),
                    )
                    ids.append(next_id)
                    next_id += 1
                else:
                    # Coordinates and axis membership follow the (possibly extended) study.
                    db.execute(
                        "UPDATE points SET coords = ?, axes = ?, in_study = 1 WHERE id = ?",
                        (_dumps(point.coords), _dumps(list(point.axes)), row["id"]),
                    )
                    ids.append(row["id"])
        return ids

    # -- run folders ------------------------------------------------------------------------------
    # Run folders are recorded relative to the study folder (the store's folder), so that a study
    # resumed from another working directory, or moved, finds its runs. Stores written before
    # (issue 19) hold them relative to the working directory of their first run, or absolute.
    def _stored_run_dir(self, run_dir: Path) -> str:
        try:
            return str(run_dir.absolute().relative_to(self.path.parent.absolute()))
        except ValueError:  # run folders outside the study folder (API use): kept absolute
            return str(run_dir.absolute())

    def _run_dir(self, stored: str) -> str:
        """The run folder of a recorded entry, as a path usable from the present directory."""
        path, base = Path(stored), self.path.parent
        if not path.is_absolute() and (path.parts[:1] == ("runs",) or (base / path).exists()):
            return str(base / path)
        # An old entry: the folder inside the study (where `sweep run` puts it) if it is there or
        # nothing is anywhere yet; else the old place (a run folder outside the study).
        inside = base / "runs" / path.name
        if inside.exists() or not path.exists():
            return str(inside)
        return str(path)

    # -- status changes ---------------------------------------------------------------------------
    def reset_interrupted(self) -> int:
        """Points left ``running`` by a process that died go back to ``pending``; returns how many."""
        with self.transaction() as db:
            return db.execute("UPDATE points SET status = 'pending' WHERE status = 'running'").rowcount

    def mark_running(self, point_id: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE points SET status = 'running', attempts = attempts + 1, started = ?, host = ?, error = NULL WHERE id = ?",
                (time.time(), socket.gethostname(), point_id),
            )

    def mark_pending(self, point_ids) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE points SET status = 'pending' WHERE id = ? AND status = 'running'", [(i,) for i in point_ids])

    def record_result(self, point_id: int, status: str, results: dict | None, seconds: float, error: str | None = None) -> None:
        """Store the outcome of one point and all its epochs, atomically."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        epochs = (results or {}).get("epochs", [])
        errors = [e["test_error"] for e in epochs]
        with self.transaction() as db:
            db.execute("DELETE FROM epochs WHERE point_id = ?", (point_id,))
            db.executemany(
                f"INSERT INTO epochs (point_id, epoch, {', '.join(_EPOCH_COLUMNS)}) VALUES (?, ?{', ?' * len(_EPOCH_COLUMNS)})",
                [(point_id, e["epoch"], *(e.get(c) for c in _EPOCH_COLUMNS)) for e in epochs],
            )
            db.execute(
                "UPDATE points SET status = ?, finished = ?, seconds = ?, epochs_done = ?, final_test_error = ?, "
                "best_test_error = ?, error = ?, insitu_version = ? WHERE id = ?",
                (
                    status, time.time(), seconds, len(epochs), errors[-1] if errors else None,
                    min(errors) if errors else None, error, (results or {}).get("insitu_version"), point_id,
                ),
            )

    # -- queries ----------------------------------------------------------------------------------
    def points(self, in_study_only: bool = True) -> list[dict]:
        """All points as dicts (``coords``, ``axes`` and ``config`` decoded)."""
        query = "SELECT * FROM points" + (" WHERE in_study = 1" if in_study_only else "") + " ORDER BY id"
        rows = []
        for row in self.db.execute(query):
            item = dict(row)
            for name in ("coords", "axes", "config"):
                item[name] = json.loads(item[name])
            item["run_dir"] = self._run_dir(item["run_dir"])
            rows.append(item)
        return rows

    def epochs(self, point_id: int) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM epochs WHERE point_id = ? ORDER BY epoch", (point_id,))]

    def all_epochs(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM epochs ORDER BY point_id, epoch")]

    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for row in self.db.execute("SELECT status, COUNT(*) AS n FROM points WHERE in_study = 1 GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
