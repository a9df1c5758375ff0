"""Checkpoint cost: one CPU stage with a large output, and its twin with an 8-byte output.

``features`` computes ``iterations`` of pure Python per item, then returns ``width`` floats;
``features_lean`` does the same work and returns their sum. A batch stage downstream
(``probe``) reports how much of its input sits in Arrow's memory pool: near zero when the
checkpoint it reads is memory-mapped (bench ``checkpoint``).
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import BaseModel

from bench import work
from pipelines import Pipeline


class Params(BaseModel):
    n: int = 10_000
    iterations: int = 40_000
    width: int = 1_000


pipeline = Pipeline("bench_features", params=Params)
lean = Pipeline("bench_features_lean", params=Params)


@pipeline.source
def seeds(params: Params) -> range:
    return range(params.n)


def features(seed: int, params: Params) -> list[float]:
    return work.features(seed, params.iterations, params.width)


def features_lean(seed: int, params: Params) -> float:
    return work.features_lean(seed, params.iterations, params.width)


def probe(table: pa.Table) -> pa.Table:
    """Rows seen, the input's size, and the bytes Arrow's pool holds while the input is open."""
    return pa.table(
        {"rows": [table.num_rows], "input_bytes": [table.nbytes], "pool_bytes": [pa.total_allocated_bytes()]}
    )


pipeline.map(features, over=seeds, kind="cpu")
pipeline.batch(probe, over=features)

lean.source(seeds)
lean.map(features_lean, over=seeds, kind="cpu")
lean.batch(probe, over=features_lean)
