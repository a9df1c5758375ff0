"""A module that raises while it is imported (line 12)."""

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("failing_import")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(3)


raise RuntimeError("configuration file settings.toml not found")
