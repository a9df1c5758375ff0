"""The store: Arrow batch files under ``runs/<run id>/<stage>/`` and the SQLite ledger.

```
<store>/                      default ./.pipelines, or --store PATH, or $PIPELINES_STORE
  ledger.sqlite               what is done (see ledger.py): an index of the files below
  gc.lock                     held shared by every running run, exclusively by `gc`
  runs/<run id>/<stage>/      000003-1f2e3d4c-00001.arrow: batch 3 (key 1f2e3d4c...), part 1
  runs/<run id>/outputs/      the final stages' tables as Parquet, written at the end
  runs/<run id>/dead_letter/  failed items of stages with on_error="collect"
```
A run may reference files of earlier runs: objects are shared by batch key. The ledger
stores paths relative to the store, so a store can be moved (``mv``) or copied (``cp -a``)
and the copy reads only its own files. Part files describe themselves (key, ids, checksum
in their Arrow metadata), so a store opened without its ledger (deleted, or damaged: it is
set aside as ``ledger.sqlite.damaged-<time>``) gets it rebuilt from the files first
(``repair.py``).

The batch files may live elsewhere: ``--store s3://bucket/prefix`` (any URL pyarrow's
filesystems take, query options such as ``endpoint_override`` included) keeps the files
there, where every worker can reach them, and the ledger and run locks on the driver, under
``./.pipelines/remote/`` (or ``$PIPELINES_LEDGER_DIR``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines import settings
from pipelines.errors import RunLockedError, UsageError
from pipelines.store import arrow as batch_files
from pipelines.store import listing, readonly
from pipelines.store.ledger import Ledger

if TYPE_CHECKING:
    from pipelines.store.repair import RepairReport

logger = logging.getLogger(__name__)
LEDGER = "ledger.sqlite"


def default_store_path() -> str:
    return settings.store()


def _ledger_dir_for(url: str) -> Path:
    import hashlib
    import re

    base = settings.ledger_dir()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("?")[0])[:80]
    return base / f"{readable}-{hashlib.blake2b(url.encode(), digest_size=4).hexdigest()}"


_issued: set[str] = set()


class Store:
    """A store directory: ledger plus batch files."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> None:
        """Open the store at ``root``, creating it; ``read_only``: create and write nothing, so
        that reading works on a read-only mount or a copy (``readonly.py``).

        Raises:
            UsageError: the store or its ledger cannot be written (or, ``read_only``, read).
        """
        given = str(root or default_store_path())
        if batch_files.is_url(given):
            self.data_root = given
            self.root = _ledger_dir_for(given)
        else:
            self.root = Path(given).absolute()
            self.data_root = str(self.root)
        self._locks: dict[str, int] = {}
        self._shared: int | None = None  # gc.lock, held shared while this process runs a run
        self.repaired: RepairReport | None = None  # when the ledger had to be rebuilt on opening
        if read_only:
            try:
                self.ledger = Ledger(self.root / LEDGER, data_root=self.data_root, read_only=True)
            except sqlite3.Error as exc:
                raise UsageError(f"store {self.root}: cannot read its ledger: {exc}") from None
            return
        try:
            (self.root / "runs").mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"store {self.root} is not writable: {exc.strerror or exc}") from None
        self.ledger = self._open_ledger()

    def _open_ledger(self) -> Ledger:
        """Open the ledger; if it is missing or damaged while files exist, rebuild it from them."""
        path = self.root / LEDGER
        lost = not path.exists()
        if lost:  # a WAL without its database belongs to no database: never replay it
            for suffix in ("-wal", "-shm"):
                path.with_name(LEDGER + suffix).unlink(missing_ok=True)
        try:
            ledger = Ledger(path, data_root=self.data_root)
        except sqlite3.DatabaseError as exc:
            if readonly.is_read_only(exc):  # not damaged: never set aside (nor rebuilt) for that
                raise UsageError(f"store {self.root}: its ledger cannot be written: {exc}") from None
            aside = path.with_name(f"{LEDGER}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            logger.warning(
                "the ledger %s is damaged (%s); set aside as %s, rebuilding it from the part files",
                path,
                exc,
                aside.name,
            )
            for suffix in ("", "-wal", "-shm"):
                old = path.with_name(LEDGER + suffix)
                if old.exists():
                    old.replace(aside.with_name(aside.name + suffix))
            ledger, lost = Ledger(path, data_root=self.data_root), True
        if lost and listing.has_runs(self.data_root):
            from pipelines.store.repair import rebuild

            self.repaired = rebuild(ledger, self.data_root)
            logger.warning(
                "the store %s had no ledger; rebuilt it from its files: %s", self.data_root, self.repaired.summary()
            )
        return ledger

    def close(self) -> None:
        for run_id in list(self._locks):
            self.unlock(run_id)
        self.ledger.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def new_run_id() -> str:
        """``20261130-101502-7f3a``: sortable by time, never the same twice in one process."""
        while True:
            run_id = f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
            if run_id not in _issued:
                _issued.add(run_id)
                return run_id

    def unused_run_id(self) -> str:
        """A new run id that no run in this store has."""
        while True:
            run_id = self.new_run_id()
            if self.ledger.run(run_id) is None and not self.run_dir(run_id).exists():
                return run_id

    @property
    def remote(self) -> bool:
        return batch_files.is_url(self.data_root)

    def run_dir(self, run_id: str) -> Path:
        """The run's local folder (its lock; for a local store, its files too)."""
        return self.root / "runs" / run_id

    def run_data(self, run_id: str, *parts: str) -> str:
        """Where the run's files go: a local path, or a URL for a remote store."""
        return batch_files.join(self.data_root, "runs", run_id, *parts)

    def part_path(self, run_id: str, stage: str, batch: int, key: str, part: int) -> str:
        """``runs/<run>/<stage>/<batch>-<key prefix>-<part>.arrow``: unique per object and part."""
        return self.run_data(run_id, stage, f"{batch:06d}-{key[:8]}-{part:05d}.arrow")

    def check_reachable(self) -> None:
        """Write and read a probe file in the data root; a usage error if that fails."""
        path = batch_files.join(self.data_root, f".probe-{os.getpid()}")
        try:
            info = batch_files.write_bytes(path, b"probe", rows=0, fsync=False)
            if batch_files.verify(info):
                raise OSError("the probe file did not read back")
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise UsageError(f"store {self.data_root} is not writable: {exc}") from None

    def lock(self, run_id: str) -> None:
        """Hold the run's lock for this process's lifetime; a second holder gets a clear error.

        A running run also holds ``gc.lock`` shared, so that ``gc`` never deletes what it may
        read: gc takes it exclusively, or leaves shared objects alone.
        """
        path = self.run_dir(run_id)
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"run {run_id} is already running (pid {holder}); wait for it or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._locks[run_id] = fd
        if self._shared is None:
            shared = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(shared, fcntl.LOCK_SH)  # waits only while a gc deletes
            self._shared = shared

    def unlock(self, run_id: str) -> None:
        fd = self._locks.pop(run_id, None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        if not self._locks and self._shared is not None:
            fcntl.flock(self._shared, fcntl.LOCK_UN)
            os.close(self._shared)
            self._shared = None
