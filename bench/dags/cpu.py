"""CPU scaling: a fixed number of equal pure-Python tasks on the process pool (bench ``cpu_scaling``)."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from bench.work import burn
from pipelines import Pipeline


class Params(BaseModel):
    tasks: int = 200
    iterations: int = 400_000  # the bench calibrates this to about 19 ms a task


pipeline = Pipeline("bench_cpu", params=Params)


@pipeline.source
def work(params: Params) -> Iterator[int]:
    for _ in range(params.tasks):
        yield params.iterations


pipeline.map(burn, over=work, kind="cpu")
