"""Tiny map: x*x over N ints on the process pool, checkpointed (bench workload ``tiny_map``)."""

from __future__ import annotations

from pydantic import BaseModel

from bench.work import square
from pipelines import Pipeline


class Params(BaseModel):
    n: int = 1_000_000


pipeline = Pipeline("bench_tiny", params=Params)


@pipeline.source
def numbers(params: Params) -> range:
    return range(params.n)


pipeline.map(square, over=numbers, kind="cpu")
