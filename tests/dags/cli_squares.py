"""Squares of the first N numbers, and their sum.

A small, valid pipeline for tests/test_cli.py: a params model, a cpu map, a reduce.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from pipelines import Pipeline


class SquaresParams(BaseModel):
    n: int = Field(20, ge=0, description="how many numbers")
    offset: int = 0


pipeline = Pipeline("cli_squares", params=SquaresParams)


@pipeline.source
def numbers(params: SquaresParams) -> Iterator[int]:
    """Count from offset, n numbers."""
    yield from range(params.offset, params.offset + params.n)


@pipeline.map(over=numbers, kind="cpu")
def square(x: int) -> int:
    """Square one number."""
    return x * x


@pipeline.reduce(inputs=[square])
def total(square: pa.Table) -> pa.Table:
    """Count and sum the squares."""
    return pa.table({"count": [square.num_rows], "sum": [pc.sum(square["square"]).as_py() or 0]})
