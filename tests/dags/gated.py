"""Gated: a big source behind a stage that waits for a file, to show bounded read-ahead."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("gated")


@pipeline.source(batch_size=100)
def numbers() -> Iterator[int]:
    yield from range(100_000)


@pipeline.map(over=numbers, kind="io", task_size=100)
def wait_for_gate(x: int) -> int:
    gate = os.environ["GATE_FILE"]
    while not os.path.exists(gate):
        time.sleep(0.01)
    return x
