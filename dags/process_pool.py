"""Process pool: count the primes below each of 30 limits on worker processes, then total them.

Replaces ``ProcessPoolExecutor.map`` (``multiprocessing.Pool.map`` has the same shape)::

    from concurrent.futures import ProcessPoolExecutor


    def count_primes(n):
        return sum(1 for k in range(2, n) if all(k % d for d in range(2, int(k**0.5) + 1)))


    if __name__ == "__main__":
        limits = range(2_000, 60_001, 2_000)
        with ProcessPoolExecutor() as pool:
            counts = list(pool.map(count_primes, limits))
        print(sum(counts))

with one declaration: the loop's body becomes a stage, and ``kind="cpu"`` puts it on worker
processes (one per CPU, in tasks sized from measured cost; no ``__main__`` guard needed)::

    @pipeline.map(over=limits, kind="cpu")
    def count_primes(n: int) -> Primes: ...

Run:    python -m pipelines run process_pool --param count=40
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from pipelines import Pipeline


class Params(BaseModel):
    """Parameters of the process_pool pipeline (``--param name=value``)."""

    step: int = Field(2_000, ge=1, description="the limits are step, 2*step, ..., count*step")
    count: int = Field(30, ge=1, description="how many limits")


@dataclasses.dataclass(frozen=True, slots=True)
class Primes:
    """How many primes are below ``n``."""

    n: int
    primes: int


pipeline = Pipeline("process_pool", params=Params)


@pipeline.source
def limits(params: Params) -> Iterator[int]:
    """The limits: step, 2*step, ..., count*step."""
    yield from range(params.step, params.step * params.count + 1, params.step)


@pipeline.map(over=limits, kind="cpu")
def count_primes(n: int) -> Primes:
    """Count the primes below ``n`` by trial division: pure Python, CPU-bound."""
    return Primes(n, sum(1 for k in range(2, n) if all(k % d for d in range(2, int(k**0.5) + 1))))


@pipeline.reduce(inputs=[count_primes])
def total(counts: pa.Table) -> pa.Table:
    """The number of limits and the sum of their prime counts."""
    return pa.table({"limits": [counts.num_rows], "primes": [pc.sum(counts["primes"]).as_py()]})
