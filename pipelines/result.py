"""What a run returns: status, per-stage counts, failures, and access to the outputs."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .hooks import items_per_second
from .store.ledger import ItemError



class RunStatus(str, enum.Enum):
    OK = "ok"  # every item of every stage done
    PARTIAL = "partial"  # finished, but items failed under on_error="skip"/"collect"
    FAILED = "failed"  # a stage failed beyond its policy
    INTERRUPTED = "interrupted"  # Ctrl-C
    RUNNING = "running"
    CRASHED = "crashed"  # ledger says running, but no process holds the run


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage's counts at the end of a run.

    ``seconds`` sums the stage's task times (compute, across workers); ``wall_seconds`` runs
    from its first task's start to the stage's end, so it shows what the stage cost the run.
    """

    stage: str
    backend: str
    batches: int
    reused_batches: int
    computed_batches: int
    items: int
    reused_items: int
    failed_items: int
    rows: int
    seconds: float
    reason: str
    wall_seconds: float = 0.0

    @property
    def items_per_second(self) -> float | None:
        """Items computed in this run (not reused) per second of the stage's wall time."""
        return items_per_second(self.items - self.reused_items, self.wall_seconds)


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    pipeline: str
    status: RunStatus
    stages: dict[str, StageSummary]
    failures: list[ItemError] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0
    leaves: tuple[str, ...] = ()
    store_root: str | None = None
    resumed: bool = False
    clusters: tuple[Any, ...] = ()  # executors kept running (--keep-cluster); close() or wait on them

    @property
    def ok(self) -> bool:
        return self.status in (RunStatus.OK, RunStatus.PARTIAL)

    @property
    def failed_items(self) -> int:
        return sum(s.failed_items for s in self.stages.values())

    def table(self, stage: str | None = None) -> pa.Table:
        """A stage's output (default: the last stage) as one Arrow table, memory-mapped."""
        assert self.store_root is not None, "this result has no store"
        from .outputs import read_stage
        from .store import Store

        with Store(self.store_root) as store:
            return read_stage(store, self.run_id, stage or self.leaves[-1])

    def to_pandas(self, stage: str | None = None):  # noqa: ANN201 - pandas is imported lazily
        return self.table(stage).to_pandas()

    def resume_command(self) -> str:
        """The command that continues this run (add ``--store`` for a store other than the default)."""
        return f"python -m pipelines resume {self.run_id}"
