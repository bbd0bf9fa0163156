"""Persistent state of the local API: SQLite metadata plus blobs and adapters on disk.

Layout under the server's root (`<work_dir>/localapi`):

    meta.sqlite3          files, jobs, events, checkpoints, models
    files/<file-id>       uploaded and generated file contents
    jobs/<ftjob-id>/      the trainer's output folder (adapter, checkpoints, training_state.pt to resume)
    models/               the model registry's cache (converted weights)
    server.log            written by the detached server (see helpers/local_backend.py)

One `Storage` per server process; its methods are thread-safe (one connection, one lock).
Rows come back as plain dicts; `schemas.py` turns them into OpenAI objects.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
import threading
import time
from pathlib import Path
from typing import Any, Iterable

_ALPHABET = string.ascii_letters + string.digits

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    created_at INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    status TEXT NOT NULL,
    status_details TEXT,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    created_at INTEGER NOT NULL,
    model TEXT NOT NULL,
    training_file TEXT NOT NULL,
    validation_file TEXT,
    suffix TEXT,
    seed INTEGER NOT NULL,
    metadata TEXT,
    hyperparameters TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    fine_tuned_model TEXT,
    started_at INTEGER,
    finished_at INTEGER,
    estimated_finish INTEGER,
    trained_tokens INTEGER,
    result_files TEXT NOT NULL DEFAULT '[]',
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    n_examples INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    resume_pending INTEGER NOT NULL DEFAULT 0,
    method TEXT NOT NULL DEFAULT 'supervised'
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    step_number INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    metrics TEXT NOT NULL,
    path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    created INTEGER NOT NULL,
    kind TEXT NOT NULL,
    base_model TEXT NOT NULL,
    adapter_dir TEXT NOT NULL,
    job_id TEXT NOT NULL
);
"""

# columns added after the first release: (table, column, declaration), added to older databases on open
_ADDED_COLUMNS = [("jobs", "resume_pending", "INTEGER NOT NULL DEFAULT 0"),
                  ("jobs", "method", "TEXT NOT NULL DEFAULT 'supervised'")]

_JSON_COLUMNS = {"metadata", "hyperparameters", "error", "result_files", "data", "metrics"}


def new_id(prefix: str, n: int = 24) -> str:
    """A random OpenAI-style id such as `file-…` or `ftjob-…`."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def now() -> int:
    """The current Unix time in whole seconds (what OpenAI's objects carry)."""
    return int(time.time())


class Storage:
    """Thread-safe access to the server's SQLite database and its folders."""

    def __init__(self, root: Path, models_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.jobs_dir = self.root / "jobs"
        self.models_dir = Path(models_dir) if models_dir else self.root / "models"
        for d in (self.root, self.files_dir, self.jobs_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "meta.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        for table, column, decl in _ADDED_COLUMNS:
            have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # ---- low level -------------------------------------------------------------------
    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict]:
        with self._lock:
            return [_decode(r) for r in self._db.execute(sql, tuple(args)).fetchall()]

    def _one(self, sql: str, args: Iterable[Any] = ()) -> dict | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def _insert(self, table: str, row: dict) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._lock:
            self._db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", [_encode(k, v) for k, v in row.items()])

    def _update(self, table: str, id_: str, **fields: Any) -> None:
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE {table} SET {sets} WHERE id = ?", [*(_encode(k, v) for k, v in fields.items()), id_])

    def _page(self, table: str, where: str, args: list, *, after: str | None, limit: int, desc: bool) -> tuple[list[dict], bool] | None:
        """One page ordered by insertion; None when the `after` cursor is unknown."""
        if after:
            cur = self._one(f"SELECT seq FROM {table} WHERE id = ?", [after])
            if cur is None:
                return None
            where += f" AND seq {'<' if desc else '>'} ?"
            args = [*args, cur["seq"]]
        order = "DESC" if desc else "ASC"
        rows = self._rows(f"SELECT * FROM {table} WHERE {where} ORDER BY seq {order} LIMIT ?", [*args, limit + 1])
        return rows[:limit], len(rows) > limit

    # ---- files -------------------------------------------------------------------------
    def blob_path(self, file_id: str) -> Path:
        """Where a file's bytes live (ids are generated by us, never taken from a client)."""
        return self.files_dir / file_id

    def add_file(self, row: dict) -> dict:
        """Record a file whose blob is already in place."""
        self._insert("files", row)
        return self.get_file(row["id"])  # type: ignore[return-value]

    def get_file(self, file_id: str) -> dict | None:
        """A file row, or None."""
        return self._one("SELECT * FROM files WHERE id = ?", [file_id])

    def list_files(self, *, purpose: str | None, after: str | None, limit: int, desc: bool) -> tuple[list[dict], bool] | None:
        """A page of files, optionally of one purpose."""
        where, args = ("purpose = ?", [purpose]) if purpose else ("1 = 1", [])
        return self._page("files", where, args, after=after, limit=limit, desc=desc)

    def delete_file(self, file_id: str) -> bool:
        """Remove a file's row and blob; False when it did not exist."""
        with self._lock:
            cur = self._db.execute("DELETE FROM files WHERE id = ?", [file_id])
        self.blob_path(file_id).unlink(missing_ok=True)
        return cur.rowcount > 0

    # ---- jobs --------------------------------------------------------------------------
    def add_job(self, row: dict) -> dict:
        """Insert a new job."""
        self._insert("jobs", row)
        return self.get_job(row["id"])  # type: ignore[return-value]

    def get_job(self, job_id: str) -> dict | None:
        """A job row, or None."""
        return self._one("SELECT * FROM jobs WHERE id = ?", [job_id])

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set some columns of a job."""
        self._update("jobs", job_id, **fields)

    def jobs_with_status(self, *statuses: str) -> list[dict]:
        """Jobs in the given states, oldest first (the FIFO order)."""
        marks = ", ".join("?" for _ in statuses)
        return self._rows(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq ASC", statuses)

    def list_jobs(self, *, metadata: dict[str, str] | None, after: str | None, limit: int) -> tuple[list[dict], bool] | None:
        """A page of jobs, newest first, optionally only those whose metadata contains every given pair."""
        where, args = "1 = 1", []
        for key, value in (metadata or {}).items():
            where += " AND json_extract(metadata, ?) = ?"
            args += ["$." + json.dumps(key), value]
        return self._page("jobs", where, args, after=after, limit=limit, desc=True)

    def list_jobs_null_metadata(self, *, after: str | None, limit: int) -> tuple[list[dict], bool] | None:
        """A page of jobs without metadata, newest first."""
        return self._page("jobs", "metadata IS NULL", [], after=after, limit=limit, desc=True)

    # ---- events ------------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, *, level: str = "info", type_: str = "message", data: dict | None = None) -> dict:
        """Append an event to a job's log."""
        row = {"id": new_id("ftevent-"), "job_id": job_id, "created_at": now(), "level": level,
               "message": message, "type": type_, "data": data}
        self._insert("events", row)
        return row

    def list_events(self, job_id: str, *, after: str | None, limit: int) -> tuple[list[dict], bool] | None:
        """A page of a job's events, newest first."""
        return self._page("events", "job_id = ?", [job_id], after=after, limit=limit, desc=True)

    def all_events(self, job_id: str, type_: str | None = None) -> list[dict]:
        """Every event of a job, oldest first."""
        if type_:
            return self._rows("SELECT * FROM events WHERE job_id = ? AND type = ? ORDER BY seq", [job_id, type_])
        return self._rows("SELECT * FROM events WHERE job_id = ? ORDER BY seq", [job_id])

    def delete_metrics_events_after(self, job_id: str, step: int) -> int:
        """Drop a job's `metrics` events of steps after `step` (trained again after a resume); how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM events WHERE job_id = ? AND type = 'metrics' "
                                   "AND CAST(json_extract(data, '$.step') AS INTEGER) > ?", [job_id, step])
        return cur.rowcount

    # ---- checkpoints and models --------------------------------------------------------
    def add_checkpoint(self, row: dict) -> None:
        """Record a checkpoint of a job."""
        self._insert("checkpoints", row)

    def job_checkpoints(self, job_id: str) -> list[dict]:
        """Every checkpoint of a job, oldest first."""
        return self._rows("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY seq", [job_id])

    def delete_checkpoints_after(self, job_id: str, step: int) -> None:
        """Forget a job's checkpoints (and their models) of steps after `step`."""
        with self._lock:
            rows = self._db.execute("SELECT model_id FROM checkpoints WHERE job_id = ? AND step_number > ?",
                                    [job_id, step]).fetchall()
            for r in rows:
                self._db.execute("DELETE FROM models WHERE id = ?", [r["model_id"]])
            self._db.execute("DELETE FROM checkpoints WHERE job_id = ? AND step_number > ?", [job_id, step])

    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> tuple[list[dict], bool] | None:
        """A page of a job's checkpoints, newest first."""
        return self._page("checkpoints", "job_id = ?", [job_id], after=after, limit=limit, desc=True)

    def add_model(self, row: dict) -> None:
        """Register a fine-tuned model or checkpoint model."""
        self._insert("models", row)

    def get_model(self, model_id: str) -> dict | None:
        """A fine-tuned model row, or None."""
        return self._one("SELECT * FROM models WHERE id = ?", [model_id])

    def list_models(self, kind: str | None = None) -> list[dict]:
        """Fine-tuned models (optionally of one kind), oldest first."""
        if kind:
            return self._rows("SELECT * FROM models WHERE kind = ? ORDER BY seq", [kind])
        return self._rows("SELECT * FROM models ORDER BY seq")

    def delete_model(self, model_id: str) -> bool:
        """Forget a fine-tuned model; False when unknown."""
        with self._lock:
            cur = self._db.execute("DELETE FROM models WHERE id = ?", [model_id])
        return cur.rowcount > 0


def _encode(key: str, value: Any) -> Any:
    """JSON-encode the structured columns."""
    if key in _JSON_COLUMNS and value is not None:
        return json.dumps(value, ensure_ascii=False)
    return value


def _decode(row: sqlite3.Row) -> dict:
    """A row as a dict with its JSON columns decoded."""
    out = dict(row)
    for key in _JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out
