"""Limited: an async stage with ``concurrency=3`` that logs when each item starts and ends.

Set LIMITED_LOG to a file path: every item appends ``start PID TIME`` and ``end PID TIME``
lines, so a test can count the items in flight per worker process at any moment.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 120
    delay: float = 0.05


pipeline = Pipeline("limited", params=Params)


def stamp(event: str) -> None:
    path = os.environ.get("LIMITED_LOG")
    if path:
        with open(path, "a") as f:  # one short write per line: lines of processes do not mix
            f.write(f"{event} {os.getpid()} {time.time():.6f}\n")


@pipeline.source(batch_size=40)
def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


@pipeline.map(over=numbers, kind="io", concurrency=3)
async def wait_a_little(x: int, params: Params) -> int:
    stamp("start")
    await asyncio.sleep(params.delay)
    stamp("end")
    return x
