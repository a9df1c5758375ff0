"""The ledger's tables, and the migrations that bring an older ledger to this version.

A ledger records its version in ``PRAGMA user_version``; opening one runs the steps from its
version to ``SCHEMA_VERSION`` in order (``Ledger._migrate``), each in the transaction that
sets the new version.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, module TEXT, dags_dir TEXT,
    params TEXT, options TEXT, status TEXT NOT NULL, started REAL, ended REAL,
    pid INTEGER, host TEXT, items INTEGER DEFAULT 0, failed INTEGER DEFAULT 0,
    message TEXT, attempts INTEGER DEFAULT 1
);
CREATE TABLE IF NOT EXISTS run_stages (
    run_id TEXT, stage TEXT, fingerprint TEXT, code_fp TEXT, config_fp TEXT, params_fp TEXT,
    executor TEXT, status TEXT, batches INTEGER DEFAULT 0, reused INTEGER DEFAULT 0,
    computed INTEGER DEFAULT 0, items INTEGER DEFAULT 0, failed INTEGER DEFAULT 0,
    reason TEXT, seconds REAL DEFAULT 0, source_complete INTEGER DEFAULT 0,
    PRIMARY KEY (run_id, stage)
);
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY, stage TEXT, fingerprint TEXT, batch INTEGER, created REAL
);
CREATE TABLE IF NOT EXISTS parts (
    key TEXT, path TEXT, done TEXT, rows INTEGER, bytes INTEGER, checksum TEXT,
    first INTEGER, run_id TEXT, created REAL, PRIMARY KEY (key, path)
);
CREATE TABLE IF NOT EXISTS run_batches (
    run_id TEXT, stage TEXT, batch INTEGER, key TEXT, status TEXT, rows INTEGER, failed INTEGER,
    PRIMARY KEY (run_id, stage, batch)
);
CREATE TABLE IF NOT EXISTS errors (
    run_id TEXT, stage TEXT, batch INTEGER, item INTEGER, key TEXT, error_type TEXT,
    message TEXT, traceback TEXT, attempts INTEGER, input TEXT, created REAL,
    resolved INTEGER DEFAULT 0, position INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT, stage TEXT, batch INTEGER, worker TEXT, started REAL, ended REAL, items INTEGER, failed INTEGER
);
CREATE TABLE IF NOT EXISTS stage_schemas (
    stage TEXT, fingerprint TEXT, schema BLOB, PRIMARY KEY (stage, fingerprint)
);
CREATE INDEX IF NOT EXISTS tasks_by_run ON tasks (run_id);
CREATE INDEX IF NOT EXISTS errors_by_key ON errors (key, resolved);
CREATE INDEX IF NOT EXISTS errors_by_run ON errors (run_id, stage, resolved);
CREATE INDEX IF NOT EXISTS parts_by_run ON parts (run_id);
CREATE INDEX IF NOT EXISTS batches_by_key ON run_batches (key);
"""

SCHEMA_VERSION = 4


def _relative_paths(db: sqlite3.Connection) -> None:
    """Version 1: part paths relative to the store (``runs/<run>/...``), not absolute."""
    rows = db.execute("SELECT rowid, path, run_id FROM parts WHERE path LIKE '/%' OR path LIKE '%://%'").fetchall()
    for rowid, path, run_id in rows:
        bare = path.split("?", 1)[0]
        at = bare.rfind(f"/runs/{run_id}/")
        if at >= 0:
            db.execute("UPDATE parts SET path=? WHERE rowid=?", (bare[at + 1 :], rowid))


def _stage_schemas(db: sqlite3.Connection) -> None:
    """Version 2: ``stage_schemas``, one Arrow schema per stage fingerprint (``_engine/schemas.py``)."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS stage_schemas (stage TEXT, fingerprint TEXT, schema BLOB, "
        "PRIMARY KEY (stage, fingerprint))"
    )


def _leases(db: sqlite3.Connection) -> None:
    """Version 3: the leases of batch keys that concurrent runs take before computing them."""
    db.execute("CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, heartbeat REAL NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS leases_by_owner ON leases (owner)")


def _item_hashes(db: sqlite3.Connection) -> None:
    """Version 4: each part keeps the hashes of the input items it covers (item-level reuse),
    found by the stage's fingerprint."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(parts)")}
    if "items" not in columns:
        db.execute("ALTER TABLE parts ADD COLUMN items BLOB")
    db.execute("CREATE INDEX IF NOT EXISTS objects_by_fingerprint ON objects (fingerprint, stage)")


# version reached -> the step that reaches it from the one before
MIGRATIONS = {1: _relative_paths, 2: _stage_schemas, 3: _leases, 4: _item_hashes}
