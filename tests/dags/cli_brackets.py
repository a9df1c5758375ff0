"""Labels with square brackets, which the terminal output must show as they are.

For tests/test_cli.py: rich markup in data, column names and error messages is not markup.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("cli_brackets")


@pipeline.source
def labels() -> Iterator[str]:
    yield from ["[bold]kept[/bold]", "extra[dask]", "[/x]"]


@pipeline.map(over=labels, kind="io", on_error="skip")
def tag(label: str) -> dict:
    """Wrap one label; the closing-tag label fails with brackets in its message."""
    if label == "[/x]":
        raise ValueError("cannot tag [/x] or [red]this[/red]")
    return {"[col]": f"<{label}>"}
