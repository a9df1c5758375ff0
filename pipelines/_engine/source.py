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

from pipelines._engine import chunking, schemas
from pipelines._engine.idset import IdSet
from pipelines.define import codec
from pipelines.errors import ConversionError, StageFailed
from pipelines.store import arrow as batch_files
from pipelines.store import recent

if TYPE_CHECKING:
    from pipelines.define.model import Stage


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """One written source batch."""

    batch: int
    key: str
    file: batch_files.FileInfo


class SourceReader:
    """Pulls batches from a source stage; ``read_next`` is called from one thread at a time."""

    def __init__(
        self,
        stage: Stage,
        params: Any,
        path_for: Any,
        fsync: bool | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        keep: bool = True,
        wide: bool = False,
    ) -> None:
        self.stage = stage
        self._path_for = path_for  # (batch number, key) -> file path
        self._fsync = fsync
        self._wide = wide  # no consumer needs small batches (``item_reuse.wide_cuts``)
        self._cutter = chunking.Cutter.for_source(stage.batch_size, wide=wide)  # for the next batch
        self._read = 0  # items read from the source so far
        self._cut_so_far = 0  # items put in batches so far
        self._next = 0
        self._loop = loop
        self._lock = threading.Lock()
        self._exhausted = False
        self._keep = keep  # a consumer runs in this process: hand it the tables, not just the files
        self._schema = schemas.SourceSchema(stage.name, stage.output_type)
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

    def _chunks_of(self, result: Any) -> Iterator[pa.Table]:
        sliced = _as_table_like(result, self.stage.name)
        if sliced is not None:
            step = max(self._cutter.maximum, 1 << 16)
            yield from self._cut((sliced.slice(at, step), None) for at in range(0, sliced.num_rows, step))
            return
        iterator = iter(result)

        def windows() -> Iterator[list[Any]]:
            while chunk := list(itertools.islice(iterator, self._cutter.average)):
                yield chunk

        yield from self._cut(self._encoded(windows()))

    def _async_chunks(self, agen: Any) -> Iterator[pa.Table]:
        async def take(n: int) -> list[Any]:
            out = []
            async for item in agen:
                out.append(item)
                if len(out) >= n:
                    break
            return out

        def windows() -> Iterator[list[Any]]:
            while chunk := self._run_async(take(self._cutter.average)):
                yield chunk

        yield from self._cut(self._encoded(windows()))

    def _encoded(self, windows: Iterator[list[Any]]) -> Iterator[tuple[pa.Table, list[Any]]]:
        """Windows of items as tables of the source's one schema; a misfit ends them after the items before it."""
        for items in windows:
            table, error = self._schema.encode(items, self._read)
            if table is not None:
                yield table, items[: table.num_rows]
            if error is not None:
                raise _BadItem(str(error), getattr(error, "item", None))

    def _cut(self, windows: Iterator[tuple[pa.Table, list[Any] | None]]) -> Iterator[pa.Table]:
        """Batches cut where the items' hashes say (see ``chunking``), from windows of encoded items.

        Items not yet in a batch wait in ``pending`` (their table, hashes and, for items
        from an iterator, the values themselves) until a cut falls among them.
        """
        pending: pa.Table | None = None
        hashes = np.zeros(0, dtype=np.uint64)
        sizes = np.zeros(0, dtype=np.int64)
        values: list[Any] | None = None
        final = False
        misfit: _BadItem | None = None
        while True:
            cut = self._cutter.next_cut(hashes, final=final, sizes=sizes)
            if cut is None:
                if final:
                    if misfit is not None:  # after the batches of the items before it
                        raise misfit
                    return
                try:
                    table, items = next(windows)
                except StopIteration:
                    final = True
                    continue
                except _BadItem as exc:
                    final, misfit = True, exc
                    continue
                self._read += table.num_rows
                if pending is None or pending.num_rows == 0:
                    pending, values = table, items
                    hashes, sizes = self._hashes(table), chunking.row_sizes(table)
                    continue
                joined = self._join(pending, values, table, items)
                if joined is None:  # items that cannot share a table: what waits becomes batches of its own
                    yield from self._flush(pending, hashes, sizes)
                    pending, values = table, items
                    hashes, sizes = self._hashes(table), chunking.row_sizes(table)
                    continue
                pending = joined
                values = None if values is None or items is None else values + items
                hashes = np.concatenate([hashes, self._hashes(table)])
                sizes = np.concatenate([sizes, chunking.row_sizes(table)])
                continue
            assert pending is not None
            yield self._batch(pending.slice(0, cut))
            pending, hashes, sizes = pending.slice(cut), hashes[cut:], sizes[cut:]
            values = values[cut:] if values is not None else None

    def _flush(self, table: pa.Table, hashes: np.ndarray, sizes: np.ndarray) -> Iterator[pa.Table]:
        while table.num_rows:
            cut = self._cutter.next_cut(hashes, final=True, sizes=sizes) or table.num_rows
            yield self._batch(table.slice(0, cut))
            table, hashes, sizes = table.slice(cut), hashes[cut:], sizes[cut:]

    def _batch(self, table: pa.Table) -> pa.Table:
        self._cut_so_far += table.num_rows
        self._cutter = chunking.Cutter.for_source(self.stage.batch_size, self._cut_so_far, wide=self._wide)
        return _numbered(table)

    def _join(
        self, pending: pa.Table, values: list[Any] | None, table: pa.Table, items: list[Any] | None
    ) -> pa.Table | None:
        """One table of what waits and a new window; ``None`` when their types cannot agree."""
        if pending.schema == table.schema:
            return pa.concat_tables([pending, table])
        try:
            return pa.concat_tables([pending, table], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
        if values is not None and items is not None:
            try:
                return codec.encode(values + items, stage=self.stage.name, output_type=self.stage.output_type)
            except ConversionError:
                pass
        return None

    def _hashes(self, table: pa.Table) -> np.ndarray:
        if self._cutter.fixed:  # fixed sizes: the hashes decide nothing
            return np.zeros(table.num_rows, dtype=np.uint64)
        return chunking.row_hashes(table)

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
            except _BadItem as exc:
                self._exhausted = True
                raise StageFailed(self.stage.name, str(exc), position=exc.item, error_type="ConversionError") from None
            except Exception as exc:
                self._exhausted = True
                raise StageFailed(
                    self.stage.name, str(exc) or type(exc).__name__, batch=self._next, error_type=type(exc).__name__
                ) from exc
            batch = self._next
            self._next += 1
        table = chunk
        data = batch_files.serialize(table)
        key = batch_files.content_digest(data)
        path = self._path_for(batch, key)
        # the key is the digest of the bare table; the file adds its own description (key, ids, checksum)
        part = {
            "key": key,
            "stage": self.stage.name,
            "batch": batch,
            "part": 0,
            "ids": IdSet.span(0, table.num_rows).to_json(),
        }
        info = batch_files.write_table(path, table, fsync=self._fsync, part=part)
        if self._keep:
            recent.remember(path, table)  # consumers in this process need not read it back
        return SourceBatch(batch, key, info)


class _BadItem(Exception):
    """An item the source yielded that Arrow cannot hold (``item``: its position in the source)."""

    def __init__(self, message: str, item: int | None) -> None:
        super().__init__(message)
        self.item = item


def _numbered(table: pa.Table) -> pa.Table:
    """A batch as it is stored: one chunk per column, items numbered 0..n-1 in ``_item``."""
    if codec.ITEM_COLUMN in table.column_names:
        table = table.drop_columns([codec.ITEM_COLUMN])
    table = table.combine_chunks()
    return table.append_column(codec.ITEM_COLUMN, pa.array(np.arange(table.num_rows, dtype=np.int64)))


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

        return pa.table(
            {stage: pa.array(np.arange(result.start, result.stop, result.step, dtype=np.int64))},
            metadata={codec.SHAPE_KEY: b"scalar"},
        )
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
