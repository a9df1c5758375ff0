"""Fault interrupt: slow stages to press Ctrl-C on.

``fault_slow``  400 items through a process stage that sleeps FAULT_DELAY a call, then a
                thread stage; calls are logged to FAULT_LOG as ``STAGE ITEM``.
``fault_stuck`` a thread stage whose item 5 sleeps 60 s (logging ``stuck 5`` first); the other
                items take 0.05 s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pyarrow as pa
from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 400


def log(stage: str, item: int) -> None:
    with open(os.environ["FAULT_LOG"], "a") as f:
        f.write(f"{stage} {item}\n")


def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


def slow(x: int) -> int:
    log("slow", x)
    time.sleep(float(os.environ.get("FAULT_DELAY", "0.05")))
    return x * 2


def after(y: int) -> int:
    log("after", y)
    return y + 1


def total(after: pa.Table) -> pa.Table:
    return pa.table({"rows": [after.num_rows], "sum": [sum(after.column("after").to_pylist())]})


slow_pipeline = Pipeline("fault_slow", params=Params)
slow_pipeline.source(numbers, batch_size=50)
slow_pipeline.map(slow, over=numbers, kind="cpu", task_size=5)
slow_pipeline.map(after, over=slow, kind="io")
slow_pipeline.reduce(total, inputs=[after])


def stuck(x: int) -> int:
    if x == 5:
        log("stuck", x)
        time.sleep(60)
    else:
        time.sleep(0.05)
    log("done", x)
    return x


stuck_pipeline = Pipeline("fault_stuck", params=Params)
stuck_pipeline.source(numbers, batch_size=50)
stuck_pipeline.map(stuck, over=numbers, kind="io", concurrency=4, task_size=1)
