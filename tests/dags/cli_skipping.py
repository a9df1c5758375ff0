"""Parses strings as numbers and skips the ones that are not.

For tests/test_cli.py: a partial run (exit 0) whose failed items `inspect` shows.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("cli_skipping")


@pipeline.source
def words() -> Iterator[str]:
    yield from ["1", "2", "three", "4", "5"]


@pipeline.map(over=words, kind="io", on_error="skip")
def parse(text: str) -> int:
    """Parse one integer."""
    return int(text)
