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
import inspect
import itertools
import os
import signal
import socket
import threading
import time
import traceback
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines._engine.async_deadline import ItemTimeout, LoopWatch, run_with_deadline
from pipelines._engine.idset import IdSet
from pipelines.define import codec, resources, retry
from pipelines.define.loader import PipelineHandle
from pipelines.define.rate import RateLimiter, parse_rate
from pipelines.errors import ConversionError
from pipelines.store import arrow as batch_files
from pipelines.store.ledger import ItemError

if TYPE_CHECKING:
    from pipelines.define.model import Pipeline, Stage

INPUT_REPR_LIMIT = 500
_NO_IDS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class InputPart:
    """One Arrow file to read; ``expect`` (size, checksum) is checked for files of earlier runs.

    ``batch`` is the producer's batch: a reader puts each batch's rows in item order, whatever
    ids each part happened to hold (parts of a streamed stage hold ids in completion order).
    """

    path: str
    expect: batch_files.FileInfo | None = None
    batch: int = 0


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input of a task: the producer's files for this batch and which ids to compute."""

    stage: str
    parts: tuple[InputPart, ...]
    ids_in_column: bool  # the producer keeps item ids in ``_item``; else ids are row positions
    select: IdSet | None = None  # None: every row


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


@dataclass(slots=True)
class BatchTask:
    """Compute one slice of one batch of one stage. Picklable; call it to run."""

    handle: PipelineHandle
    stage: str
    batch: int
    part: int
    inputs: tuple[InputSpec, ...]
    output_path: str
    params_json: str | None = None
    side: dict[str, tuple[InputPart, ...]] = field(default_factory=dict)
    fsync: bool = batch_files.FSYNC
    rate_share: float = 1.0  # this worker's share of the stage's rate limit (1/workers)
    pipeline: Pipeline | None = None  # in-process only; dropped when pickled
    object_key: str = ""  # the batch key the output is stored under (in the file's metadata)
    stop: TaskStop | None = None  # in-process only: the driver asks the task to end early (Ctrl-C)

    def __getstate__(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
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
        pipeline = self.pipeline or self.handle.resolve()
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
        ids, values, tables = self._read(pipeline, stage)
        t1 = time.perf_counter()
        kwargs = self._kwargs(pipeline, stage)
        kwargs.update(resources.resolve_sync(stage.resources))
        if stage.itemwise:
            runner = _ItemRunner(stage, self.batch, self.rate_share)
            outputs = runner.run_all(ids, values, kwargs)
            return self._finish_items(stage, ids, values, outputs, runner.errors, t0, t1)
        return self._run_table_stage(stage, tables, kwargs, t0, t1)

    # -- async ------------------------------------------------------------------------
    async def _run_async(self, pipeline: Pipeline, stage: Stage) -> TaskResult:
        t0 = time.perf_counter()
        ids, values, tables = await asyncio.to_thread(self._read, pipeline, stage)
        t1 = time.perf_counter()
        kwargs = self._kwargs(pipeline, stage)
        kwargs.update(await resources.resolve_async(stage.resources))
        if stage.itemwise:
            runner = _ItemRunner(stage, self.batch, self.rate_share)
            items = [asyncio.ensure_future(runner.run_async(i, v, kwargs)) for i, v in zip(ids.tolist(), values)]
            if self.stop is not None:
                loop = asyncio.get_running_loop()
                self.stop.on_request(lambda: loop.call_soon_threadsafe(_cancel_all, items))
            outputs = list(await asyncio.gather(*items, return_exceptions=True))
            ids, values, outputs = _finished_only(ids, values, outputs)
            return await asyncio.to_thread(self._finish_items, stage, ids, values, outputs, runner.errors, t0, t1)
        return await self._run_table_stage_async(stage, tables, kwargs, t0, t1)

    # -- reading ----------------------------------------------------------------------
    def _read(self, pipeline: Pipeline, stage: Stage) -> tuple[np.ndarray, list[Any], list[pa.Table]]:
        tables = [read_input(spec) for spec in self.inputs]
        if not stage.itemwise:
            return (
                _NO_IDS,
                [],
                [
                    t if spec.parts else _empty_output(pipeline.stages[spec.stage])
                    for (t, _), spec in zip(tables, self.inputs)
                ],
            )
        ((table, ids),) = tables
        producer = pipeline.stages[self.inputs[0].stage]
        want = _input_annotation(stage)
        values = codec.decode(table, want=want, producer_type=producer.output_type)
        return ids, values, []

    def _kwargs(self, pipeline: Pipeline, stage: Stage) -> dict[str, Any]:
        kwargs = dict(stage.kwargs)
        if stage.takes_params and "params" not in kwargs:
            kwargs["params"] = _params(pipeline, self.params_json)
        for name, parts in self.side.items():
            table = codec.data_columns(read_in_item_order(parts))
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
    ) -> TaskResult:
        t2 = time.perf_counter()
        failed = {e.item for e in errors}
        if not failed and stage.granularity == "item":  # the common case: no per-row Python work
            row_ids: Any = ids
            row_values = outputs
        else:
            keep = [(i, out) for i, out in zip(ids.tolist(), outputs) if i not in failed]
            if stage.granularity == "flat":
                keep = [(i, v) for i, out in keep for v in out]
            row_ids = [i for i, _ in keep]
            row_values = [v for _, v in keep]
        table = None
        while True:
            try:
                table = codec.encode(row_values, stage=stage.name, output_type=stage.output_type, item_ids=row_ids)
                break
            except ConversionError as exc:  # one bad value fails its item, not the batch
                bad_id = int(row_ids[exc.item])  # type: ignore[attr-defined]
                position = int(np.searchsorted(ids, bad_id))
                errors.append(_item_error(stage, self.batch, bad_id, exc, 1, values[position]))
                failed.add(bad_id)
                kept = [(i, v) for i, v in zip(list(row_ids), row_values) if i != bad_id]
                row_ids, row_values = [i for i, _ in kept], [v for _, v in kept]
        done = IdSet.from_sorted(
            ids if not failed else np.array([i for i in ids.tolist() if i not in failed], dtype=np.int64)
        )
        info = None
        if len(row_values) or done:
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
        )

    # -- table stages (batch, reduce) ---------------------------------------------------
    def _table_args(self, stage: Stage, tables: list[pa.Table]) -> list[Any]:
        if stage.table_format == "list":  # list[T]: the values, rebuilt as T
            from pipelines.define.model import _hints

            hints = _hints(stage.fn)
            wants = [next(iter(typing.get_args(hints.get(name))), None) for name in stage.input_args]
            return [codec.decode(t, want=want) if t.num_columns else [] for t, want in zip(tables, wants)]
        tables = [codec.data_columns(t) for t in tables]
        if stage.table_format == "pandas":
            return [t.to_pandas() for t in tables]
        return tables

    def _run_table_stage(
        self, stage: Stage, tables: list[pa.Table], kwargs: dict[str, Any], t0: float, t1: float
    ) -> TaskResult:
        args = self._table_args(stage, tables)
        call_kwargs = {**kwargs, **dict(zip(stage.input_args, args))}
        attempt = 0
        while True:
            try:
                result = stage.fn(**call_kwargs)
                break
            except Exception as exc:  # noqa: BLE001 - recorded as the batch's failure
                if attempt < stage.retries and _retryable(exc, stage.retry_on):
                    time.sleep(_retry_delay(attempt, exc))
                    attempt += 1
                    continue
                return self._table_failure(stage, exc, attempt + 1, t0, t1)
        return self._write_table_result(stage, result, t0, t1)

    async def _run_table_stage_async(
        self, stage: Stage, tables: list[pa.Table], kwargs: dict[str, Any], t0: float, t1: float
    ) -> TaskResult:
        args = self._table_args(stage, tables)
        call_kwargs = {**kwargs, **dict(zip(stage.input_args, args))}
        attempt = 0
        while True:
            try:
                result = await _with_timeout(
                    stage.fn(**call_kwargs), stage.timeout, f"stage {stage.name!r} batch {self.batch}"
                )
                break
            except Exception as exc:  # noqa: BLE001
                if attempt < stage.retries and _retryable(exc, stage.retry_on):
                    await asyncio.sleep(_retry_delay(attempt, exc))
                    attempt += 1
                    continue
                return self._table_failure(stage, exc, attempt + 1, t0, t1)
        return await asyncio.to_thread(self._write_table_result, stage, result, t0, t1)

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
        error = _item_error(stage, self.batch, None, exc, attempts, None)
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
        [v for v, k in zip(values, keep) if k],
        [o for o, k in zip(outputs, keep) if k],
    )


# -- reading inputs ------------------------------------------------------------------------


def read_input(spec: InputSpec) -> tuple[pa.Table, np.ndarray]:
    """The rows of one input to compute, and their item ids."""
    table = read_in_item_order(spec.parts)
    if spec.ids_in_column and codec.ITEM_COLUMN in table.column_names:
        ids = table.column(codec.ITEM_COLUMN).to_numpy()
    else:
        ids = np.arange(table.num_rows, dtype=np.int64)
    if spec.select is not None:
        table, ids = _select(table, ids, spec.select)
    return table, ids


def read_in_item_order(parts: Sequence[InputPart]) -> pa.Table:
    """Parts of one or more producer batches (in batch order) as one table, each batch's rows
    sorted by item id (stable: a flat-map's rows of one item keep their order). This is what
    makes every consumer's input, and so every output, the same whatever the timing."""
    tables = []
    for _, group in itertools.groupby(parts, key=lambda p: p.batch):
        table = _concat([batch_files.read_table(p.path, expect=p.expect) for p in group])
        if codec.ITEM_COLUMN in table.column_names and table.num_rows > 1:
            ids = table.column(codec.ITEM_COLUMN).to_numpy()
            if not bool(np.all(ids[1:] >= ids[:-1])):
                table = table.take(pa.array(np.argsort(ids, kind="stable")))
        tables.append(table)
    return _concat(tables)


def _empty_output(producer: Stage) -> pa.Table:
    """No rows at all (every item failed): still the columns the producer declares."""
    if producer.output_type is None or codec.arrow_type(producer.output_type) is codec.TABLE:
        return pa.table({})
    return codec.encode([], stage=producer.name, output_type=producer.output_type, item_ids=[])


def _select(table: pa.Table, ids: np.ndarray, select: IdSet) -> tuple[pa.Table, np.ndarray]:
    if len(ids) and select.ranges == ((int(ids[0]), int(ids[-1]) + 1),) and len(ids) == len(select):
        return table, ids
    pieces = []
    for a, b in select.ranges:
        lo, hi = np.searchsorted(ids, a, "left"), np.searchsorted(ids, b, "left")
        if hi > lo:
            pieces.append((int(lo), int(hi)))
    if not pieces:
        return table.slice(0, 0), ids[:0]
    if len(pieces) == 1:
        lo, hi = pieces[0]
        return table.slice(lo, hi - lo), ids[lo:hi]
    return (
        pa.concat_tables([table.slice(lo, hi - lo) for lo, hi in pieces]),
        np.concatenate([ids[lo:hi] for lo, hi in pieces]),
    )


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    if not tables:
        return pa.table({})
    tables = [t for t in tables if t.num_columns] or list(tables[:1])
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid:
        return pa.concat_tables(tables, promote_options="permissive")


# -- per item: retries, timeouts, rate limits, concurrency ------------------------------


class _ItemRunner:
    """Runs the stage function on single items; collects errors instead of raising."""

    def __init__(self, stage: Stage, batch: int, rate_share: float = 1.0) -> None:
        self.stage = stage
        self.batch = batch
        self.errors: list[ItemError] = []
        self.limiter = _limiter(stage, rate_share)
        self.positional = stage.input_args[0] == _first_param(stage.fn)

    def _call(self, value: Any, kwargs: dict[str, Any]) -> Any:
        fn, stage = self.stage.fn, self.stage
        result = fn(value, **kwargs) if self.positional else fn(**{stage.input_args[0]: value}, **kwargs)
        if stage.granularity == "flat" and not inspect.isasyncgen(result) and not inspect.isawaitable(result):
            result = list(result)
        return result

    def run_all(self, ids: np.ndarray, values: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        """Every item's result (``None`` for failed ones, whose errors are in ``self.errors``).

        With no retries, timeout or rate limit, the function runs in a plain comprehension,
        as fast as a hand-written loop; only if an item raises is the batch redone item by
        item to find and record the failures.
        """
        stage = self.stage
        if stage.retries == 0 and stage.timeout is None and self.limiter is None and stage.granularity == "item":
            fn = stage.fn
            try:
                if self.positional and not kwargs:
                    return [fn(v) for v in values]
                if self.positional:
                    return [fn(v, **kwargs) for v in values]
            except Exception:  # noqa: BLE001 - redone item by item below, recording each failure
                pass
        return [self.run_sync(i, v, kwargs) for i, v in zip(ids.tolist(), values)]

    def run_sync(self, item: int, value: Any, kwargs: dict[str, Any]) -> Any:
        attempt = 0
        while True:
            try:
                if self.limiter is not None:
                    self.limiter.acquire()
                if self.stage.timeout is None:
                    return self._call(value, kwargs)
                return call_with_timeout(self._call, (value, kwargs), self.stage.timeout)
            except Exception as exc:  # noqa: BLE001 - recorded per item; the policy decides
                if attempt < self.stage.retries and _retryable(exc, self.stage.retry_on):
                    time.sleep(_retry_delay(attempt, exc))
                    attempt += 1
                    continue
                self.errors.append(_item_error(self.stage, self.batch, item, exc, attempt + 1, value))
                return None

    async def run_async(self, item: int, value: Any, kwargs: dict[str, Any]) -> Any:
        semaphore = _semaphore(self.stage)
        attempt = 0
        while True:
            try:
                async with semaphore:
                    if self.limiter is not None:
                        await self.limiter.acquire_async()
                    label = f"stage {self.stage.name!r} batch {self.batch} item {item}"
                    result = self._call(value, kwargs)
                    if inspect.isasyncgen(result):
                        return await _with_timeout(_collect(result), self.stage.timeout, label)
                    out = await _with_timeout(result, self.stage.timeout, label)
                    return list(out) if self.stage.granularity == "flat" else out
            except Exception as exc:  # noqa: BLE001
                if attempt < self.stage.retries and _retryable(exc, self.stage.retry_on):
                    await asyncio.sleep(_retry_delay(attempt, exc))
                    attempt += 1
                    continue
                self.errors.append(_item_error(self.stage, self.batch, item, exc, attempt + 1, value))
                return None


async def _collect(agen: Any) -> list[Any]:
    return [x async for x in agen]


async def _with_timeout(awaitable: Any, timeout: float | None, label: str) -> Any:
    """Await an item within its stage's timeout (see ``async_deadline``); the loop's watch names it if it blocks."""
    if timeout is not None:
        return await run_with_deadline(awaitable, timeout, label)
    LoopWatch.of(asyncio.get_running_loop()).label(asyncio.current_task(), label)
    return await awaitable


def _item_error(stage: Stage, batch: int, item: int | None, exc: BaseException, attempts: int, value: Any) -> ItemError:
    return ItemError(
        stage=stage.name,
        batch=batch,
        item=item,
        error_type=type(exc).__name__,
        message=describe_exception(exc),
        traceback=_format_traceback(exc),
        attempts=attempts,
        input=_short_repr(value) if item is not None else None,
    )


def describe_exception(exc: BaseException) -> str:
    """``str(exc)``, or its type's name; never raises, whatever the exception's ``__str__`` does.

    An item's exception is user code: a ``__str__`` (or ``__repr__``) that raises must fail
    that item, described safely, and not the task that records it (and its innocent items).
    """
    try:
        text = str(exc)
    except Exception as failure:  # noqa: BLE001 - the user's __str__ failed
        try:
            text = repr(exc)
        except Exception:  # noqa: BLE001 - and so did its __repr__
            return f"<{type(exc).__name__}: its __str__ raised {type(failure).__name__}>"
    return text or type(exc).__name__


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception as failure:  # noqa: BLE001 - a hostile exception (its notes, its cause) must not escape
        return f"{type(exc).__name__} (its traceback could not be formatted: {type(failure).__name__})"


def _retryable(exc: BaseException, predicate: Callable[[BaseException], bool] | None) -> bool:
    """Whether to retry; a predicate (or an exception attribute it reads) that raises means no."""
    try:
        return bool(retry.should_retry(exc, predicate))
    except Exception:  # noqa: BLE001
        return False


def _retry_delay(attempt: int, exc: BaseException) -> float:
    try:
        return retry.delay(attempt, exc)
    except Exception:  # noqa: BLE001 - a hostile ``retry_after``: the plain backoff
        return retry.delay(attempt)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= INPUT_REPR_LIMIT else text[: INPUT_REPR_LIMIT - 3] + "..."


# -- timeouts for plain functions ----------------------------------------------------------


def call_with_timeout(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    """Call ``fn(*args)``, giving up after ``timeout`` seconds.

    In a process's main thread (a process-pool worker, or the driver for ``inline``) a
    SIGALRM interrupts the call itself. A thread cannot be interrupted in Python: there the
    call runs on a helper thread that is abandoned on timeout (it finishes in the background
    and its result is dropped); the item is reported as timed out either way.
    """
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _call_with_alarm(fn, args, timeout)
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - carried back to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="pipelines-timeout", daemon=True).start()
    if not done.wait(timeout):
        raise ItemTimeout(
            f"timed out after {timeout:g} s (the call was abandoned on its thread, which runs on until it returns)"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def _call_with_alarm(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    def expire(signum: int, frame: Any) -> None:
        raise ItemTimeout(f"timed out after {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- per-process caches ------------------------------------------------------------------

_cache_lock = threading.Lock()
_semaphores: dict[tuple[int, int], asyncio.Semaphore] = {}
_limiters: dict[int, RateLimiter] = {}
_annotations: dict[int, Any] = {}
_params_cache: dict[tuple[int, str | None], Any] = {}
DEFAULT_ASYNC_CONCURRENCY = 64


def _semaphore(stage: Stage) -> asyncio.Semaphore:
    """One semaphore per stage per event loop: a worker's whole concurrency budget."""
    key = (id(asyncio.get_running_loop()), id(stage))
    with _cache_lock:
        sem = _semaphores.get(key)
        if sem is None:
            sem = _semaphores[key] = asyncio.Semaphore(stage.concurrency or DEFAULT_ASYNC_CONCURRENCY)
    return sem


def _limiter(stage: Stage, share: float) -> RateLimiter | None:
    """One limiter per stage per process, allowed its share of the stage's rate."""
    if stage.rate is None:
        return None
    with _cache_lock:
        limiter = _limiters.get(id(stage))
        if limiter is None:
            limiter = _limiters[id(stage)] = RateLimiter(parse_rate(stage.rate) * share)
    return limiter


def _input_annotation(stage: Stage) -> Any:
    key = id(stage)
    if key not in _annotations:
        from pipelines.define.model import _hints

        _annotations[key] = _hints(stage.fn).get(stage.input_args[0]) if stage.input_args else None
    return _annotations[key]


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


def _first_param(fn: Callable[..., Any]) -> str | None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    return (
        params[0].name
        if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD)
        else None
    )


def _params(pipeline: Pipeline, params_json: str | None) -> Any:
    key = (id(pipeline), params_json)
    if key not in _params_cache:
        model = pipeline.params_model
        _params_cache[key] = (
            model.model_validate_json(params_json)
            if model is not None and params_json
            else (model() if model is not None else None)
        )
    return _params_cache[key]
