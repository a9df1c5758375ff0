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

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pipelines._engine.batching import TaskSizer
from pipelines._engine.idset import IdSet
from pipelines.store.ledger import Part

if TYPE_CHECKING:
    from pipelines._engine.graph import RunGraph
    from pipelines._engine.plan import Plan
    from pipelines._engine.workers import Workers
    from pipelines.errors import StageFailed
    from pipelines.observe.hooks import RunObserver
    from pipelines.store import Store


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

    def batch(self, k: int) -> BatchState:
        state = self.batches.get(k)
        if state is None:
            state = self.batches[k] = BatchState(k)
        return state

    def wall_seconds(self) -> float:
        """From the stage's first task's start to its end (or now); 0 if it never ran."""
        return 0.0 if self.started is None else (self.ended or time.time()) - self.started

    @property
    def reused_batches(self) -> int:
        return sum(1 for b in self.batches.values() if b.final and b.reused_parts and not b.computed_parts)

    @property
    def computed_batches(self) -> int:
        return sum(1 for b in self.batches.values() if b.computed_parts)


def expected_totals(
    order: Sequence[str], stages: Mapping[str, Any], states: Mapping[str, StageState]
) -> dict[str, int | None]:
    """Each stage's items to process once final (``StageStats.items_total``), where known already.

    A map or flat-map processes what its input outputs: a source's items once it is final, a
    map's total less its failures (known as soon as that map's total is), other stages' rows
    once final. A batch stage runs once per input batch, a reduce once.
    """
    totals: dict[str, int | None] = {}
    out: dict[str, int | None] = {}  # the rows each stage will output
    for name in order:  # topological: inputs first
        st, stage = states[name], stages[name]
        total: int | None = None
        if st.final:
            total = st.items_done + st.items_reused + st.items_failed
        elif stage.granularity == "reduce":
            total = 1
        elif stage.granularity == "batch" and st.upstream_final:
            total = len(st.batches)
        elif stage.itemwise:
            total = out[stage.inputs[0]]
        totals[name] = total
        if stage.granularity == "map":
            out[name] = None if total is None else total - st.items_failed
        else:
            out[name] = st.rows if st.final else None
    return totals


def describe(states: Mapping[str, StageState]) -> str:
    """Every batch's bookkeeping on one line (for the message of an engine bug)."""
    return "; ".join(
        f"{name}: final={st.final} upstream_final={st.upstream_final} batches="
        + ", ".join(
            f"{k}(key={bool(b.key)} avail={len(b.available)} done={len(b.done)} failed={len(b.failed)} "
            f"pending={len(b.pending)} flight={b.in_flight} up_final={b.upstream_final} final={b.final})"
            for k, b in sorted(st.batches.items())
        )
        for name, st in states.items()
    )


class Flow(Protocol):
    """What the runner offers its collaborators (``SourceFeed``, ``Recovery``): the moves of ids
    through the run's state, and stopping it. Everything else they need is given to them."""

    @property
    def stopping(self) -> bool: ...

    def mark_dirty(self, name: str) -> None:
        """Visit stage ``name`` in the next scheduling pass."""

    def mark_slot(self, slot: str | None) -> None:
        """Visit every stage of an executor slot (its room or its quarantine changed)."""

    def publish(self, name: str, k: int, ids: IdSet) -> None:
        """Offer newly done ids of ``name``'s batch ``k`` downstream."""

    def finalize_batch(self, name: str, k: int) -> None:
        """Close batch ``k`` of ``name`` if nothing is pending or running in it."""

    def check_stage_final(self, name: str) -> None:
        """Close stage ``name`` if every batch of it is final, then the stages waiting on it."""

    def fail(self, failure: StageFailed) -> None:
        """Stop scheduling; the run ends failed with ``failure`` (the first one wins)."""


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the runner's collaborators share: the run's shape and plan, its state, its store,
    its observers and executors, and the ``Flow`` through which they move ids."""

    graph: RunGraph
    plan: Plan
    states: dict[str, StageState]
    store: Store
    run_id: str
    observer: RunObserver
    workers: Workers
    flow: Flow
