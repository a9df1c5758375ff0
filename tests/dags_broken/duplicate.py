"""Two stages named "double"."""

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("duplicate")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(3)


@pipeline.map(over=numbers)
def double(x: int) -> int:
    return 2 * x


def twice(x: int) -> int:
    return x + x


pipeline.map(twice, over=numbers, name="double")
