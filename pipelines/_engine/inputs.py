"""A task's inputs: parts of producer batches read back as one table, rows in item order.

Item order, not completion order, is what makes every consumer's input (and so every
output) the same whatever the timing of the run that wrote the parts.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipelines._engine.idset import IdSet
from pipelines.define import codec
from pipelines.store import arrow as batch_files
from pipelines.store.outputs import in_item_order

if TYPE_CHECKING:
    from pipelines.define.model import Stage


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


def read_input(spec: InputSpec) -> tuple[pa.Table, np.ndarray]:
    """The rows of one input to compute, and their item ids."""
    table = read_in_item_order(spec.parts, spec.stage)
    if spec.ids_in_column and codec.ITEM_COLUMN in table.column_names:
        ids = table.column(codec.ITEM_COLUMN).to_numpy()
    else:
        ids = np.arange(table.num_rows, dtype=np.int64)
    if spec.select is not None:
        table, ids = _select(table, ids, spec.select)
    return table, ids


def read_in_item_order(parts: Sequence[InputPart], stage: str = "?") -> pa.Table:
    """Parts of one or more producer batches (in batch order) as one table, each batch's rows
    sorted by item id (stable: a flat-map's rows of one item keep their order). This is what
    makes every consumer's input, and so every output, the same whatever the timing."""
    tables = []
    for _, group in itertools.groupby(parts, key=lambda p: p.batch):
        tables.append(in_item_order(_concat([batch_files.read_table(p.path, expect=p.expect) for p in group], stage)))
    return _concat(tables, stage)


def empty_output(producer: Stage) -> pa.Table:
    """No rows at all (every item failed): still the columns the producer declares."""
    if producer.output_type is None or codec.arrow_type(producer.output_type) is codec.TABLE:
        return pa.table({})
    return codec.encode([], stage=producer.name, output_type=producer.output_type, item_ids=[])


def _select(table: pa.Table, ids: np.ndarray, select: IdSet) -> tuple[pa.Table, np.ndarray]:
    if len(ids) and select.ranges == ((int(ids[0]), int(ids[-1]) + 1),) and len(ids) == len(select):
        return table, ids
    pieces = []
    for a, b in select.ranges:
        lo, hi = int(np.searchsorted(ids, a, "left")), int(np.searchsorted(ids, b, "left"))
        if hi > lo:
            pieces.append((lo, hi))
    if not pieces:
        return table.slice(0, 0), ids[:0]
    if len(pieces) == 1:
        lo, hi = pieces[0]
        return table.slice(lo, hi - lo), ids[lo:hi]
    return (
        pa.concat_tables([table.slice(lo, hi - lo) for lo, hi in pieces]),
        np.concatenate([ids[lo:hi] for lo, hi in pieces]),
    )


def _concat(tables: Sequence[pa.Table], stage: str = "?") -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    if not tables:
        return pa.table({})
    tables = [t for t in tables if t.num_columns] or list(tables[:1])
    from pipelines._engine.schemas import concat  # parts that disagree: a clear error, not ArrowTypeError

    return concat(tables, stage=stage)
