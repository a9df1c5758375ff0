"""Lost update: the README's counter, done as a pipeline (nothing shared, nothing lost)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import Pipeline

pipeline = Pipeline("lost_update")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(1000)


@pipeline.map(over=numbers, kind="io", concurrency=8)
def work(x: int) -> int:
    time.sleep(0.001)
    return 1


@pipeline.reduce(inputs=[work])
def total(work: pa.Table) -> pa.Table:
    return pa.table({"total": [pc.sum(work["work"]).as_py()]})
