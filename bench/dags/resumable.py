"""Resume: a CPU map that logs every call to ``$BENCH_CALL_LOG``, then a total (bench ``resume``)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from bench.work import logged_burn
from pipelines import Pipeline


class Params(BaseModel):
    n: int = 100_000
    iterations: int = 2_000


pipeline = Pipeline("bench_resumable", params=Params)


@pipeline.source
def numbers(params: Params) -> range:
    return range(params.n)


def work(x: int, params: Params) -> int:
    return logged_burn(x, params.iterations)


def total(work: pa.Table) -> pa.Table:
    return pa.table({"rows": [work.num_rows], "sum": [pc.sum(work["work"]).as_py()]})


pipeline.map(work, over=numbers, kind="cpu")
pipeline.reduce(total, inputs=[work])
