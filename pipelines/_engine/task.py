"""The batch task: the small picklable callable an executor runs on a worker.

What travels is small: a handle to the pipeline (module path), the stage's name, the input
files and the item ids to compute, and where to write the output. The worker reads its
inputs memory-mapped, calls the stage function per item (with retries), converts the
results to Arrow, writes its own checkpoint atomically and returns metadata only
(``TaskResult``): rows, ids done, failed items, timings. Results never travel through the
driver. An ``async def`` stage returns a coroutine from ``__call__``; executors await it on
their loop, so items of one task run concurrently up to the stage's ``concurrency``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines import settings
from pipelines._engine import item_reuse, schemas
from pipelines._engine.calls import ItemCalls, item_error, with_retries, with_retries_async, with_timeout
from pipelines._engine.identity import IdentityCache
from pipelines._engine.idset import IdSet
from pipelines._engine.inputs import InputPart, InputSpec, empty_output, read_in_item_order, read_input
from pipelines.define import codec, resources
from pipelines.define.loader import PipelineHandle
from pipelines.define.signature import hints as type_hints
from pipelines.errors import ConversionError
from pipelines.store import arrow as batch_files
from pipelines.store.ledger import ItemError

if TYPE_CHECKING:
    from pipelines.define.model import Pipeline, Stage

_NO_IDS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a worker sends back: metadata only."""

    stage: str
    batch: int
    part: int
    file: batch_files.FileInfo | None
    done: IdSet
    errors: tuple[ItemError, ...]
    items: int
    seconds: float
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    started: float = 0.0  # wall clock (time.time()), for the run report's timeline
    ended: float = 0.0
    worker: str = ""
    schema: bytes | None = None  # the part's schema, when it is not the one the task was given (``schemas``)
    reused: int = 0  # of ``done``, the items taken from earlier parts (item-level reuse)
    item_hashes: bytes | None = None  # the input hashes of ``done``'s items, in id order


@dataclass(slots=True)
class BatchTask:
    """Compute one slice of one batch of one stage. Picklable; call it to run."""

    handle: PipelineHandle | None  # None: in-process, where ``pipeline`` is given
    stage: str
    batch: int
    part: int
    inputs: tuple[InputSpec, ...]
    output_path: str
    params_json: str | None = None
    side: dict[str, tuple[InputPart, ...]] = field(default_factory=dict)
    fsync: bool = field(default_factory=settings.fsync)
    rate_share: float = 1.0  # this worker's share of the stage's rate limit (1/workers)
    pipeline: Pipeline | None = None  # in-process only; dropped when pickled
    object_key: str = ""  # the batch key the output is stored under (in the file's metadata)
    stop: TaskStop | None = None  # in-process only: the driver asks the task to end early (Ctrl-C)
    schema: bytes | None = None  # the stage's schema (``schemas``), once its first part is recorded
    item_index: item_reuse.IndexRef | None = None  # items computed before under this stage's fingerprint

    def __getstate__(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self.__slots__}
        state["pipeline"] = None
        state["stop"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def key(self) -> str:
        """A readable task key: ``stage-batch-part`` (Dask groups the dashboard by the prefix)."""
        return f"{self.stage}-{self.batch:06d}-{self.part:05d}"

    def _stage(self) -> tuple[Pipeline, Stage]:
        pipeline = self.pipeline
        if pipeline is None:
            assert self.handle is not None, "a task for another process carries a handle"
            pipeline = self.handle.resolve()
        return pipeline, pipeline.stages[self.stage]

    def __call__(self) -> Any:
        pipeline, stage = self._stage()
        if stage.is_async:
            return _timed_async(self._run_async(pipeline, stage))
        started = time.time()
        return _timed(self._run_sync(pipeline, stage), started)

    # -- sync -------------------------------------------------------------------------
    def _run_sync(self, pipeline: Pipeline, stage: Stage) -> TaskResult:
        t0 = time.perf_counter()
        ids, values, tables, seen = self._read(pipeline, stage)
        t1 = time.perf_counter()
        kwargs = self._kwargs(pipeline, stage)
        kwargs.update(resources.resolve_sync(stage.resources))
        if stage.itemwise:
            runner = ItemCalls(stage, self.batch, self.rate_share)
            outputs = runner.run_all(ids, values, kwargs)
            return self._finish_items(stage, ids, values, outputs, runner.errors, t0, t1, seen)
        return self._run_table_stage(stage, tables, kwargs, t0, t1)

    # -- async ------------------------------------------------------------------------
    async def _run_async(self, pipeline: Pipeline, stage: Stage) -> TaskResult:
        t0 = time.perf_counter()
        ids, values, tables, seen = await asyncio.to_thread(self._read, pipeline, stage)
        t1 = time.perf_counter()
        kwargs = self._kwargs(pipeline, stage)
        kwargs.update(await resources.resolve_async(stage.resources))
        if stage.itemwise:
            runner = ItemCalls(stage, self.batch, self.rate_share)
            items = [
                asyncio.ensure_future(runner.run_async(i, v, kwargs)) for i, v in zip(ids.tolist(), values, strict=True)
            ]
            if self.stop is not None:
                loop = asyncio.get_running_loop()
                self.stop.on_request(lambda: loop.call_soon_threadsafe(_cancel_all, items))
            outputs = list(await asyncio.gather(*items, return_exceptions=True))
            ids, values, outputs = _finished_only(ids, values, outputs)
            return await asyncio.to_thread(self._finish_items, stage, ids, values, outputs, runner.errors, t0, t1, seen)
        return await self._run_table_stage_async(stage, tables, kwargs, t0, t1)

    # -- reading ----------------------------------------------------------------------
    def _read(
        self, pipeline: Pipeline, stage: Stage
    ) -> tuple[np.ndarray, list[Any], list[pa.Table], item_reuse.ItemsSeen | None]:
        tables = [read_input(spec) for spec in self.inputs]
        if not stage.itemwise:
            return (
                _NO_IDS,
                [],
                [
                    t if spec.parts else empty_output(pipeline.stages[spec.stage])
                    for (t, _), spec in zip(tables, self.inputs, strict=True)
                ],
                None,
            )
        ((table, ids),) = tables
        compute, seen = item_reuse.split(table, ids, self.item_index, hash_items=item_reuse.eligible(stage))
        if seen.reused is not None:  # decode and compute only the items not found
            keep = pa.array(compute)
            table, ids = table.filter(keep), ids[compute]
        producer = pipeline.stages[self.inputs[0].stage]
        want = _input_annotation(stage)
        values = codec.decode(table, want=want, producer_type=producer.output_type)
        return ids, values, [], seen

    def _kwargs(self, pipeline: Pipeline, stage: Stage) -> dict[str, Any]:
        kwargs = dict(stage.kwargs)
        if stage.takes_params and "params" not in kwargs:
            kwargs["params"] = _params(pipeline, self.params_json)
        for name, parts in self.side.items():
            table = codec.data_columns(read_in_item_order(parts, name))
            kwargs[name] = table.to_pandas() if stage.table_format == "pandas" else table
        return kwargs

    # -- item stages ------------------------------------------------------------------
    def _finish_items(
        self,
        stage: Stage,
        ids: np.ndarray,
        values: list[Any],
        outputs: list[Any],
        errors: list[ItemError],
        t0: float,
        t1: float,
        seen: item_reuse.ItemsSeen | None = None,
    ) -> TaskResult:
        t2 = time.perf_counter()
        failed = {e.item for e in errors}
        if not failed and stage.granularity == "map":  # the common case: no per-row Python work
            row_ids: Any = ids
            row_values = outputs
        else:
            keep = [(i, out) for i, out in zip(ids.tolist(), outputs, strict=True) if i not in failed]
            if stage.granularity == "flat_map":
                keep = [(i, v) for i, out in keep for v in out]
            row_ids = [i for i, _ in keep]
            row_values = [v for _, v in keep]
        table = None
        while True:
            try:
                table = schemas.encode(
                    row_values, stage=stage.name, output_type=stage.output_type, item_ids=row_ids, schema=self.schema
                )
                break
            except ConversionError as exc:  # a value that does not fit fails its item, not the batch
                misfits = getattr(exc, "misfits", None) or {exc.item: exc}  # type: ignore[attr-defined]
                bad_ids = {int(row_ids[row]) for row in misfits}
                for row, cause in sorted(misfits.items()):
                    bad_id = int(row_ids[row])
                    if bad_id not in failed:
                        position = int(np.searchsorted(ids, bad_id))
                        cause = cause if isinstance(cause, BaseException) else ConversionError(cause)
                        errors.append(item_error(stage, self.batch, bad_id, cause, 1, values[position]))
                        failed.add(bad_id)
                kept = [(i, v) for i, v in zip(list(row_ids), row_values, strict=True) if i not in bad_ids]
                row_ids, row_values = [i for i, _ in kept], [v for _, v in kept]
        done = IdSet.from_sorted(
            ids if not failed else np.array([i for i in ids.tolist() if i not in failed], dtype=np.int64)
        )
        reused = 0
        if seen is not None and seen.reused is not None:
            table = item_reuse.merge(table, seen)
            reused = len(seen.reused_ids)
            done = done | IdSet.from_sorted(seen.reused_ids)
        info = None
        if (table is not None and table.num_rows) or done:
            info = batch_files.write_table(
                self.output_path, table, fsync=self.fsync, keep=self.pipeline is not None, part=self._part_meta(done)
            )
        t3 = time.perf_counter()
        return TaskResult(
            self.stage,
            self.batch,
            self.part,
            info,
            done,
            tuple(errors),
            len(ids),
            seconds=t2 - t1,
            read_seconds=t1 - t0,
            write_seconds=t3 - t2,
            schema=schemas.new_schema(table.schema, self.schema) if info is not None and table is not None else None,
            reused=reused,
            item_hashes=seen.done_hashes(done) if seen is not None else None,
        )

    # -- table stages (batch, reduce) ---------------------------------------------------
    def _table_args(self, stage: Stage, tables: list[pa.Table]) -> list[Any]:
        if stage.table_format == "list":  # list[T]: the values, rebuilt as T
            annotated = type_hints(stage.fn)
            wants = [next(iter(typing.get_args(annotated.get(name))), None) for name in stage.input_args]
            return [codec.decode(t, want=want) if t.num_columns else [] for t, want in zip(tables, wants, strict=True)]
        tables = [codec.data_columns(t) for t in tables]
        if stage.table_format == "pandas":
            return [t.to_pandas() for t in tables]
        return tables

    def _run_table_stage(
        self, stage: Stage, tables: list[pa.Table], kwargs: dict[str, Any], t0: float, t1: float
    ) -> TaskResult:
        args = self._table_args(stage, tables)
        call_kwargs = {**kwargs, **dict(zip(stage.input_args, args, strict=True))}
        out = with_retries(stage, lambda: stage.fn(**call_kwargs))
        if out.error is not None:
            return self._table_failure(stage, out.error, out.attempts, t0, t1)
        return self._write_table_result(stage, out.value, t0, t1)

    async def _run_table_stage_async(
        self, stage: Stage, tables: list[pa.Table], kwargs: dict[str, Any], t0: float, t1: float
    ) -> TaskResult:
        args = self._table_args(stage, tables)
        call_kwargs = {**kwargs, **dict(zip(stage.input_args, args, strict=True))}
        label = f"stage {stage.name!r} batch {self.batch}"
        out = await with_retries_async(stage, lambda: with_timeout(stage.fn(**call_kwargs), stage.timeout, label))
        if out.error is not None:
            return self._table_failure(stage, out.error, out.attempts, t0, t1)
        return await asyncio.to_thread(self._write_table_result, stage, out.value, t0, t1)

    def _write_table_result(self, stage: Stage, result: Any, t0: float, t1: float) -> TaskResult:
        t2 = time.perf_counter()
        try:
            table = codec.table_from_result(result, stage=stage.name)
        except ConversionError as exc:
            return self._table_failure(stage, exc, 1, t0, t1)
        done = IdSet.span(0, table.num_rows)
        info = batch_files.write_table(
            self.output_path, table, fsync=self.fsync, keep=self.pipeline is not None, part=self._part_meta(done)
        )
        t3 = time.perf_counter()
        return TaskResult(
            self.stage,
            self.batch,
            self.part,
            info,
            done,
            (),
            1,
            seconds=t2 - t1,
            read_seconds=t1 - t0,
            write_seconds=t3 - t2,
            schema=schemas.new_schema(table.schema, self.schema) if info is not None else None,
        )

    def _part_meta(self, done: IdSet) -> dict[str, Any]:
        """What the output file says about itself, so a lost ledger can be rebuilt from it."""
        owner = self.pipeline if self.pipeline is not None else self.handle
        return {
            "key": self.object_key,
            "pipeline": getattr(owner, "name", None),
            "stage": self.stage,
            "batch": self.batch,
            "part": self.part,
            "ids": done.to_json(),
        }

    def _table_failure(self, stage: Stage, exc: BaseException, attempts: int, t0: float, t1: float) -> TaskResult:
        error = item_error(stage, self.batch, None, exc, attempts, None)
        return TaskResult(
            self.stage,
            self.batch,
            self.part,
            None,
            IdSet(),
            (error,),
            1,
            seconds=time.perf_counter() - t1,
            read_seconds=t1 - t0,
        )


class TaskStop:
    """The driver's request that an in-process task end early, keeping what it finished: on
    Ctrl-C an async task cancels its unfinished items and writes a part of the finished ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requested = False
        self._hooks: list[Callable[[], Any]] = []

    def request(self) -> None:
        with self._lock:
            self.requested = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def on_request(self, hook: Callable[[], Any]) -> None:
        """Call ``hook`` when a stop is requested (at once if it already was)."""
        with self._lock:
            if not self.requested:
                self._hooks.append(hook)
                return
        hook()


def _cancel_all(items: Sequence[asyncio.Future[Any]]) -> None:
    for item in items:
        item.cancel()


def _finished_only(ids: np.ndarray, values: list[Any], outputs: list[Any]) -> tuple[np.ndarray, list[Any], list[Any]]:
    """Drop the items a stop cancelled (they stay pending for a resume); raise what is not an item's."""
    for out in outputs:
        if isinstance(out, BaseException) and not isinstance(out, asyncio.CancelledError):
            raise out  # not caught per item (``KeyboardInterrupt``, ``SystemExit``): the task's own
    keep = [not isinstance(out, asyncio.CancelledError) for out in outputs]
    if all(keep):
        return ids, values, outputs
    return (
        ids[np.array(keep, dtype=bool)],
        [v for v, k in zip(values, keep, strict=True) if k],
        [o for o, k in zip(outputs, keep, strict=True) if k],
    )


# -- per-process caches ------------------------------------------------------------------

_annotations: IdentityCache[tuple[Any]] = IdentityCache()  # (annotation,): None is a value too
_params_cache: IdentityCache[tuple[Any]] = IdentityCache()


def _input_annotation(stage: Stage) -> Any:
    return _annotations.get(
        (stage,), lambda: (type_hints(stage.fn).get(stage.input_args[0]) if stage.input_args else None,)
    )[0]


def worker_name() -> str:
    """``host/pid``, and the thread's name when it is not the process's main thread."""
    thread = threading.current_thread()
    name = f"{socket.gethostname()}/{os.getpid()}"
    return name if thread is threading.main_thread() else f"{name}/{thread.name}"


def _timed(result: TaskResult, started: float) -> TaskResult:
    return dataclasses.replace(result, started=started, ended=time.time(), worker=worker_name())


async def _timed_async(work: Any) -> TaskResult:
    started = time.time()
    return _timed(await work, started)


def _params(pipeline: Pipeline, params_json: str | None) -> Any:
    def parse() -> tuple[Any]:
        model = pipeline.params_model
        if model is None:
            return (None,)
        return (model.model_validate_json(params_json) if params_json else model(),)

    return _params_cache.get((pipeline,), parse, extra=params_json)[0]
