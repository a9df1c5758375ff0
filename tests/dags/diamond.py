"""Diamond: fan-out to an item map, a flat map and a batch stage, fan-in to one reduce."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 2000


pipeline = Pipeline("diamond", params=Params)


@pipeline.source
def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


@dataclass(frozen=True)
class Pair:
    x: int
    label: str


@pipeline.map(over=numbers, kind="cpu")
def label(x: int) -> Pair:
    """Label every number by its residue."""
    return Pair(x, f"r{x % 7}")


@pipeline.flat_map(over=numbers, kind="cpu")
def divisors(x: int) -> Iterator[int]:
    """Small divisors of x (zero or more per item)."""
    for d in (2, 3, 5):
        if x and x % d == 0:
            yield d


@pipeline.batch(over=label, kind="cpu")
def per_batch(table: pa.Table) -> pa.Table:
    """Counts per label within each batch."""
    return table.group_by("label", use_threads=False).aggregate([("x", "count")])


async def _double(x: int) -> int:
    return 2 * x


@pipeline.map(over=label, kind="io")
async def doubled(pair: Pair) -> int:
    """An async stage in the middle of the DAG."""
    return await _double(pair.x)


@pipeline.reduce(inputs=[label, divisors, per_batch, doubled])
def summary(label: pa.Table, divisors: pa.Table, per_batch: pa.Table, doubled: pa.Table) -> pa.Table:
    """Fan-in of all four branches."""
    counts = per_batch.group_by("label").aggregate([("x_count", "sum")]).sort_by("label")
    return pa.table(
        {
            "label": counts["label"],
            "count": counts["x_count_sum"],
            "divisors": pa.array([len(divisors)] * counts.num_rows, pa.int64()),
            "doubled_sum": pa.array([pc.sum(doubled["doubled"]).as_py()] * counts.num_rows, pa.int64()),
            "labels": pa.array([label.num_rows] * counts.num_rows, pa.int64()),
        }
    )
