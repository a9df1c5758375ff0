"""What the run tells its observers about each stage: live progress and the final summary.

The runner calls ``tick`` once a loop turn; only stages that moved (or are busy: a heartbeat a
second) are reported, so a 1,000-stage chain costs little.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pipelines._engine.state import StageState, expected_totals
from pipelines.observe.hooks import RunObserver, StageStats
from pipelines.observe.result import StageSummary

if TYPE_CHECKING:
    from pipelines._engine.graph import RunGraph
    from pipelines._engine.plan import Plan

PROGRESS_INTERVAL = 0.1


class Progress:
    """Turns the run's stage states into ``StageStats`` and ``StageSummary`` for observers."""

    def __init__(
        self, graph: RunGraph, plan: Plan, states: dict[str, StageState], observer: RunObserver, reasons: dict[str, str]
    ) -> None:
        self.graph = graph
        self.plan = plan
        self.states = states
        self.observer = observer
        self.reasons = reasons
        self._last = 0.0
        self._shown: dict[str, tuple[Any, ...]] = {}

    def tick(self, force: bool = False) -> None:
        """Report the stages that moved since the last report (at most every ``PROGRESS_INTERVAL``)."""
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        totals = expected_totals(self.graph.order, self.graph.stages, self.states)
        for name in self.graph.order:
            st = self.states[name]
            busy = int(st.wall_seconds()) if st.in_flight else None  # a long task: a heartbeat a second
            seen = (
                st.items_done,
                st.items_reused,
                st.items_failed,
                st.items_in_flight,
                len(st.batches),
                st.final,
                totals[name],
                busy,
            )
            if self._shown.get(name) == seen:
                continue  # only stages that moved or work: a 1,000-stage chain is mostly still
            self._shown[name] = seen
            self.observer.stage_progress(
                StageStats(
                    stage=name,
                    backend=self.plan.stages[name].backend,
                    items_done=st.items_done,
                    items_reused=st.items_reused,
                    items_failed=st.items_failed,
                    items_in_flight=st.items_in_flight,
                    batches_final=sum(1 for b in st.batches.values() if b.final),
                    batches_seen=len(st.batches),
                    final=st.final,
                    seconds=st.seconds,
                    reason=self.reasons.get(name, ""),
                    items_total=totals[name],
                    wall_seconds=st.wall_seconds(),
                )
            )

    def summary(self, name: str, reason: str) -> StageSummary:
        st = self.states[name]
        return StageSummary(
            stage=name,
            backend=self.plan.stages[name].backend,
            batches=len(st.batches),
            reused_batches=st.reused_batches,
            computed_batches=st.computed_batches,
            items=st.items_done + st.items_reused + st.items_failed,
            reused_items=st.items_reused,
            failed_items=st.items_failed,
            rows=st.rows,
            seconds=st.seconds,
            reason=reason,
            wall_seconds=st.wall_seconds(),
            on_error=self.graph.stages[name].on_error,
        )
