"""Two stages that read each other's output (forward references by name)."""

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("cyclic")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(3)


@pipeline.map(over="pong")
def ping(x: int) -> int:
    return x


@pipeline.map(over=ping)
def pong(x: int) -> int:
    return x
