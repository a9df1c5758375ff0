"""A stage whose input names a stage that does not exist (a typo of "numbers")."""

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("unknown_upstream")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(3)


@pipeline.map(over="numbrs")
def double(x: int) -> int:
    return 2 * x
