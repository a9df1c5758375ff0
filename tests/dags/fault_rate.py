"""Fault rate: 40 items through a stage limited to 20 a second; each call logs ``ITEM PID TIME``
to FAULT_LOG. Run it on threads or processes with ``--executor``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 40


pipeline = Pipeline("fault_rate", params=Params)


@pipeline.source
def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


@pipeline.map(over=numbers, kind="io", rate="20/s")
def stamp(x: int) -> int:
    with open(os.environ["FAULT_LOG"], "a") as f:
        f.write(f"{x} {os.getpid()} {time.time():.6f}\n")
    return x
