"""What a run returns: status, per-stage counts, failures, and access to the outputs."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines.observe.hooks import items_per_second
from pipelines.store.ledger import ItemError

if TYPE_CHECKING:
    import pandas as pd


class RunStatus(str, enum.Enum):  # noqa: UP042 - a StrEnum would change str(status), which output relies on
    OK = "ok"  # every item of every stage done
    PARTIAL = "partial"  # finished, but items failed under on_error="skip"/"collect"
    FAILED = "failed"  # a stage failed beyond its policy
    INTERRUPTED = "interrupted"  # Ctrl-C
    RUNNING = "running"
    CRASHED = "crashed"  # ledger says running, but no process holds the run


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage's counts at the end of a run.

    ``items`` is every item the stage processed: computed, reused or failed (a batch stage
    counts one per batch, a reduce one); ``reused_items`` and ``failed_items`` are among them,
    as in the live progress line, ``inspect`` and the ledger. ``rows`` is what it output.
    ``seconds`` sums the stage's task times (busy time, across workers); ``wall_seconds`` runs
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
    on_error: str = "fail"

    @property
    def computed_items(self) -> int:
        """Items computed in this run (neither reused nor failed)."""
        return self.items - self.reused_items - self.failed_items

    @property
    def items_per_second(self) -> float | None:
        """Items computed in this run (not reused) per second of the stage's wall time."""
        return items_per_second(self.computed_items, self.wall_seconds)


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
        from pipelines.store import Store
        from pipelines.store.outputs import read_stage

        with Store(self.store_root, read_only=True) as store:  # reading only
            return read_stage(store, self.run_id, stage or self.leaves[-1])

    def to_pandas(self, stage: str | None = None) -> pd.DataFrame:
        """A stage's output as a DataFrame; integers stay integers where there are nulls (``Int64``)."""
        from pipelines.observe.frames import to_pandas

        return to_pandas(self.table(stage))

    def dead_letter_path(self, stage: str) -> str | None:
        """The dead-letter table of an ``on_error="collect"`` stage, if this run wrote one."""
        if self.store_root is None:
            return None
        from pipelines.store import Store
        from pipelines.store import arrow as batch_files
        from pipelines.store.deadletter import dead_letter_path

        with Store(self.store_root, read_only=True) as store:  # reading only
            path = dead_letter_path(store, self.run_id, stage)
        if batch_files.is_url(path):
            import pyarrow.fs as pafs

            fs, inner = batch_files.filesystem(path)
            return path if fs.get_file_info(inner).type != pafs.FileType.NotFound else None
        return path if os.path.exists(path) else None

    def resume_command(self) -> str:
        """The command that continues this run (add ``--store`` for a store other than the default)."""
        return f"python -m pipelines resume {self.run_id}"
