"""Item-level reuse: an item the same stage code computed before is taken, not computed again.

A batch's key covers all of its items, so it changes when one of them does; after a flat-map
whose input changed (a catalog that gained entries), every batch downstream gets a new key,
although most of its items were computed before. Batch keys cannot help there; item hashes
can, in the way Prefect keys a task's cache by its inputs and Hamilton by a data version.

* **Recording.** A map or flat-map task hashes the input rows it covers (``item_hashes``: 64
  bits per row, from the Arrow buffers, as ``chunking`` does for cuts) and returns the hashes
  of the items it finished. The ledger keeps them with the part, one blob per part, aligned
  with the part's ids: no row per item, one insert per task as before.
* **Index.** When a stage first submits a task in a run, the driver gathers every blob
  recorded under the stage's current fingerprint (code, config, the params fields it reads)
  into one file sorted by hash (``ItemIndex``), and names it in the stage's tasks.
* **Lookup.** A task hashes its input items, looks them up in that file (a binary search over
  a memory-mapped column), takes the rows of the items it finds from the parts that hold them
  (a verified read: a part that fails its checksum is skipped and its items computed), and
  computes only the others. Its part holds both, in item order, like any other part.

Stages with side inputs, side effects (``reuse="never"``, ``outputs=``) or a ``--fresh``
never look items up. ``PIPELINES_ITEM_REUSE=0`` turns it all off (the bench's A/B switch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines import settings
from pipelines._engine import chunking
from pipelines._engine.idset import IdSet
from pipelines.define import codec
from pipelines.errors import CheckpointError
from pipelines.store import arrow as batch_files

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pipelines.define.model import Stage
    from pipelines.store import Store

BIG_VALUE = 32  # bytes: longer strings and binaries are hashed whole with BLAKE2b, not byte by byte
_PARTS_KEY = b"pipelines.item_parts"
_U64 = np.uint64


def eligible(stage: Stage) -> bool:
    """Whether ``stage``'s items may be reused one by one: a map or flat-map whose result is a
    function of its item alone (no side inputs, no declared side effects)."""
    return stage.granularity in ("map", "flat_map") and not stage.side and stage.reuse == "auto" and not stage.outputs


def wide_cuts(stages: Mapping[str, Stage], stream: Sequence[str]) -> bool:
    """Whether a source may be cut in wide batches (``chunking.WIDE_LEVELS``); ``stream``: the
    source and the stages that follow its batches one by one (``RunGraph.streams``).

    Yes when each of those stages reuses items one by one: a batch is then only a unit of
    storage, and an item inserted, removed or edited costs one call whatever the size of its
    batch. A batch stage, or a map that cannot reuse items, computes a whole batch again when
    one of its items changes: its source keeps small batches. Decided from the pipeline's
    definition alone, so every run cuts alike.
    """
    return all(eligible(stages[name]) for name in stream[1:])


# -- hashing -----------------------------------------------------------------------------------


def item_hashes(table: pa.Table) -> np.ndarray:
    """One 64-bit hash per row of ``table``: its values and its columns' names and types.

    Columns are hashed with NumPy over their Arrow buffers; strings and binaries longer than
    ``BIG_VALUE`` (an image's bytes) are hashed one by one with BLAKE2b, which reads each byte
    once instead of widening it to a 64-bit word. Which way a value is hashed depends on the
    value alone, never on its neighbours, so an item hashes alike in every task.
    """
    schema = [(f.name, str(f.type)) for f in table.schema if f.name != codec.ITEM_COLUMN]
    seed = int.from_bytes(hashlib.blake2b(repr(schema).encode(), digest_size=8).digest(), "little")
    h = np.full(table.num_rows, seed, dtype=_U64)
    for name in table.column_names:
        if name == codec.ITEM_COLUMN:
            continue
        column = table.column(name)
        arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        h = chunking._combine(h, _column_hashes(arr))
    return h


def _column_hashes(arr: pa.Array) -> np.ndarray:
    """``chunking.array_hashes``, except that long strings and binaries are hashed with BLAKE2b."""
    t = arr.type
    if not (
        pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    ):
        return chunking.array_hashes(arr)
    large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64 if large else np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    big = np.diff(offsets) > BIG_VALUE
    if arr.null_count:
        big &= np.asarray(arr.is_valid())
    if not big.any():
        return chunking.array_hashes(arr)
    out = chunking.array_hashes(arr.filter(pa.array(~big))) if not big.all() else None
    h = np.empty(len(arr), dtype=_U64)
    if out is not None:
        h[~big] = out
    data = memoryview(arr.buffers()[2] or b"")
    for i in np.flatnonzero(big).tolist():
        value = data[int(offsets[i]) : int(offsets[i + 1])]
        h[i] = int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "little")
    return h


def pack(hashes: np.ndarray) -> bytes:
    return np.ascontiguousarray(hashes, dtype="<u8").tobytes()


def unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<u8")


def id_array(ids: IdSet) -> np.ndarray:
    if not ids:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ids.ranges])


# -- the index (driver) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexRef:
    """What a task needs to look its items up: the index file (small, picklable)."""

    path: str
    items: int


class ItemIndex:
    """Builds, once per stage and run, the index of items stored under the stage's fingerprint."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        stages: Mapping[str, Stage],
        fingerprints: Mapping[str, str],
        skip: set[str],
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.stages = stages
        self.fingerprints = fingerprints
        self.skip = skip
        self._refs: dict[str, IndexRef | None] = {}
        self._files: list[str] = []

    def ref(self, name: str) -> IndexRef | None:
        """The index for stage ``name`` (``None``: nothing to look up)."""
        if name not in self._refs:
            stage = self.stages[name]
            usable = settings.item_reuse() and eligible(stage) and name not in self.skip
            self._refs[name] = self._build(name) if usable else None
        return self._refs[name]

    def _build(self, name: str) -> IndexRef | None:
        rows = self.store.ledger.item_parts(name, self.fingerprints[name])
        hashes: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        items: list[np.ndarray] = []
        described: list[list[Any]] = []
        for row in rows:
            ids = id_array(IdSet.from_json(row["done"]))
            h = unpack(row["items"])
            if len(h) != len(ids):  # not this format: never guess which row is which
                continue
            hashes.append(h)
            items.append(ids)
            parts.append(np.full(len(ids), len(described), dtype=np.int32))
            described.append([row["path"], row["rows"], row["bytes"], row["checksum"]])
        h = np.concatenate(hashes) if hashes else np.zeros(0, dtype=_U64)
        if not len(h):
            return None
        order = np.argsort(h, kind="stable")
        sorted_h = h[order]
        last = np.ones(len(order), dtype=bool)  # an item recorded by several runs: its latest part
        last[:-1] = sorted_h[1:] != sorted_h[:-1]
        order = order[last]
        table = pa.table(
            {
                "hash": pa.array(h[order]),
                "part": pa.array(np.concatenate(parts)[order]),
                "item": pa.array(np.concatenate(items)[order]),
            }
        ).replace_schema_metadata({_PARTS_KEY: json.dumps(described).encode()})
        path = self.store.run_data(self.run_id, f".items-{name}-{self.fingerprints[name][:12]}.arrow")
        batch_files.write_table(path, table)
        self._files.append(path)
        return IndexRef(path, len(order))

    def close(self) -> None:
        """Remove the run's index files (they are rebuilt from the ledger when needed)."""
        for path in self._files:
            batch_files.remove(path)
        self._files.clear()


# -- lookup (worker) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Loaded:
    hashes: np.ndarray
    part: np.ndarray
    item: np.ndarray
    parts: list[batch_files.FileInfo]


_loaded: dict[str, _Loaded] = {}
_loaded_lock = threading.Lock()


def _load(ref: IndexRef) -> _Loaded:
    with _loaded_lock:
        found = _loaded.get(ref.path)
        if found is None:
            table = batch_files.read_table(ref.path)  # verified against the checksum it carries
            described = json.loads((table.schema.metadata or {})[_PARTS_KEY])
            found = _Loaded(
                table.column("hash").to_numpy(),
                table.column("part").to_numpy(),
                table.column("item").to_numpy(),
                [batch_files.FileInfo(path, rows, size, crc) for path, rows, size, crc in described],
            )
            if len(_loaded) > 8:
                _loaded.clear()
            _loaded[ref.path] = found
        return found


@dataclass(slots=True)
class ItemsSeen:
    """A task's input items: all their hashes, and the rows of those taken from earlier parts."""

    ids: np.ndarray  # every id the task covers, sorted
    hashes: np.ndarray | None  # aligned with ``ids``; None when item reuse is off
    reused_ids: np.ndarray
    reused: pa.Table | None  # the reused items' rows, ``_item`` set to this batch's ids, in item order

    def done_hashes(self, done: IdSet) -> bytes | None:
        """The hashes of the items ``done`` (a subset of ``ids``), in id order, for the ledger."""
        if self.hashes is None:
            return None
        keep = np.isin(self.ids, id_array(done), assume_unique=True)
        return pack(self.hashes[keep])


def split(table: pa.Table, ids: np.ndarray, ref: IndexRef | None, *, hash_items: bool) -> tuple[np.ndarray, ItemsSeen]:
    """Which of the input rows to compute (a boolean mask over ``ids``), and what was reused."""
    compute = np.ones(len(ids), dtype=bool)
    if not hash_items or not settings.item_reuse():
        return compute, ItemsSeen(ids, None, ids[:0], None)
    hashes = item_hashes(table)
    seen = ItemsSeen(ids, hashes, ids[:0], None)
    if ref is None or not len(ids):
        return compute, seen
    index = _load(ref)
    at = np.minimum(np.searchsorted(index.hashes, hashes), len(index.hashes) - 1)
    hit = index.hashes[at] == hashes
    if not hit.any():
        return compute, seen
    pieces, taken = [], []
    for p in np.unique(index.part[at[hit]]).tolist():
        mine = hit & (index.part[at] == p)
        rows = _rows_of(index.parts[p], index.item[at[mine]], ids[mine])
        if rows is not None:
            pieces.append(rows)
            taken.append(mine)
    if not pieces:
        return compute, seen
    reused_mask = np.logical_or.reduce(taken)
    reused = _in_item_order(_concat(pieces))
    return ~reused_mask, ItemsSeen(ids, hashes, ids[reused_mask], reused)


def _rows_of(info: batch_files.FileInfo, old: np.ndarray, new: np.ndarray) -> pa.Table | None:
    """The rows of items ``old`` in part ``info``, renumbered ``new``; None if the part fails its check."""
    try:
        table = batch_files.read_table(info.path, expect=info)
    except (CheckpointError, OSError):
        return None
    if codec.ITEM_COLUMN not in table.column_names:
        return None
    items = table.column(codec.ITEM_COLUMN).to_numpy()
    order = None
    if len(items) > 1 and not bool(np.all(items[1:] >= items[:-1])):
        order = np.argsort(items, kind="stable")
        items = items[order]
    lo, hi = np.searchsorted(items, old, "left"), np.searchsorted(items, old, "right")
    counts = hi - lo
    total = int(counts.sum())
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    take = starts + np.arange(total)  # each item's rows, lo..hi, one run after the other
    if order is not None:
        take = order[take]
    rows = table.take(pa.array(take, type=pa.int64()))
    at = rows.column_names.index(codec.ITEM_COLUMN)
    return rows.set_column(at, codec.ITEM_COLUMN, pa.array(np.repeat(new, counts), type=pa.int64()))


def merge(computed: pa.Table | None, seen: ItemsSeen) -> pa.Table | None:
    """The task's part: computed rows and reused rows together, in item order."""
    if seen.reused is None:
        return computed
    if computed is None or computed.num_rows == 0:
        return seen.reused
    reused = seen.reused.replace_schema_metadata(computed.schema.metadata)
    if reused.schema != computed.schema:  # parts of one fingerprint share its schema; older ones may not
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            reused = reused.cast(computed.schema)
    return _in_item_order(_concat([computed, reused]))


def _in_item_order(table: pa.Table) -> pa.Table:
    items = table.column(codec.ITEM_COLUMN).to_numpy()
    if len(items) > 1 and not bool(np.all(items[1:] >= items[:-1])):
        table = table.take(pa.array(np.argsort(items, kind="stable")))
    return table


def _concat(tables: list[pa.Table]) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    first = tables[0].schema.metadata
    tables = [t.replace_schema_metadata(first) for t in tables]
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid:
        return pa.concat_tables(tables, promote_options="permissive")


def output_digest(parts: list[Any], batch: int) -> str:
    """A digest of what a batch's parts hold (their rows' values, in item order), for stages
    whose output may differ between runs under one key (``reuse="never"``)."""
    from pipelines._engine.inputs import InputPart, read_in_item_order

    table = read_in_item_order([InputPart(p.path, expect=p.info, batch=batch) for p in parts])
    hashes = item_hashes(table) if table.num_columns else np.zeros(0, dtype=_U64)
    return hashlib.blake2b(pack(hashes), digest_size=16).hexdigest()
