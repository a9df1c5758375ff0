"""Sources on the driver: reading them, reloading them on resume, and holding them back.

A source runs in a thread of its own (``source.SourceReader`` cuts and writes its batches).
It reads ahead only while fewer than ``MAX_OPEN_SOURCE_BATCHES`` of its batches are still
open in the stages that follow it batch by batch (backpressure). A resume of a run whose
source finished reads the stored batches back, verified, instead of calling the source again.
The offsets of its batches give every item an overall position for error messages.

A mixin of ``Runner``: it works on the runner's state.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .errors import StageFailed
from .idset import IdSet
from .model import Pipeline
from .source import SourceBatch, SourceReader
from .store import arrow as batch_files
from .outputs import distinct_parts
from .store.ledger import Part

MAX_OPEN_SOURCE_BATCHES = 6
logger = logging.getLogger(__name__)
IN_PROCESS = ("inline", "threads", "asyncio")


class SourceFeed:
    """Source handling for ``Runner`` (see the module docstring)."""

    # provided by Runner
    stages: dict[str, Any]
    states: dict[str, Any]
    consumers: dict[str, list[str]]
    order: list[str]
    plan: Any
    store: Any
    run_id: str
    params: Any
    resumed: bool
    fresh: set[str]
    stopping: bool
    observer: Any
    workers: Any
    fingerprints: dict[str, str]
    _dirty: set[str]

    def _init_feed(self) -> None:
        self._readers: dict[str, SourceReader] = {}
        self._source_threads: dict[str, ThreadPoolExecutor] = {}
        self._source_futures: dict[Future[Any], str] = {}
        self._open_batches: dict[str, int] = {}
        self._unfinished: dict[tuple[str, int], int] = {}  # (source, k) -> stream stages not final at k
        self._streams = {n: self._stream_of(n) for n in self.order if self.stages[n].granularity == "source"}
        self._sources_of = {n: [s for s, stream in self._streams.items() if n in stream] for n in self.order}
        self._origin = self._origins()
        self._offsets: dict[str, dict[int, int]] = {}
        self._sizes: dict[str, dict[int, int]] = {}

    def _stream_of(self, source: str) -> list[str]:
        """Stages whose batch k follows the source's batch k (all but reduce stages and beyond)."""
        out, frontier = [source], [source]
        while frontier:
            for c in self.consumers[frontier.pop()]:
                if self.stages[c].granularity != "all" and c not in out:
                    out.append(c)
                    frontier.append(c)
        return out

    def _origins(self) -> dict[str, str]:
        """For item-wise stages whose input ids are source positions: that source."""
        ids_from: dict[str, str | None] = {}  # stage -> the source its output ids are positions of
        origins = {}
        for name in self.order:  # topological: inputs first
            stage = self.stages[name]
            up = ids_from.get(stage.inputs[0]) if stage.inputs else None
            ids_from[name] = name if stage.granularity == "source" else (up if stage.granularity == "item" else None)
            if stage.itemwise and up is not None:
                origins[name] = up
        return origins

    def _source_offset(self, name: str, k: int) -> int | None:
        origin = self._origin.get(name)
        return self._offsets.get(origin, {}).get(k) if origin else None

    # == sources ================================================================================
    def _open_source(self, name: str, pinned: Any) -> None:
        stage = self.stages[name]
        if self.resumed and pinned is not None and pinned["source_complete"] and name not in self.fresh:
            if self._reload_source(name):
                return
            self.observer.message(f"source {name!r}: stored batches are damaged; reading the source again",
                                  level="warning")
        loop = self.workers.get("asyncio").loop if stage.is_async and "asyncio" in self.plan.executors else None
        in_process = any(self.plan.stages[c].backend in ("inline", "threads", "asyncio") for c in self.consumers[name])
        self._readers[name] = SourceReader(
            stage, self.params, lambda k, key, n=name: self.store.part_path(self.run_id, n, k, key, 0), loop=loop,
            keep=in_process)
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
            self._source_batch_ready(name, batch, sum(p.rows for p in parts))
        logger.info("source %r: reusing its %d stored batches (%s items) instead of reading it again", name,
                    len(loaded), f"{st.items_reused:,}")
        st.upstream_final = True
        self._check_stage_final(name)
        return True

    def _schedule_source(self, name: str) -> None:
        reader = self._readers.get(name)
        if reader is None or reader.exhausted or self.stopping or name in self._source_futures.values():
            return
        if self._open_batches[name] >= MAX_OPEN_SOURCE_BATCHES:
            return
        st = self.states[name]
        if st.started is None:  # the source's wall time starts with its first read
            st.started = time.time()
        self._source_futures[self._source_threads[name].submit(reader.read_next)] = name

    def _source_done(self, future: Future[Any], name: str) -> None:
        st = self.states[name]
        self._dirty.add(name)
        try:
            batch: SourceBatch | None = future.result()
        except StageFailed as exc:
            self._fail(exc)
            return
        except Exception as exc:  # noqa: BLE001 - writing the batch failed (disk full...)
            self._fail(StageFailed(name, f"cannot write its checkpoint: {exc}", error_type=type(exc).__name__))
            return
        if batch is None:
            st.upstream_final = True
            self._check_stage_final(name)
            return
        b = st.batch(batch.batch)
        ids = IdSet.span(0, batch.file.rows)
        self.store.ledger.record_part(run_id=self.run_id, stage=name, batch=batch.batch, key=batch.key,
                                      fingerprint=self.fingerprints[name], info=batch.file, done=ids)
        b.key, b.available, b.done, b.computed_parts = batch.key, ids, ids, 1
        b.parts = [Part(batch.key, batch.file.path, ids, batch.file.rows, batch.file.bytes, batch.file.checksum, 0)]
        st.items_done += len(ids)
        self._source_batch_ready(name, batch.batch, batch.file.rows)

    def _source_batch_ready(self, name: str, k: int, rows: int) -> None:
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
        self._unfinished[(name, k)] = len(self._streams[name])
        self._publish(name, k, b.done)
        self._finalize_batch(name, k)


    def _close_feed(self) -> None:
        for thread in self._source_threads.values():
            thread.shutdown(wait=False, cancel_futures=True)

    # _fail, _check_stage_final, _publish and _finalize_batch come from Runner and Recovery


@contextlib.contextmanager
def lifespan(pipeline: Pipeline, params: Any) -> Iterator[None]:
    """Hold the pipeline's lifespan open; set the environment variables it yields."""
    if pipeline.lifespan is None:
        yield
        return
    takes_params = "params" in inspect.signature(pipeline.lifespan).parameters
    with (pipeline.lifespan(params) if takes_params else pipeline.lifespan()) as env:
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
