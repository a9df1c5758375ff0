"""Reading a source: items cut into batches, each checkpointed as the source's output.

The source's own output is stored like any stage's, so a resume reads the items back instead
of calling the source again (a source need not be deterministic), and a batch's key is the
digest of its content: a rerun that yields the same items finds the same keys downstream.

A source may yield items (sync or async generator), return an iterable, or return a whole
table-like value (``pa.Table``, ``pd.DataFrame``, numpy array, ``range``) that is sliced
without iterating it item by item.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import codec
from .batching import SourceBatchSizes
from .errors import ConversionError, StageFailed
from .idset import IdSet
from .store import arrow as batch_files
from .store import recent

if TYPE_CHECKING:
    from .model import Stage


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """One written source batch."""

    batch: int
    key: str
    file: batch_files.FileInfo


class SourceReader:
    """Pulls batches from a source stage; ``read_next`` is called from one thread at a time."""

    def __init__(self, stage: Stage, params: Any, path_for: Any, fsync: bool = batch_files.FSYNC,
                 loop: asyncio.AbstractEventLoop | None = None, keep: bool = True) -> None:
        self.stage = stage
        self._path_for = path_for  # (batch number, key) -> file path
        self._fsync = fsync
        self._sizes = SourceBatchSizes(stage.batch_size)
        self._next = 0
        self._loop = loop
        self._lock = threading.Lock()
        self._exhausted = False
        self._keep = keep  # a consumer runs in this process: hand it the tables, not just the files
        self._chunks = self._open(params)

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def _open(self, params: Any) -> Iterator[Any]:
        stage = self.stage
        kwargs = dict(stage.kwargs)
        if stage.takes_params:
            kwargs["params"] = params
        result = stage.fn(**kwargs)
        if inspect.isasyncgen(result):
            return self._async_chunks(result)
        if inspect.isawaitable(result):
            result = self._run_async(result)
        return self._chunks_of(result)

    def _run_async(self, awaitable: Any) -> Any:
        if self._loop is None:
            return asyncio.run(awaitable)
        return asyncio.run_coroutine_threadsafe(awaitable, self._loop).result()

    def _chunks_of(self, result: Any) -> Iterator[Any]:
        sliced = _as_table_like(result, self.stage.name)
        if sliced is not None:
            offset = 0
            for size in self._sizes:
                if offset >= sliced.num_rows:
                    return
                yield sliced.slice(offset, size)
                offset += size
            return
        iterator = iter(result)
        for size in self._sizes:
            chunk = list(itertools.islice(iterator, size))
            if not chunk:
                return
            yield chunk

    def _async_chunks(self, agen: Any) -> Iterator[list[Any]]:
        async def take(n: int) -> list[Any]:
            out = []
            async for item in agen:
                out.append(item)
                if len(out) >= n:
                    break
            return out

        for size in self._sizes:
            chunk = self._run_async(take(size))
            if not chunk:
                return
            yield chunk

    def read_next(self) -> SourceBatch | None:
        """Read, convert and write the next batch; ``None`` when the source is exhausted."""
        with self._lock:
            if self._exhausted:
                return None
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._exhausted = True
                return None
            except Exception as exc:  # noqa: BLE001 - a failing source fails the stage
                self._exhausted = True
                raise StageFailed(self.stage.name, str(exc) or type(exc).__name__, batch=self._next,
                                  error_type=type(exc).__name__) from exc
            batch = self._next
            self._next += 1
        table = self._encode(chunk, batch)
        self._sizes.observe(table.num_rows, table.nbytes)
        data = batch_files.serialize(table)
        key = batch_files.content_digest(data)
        path = self._path_for(batch, key)
        # the key is the digest of the bare table; the file adds its own description (key, ids, checksum)
        part = {"key": key, "stage": self.stage.name, "batch": batch, "part": 0,
                "ids": IdSet.span(0, table.num_rows).to_json()}
        info = batch_files.write_table(path, table, fsync=self._fsync, part=part)
        if self._keep:
            recent.remember(path, table)  # consumers in this process need not read it back
        return SourceBatch(batch, key, info)

    def _encode(self, chunk: Any, batch: int) -> pa.Table:
        if isinstance(chunk, pa.Table):
            return chunk.append_column(codec.ITEM_COLUMN, pa.array(np.arange(chunk.num_rows, dtype=np.int64)))
        try:
            return codec.encode(chunk, stage=self.stage.name, output_type=self.stage.output_type,
                                item_ids=np.arange(len(chunk), dtype=np.int64))
        except ConversionError as exc:
            raise StageFailed(self.stage.name, str(exc), batch=batch, item=getattr(exc, "item", None),
                              error_type="ConversionError") from None


def _as_table_like(result: Any, stage: str) -> pa.Table | None:
    """A whole-table source result as an Arrow table (sliced, not iterated), else ``None``."""
    if isinstance(result, pa.Table):
        meta = dict(result.schema.metadata or {})
        meta.setdefault(codec.SHAPE_KEY, b"record")
        return result.replace_schema_metadata(meta)
    if isinstance(result, pa.RecordBatch):
        return _as_table_like(pa.Table.from_batches([result]), stage)
    if isinstance(result, (pa.Array, pa.ChunkedArray)):
        return pa.table({stage: result}, metadata={codec.SHAPE_KEY: b"scalar"})
    if isinstance(result, range):
        import numpy as np

        return pa.table({stage: pa.array(np.arange(result.start, result.stop, result.step, dtype=np.int64))},
                        metadata={codec.SHAPE_KEY: b"scalar"})
    module = type(result).__module__
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(result, pd.Series):
            return pa.table({stage: pa.Array.from_pandas(result)}, metadata={codec.SHAPE_KEY: b"scalar"})
        if isinstance(result, pd.DataFrame):
            return _as_table_like(pa.Table.from_pandas(result, preserve_index=False), stage)
    if module == "numpy" and getattr(result, "ndim", 0) == 1:
        return pa.table({stage: pa.array(result)}, metadata={codec.SHAPE_KEY: b"scalar"})
    return None
