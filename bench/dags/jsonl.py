"""Memory: JSON lines from a file → parsed records → a summary per category (bench ``memory``).

Written as a map-reduce with a combiner: the source yields the file's lines, a CPU map
parses each one, a batch stage sums each batch per category as soon as it is parsed, and
the reduce only combines those small partial sums. Memory stays bounded because the engine
streams batches (read-ahead is limited) and nothing ever holds all the parsed records.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from bench.work import parse_event
from pipelines import Pipeline
from stages import aggregate


class Params(BaseModel):
    path: str


pipeline = Pipeline("bench_jsonl", params=Params)


@pipeline.source
def lines(params: Params) -> Iterator[str]:
    with open(params.path, encoding="utf-8") as f:
        yield from f


pipeline.map(parse_event, over=lines, kind="cpu", name="parse")


@pipeline.batch(over="parse", kind="cpu")
def partial(table: pa.Table) -> pa.Table:
    """Per batch: events and value sum per category (the combiner)."""
    return aggregate.summarize(
        table, by="category", aggregations={"events": ("id", "count"), "value_sum": ("value", "sum")}
    )


@pipeline.reduce(inputs=[partial])
def by_category(partial: pa.Table) -> pa.Table:
    totals = aggregate.summarize(
        partial, by="category", aggregations={"events": ("events", "sum"), "value_sum": ("value_sum", "sum")}
    )
    return totals.append_column("value_mean", pc.divide(totals["value_sum"], pc.cast(totals["events"], pa.float64())))
