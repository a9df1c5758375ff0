"""Handing tasks to executors: a batch's slice, or the rest of several batches as one task.

One of the runner's collaborators: it builds each ``BatchTask`` (its inputs, the path of the
part it writes, what an in-process worker may share with the driver), groups tasks that span
several batches (``group``), and counts what is in flight. It shares the runner's table of
running futures, which the runner empties as tasks complete.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from pipelines._engine.group import TaskGroup, in_flight
from pipelines._engine.inputs import InputSpec
from pipelines._engine.recovery import Recovery, Running
from pipelines._engine.task import BatchTask, TaskStop

if TYPE_CHECKING:
    from pipelines._engine.idset import IdSet
    from pipelines._engine.item_reuse import ItemIndex
    from pipelines._engine.schemas import StageSchemas
    from pipelines._engine.state import RunContext
    from pipelines._engine.task_inputs import TaskInputs
    from pipelines.define.model import Pipeline, Stage


class Dispatch:
    """Submitting tasks to the executors, and remembering what runs where."""

    def __init__(
        self,
        ctx: RunContext,
        *,
        pipeline: Pipeline,
        params_json: str | None,
        inputs: TaskInputs,
        item_index: ItemIndex,
        recovery: Recovery,
        schemas: StageSchemas,
        running: dict[Future[Any], Running],
        groups: dict[Future[Any], tuple[Running, ...]],
    ) -> None:
        self.pipeline = pipeline
        self.stages: Mapping[str, Stage] = ctx.graph.stages
        self.states = ctx.states
        self.plan = ctx.plan
        self.workers = ctx.workers
        self.store = ctx.store
        self.run_id = ctx.run_id
        self.params_json = params_json
        self.inputs = inputs
        self.item_index = item_index
        self.recovery = recovery
        self.schemas = schemas
        self._running = running
        self._groups = groups  # a grouped task's other batches

    def items(self, name: str, k: int, ids: IdSet, *, solo: bool) -> None:
        self.submit(name, k, ids, self.inputs.for_items(name, k, ids), solo=solo)

    def group(self, name: str, taken: list[tuple[int, IdSet]]) -> None:
        """One task over the rest of several batches (see ``group``)."""
        self._dispatch(name, [(k, ids, self.inputs.for_items(name, k, ids)) for k, ids in taken], solo=False)

    def submit(self, name: str, k: int, ids: IdSet, inputs: tuple[InputSpec, ...], *, solo: bool) -> None:
        self._dispatch(name, [(k, ids, inputs)], solo=solo)

    def _dispatch(self, name: str, work: list[tuple[int, IdSet, tuple[InputSpec, ...]]], *, solo: bool) -> None:
        sp = self.plan.stages[name]
        assert sp.slot is not None
        tasks = [self._task(name, k, inputs) for k, _, inputs in work]
        task = tasks[0] if len(tasks) == 1 else TaskGroup(tuple(tasks))
        executor = self.workers.get(sp.slot)
        future = executor.submit(task, key=task.key)
        now, items = time.monotonic(), sum(len(ids) for _, ids, _ in work)
        kills = executor.capabilities.kills_workers
        deadline = self.recovery.deadline(self.stages[name], items, solo, now) if kills else None
        runs = [
            Running(name, k, ids, sp.slot, solo, now, deadline, t) for (k, ids, _), t in zip(work, tasks, strict=True)
        ]
        self._running[future] = runs[0]
        if len(runs) > 1:
            self._groups[future] = tuple(runs[1:])
        if solo:
            self.recovery.solo_started(sp.slot)
        in_flight(self.states[name], runs, +1)
        self.workers.in_flight[sp.slot] += 1

    def _task(self, name: str, k: int, inputs: tuple[InputSpec, ...]) -> BatchTask:
        stage = self.stages[name]
        sp = self.plan.stages[name]
        b = self.states[name].batch(k)
        assert b.key is not None and sp.slot is not None
        part, b.next_part = b.next_part, b.next_part + 1
        caps = self.workers.get(sp.slot).capabilities
        return BatchTask(
            handle=self.workers.handle,
            stage=name,
            batch=k,
            part=part,
            inputs=inputs,
            output_path=self.store.part_path(self.run_id, name, k, b.key, part),
            params_json=self.params_json,
            side={s: self.inputs.parts_of(s) for s in stage.side},
            rate_share=1.0 if caps.in_process else 1.0 / max(1, caps.max_workers),
            pipeline=self.pipeline if caps.in_process else None,
            object_key=b.key,
            stop=TaskStop() if caps.in_process and stage.is_async else None,
            schema=self.schemas.expected(name),
            item_index=self.item_index.ref(name) if stage.itemwise else None,
        )
