"""A map whose function takes two required arguments but gets one input."""

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("bad_arity")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(3)


@pipeline.map(over=numbers)
def add(x: int, y: int) -> int:
    return x + y
