"""Inverts numbers and fails on zero under on_error="fail".

For tests/test_cli.py: a run that exits 1 and names the stage, the item and the cause.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("cli_failing")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(-5, 6)


@pipeline.map(over=numbers, kind="cpu", on_error="fail")
def invert(x: int) -> float:
    """One over x."""
    if x == 0:
        raise ZeroDivisionError("one over zero")
    return 1 / x
