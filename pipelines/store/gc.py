"""Garbage collection: drop old runs, and the files no run needs any more.

```
python -m pipelines gc --keep-runs 3          # per pipeline, the 3 newest runs stay
python -m pipelines gc --older-than 30d       # runs started more than 30 days ago go
python -m pipelines gc --dry-run ...          # list what would go, with sizes; change nothing
```
With both rules, a run goes only if both let it go. A run that goes loses its ledger rows
(run, stages, batches, errors); its files go unless a run that stays uses them (objects are
shared between runs by batch key). Then whatever no ledger row names is removed: parts left
unrecorded by a kill, ``*.tmp-*`` files of interrupted writes, parts a reuse found damaged,
the folders of dropped runs.

Running runs are never touched. Every run holds ``gc.lock`` shared for its whole life, and
``gc`` takes it exclusively (without waiting): only then does it drop runs and shared
objects, which a running run might be about to reuse. When a run is running, ``gc`` does
what is safe anyway: it locks each other run's folder (its run lock) before cleaning it,
and leaves retention for later, saying so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipelines.errors import UsageError
from pipelines.store import arrow as batch_files
from pipelines.store import listing
from pipelines.store.repair import RESERVED

if TYPE_CHECKING:
    from pipelines.store import Store

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` → seconds.

    Raises:
        UsageError: any other text.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise UsageError(f"--older-than {text!r} is not an age such as 30d, 12h, 90m (units: s, m, h, d, w)")
    return float(match[1]) * _UNITS[match[2]]


@dataclass(frozen=True, slots=True)
class Doomed:
    """A file gc removes, and why."""

    rel: str
    bytes: int
    why: str


@dataclass(slots=True)
class GcPlan:
    """What one gc pass removes (``--dry-run`` prints it)."""

    runs: list[str] = field(default_factory=list)
    files: list[Doomed] = field(default_factory=list)
    parts: list[tuple[str, str]] = field(default_factory=list)  # ledger rows (key, relative path)
    skipped: list[str] = field(default_factory=list)  # running runs whose folders were left alone
    deferred: str = ""  # why retention was not applied

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.files)


@contextmanager
def _exclusive(store: Store) -> Iterator[bool]:
    """Hold ``gc.lock`` exclusively if no run holds it; yields whether it is held."""
    fd = os.open(store.root / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _run_locks(store: Store, run_ids: set[str]) -> Iterator[set[str]]:
    """Take the run lock of each run that is not running; yields the runs it holds."""
    held: dict[str, int] = {}
    try:
        for run_id in sorted(run_ids):
            folder = store.run_dir(run_id)
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held[run_id] = fd
        yield set(held)
    finally:
        for fd in held.values():
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _dropped_runs(store: Store, keep_runs: int | None, older_than: float | None, now: float) -> list[str]:
    if keep_runs is None and older_than is None:
        return []
    by_pipeline: dict[str, list[tuple[float, str]]] = {}
    for row in store.ledger.query("SELECT id, pipeline, started FROM runs"):
        by_pipeline.setdefault(row["pipeline"], []).append((row["started"] or 0.0, row["id"]))
    dropped = []
    for runs in by_pipeline.values():
        runs.sort(reverse=True)  # newest first
        for rank, (started, run_id) in enumerate(runs):
            beyond = keep_runs is None or rank >= keep_runs
            old = older_than is None or started < now - older_than
            if beyond and old:
                dropped.append(run_id)
    return sorted(dropped)


def plan(
    store: Store,
    *,
    keep_runs: int | None = None,
    older_than: float | None = None,
    exclusive: bool,
    now: float | None = None,
) -> GcPlan:
    """Work out what goes (see the module docstring); ``exclusive``: no run is running."""
    ledger = store.ledger
    result = GcPlan()
    if exclusive:
        result.runs = _dropped_runs(store, keep_runs, older_than, now or time.time())
    elif keep_runs is not None or older_than is not None:
        result.deferred = "a run is running: old runs are kept until no run is (run gc again then)"
    dropped = set(result.runs)
    kept_runs = {row["id"] for row in ledger.query("SELECT id FROM runs")} - dropped
    rows = ledger.query("SELECT key, path, run_id FROM parts")
    if dropped:
        used = {
            row["key"]
            for row in ledger.query(
                f"SELECT DISTINCT key FROM run_batches WHERE run_id NOT IN ({','.join('?' * len(dropped))})",
                sorted(dropped),
            )
        }
        result.parts = [(r["key"], r["path"]) for r in rows if r["key"] not in used and r["run_id"] not in kept_runs]
    gone = {path for _, path in result.parts}
    named = {r["path"] for r in rows} - gone
    for entry in listing.walk(store.data_root):
        bits = entry.parts
        if len(bits) < 3 or bits[0] != "runs":
            continue
        run_id, name = bits[1], bits[-1]
        if entry.rel in named:
            continue
        if run_id in dropped:
            result.files.append(Doomed(entry.rel, entry.size, f"run {run_id} dropped"))
        elif ".tmp-" in name or name.endswith(".tmp") or name.startswith(".probe-"):
            result.files.append(Doomed(entry.rel, entry.size, "temp file left by an interrupted write"))
        elif len(bits) == 3 and name.startswith(".items-"):
            result.files.append(Doomed(entry.rel, entry.size, "item index left by an interrupted run"))
        elif entry.rel in gone:
            result.files.append(Doomed(entry.rel, entry.size, "part no remaining run uses"))
        elif len(bits) == 4 and bits[2] not in RESERVED and name.endswith(".arrow"):
            result.files.append(Doomed(entry.rel, entry.size, "orphan part: in no ledger record"))
    return result


def collect(
    store: Store, *, keep_runs: int | None = None, older_than: float | None = None, dry_run: bool = False
) -> GcPlan:
    """Plan and (unless ``dry_run``) carry out one gc pass; return what went (or would go).

    Raises:
        UsageError: ``keep_runs`` below 1.
    """
    if keep_runs is not None and keep_runs < 1:
        raise UsageError(f"--keep-runs must be at least 1, not {keep_runs}")
    with _exclusive(store) as exclusive:
        found = plan(store, keep_runs=keep_runs, older_than=older_than, exclusive=exclusive)
        runs_touched = {d.rel.split("/")[1] for d in found.files}
        with _run_locks(store, runs_touched) as held:
            found.skipped = sorted(runs_touched - held)
            found.files = [d for d in found.files if d.rel.split("/")[1] in held]
            if dry_run:
                return found
            _apply(store, found)
    return found


def _apply(store: Store, found: GcPlan) -> None:
    """Ledger rows first, then files: a crash in between leaves only orphans for the next pass."""
    dropped = sorted(found.runs)
    with store.ledger.transaction() as db:
        for table, column in (
            ("runs", "id"),
            ("run_stages", "run_id"),
            ("run_batches", "run_id"),
            ("errors", "run_id"),
        ):
            db.executemany(f"DELETE FROM {table} WHERE {column}=?", [(r,) for r in dropped])
        db.executemany("DELETE FROM parts WHERE key=? AND path=?", found.parts)
        db.execute(
            "DELETE FROM objects WHERE key NOT IN (SELECT key FROM parts) AND key NOT IN (SELECT key FROM run_batches)"
        )
    for doomed in found.files:
        batch_files.remove(listing.path_of(store.data_root, doomed.rel))
    listing.remove_empty_dirs(store.data_root)
    if store.remote:  # the runs' local folders (their locks)
        for run_id in dropped:
            folder = store.run_dir(run_id)
            (folder / ".lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
