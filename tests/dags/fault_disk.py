"""Fault disk: 40 items of 24 KiB each, checkpointed in tasks of 2, for a store that fills up."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pyarrow as pa
from pydantic import BaseModel

from pipelines import Pipeline

BLOB = 24 * 1024


class Params(BaseModel):
    n: int = 40


pipeline = Pipeline("fault_disk", params=Params)


def blob_of(x: int) -> bytes:
    seed = hashlib.sha256(str(x).encode()).digest()
    return (seed * (BLOB // len(seed) + 1))[:BLOB]


@pipeline.source(batch_size=10)
def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


@pipeline.map(over=numbers, kind="cpu", task_size=2)
def blob(x: int) -> bytes:
    return blob_of(x)


@pipeline.reduce(inputs=[blob])
def digest(blob: pa.Table) -> pa.Table:
    h = hashlib.sha256()
    for value in sorted(blob.column("blob").to_pylist()):  # the row order of a reduce's input is not fixed
        h.update(value)
    return pa.table({"rows": [blob.num_rows], "sha256": [h.hexdigest()]})
