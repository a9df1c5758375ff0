"""The run's executors: one per slot of the plan, started once, shut down once.

Counts the tasks in flight per slot (the runner keeps about two per worker), makes the
handle out-of-process workers use to find the pipeline (refusing, before any work, a stage
that cannot travel), and proves that workers on other hosts can reach the store.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import secrets
from typing import Any

import executors as registry
from executors import Executor
from pipelines import settings
from pipelines._engine.plan import Plan
from pipelines.define.loader import PipelineHandle, handle_for, importable
from pipelines.define.model import Pipeline
from pipelines.errors import UsageError
from pipelines.observe.hooks import RunObserver
from pipelines.store import Store
from pipelines.store import arrow as batch_files


class Workers:
    """Executors by slot, started lazily (or all at once with ``start_all``)."""

    def __init__(self, pipeline: Pipeline, plan: Plan, observer: RunObserver) -> None:
        self.pipeline = pipeline
        self.plan = plan
        self.observer = observer
        self.handle: PipelineHandle | None = None  # made when the first out-of-process executor starts
        self.in_flight: dict[str, int] = {slot: 0 for slot in plan.executors}
        self._cap: dict[str, int] = {slot: spec.max_tasks for slot, spec in plan.executors.items()}
        self._executors: dict[str, Executor] = {}
        self.hard_stop = False
        self.kept: list[Executor] = []  # clusters left up after shutdown (keep_cluster)

    def get(self, slot: str) -> Executor:
        """The slot's executor, started on first use."""
        executor = self._executors.get(slot)
        if executor is None:
            spec = self.plan.executors[slot]
            executor = registry.get_executor(spec.backend, **_with_settings(spec.backend, dict(spec.options)))
            if not executor.capabilities.in_process and self.handle is None:
                self.handle = self._worker_handle(spec.backend)
            executor.start()
            self._executors[slot] = executor
            if not spec.in_process:
                self._cap[slot] = max(2, 2 * executor.capabilities.max_workers)
            self.observer.executor_started(slot, executor)
        return executor

    def started(self, slot: str) -> Executor | None:
        return self._executors.get(slot)

    def has_room(self, slot: str) -> bool:
        return self.in_flight[slot] < self._cap[slot]

    def workers(self, slot: str) -> int:
        executor = self._executors.get(slot)
        if executor is not None:
            return executor.capabilities.max_workers
        spec = self.plan.executors[slot]
        return 1 if spec.backend == "asyncio" else int(spec.options.get("max_workers") or 1)

    def start_all(self, slots: list[str], store: Store, run_id: str) -> None:
        """Start these now: a bad --address fails at once, pools warm up, remote workers prove
        they can read the store."""
        if store.remote:
            store.check_reachable()
        for slot in slots:
            executor = self.get(slot)
            if executor.capabilities.distributed:
                self._probe_store(executor, store, run_id)

    def _probe_store(self, executor: Executor, store: Store, run_id: str) -> None:
        token = secrets.token_hex(8)
        location = store.run_data(run_id, f".probe-{token}")
        batch_files.write_bytes(location, token.encode(), rows=0, fsync=False)
        probe = functools.partial(batch_files.probe, location, token)
        try:
            executor.run_on_every_worker(probe)  # every worker, not just the one a task lands on
        except Exception as exc:
            raise UsageError(
                f"store {store.data_root} is not reachable from the {executor.name} workers: "
                f"{exc}; use a folder they share or a URL (s3://...) they can reach"
            ) from None
        finally:
            batch_files.remove(location)

    def _worker_handle(self, backend: str) -> PipelineHandle:
        """How out-of-process workers find the pipeline; a stage that cannot travel is a usage error."""
        if importable(self.pipeline):
            return handle_for(self.pipeline)
        remote = {
            n
            for n, sp in self.plan.stages.items()
            if sp.slot is not None and not self.plan.executors[sp.slot].in_process
        }
        try:
            return handle_for(_trimmed(self.pipeline, keep=remote))
        except Exception as exc:
            culprit = _unpicklable_stage(self.pipeline, remote) or "?"
            raise UsageError(
                f"stage {culprit!r} cannot be sent to {backend} workers ({type(exc).__name__}: {exc}); define "
                f"the pipeline at module level in a dags module, or run the stage on threads "
                f'(executor="threads")'
            ) from None

    def release(self, slot: str) -> None:
        """Shut down a slot no stage needs any more (its tasks are all done)."""
        executor = self._executors.pop(slot, None)
        if executor is None:
            return
        if executor.keep_cluster:
            self.kept.append(executor)
        try:
            executor.shutdown(wait=False)
        except Exception as exc:
            self.observer.message(f"shutting down {executor!r} failed: {exc}", level="warning")

    def shutdown(self, *, cancel: bool, wait: bool = True) -> None:
        """Stop every executor (idempotent). After Ctrl-C nothing is waited for: a thread stuck
        in an item must not hold the run (it is abandoned; processes are terminated)."""
        executors, self._executors = list(self._executors.values()), {}
        for executor in executors:
            if executor.keep_cluster:
                self.kept.append(executor)
            try:
                executor.shutdown(wait=wait and not self.hard_stop, cancel_pending=cancel)
            except Exception as exc:
                self.observer.message(f"shutting down {executor!r} failed: {exc}", level="warning")


def _with_settings(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """A backend's options, with what the ``PIPELINES_*`` settings say where the plan says nothing
    (the backends themselves read no environment)."""
    if backend == "processes" and not options.get("start_method"):
        options["start_method"] = settings.start_method()
    elif backend == "dask" and options.get("address") and not options.get("tls_dir"):
        options["tls_dir"] = settings.dask_tls()
    return options


def _trimmed(pipeline: Pipeline, keep: set[str]) -> Pipeline:
    """A copy of ``pipeline`` for workers: stages they never run keep their types, not their code."""
    clone = copy.copy(pipeline)
    clone._stages = {
        name: (
            stage if name in keep else dataclasses.replace(stage, fn=_not_here, kwargs={}, resources={}, retry_on=None)
        )
        for name, stage in pipeline.stages.items()
    }
    clone._by_fn = {}
    clone.lifespan = None
    return clone


def _not_here(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("this stage runs on another executor")


def _unpicklable_stage(pipeline: Pipeline, names: set[str]) -> str | None:
    import cloudpickle

    for name in pipeline.order():
        if name not in names:
            continue
        stage = pipeline.stages[name]
        try:
            cloudpickle.dumps((stage.fn, dict(stage.kwargs), dict(stage.resources), stage.retry_on))
        except Exception:
            return name
    return None
