"""Many small stages: chains of ``$BENCH_CHAIN_STAGES`` (default 1,000) single-item maps.

Built in a loop, as a program would; each stage adds one to the single item. ``bench_chain``
runs its stages on threads (``kind="io"``), ``bench_chain_cpu`` on the process pool.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from pipelines import Pipeline

STAGES = int(os.environ.get("BENCH_CHAIN_STAGES", "1000"))


def start() -> Iterator[int]:
    yield 0


def step(x: int) -> int:
    return x + 1


def extend(chain: Pipeline, stages: int, kind: str) -> Pipeline:
    """Add a source and ``stages`` maps, each reading the one before."""
    chain.source(start)
    previous = "start"
    for i in range(stages):
        previous = chain.map(step, over=previous, name=f"s{i:04d}", kind=kind)
    return chain


pipeline = extend(
    Pipeline("bench_chain", module=__name__, description="a chain of single-item thread stages"), STAGES, "io"
)
on_processes = extend(
    Pipeline("bench_chain_cpu", module=__name__, description="a chain of single-item process stages"), STAGES, "cpu"
)
