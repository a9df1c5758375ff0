"""Ordered: two streamed maps whose tasks finish out of order, and a reduce that digests the
order of the rows it receives (they must come in item order, whatever the timing)."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator

import pyarrow as pa

from pipelines import Pipeline

pipeline = Pipeline("ordered")
ITEMS = int(os.environ.get("ORDERED_ITEMS", "4000"))
DELAY = float(os.environ.get("ORDERED_DELAY", "0.0002"))


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(ITEMS)


@pipeline.map(over=numbers, kind="cpu")
def scrambled(x: int) -> int:
    time.sleep(random.random() * DELAY)  # tasks finish in no particular order
    return 3 * x


@pipeline.map(over=scrambled, kind="io")
def shifted(x: int) -> int:
    time.sleep(random.random() * DELAY)
    return x + 1


@pipeline.reduce(inputs=[shifted])
def digest(shifted: pa.Table) -> pa.Table:
    values = shifted.column("shifted").to_pylist()
    return pa.table(
        {
            "rows": [len(values)],
            "in_order": [values == sorted(values)],
            "digest": [hashlib.sha256(repr(values).encode()).hexdigest()],
        }
    )
