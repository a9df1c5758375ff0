"""One task over several small batches: task size stays independent of how a source is cut.

A source's batches are cut by content and are small at first (a few hundred items), so that
inserting one item changes one batch. A task per batch would then make a cheap stage pay a
round trip to a worker every few hundred items. A ``TaskGroup`` carries the tasks of several
consecutive batches to the worker at once; there each runs as it would alone, reading its
batch's input and writing its batch's part under that batch's key, so keys, reuse and resume
stay per batch. Only the round trip is shared.

Only synchronous item stages are grouped: an ``async def`` task runs on an event loop, and a
batch or reduce stage needs its whole batch anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines._engine.idset import IdSet
    from pipelines._engine.recovery import Running
    from pipelines._engine.state import StageState
    from pipelines._engine.task import BatchTask, TaskResult


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """The tasks of several batches of one stage, run one after the other in one worker call."""

    tasks: tuple[BatchTask, ...]

    @property
    def key(self) -> str:
        """The first task's key and how many more it carries (Dask groups keys by their prefix)."""
        return f"{self.tasks[0].key}+{len(self.tasks) - 1}"

    @property
    def stop(self) -> None:
        return None  # grouped stages are synchronous: nothing to ask to stop early

    def __call__(self) -> tuple[TaskResult, ...]:
        return tuple(task() for task in self.tasks)


class Gathering:
    """The rest of several final batches, gathered in batch order until they fill one task."""

    __slots__ = ("items", "taken")

    def __init__(self) -> None:
        self.taken: list[tuple[int, IdSet]] = []
        self.items = 0

    def add(self, k: int, ids: IdSet, size: int) -> bool:
        """Gather batch ``k``'s ``ids``; ``True`` once the gathered items reach ``size``."""
        self.taken.append((k, ids))
        self.items += len(ids)
        return self.items >= size

    def ready(self, st: StageState) -> bool:
        """Send what is gathered now? Yes when no more will come, when the stage has nothing
        running, or when a worker is free and it is worth a task (a tiny one only adds a round trip)."""
        if not self.items:
            return False
        return (
            st.upstream_final
            or not st.in_flight
            or (st.in_flight < st.sizer.workers and self.items >= st.sizer.least())
        )

    def take(self) -> list[tuple[int, IdSet]]:
        taken, self.taken, self.items = self.taken, [], 0
        return taken


def in_flight(st: StageState, runs: list[Running] | tuple[Running, ...], sign: int) -> None:
    """Count a task (``sign`` 1) or its end (-1) in its stage and in every batch it carries."""
    for r in runs:
        b = st.batch(r.batch)
        b.scheduled = b.scheduled | r.ids if sign > 0 else b.scheduled - r.ids
        b.in_flight += sign
        st.items_in_flight += sign * len(r.ids)
    st.in_flight += sign
    if st.started is None:
        st.started = time.time()
