"""Helped: stages that call module-level helpers, for fingerprint tests."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import Pipeline

pipeline = Pipeline("helped")


def triple(x: int) -> int:
    return x * 2 + x


def scale(x: int) -> int:
    return x * 3  # the helper


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(1000)


@pipeline.map(over=numbers, kind="io")
def tripled(x: int) -> int:
    return triple(x)


@pipeline.map(over=tripled, kind="io")
def scaled(x: int) -> int:
    return scale(x)


@pipeline.reduce(inputs=[scaled])
def total(scaled: pa.Table) -> pa.Table:
    return pa.table({"sum": [pc.sum(scaled["scaled"]).as_py()]})
