"""The run's record in the ledger: how it starts and how it ends.

At the start: the run's row (new, or reopened for a resume) and its manifest file beside its
parts (``store/manifest.py``, for a ledger rebuilt from the files), each stage's fingerprint and
the reason it is computed again, written before any task runs. At the end: each stage's
row, the run's status and counts, the dead-letter tables, and the ``RunResult`` built from
them. The runner decides what happens; this module only writes it down, so the ledger's
view of a run lives in one place.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines._engine import fingerprint as fp
from pipelines._engine.keys import change_reason
from pipelines.errors import StageFailed, UsageError
from pipelines.observe.result import RunResult, RunStatus
from pipelines.store import manifest

if TYPE_CHECKING:
    from pipelines._engine.graph import RunGraph
    from pipelines._engine.plan import Plan, RunOptions
    from pipelines._engine.state import StageState
    from pipelines._engine.workers import Workers
    from pipelines.define.model import Pipeline
    from pipelines.observe.hooks import RunObserver
    from pipelines.observe.progress import Progress
    from pipelines.store import Store

logger = logging.getLogger("pipelines.run")  # one stable name for the engine, whatever module logs


@dataclass(frozen=True, slots=True)
class Ending:
    """How the run ended, as the runner saw it."""

    failure: StageFailed | None
    interrupted: bool
    complete: bool  # every stage is final

    def status(self, failures: list[Any]) -> RunStatus:
        if self.interrupted:
            return RunStatus.INTERRUPTED
        if self.failure is not None or not self.complete:
            return RunStatus.FAILED
        return RunStatus.PARTIAL if failures else RunStatus.OK


class RunRecord:
    """Writes a run's start and end to the ledger (see the module docstring)."""

    def __init__(
        self,
        pipeline: Pipeline,
        plan: Plan,
        graph: RunGraph,
        store: Store,
        run_id: str,
        *,
        states: dict[str, StageState],
        fingerprints: dict[str, str],
        reasons: dict[str, str],
        resumed: bool,
        observer: RunObserver,
    ) -> None:
        self.pipeline = pipeline
        self.plan = plan
        self.graph = graph
        self.stages = graph.stages
        self.store = store
        self.run_id = run_id
        self.states = states
        self.fingerprints = fingerprints
        self.reasons = reasons
        self.resumed = resumed
        self.observer = observer

    # == the start ==============================================================================
    def open(
        self,
        *,
        params_json: str | None,
        options: RunOptions,
        dags_dir: str | None,
        fresh: set[str],
        side_effects: dict[str, str],
    ) -> dict[str, Any]:
        """Record the run and its stages; fill ``fingerprints`` and ``reasons``. Returns the stage
        rows a resumed run had recorded (empty for a new run)."""
        ledger = self.store.ledger
        pinned: dict[str, Any] = {}
        if self.resumed:
            if ledger.run(self.run_id) is None:
                raise UsageError(f"no run {self.run_id!r} in store {self.store.data_root}")
            pinned = ledger.stages(self.run_id)
            ledger.reopen_run(self.run_id)
        else:
            described: dict[str, Any] = {  # the ledger's row and the run's manifest say the same
                "pipeline": self.pipeline.name,
                "module": self.pipeline.module,
                "dags_dir": dags_dir,
                "params": params_json,
                "options": options.describe(),
            }
            ledger.create_run(self.run_id, **described)
            manifest.write(self.store, self.run_id, described)  # for a ledger rebuilt from the files
        previous = {} if self.resumed else ledger.previous_stages(self.pipeline.name, self.run_id)
        rows: dict[str, dict[str, Any]] = {}
        for name in self.graph.order:
            parts = fp.stage_parts(self.stages[name], params_json)
            current = fp.stage_fingerprint(parts)
            old = pinned.get(name)
            if old is not None and old["fingerprint"] and old["fingerprint"] != current:
                self.observer.message(
                    f"stage {name!r} changed since this run started; the resume keeps its finished items "
                    f"(use `run --fresh {name}` to recompute them all)",
                    level="warning",
                )
                current = old["fingerprint"]
            self.fingerprints[name] = current
            self.reasons[name] = side_effects.get(name) or change_reason(
                parts, previous.get(name), fresh=name in fresh, resumed=self.resumed
            )
            rows[name] = {
                "fingerprint": current,
                "code_fp": parts["code"],
                "config_fp": parts["config"],
                "params_fp": parts["params"],
                "executor": self.plan.stages[name].backend,
                "status": "running",
            }
        ledger.save_stages(self.run_id, rows)
        return pinned

    def log_plan(self, workers: Workers) -> None:
        """Say where each stage runs (INFO: the executors; DEBUG: stage by stage)."""
        slots = "; ".join(
            f"{slot} with {workers.workers(slot)} worker(s) for {', '.join(names)}"
            for slot, names in self.graph.on_slot.items()
            if names
        )
        logger.info(
            "%s %s of pipeline %r: %d stages; executors: %s",
            "resuming" if self.resumed else "run",
            self.run_id,
            self.pipeline.name,
            len(self.graph.order),
            slots or "none",
        )
        for name, sp in self.plan.stages.items():
            logger.debug(
                "stage %r on %s: up to %d task(s) in flight, %s",
                name,
                sp.slot or "the driver",
                sp.max_tasks,
                f"recompute: {self.reasons[name]}" if self.reasons.get(name) else "reuse what is stored",
            )

    # == a stage's row ==========================================================================
    def stage_finished(self, name: str) -> None:
        """Log a stage that just became final and save its row."""
        st = self.states[name]
        processed = st.items_done + st.items_reused + st.items_failed
        logger.info(
            "stage %r finished: %s item%s, %s reused, %s failed; %.2f s wall, %.2f s busy",
            name,
            f"{processed:,}",
            "" if processed == 1 else "s",
            f"{st.items_reused:,}",
            f"{st.items_failed:,}",
            st.wall_seconds(),
            st.seconds,
        )
        failed = "failed" if self.stages[name].on_error == "fail" else "partial"
        self.save_stage(name, failed if st.items_failed else "done")

    def save_stage(self, name: str, status: str) -> None:
        st = self.states[name]
        self.store.ledger.save_stage(
            self.run_id,
            name,
            status=status,
            batches=len(st.batches),
            reused=st.reused_batches,
            computed=st.computed_batches,
            items=st.items_done + st.items_reused + st.items_failed,
            failed=st.items_failed,
            reason=self.stage_reason(name),
            seconds=st.seconds,
            source_complete=int(self.stages[name].granularity == "source" and st.final),
        )

    def stage_reason(self, name: str) -> str:
        """Why the stage computed anything ("" if it reused everything, or is a source)."""
        if not self.states[name].computed_batches or self.stages[name].granularity == "source":
            return ""
        return self.reasons.get(name) or ("unfinished" if self.resumed else "inputs changed")

    # == the end ================================================================================
    def end(self, ending: Ending) -> list[Any]:
        """Write the run's end to the ledger (and the dead-letter tables); return its open errors."""
        for name in self.graph.order:
            if not self.states[name].final:
                self.save_stage(name, "interrupted" if ending.interrupted else "incomplete")
        failures = self.store.ledger.open_errors(self.run_id)
        items = sum(self.states[n].items_done + self.states[n].items_reused for n in self.graph.streams)
        self.store.ledger.finish_run(
            self.run_id,
            status=ending.status(failures).value,
            items=items,
            failed=len(failures),
            message=str(ending.failure) if ending.failure else None,
        )
        collecting = [n for n in self.graph.order if self.stages[n].on_error == "collect"]
        if collecting:
            from pipelines.store.deadletter import write_dead_letters

            write_dead_letters(self.store, self.run_id, collecting)
        return failures

    def result(
        self, ending: Ending, failures: list[Any], *, started: float, progress: Progress, workers: Workers
    ) -> RunResult:
        """The run's result, from what the ledger now holds."""
        return RunResult(
            run_id=self.run_id,
            pipeline=self.pipeline.name,
            status=ending.status(failures),
            stages={n: progress.summary(n, self.stage_reason(n)) for n in self.graph.order},
            failures=failures,
            error=ending.failure,
            seconds=self.duration(started),
            store_root=self.store.data_root,
            resumed=self.resumed,
            clusters=tuple(workers.kept),
            leaves=self.graph.leaves(),
        )

    def duration(self, started: float) -> float:
        """The run's duration as the ledger records it (``runs`` shows the same): from its start
        to its end; for a resumed run, from the start of its first attempt."""
        try:
            row = self.store.ledger.run(self.run_id)
        except sqlite3.Error:
            row = None
        if row is not None and row["started"] and row["ended"]:
            return float(row["ended"] - row["started"])
        return time.time() - started
