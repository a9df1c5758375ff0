"""Streamed: two slow map stages that log start and end times, to show streaming."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("streamed")


def stamp(stage: str, item: int, event: str) -> None:
    with open(os.environ["STREAMED_LOG"], "a") as f:
        f.write(f"{stage} {item} {event} {time.time():.6f}\n")


@pipeline.source(batch_size=50)
def numbers() -> Iterator[int]:
    yield from range(400)


@pipeline.map(over=numbers, kind="cpu", task_size=10)
def first(x: int) -> int:
    stamp("first", x, "start")
    time.sleep(0.002)
    stamp("first", x, "end")
    return x


@pipeline.map(over=first, kind="io", task_size=10)
def second(x: int) -> int:
    stamp("second", x, "start")
    return x + 1
