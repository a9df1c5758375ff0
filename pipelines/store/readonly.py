"""A ledger that must not, or cannot, be written: read-only commands and read-only mounts.

``runs``, ``inspect``, ``export`` and ``report`` only read, so they open the ledger with
SQLite's ``mode=ro`` and create nothing: they work on a read-only mount, a copy, a store
another user owns. A run must write; a ledger it cannot write is found when it is opened
(``check_writable``) and becomes a usage error, not an ``OperationalError`` at the run's first
record, nor a ledger set aside as damaged (``is_read_only``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

SQLITE_READONLY = 8  # and its extended codes: SQLITE_READONLY_* = 8 | (n << 8)
SQLITE_CANTOPEN = 14


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open the ledger at ``path`` for reading only, creating no file.

    SQLite's ``mode=ro`` still creates the ``-wal`` and ``-shm`` files of a WAL database when
    they are missing, and fails where it cannot. They are missing only when no connection is
    open, so that nobody is writing: the file is then opened ``immutable``, which creates
    nothing. No ledger yet: an empty one in memory (``schema``) answers "no runs".
    """
    if not path.exists():
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.executescript(schema)
        return db
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    if not Path(f"{path}-shm").exists():
        uri += "&immutable=1"
    db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a damaged file fails now
    except BaseException:
        db.close()
        raise
    return db


def check_writable(db: sqlite3.Connection) -> None:
    """Write to the ledger and roll it back, so that a read-only one fails now.

    Raises:
        sqlite3.OperationalError: the ledger cannot be written (``is_read_only``).
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"PRAGMA user_version={version}")
    finally:
        db.execute("ROLLBACK")


def is_read_only(exc: BaseException) -> bool:
    """``exc`` says the ledger cannot be written (a read-only file or mount), not that it is damaged."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (SQLITE_READONLY, SQLITE_CANTOPEN)
    return "readonly database" in str(exc) or "unable to open database file" in str(exc)
