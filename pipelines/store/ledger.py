"""The ledger: a small SQLite database, owned by the driver, that says what is done.

Tables:
    runs         one row per run: pipeline, params, options, status, times, counts.
    run_stages   per run and stage: fingerprint parts, executor, counts, why recomputed.
    objects      a stage's result for one batch lineage, keyed by its batch key. Objects are
                 shared between runs: that is cross-run reuse.
    parts        the Arrow files of an object, each with the item ids it covers
                 (``done``), its size and checksum.
    run_batches  which object each (run, stage, batch) uses.
    errors       failed items: stage, batch, item, type, message, traceback, attempts.
    stage_schemas  the Arrow schema of a stage's parts, per stage fingerprint (``_engine/schemas.py``).
    tasks        every computed task: stage, batch, the worker that ran it, when it started and
                 ended, its items and failed items (the run report's timeline).
    leases       which driver computes a batch key now (owner, heartbeat), so that two runs
                 on one store never compute the same batch at once (``_engine/leases.py``).

"Done" means "the ledger says so and the file is whole" (Luigi's ``complete()``, made exact
by fingerprints). WAL mode keeps readers (``runs``, ``inspect``) off the writer's back;
every change is one transaction, so a crash leaves the ledger as of the last batch. The WAL
is checkpointed into the database every ``CHECKPOINT_SECONDS`` (passively, after a commit),
so losing the ``-wal`` file costs seconds of records, not a run's.

Part paths are stored relative to the store's data root (``runs/<run>/<stage>/<file>``) and
made whole on the way out, so a store can be moved or copied, locally or on S3. The schema
has a version (``PRAGMA user_version``); ``MIGRATIONS`` (``ledger_schema.py``) bring older ledgers up to date when
they are opened. The ledger is an index of the part files, which describe themselves:
``repair.py`` rebuilds it from them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import settings
from pipelines._engine.idset import IdSet
from pipelines.store.arrow import FileInfo
from pipelines.store.ledger_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION

CHECKPOINT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Part:
    """One Arrow file of an object: the ids it covers and how to verify it."""

    key: str
    path: str
    done: IdSet
    rows: int
    bytes: int
    checksum: str
    first: int

    @property
    def info(self) -> FileInfo:
        return FileInfo(self.path, self.rows, self.bytes, self.checksum)


@dataclass(frozen=True, slots=True)
class ItemError:
    """A failed item, as the ledger and ``inspect`` show it."""

    stage: str
    batch: int
    item: int | None
    error_type: str
    message: str
    traceback: str
    attempts: int
    input: str | None = None
    position: int | None = None  # the item's index in the whole source, where it has one

    @property
    def where(self) -> str:
        """``item 1,000`` (or ``batch 2, item 232`` when there is no overall index)."""
        if self.position is not None:
            return f"item {self.position:,}"
        if self.item is None:
            return f"batch {self.batch}"
        return f"batch {self.batch}, item {self.item}"


@dataclass(frozen=True, slots=True)
class TaskTiming:
    """When and where one task ran: the worker (``host/pid``, and the thread when it is not the
    process's main one), its wall-clock start and end, its items and failed items."""

    worker: str
    started: float
    ended: float
    items: int
    failed: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.worker, self.started, self.ended, self.items, self.failed))


class Ledger:
    """The SQLite ledger of one store. Thread-safe; one connection, one lock.

    Args:
        path: the SQLite file.
        data_root: the folder or URL part paths are relative to (``None``: stored as given).

    Raises:
        sqlite3.DatabaseError: the file is not a ledger (damaged); ``Store`` rebuilds it. Or it
            cannot be written (``readonly.is_read_only``): ``Store`` makes that a usage error.
        UsageError: the ledger was written by a newer version of pipelines.
    """

    def __init__(self, path: str | os.PathLike[str], data_root: str | None = None, *, read_only: bool = False) -> None:
        from pipelines.store import readonly

        self.path = Path(path)
        self.read_only = read_only  # open for reading only, creating nothing (``readonly.py``)
        self.data_root = data_root
        self._location = data_root.split("?", 1)[0].rstrip("/") + "/" if data_root else None
        self._lock = threading.RLock()
        self._batched = False
        self._begun = False  # inside ``batch()``: its transaction has begun
        self._checkpointed = time.monotonic()
        if read_only:
            self._db = readonly.connect(self.path, SCHEMA)
            self._db.row_factory = sqlite3.Row
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if settings.fsync() else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._db.executescript(SCHEMA)
            self._migrate()
            readonly.check_writable(self._db)  # a read-only ledger fails now, not at the run's first record
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            from pipelines.errors import UsageError

            raise UsageError(
                f"the ledger {self.path} has schema version {version}, newer than this pipelines "
                f"({SCHEMA_VERSION}): upgrade pipelines to use this store"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction() as db:
                MIGRATIONS[target](db)
                db.execute(f"PRAGMA user_version={target}")

    @property
    def version(self) -> int:
        return int(self.query("PRAGMA user_version")[0][0])

    def close(self) -> None:
        with self._lock:
            if not self.read_only:
                self._checkpoint()
            self._db.close()

    # -- paths ------------------------------------------------------------------------
    def relative(self, path: str) -> str:
        """A part path as stored: relative to the data root when it lies under it."""
        if self._location is None:
            return path
        bare = path.split("?", 1)[0] if "://" in path else path
        return bare[len(self._location) :] if bare.startswith(self._location) else path

    def absolute(self, stored: str) -> str:
        """A stored part path made whole again (a local path or a URL)."""
        if self.data_root is None or stored.startswith("/") or "://" in stored:
            return stored
        from pipelines.store.arrow import join

        return join(self.data_root, *stored.split("/"))

    # -- durability -------------------------------------------------------------------
    def _committed(self) -> None:
        """After a commit: move the WAL into the database now and then (cheap, never blocks)."""
        now = time.monotonic()
        if now - self._checkpointed >= CHECKPOINT_SECONDS:
            self._checkpointed = now
            self._checkpoint()

    def _checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # busy or closed: the next one will do
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One change, atomic; inside ``batch()`` it joins the batch's transaction."""
        with self._lock:
            if self._batched:
                if not self._begun:  # the turn's first change opens its transaction
                    self._db.execute("BEGIN IMMEDIATE")
                    self._begun = True
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._committed()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the changes of one turn of the driver's loop into one transaction.

        Every part file is written before the turn that records it, so a crash mid-turn
        loses only records of finished tasks, which are computed again: the ledger never
        names a file that is not whole. The transaction begins at the turn's first change
        (``transaction``): a turn that only reads (most turns of a chain of small stages)
        writes nothing to the log.
        """
        with self._lock:
            if self._batched:
                yield
                return
            self._batched, self._begun = True, False
            try:
                yield
            except BaseException:
                self._batched = False
                if self._begun:
                    self._db.execute("ROLLBACK")
                raise
            self._batched = False
            if not self._begun:
                return
            self._db.execute("COMMIT")
            self._committed()

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- runs -------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        *,
        pipeline: str,
        module: str,
        dags_dir: str | None,
        params: str | None,
        options: dict[str, Any],
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (id, pipeline, module, dags_dir, params, options, status, started, pid, host)"
                " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (
                    run_id,
                    pipeline,
                    module,
                    dags_dir,
                    params,
                    json.dumps(options),
                    time.time(),
                    os.getpid(),
                    socket.gethostname(),
                ),
            )

    def reopen_run(self, run_id: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='running', ended=NULL, pid=?, host=?, attempts=attempts+1,"
                " message=NULL WHERE id=?",
                (os.getpid(), socket.gethostname(), run_id),
            )

    def finish_run(self, run_id: str, *, status: str, items: int, failed: int, message: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status=?, ended=?, items=?, failed=?, message=? WHERE id=?",
                (status, time.time(), items, failed, message, run_id),
            )

    def run(self, run_id: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM runs WHERE id=?", (run_id,))
        return rows[0] if rows else None

    def latest_run(self, pipeline: str | None = None) -> sqlite3.Row | None:
        if pipeline:
            rows = self.query("SELECT * FROM runs WHERE pipeline=? ORDER BY started DESC LIMIT 1", (pipeline,))
        else:
            rows = self.query("SELECT * FROM runs ORDER BY started DESC LIMIT 1")
        return rows[0] if rows else None

    def runs(self, limit: int = 50) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM runs ORDER BY started DESC LIMIT ?", (limit,))

    # -- stages -----------------------------------------------------------------------
    def save_stage(self, run_id: str, stage: str, **fields: Any) -> None:
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        updates = ", ".join(f"{c}=excluded.{c}" for c in fields)
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO run_stages (run_id, stage, {cols}) VALUES (?, ?, {marks})"
                f" ON CONFLICT (run_id, stage) DO UPDATE SET {updates}",
                (run_id, stage, *fields.values()),
            )

    def save_stages(self, run_id: str, rows: dict[str, dict[str, Any]]) -> None:
        """Insert or update many stage rows (stage name -> fields) in one transaction."""
        if not rows:
            return
        cols = list(next(iter(rows.values())))
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols)
        with self.transaction() as db:
            db.executemany(
                f"INSERT INTO run_stages (run_id, stage, {', '.join(cols)}) VALUES (?, ?, "
                f"{', '.join('?' for _ in cols)}) ON CONFLICT (run_id, stage) DO UPDATE SET {updates}",
                [(run_id, stage, *(fields[c] for c in cols)) for stage, fields in rows.items()],
            )

    def previous_stages(self, pipeline: str, before_run: str, runs: int = 50) -> dict[str, sqlite3.Row]:
        """Each stage as the latest earlier run of the pipeline had it (to explain recomputation)."""
        rows = self.query(
            "SELECT s.* FROM run_stages s JOIN (SELECT id, started FROM runs WHERE pipeline=? AND id != ?"
            " AND status != 'rebuilt'"
            " ORDER BY started DESC LIMIT ?) r ON r.id = s.run_id ORDER BY r.started",
            (pipeline, before_run, runs),
        )
        return {row["stage"]: row for row in rows}

    def stages(self, run_id: str) -> dict[str, sqlite3.Row]:
        """The run's stages in pipeline order: the runner saves them in that order when the run
        starts, so the order of insertion (SQLite's ``rowid``) is the pipeline's; an upsert keeps it."""
        return {r["stage"]: r for r in self.query("SELECT * FROM run_stages WHERE run_id=? ORDER BY rowid", (run_id,))}

    # -- objects and parts ------------------------------------------------------------
    def parts(self, key: str) -> list[Part]:
        rows = self.query(
            "SELECT key, path, done, rows, bytes, checksum, first FROM parts WHERE key=? ORDER BY first, created",
            (key,),
        )
        return [
            Part(
                r["key"],
                self.absolute(r["path"]),
                IdSet.from_json(r["done"]),
                r["rows"],
                r["bytes"],
                r["checksum"],
                r["first"],
            )
            for r in rows
        ]

    def item_parts(self, stage: str, fingerprint: str) -> list[sqlite3.Row]:
        """The parts of ``stage`` computed under ``fingerprint`` that carry their items' hashes
        (``items``, aligned with ``done``); paths made whole."""
        rows = self.query(
            "SELECT p.path, p.done, p.rows, p.bytes, p.checksum, p.items FROM parts p JOIN objects o ON o.key = p.key"
            " WHERE o.fingerprint = ? AND o.stage = ? AND p.items IS NOT NULL ORDER BY p.created",
            (fingerprint, stage),
        )
        return [{**dict(r), "path": self.absolute(r["path"])} for r in rows]  # type: ignore[misc]

    def forget_part(self, key: str, path: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM parts WHERE key=? AND path=?", (key, self.relative(path)))

    def forget_object(self, key: str) -> None:
        """Drop every part of an object (``--fresh``): it is about to be computed again."""
        with self.transaction() as db:
            db.execute("DELETE FROM parts WHERE key=?", (key,))

    def record_part(
        self,
        *,
        run_id: str,
        stage: str,
        batch: int,
        key: str,
        fingerprint: str,
        info: FileInfo | None,
        done: IdSet,
        errors: Iterable[ItemError] = (),
        resolved: IdSet | None = None,
        task: TaskTiming | None = None,
        items: bytes | None = None,
    ) -> None:
        """Record one finished task: its file, the ids it covers (and their input items' hashes,
        ``items``), its failed items, when and where it ran."""
        now = time.time()
        with self.transaction() as db:
            if task is not None:
                db.execute(
                    "INSERT INTO tasks (run_id, stage, batch, worker, started, ended, items, failed)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, stage, batch, *task),
                )
            db.execute(
                "INSERT OR IGNORE INTO objects (key, stage, fingerprint, batch, created) VALUES (?, ?, ?, ?, ?)",
                (key, stage, fingerprint, batch, now),
            )
            if info is not None:
                db.execute(
                    "INSERT OR REPLACE INTO parts (key, path, done, rows, bytes, checksum, first, run_id,"
                    " created, items) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        self.relative(info.path),
                        done.to_json(),
                        info.rows,
                        info.bytes,
                        info.checksum,
                        done.first() if done else -1,
                        run_id,
                        now,
                        items,
                    ),
                )
            if done and self._has_open_errors(db, key):
                self._resolve(db, key, done)
            if errors:
                self._insert_errors(db, run_id, key, errors, now)

    def record_errors(self, *, run_id: str, key: str, errors: Iterable[ItemError]) -> None:
        with self.transaction() as db:
            self._insert_errors(db, run_id, key, errors, time.time())

    @staticmethod
    def _insert_errors(db: sqlite3.Connection, run_id: str, key: str, errors: Iterable[ItemError], now: float) -> None:
        errors = list(errors)
        # an item that fails again replaces its earlier error: one dead item is one open error
        db.executemany(
            "UPDATE errors SET resolved=2 WHERE key=? AND resolved=0 AND stage=? AND batch=? AND item IS ?",
            [(key, e.stage, e.batch, e.item) for e in errors],
        )
        db.executemany(
            "INSERT INTO errors (run_id, stage, batch, item, key, error_type, message, traceback, attempts, input,"
            " created, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    run_id,
                    e.stage,
                    e.batch,
                    e.item,
                    key,
                    e.error_type,
                    e.message,
                    e.traceback,
                    e.attempts,
                    e.input,
                    now,
                    e.position,
                )
                for e in errors
            ],
        )

    @staticmethod
    def _has_open_errors(db: sqlite3.Connection, key: str) -> bool:
        return db.execute("SELECT 1 FROM errors WHERE key=? AND resolved=0 LIMIT 1", (key,)).fetchone() is not None

    @staticmethod
    def _resolve(db: sqlite3.Connection, key: str, done: IdSet) -> None:
        for a, b in done.ranges:
            db.execute("UPDATE errors SET resolved=1 WHERE key=? AND resolved=0 AND item>=? AND item<?", (key, a, b))

    def set_batch(self, run_id: str, stage: str, batch: int, key: str, status: str, rows: int, failed: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO run_batches (run_id, stage, batch, key, status, rows, failed)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, stage, batch, key, status, rows, failed),
            )

    def tasks(self, run_id: str) -> list[sqlite3.Row]:
        """The run's computed tasks, in the order they started."""
        return self.query("SELECT * FROM tasks WHERE run_id=? ORDER BY started", (run_id,))

    # -- stage schemas ----------------------------------------------------------------
    def stage_schema(self, stage: str, fingerprint: str) -> bytes | None:
        """The Arrow schema (IPC bytes) recorded for a stage's parts, if any."""
        rows = self.query("SELECT schema FROM stage_schemas WHERE stage=? AND fingerprint=?", (stage, fingerprint))
        return bytes(rows[0]["schema"]) if rows else None

    def save_stage_schema(self, stage: str, fingerprint: str, schema: bytes, *, replacing: bytes | None = None) -> bool:
        """Record a stage's first schema, or replace ``replacing`` with a refined one.

        Returns:
            False when another run recorded (or refined) it first: read it again.
        """
        args: tuple[str | bytes, ...]
        with self.transaction() as db:
            if replacing is None:
                sql, args = "INSERT OR IGNORE INTO stage_schemas VALUES (?, ?, ?)", (stage, fingerprint, schema)
            else:
                sql = "UPDATE stage_schemas SET schema=? WHERE stage=? AND fingerprint=? AND schema=?"
                args = (schema, stage, fingerprint, replacing)
            return db.execute(sql, args).rowcount == 1

    def run_batches(self, run_id: str, stage: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM run_batches WHERE run_id=? AND stage=? ORDER BY batch", (run_id, stage))

    # -- errors -----------------------------------------------------------------------
    def open_errors(self, run_id: str, stage: str | None = None) -> list[ItemError]:
        sql = "SELECT * FROM errors WHERE run_id=? AND resolved=0"
        args: list[Any] = [run_id]
        if stage:
            sql += " AND stage=?"
            args.append(stage)
        rows = self.query(sql + " ORDER BY stage, batch, item, created", args)
        return [
            ItemError(
                r["stage"],
                r["batch"],
                r["item"],
                r["error_type"],
                r["message"],
                r["traceback"],
                r["attempts"],
                r["input"],
                r["position"],
            )
            for r in rows
        ]
