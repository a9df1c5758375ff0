"""A module with a syntax error on line 9."""
from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("syntax_error")


def numbers() -> Iterator[int]
    yield from range(3)
