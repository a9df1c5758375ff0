"""A stage that asks for an executor name with a typo ("thread")."""

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("bad_executor")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(3)


@pipeline.map(over=numbers, executor="thread")
def double(x: int) -> int:
    return 2 * x
