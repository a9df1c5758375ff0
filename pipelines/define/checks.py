"""Checks of a stage's options as it is declared, each raising ``DefinitionError`` that names
the stage, so a broken dags module fails on import rather than mid-run."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable
from typing import Any

from pipelines.errors import DefinitionError

MAX_NAME_BYTES = 200  # names become folder and file names (``<stage>.parquet.tmp``): 255 bytes at most


def check_name_length(name: str, what: str) -> None:
    """Refuse a name too long for a file name, now rather than as ``ENAMETOOLONG`` mid-run."""
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        raise DefinitionError(
            f"{what} {name[:40]}… is {size} bytes long; names are at most {MAX_NAME_BYTES} "
            f"bytes, since they name folders and files"
        )


def did_you_mean(message: str, name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"{message} (did you mean {close[0]!r}?)" if close else message


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool`` (``retries=True`` is a mistake, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_rate(rate: str, where: str) -> None:
    from pipelines.define.rate import parse_rate

    try:
        parse_rate(rate)
    except ValueError as exc:
        raise DefinitionError(f"{where}: {exc}") from None


def check_outputs(outputs: Any, where: str) -> tuple[str, ...] | Callable[..., Iterable[Any]]:
    """``outputs=``: a function of the params, or paths (one, or a list of them)."""
    if callable(outputs):
        function: Callable[..., Iterable[Any]] = outputs
        return function
    if isinstance(outputs, (str, os.PathLike)):
        outputs = [outputs]
    try:
        paths = tuple(os.fspath(p) for p in outputs)
    except TypeError:
        raise DefinitionError(
            f"{where}: outputs must be paths or a function of the params that returns them, not {outputs!r}"
        ) from None
    if any(not p for p in paths):
        raise DefinitionError(f"{where}: outputs has an empty path")
    return paths


def check_executor_name(name: str, where: str) -> None:
    import executors

    try:
        executors.check_name(name)
    except executors.UnknownExecutorError as exc:
        raise DefinitionError(f"{where}: {exc}") from None
