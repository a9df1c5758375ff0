"""A pipeline without a source stage."""

from pipelines import Pipeline

pipeline = Pipeline("no_source")


@pipeline.map(over="numbers")
def double(x: int) -> int:
    return 2 * x
