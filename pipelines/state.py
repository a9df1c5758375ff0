"""The runner's bookkeeping: per stage and per batch, which item ids are where.

For each (stage, batch) the runner tracks sets of item ids:

    available   ids its input has produced so far (offered by the upstream stage)
    scheduled   ids in tasks that are running
    done        ids computed, now or by an earlier run (reused)
    failed      ids that failed in this run
    pending     available - done - scheduled - failed: what to schedule next
    suspects    ids of tasks whose worker died; they re-run alone on their executor ("solo", so a
                death is theirs), in halves, until the poison item is found and fails alone

A batch is *final* when its input batch is final and nothing is pending or running. Ids are
positions in the batch for stages that keep item ids (sources, maps); other stages number
their rows afresh, so their consumers wait for the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .batching import TaskSizer
from .idset import IdSet
from .store.ledger import Part


@dataclass(slots=True)
class BatchState:
    batch: int
    key: str | None = None
    available: IdSet = IdSet()
    scheduled: IdSet = IdSet()
    done: IdSet = IdSet()
    failed: IdSet = IdSet()
    suspects: list[IdSet] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    upstream_final: bool = False
    in_flight: int = 0
    next_part: int = 0
    rows: int = 0
    reused_parts: int = 0
    computed_parts: int = 0
    final: bool = False
    ready: bool = False  # table stages: inputs complete, may run

    @property
    def pending(self) -> IdSet:
        pending = self.available - self.done - self.scheduled - self.failed
        for suspect in self.suspects:
            pending = pending - suspect
        return pending

    def settled(self) -> bool:
        return self.upstream_final and self.in_flight == 0 and not self.pending and not self.suspects


@dataclass(slots=True)
class StageState:
    name: str
    sizer: TaskSizer
    batches: dict[int, BatchState] = field(default_factory=dict)
    upstream_final: bool = False  # every input batch exists and is final (or the source ended)
    final: bool = False
    in_flight: int = 0
    items_in_flight: int = 0
    items_done: int = 0
    items_reused: int = 0
    items_failed: int = 0
    rows: int = 0
    seconds: float = 0.0
    started: float | None = None
    ended: float | None = None
    reason: str = ""
    first_error: str = ""

    def batch(self, k: int) -> BatchState:
        state = self.batches.get(k)
        if state is None:
            state = self.batches[k] = BatchState(k)
        return state

    @property
    def reused_batches(self) -> int:
        return sum(1 for b in self.batches.values() if b.final and b.reused_parts and not b.computed_parts)

    @property
    def computed_batches(self) -> int:
        return sum(1 for b in self.batches.values() if b.computed_parts)
