"""The plan: which executor runs each stage, and how much may be in flight.

A pure function of the pipeline and the run's options, testable without running anything:

    executor   the stage's own ``executor=`` wins; else ``--executor`` for the whole run;
               else by kind: ``async def`` -> asyncio, ``io`` -> threads, ``cpu`` -> processes.
               Sources always run on the driver (they only read and cut items).
    slots      stages share one pool per backend, except thread stages, which each get a
               pool sized by their ``concurrency`` so one slow stage cannot starve another.
    in flight  about two tasks per worker (one running, one queued) for pools; for async
               stages enough tasks to keep ``concurrency`` items in flight.
    async on   an ``async def`` stage run on threads (``--executor threads``) gets a pool of
    threads    ``concurrency`` threads (default 64), each running its tasks on its own event
               loop; since every loop would allow ``concurrency`` items, the plan caps the
               stage's items in flight at ``concurrency`` instead, so the stage keeps its
               promise however its items are cut into tasks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.define.model import Pipeline, Stage

DEFAULT_THREADS = 8
# Plain (sync) thread stages share one pool, sized to the sum of their threads: each stage is
# held to its own share by the scheduler (``StagePlan.max_tasks``), and a stage's first task
# reuses an idle thread instead of starting a pool (a chain of 1,000 single-item stages
# started 1,000 pools).
SHARED_THREADS = "threads"
# What every process worker imports anyway: pyarrow pulls in pandas lazily, on its first
# conversion, which would cost each worker half a second at its first task.
PROCESS_PRELOAD = ["pipelines._engine.task", "pandas"]
DEFAULT_CONCURRENCY = 64
# Backends that run tasks in the driver's process (their ``Capabilities.in_process``; a test
# checks the two agree): nothing sent to them is pickled.
IN_PROCESS = frozenset({"inline", "threads", "asyncio"})


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run a pipeline (CLI flags and their Python equivalents)."""

    executor: str | None = None
    address: str | None = None
    max_workers: int | None = None
    fresh: bool | frozenset[str] = False
    keep_cluster: bool = False
    start_method: str | None = None
    dashboard_address: str | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-able form, kept in the ledger so a resume runs the same way."""
        return {
            "executor": self.executor,
            "address": self.address,
            "max_workers": self.max_workers,
            "start_method": self.start_method,
        }


@dataclass(frozen=True, slots=True)
class ExecutorSpec:
    """One executor instance the run needs."""

    slot: str
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)
    max_tasks: int = 2

    @property
    def in_process(self) -> bool:
        return self.backend in IN_PROCESS


@dataclass(frozen=True, slots=True)
class StagePlan:
    stage: str
    slot: str | None  # None: the driver (sources)
    backend: str
    max_tasks: int
    max_items: int | None
    task_size: int | None
    target_seconds: float
    start_size: int
    max_size: int | None = None  # async stages: tasks stay small so several overlap

    @property
    def in_process(self) -> bool:
        """Runs in the driver's process (sources run on the driver itself)."""
        return self.slot is None or self.backend in IN_PROCESS


@dataclass(frozen=True, slots=True)
class Plan:
    order: tuple[str, ...]
    stages: Mapping[str, StagePlan]
    executors: Mapping[str, ExecutorSpec]


def backend_for(stage: Stage, options: RunOptions) -> str:
    if stage.granularity == "source":
        return "driver"
    if stage.executor:
        return stage.executor
    if options.executor:
        return options.executor
    if stage.is_async:
        return "asyncio"
    return "threads" if stage.kind == "io" else "processes"


def plan(pipeline: Pipeline, options: RunOptions = RunOptions()) -> Plan:
    """Map every stage of ``pipeline`` onto an executor slot."""
    cpus = options.max_workers or os.cpu_count() or 1
    executors: dict[str, ExecutorSpec] = {}
    stages: dict[str, StagePlan] = {}
    for name in pipeline.order():
        stage = pipeline.stages[name]
        backend = backend_for(stage, options)
        if backend == "driver":
            stages[name] = StagePlan(name, None, backend, 1, None, stage.batch_size, 0.0, 0)
            continue
        slot, spec = _slot(stage, backend, options, cpus)
        if slot == SHARED_THREADS and slot in executors:  # the shared pool grows by each stage's threads
            size = executors[slot].max_tasks + spec.max_tasks
            executors[slot] = ExecutorSpec(slot, "threads", {"max_workers": size}, size)
        executors.setdefault(slot, spec)
        own_threads = spec.max_tasks  # a thread stage's own share of its pool
        spec = executors[slot]
        concurrency = stage.concurrency or (DEFAULT_CONCURRENCY if stage.is_async else None)
        largest = None
        if stage.is_async and backend == "threads":  # one loop per thread: cap the items, not the tasks
            per_task = max(1, (concurrency or DEFAULT_CONCURRENCY) // 2)
            max_tasks, max_items, start, target = spec.max_tasks, concurrency, per_task, 0.5
        elif stage.is_async and backend == "asyncio":
            # Tasks of half the concurrency, up to four times it in flight on the one loop: while
            # one task's last items drain, the next ones already run, so the loop never idles.
            per_task = max(1, (concurrency or DEFAULT_CONCURRENCY) // 2)
            max_tasks, max_items, start, target = 64, 4 * (concurrency or DEFAULT_CONCURRENCY), per_task, 0.5
            largest = per_task
        elif stage.is_async:
            # A worker thread runs one task at a time; its process's loop caps the items in flight
            # at the concurrency, so a task may hold that many.
            per_task = concurrency or DEFAULT_CONCURRENCY
            max_tasks, max_items, start, target = spec.max_tasks, 4 * per_task, per_task, 0.5
            largest = per_task
        elif backend == "threads":
            max_tasks, max_items, start, target = own_threads, None, 1, 0.05
        else:
            max_tasks, max_items, start, target = spec.max_tasks, None, 4, 0.1
        stages[name] = StagePlan(name, slot, backend, max_tasks, max_items, stage.task_size, target, start, largest)
    return Plan(tuple(stages), stages, executors)


def _slot(stage: Stage, backend: str, options: RunOptions, cpus: int) -> tuple[str, ExecutorSpec]:
    if backend == "threads":
        workers = stage.concurrency or (DEFAULT_CONCURRENCY if stage.is_async else DEFAULT_THREADS)
        slot = f"threads:{stage.name}" if stage.is_async else SHARED_THREADS  # an async stage: a loop per thread
        return slot, ExecutorSpec(slot, "threads", {"max_workers": workers}, workers)
    if backend == "processes":
        opts: dict[str, Any] = {"max_workers": cpus, "preload": PROCESS_PRELOAD}
        if options.start_method:
            opts["start_method"] = options.start_method
        return "processes", ExecutorSpec("processes", "processes", opts, 2 * cpus)
    if backend == "asyncio":
        return "asyncio", ExecutorSpec("asyncio", "asyncio", {}, 256)
    if backend == "inline":
        return "inline", ExecutorSpec("inline", "inline", {}, 1)
    opts = {"max_workers": options.max_workers}
    if backend in ("dask", "ray") and options.address:
        opts["address"] = options.address
    if backend == "dask" and options.dashboard_address:
        opts["dashboard_address"] = options.dashboard_address
    if backend == "dask" and options.keep_cluster:
        opts["keep_cluster"] = True
    return backend, ExecutorSpec(backend, backend, {k: v for k, v in opts.items() if v is not None}, 2 * cpus)
