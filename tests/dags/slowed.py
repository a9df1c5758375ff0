"""Slowed: three stages that each take a little while, so a dashboard can be watched mid-run.

Stage names have underscores on purpose: Dask's ``key_split`` must still give the whole name.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 60
    delay: float = 0.04  # seconds per item in each map stage
    tally_delay: float = 1.0  # seconds the final reduce takes


pipeline = Pipeline("slowed", params=Params)


@pipeline.source(batch_size=20)
def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


@pipeline.map(over=numbers, kind="cpu")
def warm_up(x: int, params: Params) -> int:
    time.sleep(params.delay)
    return x + 1


@pipeline.map(over=warm_up, kind="cpu")
def cool_down(x: int, params: Params) -> int:
    time.sleep(params.delay)
    return 2 * x


@pipeline.reduce(inputs=[cool_down])
def tally(cool_down: pa.Table, params: Params) -> pa.Table:
    time.sleep(params.tally_delay)
    return pa.table({"rows": [cool_down.num_rows], "sum": [pc.sum(cool_down["cool_down"]).as_py()]})
