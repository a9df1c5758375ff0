"""Shared: a 20,000-item pipeline that logs every call, for two drivers running it at once on
one store (SHARED_LOG: the file calls are appended to; SHARED_DELAY: seconds per item)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pyarrow as pa

from pipelines import Pipeline

pipeline = Pipeline("shared")


def log_call(stage: str) -> None:
    fd = os.open(os.environ["SHARED_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{stage}\n".encode())  # one write: whole lines from many processes
    finally:
        os.close(fd)


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(int(os.environ.get("SHARED_ITEMS", "20000")))


@pipeline.map(over=numbers, kind="cpu")
def squared(x: int) -> int:
    log_call("squared")
    time.sleep(float(os.environ.get("SHARED_DELAY", "0")))
    return x * x


@pipeline.map(over=squared, kind="io")
def plus_one(x: int) -> int:
    log_call("plus_one")
    return x + 1


@pipeline.reduce(inputs=[plus_one])
def total(plus_one: pa.Table) -> pa.Table:
    return pa.table({"sum": [sum(plus_one.column("plus_one").to_pylist())]})
