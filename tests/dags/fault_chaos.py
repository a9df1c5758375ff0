"""Fault chaos: a small CPU pipeline with faults injected per run, for the randomized test.

FAULT_RAISE  items whose ``cube`` raises ValueError
FAULT_EXIT   items whose ``cube`` ends its worker process with ``os._exit(7)``
FAULT_DELAY  seconds ``cube`` sleeps per item (so a kill of the driver lands mid-run)
FAULT_LOG    ``cube`` logs ``call ITEM`` and, before dying, ``exit ITEM``
``fault_chaos`` stops at the first failure (on_error="fail"); ``fault_chaos_skip`` goes on.
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
    n: int = 600


def listed(name: str) -> set[int]:
    return {int(x) for x in os.environ.get(name, "").split(",") if x.strip()}


def log(line: str) -> None:
    path = os.environ.get("FAULT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


def cube(x: int) -> int:
    log(f"call {x}")
    delay = float(os.environ.get("FAULT_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
    if x in listed("FAULT_EXIT"):
        log(f"exit {x}")
        os._exit(7)
    if x in listed("FAULT_RAISE"):
        raise ValueError(f"item {x} is broken")
    return x * x * x


def shift(y: int) -> int:
    return y - 1


def total(shift: pa.Table) -> pa.Table:
    return pa.table({"rows": [shift.num_rows], "sum": [pc.sum(shift["shift"]).as_py()]})


pipeline = Pipeline("fault_chaos", params=Params)
pipeline.source(numbers, batch_size=100)
pipeline.map(cube, over=numbers, kind="cpu")
pipeline.map(shift, over=cube, kind="cpu")
pipeline.reduce(total, inputs=[shift])

skipping = Pipeline("fault_chaos_skip", params=Params)
skipping.source(numbers, batch_size=100)
skipping.map(cube, over=numbers, kind="cpu", on_error="skip")
skipping.map(shift, over=cube, kind="cpu")
skipping.reduce(total, inputs=[shift])
