"""Shifting: a 100,000-item CPU source that can gain, lose or change one item, for the
content-defined batching tests. ``SHIFTING_LOG`` names a file where ``weigh`` appends one
line per call, so a test counts what a rerun recomputed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from pipelines import Pipeline


class Params(BaseModel):
    n: int = 100_000
    insert_at: int | None = None  # a new item goes in before this position
    remove_at: int | None = None  # the item at this position is left out
    edit_at: int | None = None  # the item at this position changes


pipeline = Pipeline("shifting", params=Params)


@pipeline.source
def numbers(params: Params) -> Iterator[int]:
    for i in range(params.n):
        if i == params.insert_at:
            yield 10_000_000
        if i == params.remove_at:
            continue
        yield -i if i == params.edit_at else i


@pipeline.map(over=numbers, kind="cpu")
def weigh(x: int) -> int:
    path = os.environ.get("SHIFTING_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{x}\n")
    return 3 * x


@pipeline.reduce(inputs=[weigh])
def total(weigh: pa.Table) -> pa.Table:
    return pa.table({"rows": [weigh.num_rows], "sum": [pc.sum(weigh["weigh"]).as_py()]})
