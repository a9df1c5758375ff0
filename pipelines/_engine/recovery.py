"""What the runner does when things go wrong: failed items, dead workers, hangs, a full disk.

* Failed items are recorded with their overall position; ``on_error="fail"`` stops scheduling.
* A worker that dies breaks its whole pool, so a lost task does not blame its items: they
  become *suspects* that run alone on that executor (nothing else runs beside them, so a
  death is theirs), in halves, until the item that kills its worker fails alone with the
  cause. Innocent items are never blamed.
* The watchdog kills the workers of a process task far past its timeout (stuck where SIGALRM
  cannot reach); the overdue task is treated like a lost one, its neighbours just run again.
* A full disk stops the run cleanly: the items stay pending for a resume.

It changes the run's state only through the runner's ``Flow`` and the batches it is given.
(Ctrl-C is the loop's own business: see ``Runner``.)
"""

from __future__ import annotations

import dataclasses
import errno
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from executors import WorkerLostError
from pipelines._engine.idset import IdSet
from pipelines.errors import StageFailed
from pipelines.store.ledger import ItemError

if TYPE_CHECKING:
    from pipelines._engine.feed import SourceFeed
    from pipelines._engine.state import BatchState, RunContext
    from pipelines._engine.task import BatchTask
    from pipelines.define.model import Stage

WATCHDOG_GRACE_SECONDS = 2.0
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


@dataclass(slots=True)
class Running:
    """A task in flight."""

    stage: str
    batch: int
    ids: IdSet
    slot: str
    solo: bool  # ran alone on its executor: a worker death is its own
    started: float = 0.0
    deadline: float | None = None  # past it, the task's worker is killed (process backends)
    task: BatchTask | None = None


class Recovery:
    """Failure handling for the runner (see the module docstring)."""

    def __init__(
        self,
        ctx: RunContext,
        *,
        running: dict[Future[Any], Running],
        feed: SourceFeed,
    ) -> None:
        self.stages = ctx.graph.stages
        self.plan = ctx.plan
        self.states = ctx.states
        self.store = ctx.store
        self.run_id = ctx.run_id
        self.observer = ctx.observer
        self.workers = ctx.workers
        self.running = running  # the runner's tasks in flight (read only here)
        self.feed = feed
        self.flow = ctx.flow
        self._overdue: set[Future[Any]] = set()  # past their deadline: their worker was killed
        self._collateral: set[Future[Any]] = set()  # running beside them when it was
        self._suspects_on: dict[str | None, int] = {}  # slot -> suspect groups waiting to run alone
        self._solo_running: dict[str | None, int] = {}

    # -- failed items ---------------------------------------------------------------------------
    def positioned(self, name: str, k: int, errors: Iterable[ItemError]) -> list[ItemError]:
        """Errors with each item's index in the whole source, where its ids come from one."""
        offset = self.feed.source_offset(name, k)
        if offset is None:
            return list(errors)
        return [dataclasses.replace(e, position=offset + e.item) if e.item is not None else e for e in errors]

    def failed_items(self, name: str, k: int, errors: list[ItemError]) -> None:
        st = self.states[name]
        b = st.batch(k)
        stage = self.stages[name]
        failed = IdSet.of(e.item for e in errors if e.item is not None) if stage.itemwise else IdSet.span(0, 1)
        b.failed = b.failed | failed
        st.items_failed += len(errors)
        first = errors[0]
        if stage.on_error == "fail":
            self.flow.fail(
                StageFailed(
                    name,
                    first.message,
                    batch=k,
                    item=first.item,
                    error_type=first.error_type,
                    remote_traceback=first.traceback,
                    position=first.position,
                )
            )

    def record_errors(self, name: str, k: int, errors: list[ItemError]) -> None:
        b = self.states[name].batch(k)
        errors = self.positioned(name, k, errors)
        self.store.ledger.record_errors(run_id=self.run_id, key=b.key or "", errors=errors)
        self.failed_items(name, k, errors)
        self.flow.finalize_batch(name, k)

    # -- dead workers -----------------------------------------------------------------------------
    def worker_lost(self, name: str, k: int, running: Running, exc: WorkerLostError, overdue: bool) -> None:
        b = self.states[name].batch(k)
        stage = self.stages[name]
        cause = exc.cause
        if overdue and stage.timeout is not None:
            cause = f"timed out: ran past {stage.timeout:g} s per item, and its worker was killed"
        if not running.solo:
            self._add_suspects(name, b, running.ids)
            self.observer.message(
                f"stage {name!r} batch {k}: {cause}; re-running its {len(running.ids):,} "
                f"item(s) alone to find the cause",
                level="warning",
            )
            return
        if stage.itemwise and len(running.ids) > 1:
            self._add_suspects(name, b, *running.ids.take(len(running.ids) // 2))
            return
        item = running.ids.first() if stage.itemwise else None
        self.record_errors(name, k, [ItemError(name, k, item, "WorkerLostError", cause, "", 1, None)])

    def quarantined(self, name: str) -> bool:
        slot = self.plan.stages[name].slot
        return bool(self._suspects_on.get(slot) or self._solo_running.get(slot))

    def slot_idle(self, name: str) -> bool:
        slot = self.plan.stages[name].slot
        return slot is None or not self.workers.in_flight.get(slot, 0)

    def pop_suspect(self, name: str, b: BatchState) -> IdSet:
        self._suspects_on[self.plan.stages[name].slot] -= 1
        return b.suspects.pop(0)

    def _add_suspects(self, name: str, b: BatchState, *groups: IdSet) -> None:
        b.suspects.extend(groups)
        slot = self.plan.stages[name].slot
        self._suspects_on[slot] = self._suspects_on.get(slot, 0) + len(groups)
        self.flow.mark_slot(slot)

    # -- tasks that broke --------------------------------------------------------------------------
    def task_broken(self, name: str, k: int, running: Running, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
            # the disk, not the items: stop cleanly; the items stay pending for a resume
            self.flow.fail(
                StageFailed(
                    name, f"cannot write its checkpoint: {exc.strerror or exc}", batch=k, error_type=type(exc).__name__
                )
            )
            self.flow.finalize_batch(name, k)
            return
        stage = self.stages[name]
        tb = "".join(traceback.format_exception(exc))
        items = list(running.ids) if stage.itemwise else [None]
        message = str(exc) or type(exc).__name__
        self.record_errors(name, k, [ItemError(name, k, i, type(exc).__name__, message, tb, 1, None) for i in items])

    # -- hangs ------------------------------------------------------------------------------------
    def deadline(self, stage: Stage, items: int, solo: bool, now: float) -> float | None:
        if stage.timeout is None:
            return None
        queued = 1 if solo else 2  # a task may wait behind one other on its worker
        return now + queued * stage.timeout * max(1, items) + WATCHDOG_GRACE_SECONDS

    def watchdog(self) -> None:
        """Kill the workers of process tasks far past their timeout."""
        now = time.monotonic()
        for future, running in list(self.running.items()):
            if running.deadline is None or now < running.deadline or future in self._overdue:
                continue
            executor = self.workers.started(running.slot)
            if executor is None or not executor.capabilities.kills_workers:
                continue
            self._overdue.add(future)
            self._collateral.update(f for f, r in self.running.items() if r.slot == running.slot and f is not future)
            self.observer.message(
                f"stage {running.stage!r} batch {running.batch}: a task ran past its timeout; killing its worker",
                level="warning",
            )
            executor.kill_workers()

    def lost_kind(self, future: Future[Any]) -> tuple[bool, bool]:
        """(overdue, collateral) for a finished future, forgetting it."""
        overdue = future in self._overdue
        collateral = future in self._collateral and not overdue
        self._overdue.discard(future)
        self._collateral.discard(future)
        return overdue, collateral

    # -- solo tasks -------------------------------------------------------------------------------
    def solo_started(self, slot: str) -> None:
        self._solo_running[slot] = self._solo_running.get(slot, 0) + 1

    def solo_finished(self, slot: str) -> None:
        self._solo_running[slot] -= 1
        self.flow.mark_slot(slot)  # the quarantine may be over
