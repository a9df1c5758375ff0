"""Where a downloaded body lives: in memory while it is small, in a file once it is large.

Memory must follow what the *worker* chooses to hold, not what servers choose to send. Two
bounds make that so:

* a body larger than ``spool_over`` bytes goes to a file as it streams in (the whole body
  never sits in memory, however large it is);
* a ``MemoryBudget`` per worker event loop caps the bytes that bodies held in memory take
  together, for as long as the ``Response`` objects holding them are alive (a finalizer gives
  the bytes back); a body that does not fit in what is left goes to a file too.

Files are named by the SHA-256 of their content, written to a temporary name and renamed,
so a crash never leaves a half body under a final name, and the same body downloaded twice
is stored once. They stay after the run (a later stage, or a resume, reads them); delete the
folder when the run's outputs are no longer needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import weakref
from collections.abc import AsyncIterable
from pathlib import Path
from typing import IO

from pipelines import settings


class MemoryBudget:
    """Bytes that in-memory bodies of one worker loop may take together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()  # finalizers may run on any thread

    @property
    def used(self) -> int:
        return self._used

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes if they fit; return whether they did."""
        with self._lock:
            if self._used + n > self.limit:
                return False
            self._used += n
            return True

    def give_back(self, n: int) -> None:
        with self._lock:
            self._used = max(0, self._used - n)

    def hold_until_collected(self, owner: object, n: int) -> None:
        """Keep ``n`` bytes reserved until ``owner`` is garbage-collected."""
        weakref.finalize(owner, self.give_back, n)


_budgets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, MemoryBudget]] = weakref.WeakKeyDictionary()
_budgets_lock = threading.Lock()


def loop_budget(limit: int) -> MemoryBudget:
    """The running event loop's budget of ``limit`` bytes (one per loop and limit)."""
    loop = asyncio.get_running_loop()
    with _budgets_lock:
        per_loop = _budgets.setdefault(loop, {})
        budget = per_loop.get(limit)
        if budget is None:
            budget = per_loop[limit] = MemoryBudget(limit)
    return budget


def spool_dir(explicit: str | os.PathLike[str] | None) -> Path:
    """The folder for large bodies: ``explicit``, else ``$PIPELINES_SPOOL_DIR``, else a temp folder."""
    folder = Path(explicit) if explicit else settings.spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class TooLarge(Exception):
    """The body passed ``max_bytes`` while streaming."""


class Body:
    """A body being read: bytes in memory, or a file once it outgrew memory."""

    def __init__(self, *, spool_over: int, budget: MemoryBudget, folder: str | os.PathLike[str] | None) -> None:
        self.spool_over = spool_over
        self.budget = budget
        self.folder = folder
        self.size = 0
        self.memory = bytearray()
        self.reserved = 0
        self._file: IO[bytes] | None = None
        self._temp: str | None = None
        self._digest = hashlib.sha256()

    async def read(self, chunks: AsyncIterable[bytes], max_bytes: int) -> None:
        """Take every chunk; raise ``TooLarge`` past ``max_bytes``, the partial file removed."""
        try:
            async for chunk in chunks:
                self.size += len(chunk)
                if self.size > max_bytes:
                    raise TooLarge
                if self._file is None and self.size <= self.spool_over and self.budget.take(len(chunk)):
                    self.reserved += len(chunk)
                    self.memory += chunk
                    continue
                if self._file is None:
                    self._start_file()
                self._digest.update(chunk)  # only bodies in files are hashed: the hash names the file
                self._file.write(chunk)  # type: ignore[union-attr]
        except BaseException:
            self.discard()
            raise

    def _start_file(self) -> None:
        folder = spool_dir(self.folder)
        fd, self._temp = tempfile.mkstemp(dir=folder, prefix=".partial-")
        self._file = os.fdopen(fd, "wb")
        self._digest.update(self.memory)
        self._file.write(self.memory)
        self.memory = bytearray()
        self.budget.give_back(self.reserved)
        self.reserved = 0

    def finish(self) -> tuple[bytes, str | None]:
        """The body's bytes (empty when in a file) and the file's path (``None`` when in memory)."""
        if self._file is None:
            return bytes(self.memory), None
        self._file.close()
        assert self._temp is not None
        final = Path(self._temp).with_name(f"{self._digest.hexdigest()}.body")
        os.replace(self._temp, final)
        self._temp = None
        return b"", str(final)

    def discard(self) -> None:
        """Forget a body that will not be used: give back its memory, remove its partial file."""
        self.budget.give_back(self.reserved)
        self.reserved = 0
        self.memory = bytearray()
        if self._file is not None and not self._file.closed:
            self._file.close()
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)
            self._temp = None
