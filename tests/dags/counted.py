"""Counted: a CPU pipeline that logs every call it makes, for resume and reuse tests.

Set COUNTED_LOG to a file path to log calls ("stage item" lines), COUNTED_FAIL to a comma
list of items that raise in ``square`` (the "cause" a resume fixes), COUNTED_DELAY to slow
``square`` down per item (seconds).
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
    n: int = 3000
    batch_size: int | None = None


pipeline = Pipeline("counted", params=Params)
skipping = Pipeline("counted_skip", params=Params, description="Counted, but failed items are skipped.")


def log_call(stage: str, item: int) -> None:
    path = os.environ.get("COUNTED_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{stage} {item}\n")


def failing() -> set[int]:
    return {int(x) for x in os.environ.get("COUNTED_FAIL", "").split(",") if x.strip()}


@pipeline.source
def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


def square(x: int) -> int:
    log_call("square", x)
    delay = float(os.environ.get("COUNTED_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
    if x in failing():
        raise ValueError(f"item {x} is broken")
    return x * x


def plus_one(y: int) -> int:
    log_call("plus_one", y)
    return y + 1


def total(plus_one: pa.Table) -> pa.Table:
    log_call("total", 0)
    return pa.table({"rows": [plus_one.num_rows], "sum": [pc.sum(plus_one["plus_one"]).as_py()]})


pipeline.map(square, over=numbers, kind="cpu")
pipeline.map(plus_one, over=square, kind="cpu")
pipeline.reduce(total, inputs=[plus_one])

skipping.source(numbers)
skipping.map(square, over=numbers, kind="cpu", on_error="skip")
skipping.map(plus_one, over=square, kind="cpu")
skipping.reduce(total, inputs=[plus_one])
