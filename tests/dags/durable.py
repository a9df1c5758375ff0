"""Durable: a fast stage, a slow stage and a reduce, for lost-ledger and store tests.

``first`` finishes long before ``second`` (slowed by DURABLE_DELAY seconds per item), so a
kill mid-run leaves one stage finished and one half done. Every call is logged to
DURABLE_LOG ("stage item" lines), so a test counts what a rerun computes again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 2000
    offset: int = 0  # shifts every value: another offset is other content, other keys


pipeline = Pipeline("durable", params=Params)


def log_call(stage: str, item: int) -> None:
    path = os.environ.get("DURABLE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{stage} {item}\n")


@pipeline.source
def numbers(params: Params) -> Iterator[int]:
    yield from range(params.offset, params.offset + params.n)


@pipeline.map(over=numbers, kind="cpu")
def first(x: int) -> int:
    log_call("first", x)
    return 3 * x


@pipeline.map(over=first, kind="cpu")
def second(y: int) -> int:
    log_call("second", y)
    delay = float(os.environ.get("DURABLE_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
    return y + 1


@pipeline.reduce(inputs=[second])
def total(second: pa.Table) -> pa.Table:
    log_call("total", 0)
    return pa.table({"rows": [second.num_rows], "sum": [pc.sum(second["second"]).as_py()]})
