"""Fault policies: one slow stage whose items fail on demand, under each error policy.

Items are records ``rec-000``, ``rec-001``, ... in source batches of 10. Environment:
FAULT_LOG     a file; ``handle`` logs ``start I PID`` and ``end I`` lines (I: the item's index)
FAULT_FAIL    a comma list of indexes whose ``handle`` raises at once (the cause a resume fixes)
FAULT_DELAY   seconds every other item sleeps (default 0)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pyarrow as pa
from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 40


class RecordError(ValueError):
    """A record ``handle`` refuses; says it may be retried, so ``retries`` apply."""

    retryable = True


def log(line: str) -> None:
    path = os.environ.get("FAULT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def failing() -> set[int]:
    return {int(x) for x in os.environ.get("FAULT_FAIL", "").split(",") if x.strip()}


def records(params: Params) -> Iterator[str]:
    for i in range(params.n):
        yield f"rec-{i:03d}"


def handle(record: str) -> str:
    index = int(record.split("-")[1])
    log(f"start {index} {os.getpid()}")
    if index in failing():
        raise RecordError(f"cannot handle {record}")
    time.sleep(float(os.environ.get("FAULT_DELAY", "0") or 0))
    log(f"end {index}")
    return record.upper()


def tally(handle: pa.Table) -> pa.Table:
    return pa.table({"rows": [handle.num_rows]})


failing_pipeline = Pipeline("fault_fail", params=Params, description="on_error='fail' (the default).")
failing_pipeline.source(records, batch_size=10)
failing_pipeline.map(handle, over=records, kind="io", concurrency=4, task_size=1)
failing_pipeline.reduce(tally, inputs=[handle])

skipping = Pipeline("fault_skip", params=Params, description="on_error='skip'.")
skipping.source(records, batch_size=10)
skipping.map(handle, over=records, kind="io", concurrency=4, task_size=1, on_error="skip")
skipping.reduce(tally, inputs=[handle])

collecting = Pipeline("fault_collect", params=Params, description="on_error='collect', two retries.")
collecting.source(records, batch_size=10)
collecting.map(handle, over=records, kind="io", concurrency=4, task_size=1, on_error="collect", retries=2)
collecting.reduce(tally, inputs=[handle])
