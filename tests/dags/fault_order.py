"""Fault order: items that finish in reverse order, and a reduce that lists what it receives."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa

from pipelines import Pipeline

pipeline = Pipeline("fault_order")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(8)


@pipeline.map(over=numbers, kind="io", concurrency=8, task_size=1)
def slowly(x: int) -> int:
    time.sleep(0.05 * (8 - x))  # the last item finishes first
    return x


@pipeline.reduce(inputs=[slowly])
def received(slowly: pa.Table) -> pa.Table:
    return pa.table({"order": [slowly.column("slowly").to_pylist()]})
