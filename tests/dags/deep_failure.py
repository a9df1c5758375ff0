"""Items that fail deep in helper functions, with a chained cause: for ``inspect``'s tracebacks.

Items 2 and 5 of ``range(n)`` fail in ``parse`` -> ``helper1`` -> ``helper2``, which raises
a ``KeyError`` that ``helper1`` turns into a ``ValueError`` (``raise ... from``).
"""

from __future__ import annotations

from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("deep_failure")
BROKEN = {2, 5}


def helper2(x: int) -> int:
    return {}[f"key-{x}"]


def helper1(x: int) -> int:
    try:
        return helper2(x)
    except KeyError as exc:
        raise ValueError(f"item {x} has no key") from exc


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(8)


@pipeline.map(over=numbers, kind="io", on_error="skip")
def parse(x: int) -> int:
    """Fails for the items in BROKEN, three calls deep."""
    return helper1(x) if x in BROKEN else x
