"""Reading a run's outputs back: a stage's batches in order, as one table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipelines._engine.schemas import concat
from pipelines.define import codec
from pipelines.errors import UsageError
from pipelines.store import arrow as batch_files
from pipelines.store.ledger import Part

if TYPE_CHECKING:
    from pipelines.store import Store


def distinct_parts(parts: list[Part]) -> list[Part]:
    """Parts whose ids do not overlap, first come first kept (guards against double writes)."""
    from pipelines._engine.idset import IdSet

    seen = IdSet()
    out = []
    for part in parts:
        if part.done and (part.done & seen):
            continue
        seen = seen | part.done
        out.append(part)
    return out


def parts_in_order(parts: list[Part]) -> list[Part]:
    """Distinct parts sorted by their first item id: read in this order, rows need no copying sort."""
    return sorted(distinct_parts(parts), key=lambda p: p.first)


def read_parts(parts: list[Part], stage: str = "?") -> pa.Table:
    """One batch's parts as a table sorted by item id (engine columns kept).

    Every file is verified against its size and checksum in the ledger first: a damaged
    part raises ``CheckpointError`` naming it, and is never returned as data.
    """
    tables = [batch_files.read_table(p.path, expect=p.info) for p in parts_in_order(parts)]
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    return in_item_order(concat(tables, stage=stage))


def in_item_order(table: pa.Table) -> pa.Table:
    """The rows sorted by item id (stable: a flat-map's rows of one item keep their order);
    no copy when they are in order already, as parts read in ``parts_in_order`` usually are."""
    if codec.ITEM_COLUMN in table.column_names and table.num_rows > 1:
        ids = table.column(codec.ITEM_COLUMN).to_numpy()
        if not bool(np.all(ids[1:] >= ids[:-1])):
            return table.take(pa.array(np.argsort(ids, kind="stable")))
    return table


def stage_batches(store: Store, run_id: str, stage: str) -> list[tuple[int, list[Part]]]:
    rows = store.ledger.run_batches(run_id, stage)
    if not rows:
        known = store.ledger.stages(run_id)
        if stage not in known:
            listed = f"; stages: {', '.join(known)}" if known else ""
            raise UsageError(f"run {run_id} has no stage {stage!r}{listed}")
    return [(r["batch"], store.ledger.parts(r["key"])) for r in rows]


def read_stage(store: Store, run_id: str, stage: str, *, with_engine_columns: bool = False) -> pa.Table:
    """Every batch of a stage in batch order, parts sorted by item id."""
    tables = [read_parts(parts, stage) for _, parts in stage_batches(store, run_id, stage) if parts]
    tables = [t for t in tables if t.num_columns]
    if not tables:
        return pa.table({})
    table = concat(tables, stage=stage) if len(tables) > 1 else tables[0]
    return table if with_engine_columns else codec.data_columns(table)


def export_parquet(store: Store, run_id: str, stage: str, directory: str | Path) -> str:
    """Write a stage's output as ``<directory>/<stage>.parquet`` (a local folder or a URL)."""
    import pyarrow.parquet as pq

    table = read_stage(store, run_id, stage)
    if batch_files.is_url(str(directory)):
        path = batch_files.join(str(directory), f"{stage}.parquet")
        fs, inner = batch_files.filesystem(path)
        pq.write_table(table, inner, filesystem=fs)
        return path
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stage}.parquet"
    tmp = target.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(target)
    return str(target)
