"""Leases: two drivers on one store never compute the same batch at the same time.

Before computing a batch, a driver leases its key in the ledger's ``leases`` table (the key,
its owner, a heartbeat). A driver that finds the lease held waits, asking again every
``RETRY_SECONDS``; once the lease is its own it adopts what the holder recorded under the key,
like any reuse, and computes only what is still missing. A lease ends when its batch is
final or its owner's run ends. The lease of a driver that died is taken over at once on the
same host (its process is gone), and after ``LEASE_SECONDS`` without a heartbeat elsewhere.

Every lease write happens between the turns of the driver's loop, in its own small
transaction, never inside a turn's: a lease that cannot be written (a full disk) must not
roll back the turn's records. The driver then computes the batch unleased: sharing work is
an economy, and the write that matters, the task's own, reports the disk.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import time

from pipelines.store.ledger import Ledger

LEASE_SECONDS = 30.0  # a lease without a heartbeat for this long is free
HEARTBEAT_SECONDS = 5.0
RETRY_SECONDS = 0.2  # how often a driver asks again for a lease another driver holds

_TAKE = (
    "INSERT INTO leases (key, owner, heartbeat) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
    " SET owner=excluded.owner, heartbeat=excluded.heartbeat"
    " WHERE leases.owner=excluded.owner OR leases.heartbeat < ? OR leases.owner IS ?"
)


class Leases:
    """This driver's leases on batch keys. The runner asks ``may_compute`` during a turn and
    calls ``sync`` after it, which writes what the turn asked for."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.held: set[str] = set()
        self.unleased: set[str] = set()  # computed without a lease: the lease could not be written
        self.granted: set[str] = set()  # leased since the batch last looked: adopt what is stored first
        self.wanted: dict[str, str] = {}  # key -> stage, asked for during this turn
        self.waiting: dict[str, tuple[str, float]] = {}  # key -> (stage, when to ask again)
        self._ending: set[str] = set()  # batches final this turn: their leases go after it
        self._beat = time.monotonic()

    def may_compute(self, key: str, stage: str) -> bool:
        """Whether this driver may compute batch ``key`` of ``stage`` now; if not, the lease is
        asked for after the turn (or later, while another driver holds it)."""
        if key in self.held or key in self.unleased:
            return True
        wait = self.waiting.get(key)
        if wait is None or time.monotonic() >= wait[1]:
            self.wanted[key] = stage
        return False

    def newly_granted(self, key: str) -> bool:
        """True once after ``key`` was leased: what another driver recorded must be adopted."""
        if key in self.granted:
            self.granted.discard(key)
            return True
        return False

    def done(self, key: str | None) -> None:
        """The batch is final (its records are in this turn's transaction): free it after the turn."""
        if key in self.held:
            self._ending.add(key)

    def due(self) -> set[str]:
        """Stages with a batch whose lease it is time to ask for again."""
        now = time.monotonic()
        return {stage for stage, when in self.waiting.values() if when <= now}

    def sync(self) -> set[str]:
        """Between turns: free finished batches, take the leases asked for, beat the heart.
        Returns the stages that may now compute a batch they waited for."""
        if not (self.wanted or self._ending or self._beat_due()):
            return set()
        wanted, self.wanted = self.wanted, {}
        ending, self._ending = self._ending, set()
        self.held -= ending
        now = time.time()
        try:
            with self.ledger.transaction() as db:
                db.executemany("DELETE FROM leases WHERE key=? AND owner=?", [(k, self.owner) for k in ending])
                if self.held and self._beat_due():
                    self._beat = time.monotonic()
                    db.execute("UPDATE leases SET heartbeat=? WHERE owner=?", (now, self.owner))
                holders = {key: self._take(db, key, now) for key in wanted}
        except (sqlite3.Error, OSError):  # a full disk: compute unleased; ended leases expire on their own
            self.unleased.update(wanted)
            return set(wanted.values())
        ready = set()
        for key, holder in holders.items():
            if holder is None:
                self.held.add(key)
                self.granted.add(key)
                self.waiting.pop(key, None)
                ready.add(wanted[key])
            else:
                self.waiting[key] = (wanted[key], time.monotonic() + RETRY_SECONDS)
        return ready

    def release_all(self) -> None:
        """The run ends: every lease it holds is free."""
        self.held.clear()
        self.waiting.clear()
        self._ending.clear()
        with self.ledger.transaction() as db:
            db.execute("DELETE FROM leases WHERE owner=?", (self.owner,))

    def _take(self, db: sqlite3.Connection, key: str, now: float) -> str | None:
        """Lease ``key`` if it is free, ours, expired or a dead driver's; else return its holder."""
        db.execute(_TAKE, (key, self.owner, now, now - LEASE_SECONDS, None))
        holder = str(db.execute("SELECT owner FROM leases WHERE key=?", (key,)).fetchone()[0])
        if holder != self.owner and self._dead(holder):
            db.execute(_TAKE, (key, self.owner, now, now - LEASE_SECONDS, holder))
            holder = str(db.execute("SELECT owner FROM leases WHERE key=?", (key,)).fetchone()[0])
        return None if holder == self.owner else holder

    def _beat_due(self) -> bool:
        return bool(self.held) and time.monotonic() - self._beat >= HEARTBEAT_SECONDS

    def _dead(self, holder: str) -> bool:
        """A holder on this host whose process is gone (a killed driver)."""
        host, pid, _ = [*holder.rsplit(":", 2), "", ""][:3]
        if host != self.host or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
        return False
