"""Sources on the driver: reading them, reloading them on resume, and holding them back.

A source runs in a thread of its own (``source.SourceReader`` cuts and writes its batches).
It reads ahead only while few of its batches are still open in the stages that follow it
batch by batch (backpressure): fewer than ``MAX_OPEN_SOURCE_BATCHES``, or more of them while
they are small (under ``MAX_OPEN_SOURCE_ITEMS`` items and ``MAX_OPEN_SOURCE_BYTES`` in all), so
that a cheap stage's task may span many small batches. A resume of a run whose
source finished reads the stored batches back, verified, instead of calling the source again.
The offsets of its batches give every item an overall position for error messages.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from executors.asyncio_loop import AsyncioExecutor
from pipelines._engine import item_reuse
from pipelines._engine.idset import IdSet
from pipelines._engine.source import SourceBatch, SourceReader
from pipelines.define.model import Pipeline
from pipelines.errors import StageFailed
from pipelines.store import arrow as batch_files
from pipelines.store.ledger import Part
from pipelines.store.outputs import distinct_parts

if TYPE_CHECKING:
    from pipelines._engine.state import RunContext

MAX_OPEN_SOURCE_BATCHES = 6
MAX_OPEN_SOURCE_ITEMS = 1 << 16  # as many as the largest task takes
MAX_OPEN_SOURCE_BYTES = 32 << 20
READ_AHEAD_SECONDS = 0.02  # a read hands its batches over after this long, so consumers start early
logger = logging.getLogger("pipelines.run")  # one stable name for the engine, whatever module logs


class SourceFeed:
    """The run's sources: their reader threads, backpressure and item offsets.

    It owns only source state; ids it produces go through the runner's ``Flow``.
    """

    def __init__(
        self,
        ctx: RunContext,
        *,
        params: Any,
        resumed: bool,
        fresh: set[str],
        fingerprints: dict[str, str],
    ) -> None:
        self.graph = ctx.graph
        self.stages = ctx.graph.stages
        self.plan = ctx.plan
        self.states = ctx.states
        self.store = ctx.store
        self.run_id = ctx.run_id
        self.params = params
        self.resumed = resumed
        self.fresh = fresh
        self.observer = ctx.observer
        self.workers = ctx.workers
        self.fingerprints = fingerprints
        self.flow = ctx.flow
        self._readers: dict[str, SourceReader] = {}
        self._source_threads: dict[str, ThreadPoolExecutor] = {}
        self.futures: dict[Future[Any], str] = {}  # reads in progress -> their source
        self._open_batches: dict[str, int] = {}
        self._open_size: dict[str, list[int]] = {}  # source -> [items, bytes] of its open batches
        self._bytes: dict[tuple[str, int], int] = {}
        self._unfinished: dict[tuple[str, int], int] = {}  # (source, k) -> stream stages not final at k
        self._offsets: dict[str, dict[int, int]] = {}
        self._sizes: dict[str, dict[int, int]] = {}

    def source_offset(self, name: str, k: int) -> int | None:
        """The overall index of batch ``k``'s first item, where ``name``'s ids come from a source."""
        origin = self.graph.origins.get(name)
        return self._offsets.get(origin, {}).get(k) if origin else None

    def batch_final(self, name: str, k: int) -> None:
        """Stage ``name`` closed its batch ``k``: the sources feeding it may read further ahead."""
        for source in self.graph.sources_of[name]:
            self._unfinished[(source, k)] -= 1
            if not self._unfinished[(source, k)]:
                self._open_batches[source] -= 1
                size = self._open_size[source]
                size[0] -= self._sizes[source][k]
                size[1] -= self._bytes.pop((source, k), 0)
                self.flow.mark_dirty(source)

    # == sources ================================================================================
    def open(self, name: str, pinned: Any) -> None:
        """Start source ``name``: a reader thread, or (a resume of a finished source) its stored batches."""
        self._open_batches[name] = 0
        self._open_size[name] = [0, 0]
        stage = self.stages[name]
        if self.resumed and pinned is not None and pinned["source_complete"] and name not in self.fresh:
            if self._reload_source(name):
                return
            self.observer.message(
                f"source {name!r}: stored batches are damaged; reading the source again", level="warning"
            )
        loop = None
        if stage.is_async and "asyncio" in self.plan.executors:  # the async stages' loop runs its items too
            executor = self.workers.get("asyncio")
            assert isinstance(executor, AsyncioExecutor)
            loop = executor.loop
        in_process = any(self.plan.stages[c].in_process for c in self.graph.consumers[name])
        self._readers[name] = SourceReader(
            stage,
            self.params,
            lambda k, key, n=name: self.store.part_path(self.run_id, n, k, key, 0),
            loop=loop,
            keep=in_process,
            wide=item_reuse.wide_cuts(self.stages, self.graph.streams[name]),
        )
        self._source_threads[name] = ThreadPoolExecutor(1, thread_name_prefix=f"pipelines-source-{name}")

    def _reload_source(self, name: str) -> bool:
        """Put a finished source's stored batches back, verified; ``False`` if any is damaged."""
        loaded: list[tuple[int, str, list[Part]]] = []
        for row in self.store.ledger.run_batches(self.run_id, name):
            parts = distinct_parts(self.store.ledger.parts(row["key"]))  # runs that read the same bytes share a key
            if not parts or any(batch_files.verify(p.info) for p in parts):
                return False
            loaded.append((row["batch"], row["key"], parts))
        st = self.states[name]
        for batch, key, parts in loaded:
            b = st.batch(batch)
            b.key, b.parts, b.reused_parts = key, parts, len(parts)
            b.done = b.available = parts[0].done
            st.items_reused += len(b.done)
            self._batch_ready(name, batch, sum(p.rows for p in parts), sum(p.bytes for p in parts))
        logger.info(
            "source %r: reusing its %d stored batches (%s items) instead of reading it again",
            name,
            len(loaded),
            f"{st.items_reused:,}",
        )
        st.upstream_final = True
        self.flow.check_stage_final(name)
        return True

    def schedule(self, name: str) -> None:
        """Read source ``name``'s next batches, unless it is held back."""
        reader = self._readers.get(name)
        if reader is None or reader.exhausted or self.flow.stopping or name in self.futures.values():
            return
        items, size = self._open_size[name]
        if _held_back(self._open_batches[name], items, size):
            return
        st = self.states[name]
        if st.started is None:  # the source's wall time starts with its first read
            st.started = time.time()
        read = self._source_threads[name].submit(_read_some, reader, self._open_batches[name], items, size)
        self.futures[read] = name

    def complete(self, future: Future[Any]) -> bool:
        """Record a finished read; ``False`` if ``future`` is not one of the feed's."""
        name = self.futures.pop(future, None)
        if name is None:
            return False
        st = self.states[name]
        self.flow.mark_dirty(name)
        batches, error, ended = future.result()
        for batch in batches:
            self._record(name, batch)
        if isinstance(error, StageFailed):
            self.flow.fail(error)
        elif error is not None:
            cause = error.strerror if isinstance(error, OSError) and error.strerror else error  # as for a task's part
            self.flow.fail(StageFailed(name, f"cannot write its checkpoint: {cause}", error_type=type(error).__name__))
        elif ended:
            st.upstream_final = True
            self.flow.check_stage_final(name)
        return True

    def _record(self, name: str, batch: SourceBatch) -> None:
        st = self.states[name]
        b = st.batch(batch.batch)
        ids = IdSet.span(0, batch.file.rows)
        self.store.ledger.record_part(
            run_id=self.run_id,
            stage=name,
            batch=batch.batch,
            key=batch.key,
            fingerprint=self.fingerprints[name],
            info=batch.file,
            done=ids,
        )
        b.key, b.available, b.done, b.computed_parts = batch.key, ids, ids, 1
        b.parts = [Part(batch.key, batch.file.path, ids, batch.file.rows, batch.file.bytes, batch.file.checksum, 0)]
        st.items_done += len(ids)
        self._batch_ready(name, batch.batch, batch.file.rows, batch.file.bytes)

    def _batch_ready(self, name: str, k: int, rows: int, nbytes: int) -> None:
        b = self.states[name].batch(k)
        b.rows, b.upstream_final = rows, True
        sizes = self._sizes.setdefault(name, {})
        sizes[k] = rows
        offsets = self._offsets.setdefault(name, {0: 0})
        j = max(offsets)
        while j in sizes:  # a batch's offset is known once every earlier size is
            offsets[j + 1] = offsets[j] + sizes[j]
            j += 1
        self._open_batches[name] += 1
        self._open_size[name][0] += rows
        self._open_size[name][1] += nbytes
        self._bytes[(name, k)] = nbytes
        self._unfinished[(name, k)] = len(self.graph.streams[name])
        self.flow.publish(name, k, b.done)
        self.flow.finalize_batch(name, k)

    def cancel(self) -> None:
        """Stop reading (Ctrl-C): reads not started are dropped."""
        for future in list(self.futures):
            future.cancel()
            self.futures.pop(future, None)

    def close(self) -> None:
        for thread in self._source_threads.values():
            thread.shutdown(wait=False, cancel_futures=True)


def _held_back(batches: int, items: int, nbytes: int) -> bool:
    """Too much of a source is open downstream: read no further for now."""
    return batches >= MAX_OPEN_SOURCE_BATCHES and (items >= MAX_OPEN_SOURCE_ITEMS or nbytes >= MAX_OPEN_SOURCE_BYTES)


def _read_some(
    reader: SourceReader, batches: int, items: int, nbytes: int
) -> tuple[list[SourceBatch], BaseException | None, bool]:
    """Read batches until held back or ``READ_AHEAD_SECONDS`` have passed, in the source's thread.

    One hand-over to the driver per few batches, not per batch: small batches then cost the
    driver's loop one turn between them. Returns the batches, the error that ended the read
    (after the batches before it), and whether the source is exhausted.
    """
    out: list[SourceBatch] = []
    t0 = time.monotonic()
    while True:
        try:
            batch = reader.read_next()
        except Exception as exc:  # the driver reports it, after recording what was read
            return out, exc, False
        if batch is None:
            return out, None, True
        out.append(batch)
        batches, items, nbytes = batches + 1, items + batch.file.rows, nbytes + batch.file.bytes
        if _held_back(batches, items, nbytes) or time.monotonic() - t0 >= READ_AHEAD_SECONDS:
            return out, None, False


@contextlib.contextmanager
def lifespan(pipeline: Pipeline, params: Any) -> Iterator[None]:
    """Hold the pipeline's lifespan open; set the environment variables it yields."""
    if pipeline.lifespan is None:
        yield
        return
    takes_params = "params" in inspect.signature(pipeline.lifespan).parameters
    with pipeline.lifespan(params) if takes_params else pipeline.lifespan() as env:
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
