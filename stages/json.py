"""JSON stages: parse bytes, text or files, and validate records with a pydantic model.

Errors are ``ValueError``s that say where the problem is: the source (a file name, a URL),
the byte offset, line and column for malformed JSON (nesting deeper than the parser can
follow included), and the record's index, byte offset and field for a record that fails
validation. A record is decoded once: a JSON string inside a document is a string record
(which a model of objects refuses), never JSON text to decode again. Records may come as one JSON array or as
JSON Lines (one value per line); both keep each record's byte offset for error messages.

Example:
    >>> from pydantic import BaseModel
    >>> class Point(BaseModel):
    ...     x: int
    ...     y: int
    >>> parse_records(b'[{"x": 1, "y": 2}]', Point)
    [Point(x=1, y=2)]
"""

from __future__ import annotations

import json as jsonlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
JSONInput = bytes | bytearray | memoryview | str
_WS = " \t\n\r"


def loads(data: JSONInput, *, source: str = "<data>") -> Any:
    """Parse one JSON document.

    Args:
        data: UTF-8 bytes or text.
        source: what to call the data in error messages (a file name or URL).

    Returns:
        The parsed value (dicts, lists, strings, numbers, booleans, ``None``).

    Raises:
        ValueError: malformed JSON or UTF-8, naming the byte offset, line and column.

    Example:
        >>> loads(b'{"a": [1, 2]}')
        {'a': [1, 2]}
    """
    text = _text(data, source)
    try:
        return jsonlib.loads(text)
    except jsonlib.JSONDecodeError as exc:
        raise _decode_error(exc, text, source) from None
    except RecursionError:
        raise _depth_error(text, _skip_ws(text, 0), source) from None


def load(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; errors name the file and the byte offset.

    Args:
        path: the file to read.

    Returns:
        The parsed value.

    Raises:
        OSError: the file cannot be read.
        ValueError: malformed JSON.

    Example:
        >>> len(load("data/cars.json"))                       # doctest: +SKIP
        406
    """
    return loads(Path(path).read_bytes(), source=os.fspath(path))


def iter_values(data: JSONInput, *, source: str = "<data>") -> Iterator[tuple[int, Any]]:
    """Yield ``(byte offset, value)`` for each element of a JSON array, or each JSON Lines value.

    Args:
        data: a JSON array, or values separated by whitespace (JSON Lines).
        source: what to call the data in error messages.

    Yields:
        The byte offset where each value starts, and the value.

    Raises:
        ValueError: malformed JSON, naming the byte offset, line and column.

    Example:
        >>> list(iter_values(b'[{"a": 1}, {"a": 2}]'))
        [(1, {'a': 1}), (11, {'a': 2})]
    """
    text = _text(data, source)
    decoder = jsonlib.JSONDecoder()
    pos = _skip_ws(text, 0)
    in_array = text.startswith("[", pos)
    if in_array:
        pos = _skip_ws(text, pos + 1)
        if text.startswith("]", pos):
            pos = _expect_end(text, pos + 1, source)
            return
    byte_pos, char_pos = 0, 0  # byte offsets advance incrementally: O(n) over the document
    while pos < len(text):
        try:
            value, end = decoder.raw_decode(text, pos)
        except jsonlib.JSONDecodeError as exc:
            raise _decode_error(exc, text, source) from None
        except RecursionError:
            raise _depth_error(text, pos, source) from None
        byte_pos += len(text[char_pos:pos].encode())
        char_pos = pos
        yield byte_pos, value
        pos = _skip_ws(text, end)
        if not in_array:
            continue
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith("]", pos):
            _expect_end(text, pos + 1, source)
            return
        else:
            raise _decode_error(jsonlib.JSONDecodeError("Expecting ',' delimiter or ']'", text, pos), text, source)
    if in_array:
        raise _decode_error(jsonlib.JSONDecodeError("Unterminated array, expecting ']'", text, pos), text, source)


def parse_record(
    value: JSONInput | Mapping[str, Any],
    model: type[M],
    *,
    source: str = "<data>",
    index: int | None = None,
    offset: int | None = None,
) -> M:
    """Validate one record (a JSON object's text, or a dict) against ``model``.

    Args:
        value: the record: JSON text (bytes or ``str``, decoded here) or a mapping. To
            validate a value that is already decoded, a string included, use
            ``parse_records`` with a list, which decodes nothing.
        model: the pydantic model it must match.
        source: what to call the data in error messages.
        index: the record's position in its collection, for error messages.
        offset: the record's byte offset in its source, for error messages.

    Returns:
        The validated model instance.

    Raises:
        ValueError: malformed JSON, or a field that fails validation (named in the message).

    Example:
        >>> parse_record('{"x": 1, "y": "2"}', Point)          # doctest: +SKIP
        Point(x=1, y=2)
    """
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        value = loads(value, source=source)
    return _validate(value, model, source, index, offset)


def parse_records(
    data: JSONInput | os.PathLike[str] | Iterable[Mapping[str, Any]], model: type[M], *, source: str | None = None
) -> list[M]:
    """Validate every record of a JSON array or JSON Lines document against ``model``.

    Args:
        data: bytes or text (a JSON array or JSON Lines), a file path, or already-parsed
            values (validated as they are, strings included: nothing is decoded twice).
        model: the pydantic model each record must match.
        source: what to call the data in error messages (default: the file name, or ``<data>``).

    Returns:
        The records, in order.

    Raises:
        ValueError: malformed JSON (byte offset, line, column) or an invalid record (its index,
            byte offset and field).

    Example:
        >>> parse_records(Path("data/catalog.json"), CatalogEntry)    # doctest: +SKIP
    """
    if isinstance(data, os.PathLike):
        source = source or os.fspath(data)
        data = Path(data).read_bytes()
    source = source or "<data>"
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        pairs: Iterable[tuple[int | None, Any]] = iter_values(data, source=source)
    else:
        pairs = ((None, value) for value in data)
    return [_validate(value, model, source, i, offset) for i, (offset, value) in enumerate(pairs)]


# -- helpers --------------------------------------------------------------------------------


def _validate(value: Any, model: type[M], source: str, index: int | None, offset: int | None) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ValueError(_validation_message(exc, model, source, index, offset)) from None
    except RecursionError:
        where = _where(source, index, offset)
        raise ValueError(f"{where}: {model.__name__}: the record nests too deeply to validate") from None


def _text(data: JSONInput, source: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: invalid UTF-8 at byte {exc.start}: {exc.reason}") from None


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _expect_end(text: str, pos: int, source: str) -> int:
    pos = _skip_ws(text, pos)
    if pos < len(text):
        raise _decode_error(jsonlib.JSONDecodeError("Extra data after the array", text, pos), text, source)
    return pos


def _decode_error(exc: jsonlib.JSONDecodeError, text: str, source: str) -> ValueError:
    byte = len(text[: exc.pos].encode())
    return ValueError(f"{source}: invalid JSON at byte {byte} (line {exc.lineno}, column {exc.colno}): {exc.msg}")


def _depth_error(text: str, start: int, source: str) -> ValueError:
    """The error for a value nested deeper than the parser's recursion allows."""
    depth, deepest, at, in_string, escaped = 0, 0, start, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, i
        elif ch in "]}":
            depth -= 1
            if depth <= 0:
                break
    byte = len(text[:start].encode())
    deep_byte = byte + len(text[start:at].encode())
    limit = sys.getrecursionlimit()
    return ValueError(
        f"{source}: invalid JSON at byte {byte}: the value nests {deepest:,} levels deep (its deepest"
        f" point at byte {deep_byte}), more than the parser can follow (about {limit:,})"
    )


def _where(source: str, index: int | None, offset: int | None) -> str:
    where = source
    if index is not None:
        where += f", record {index}"
    if offset is not None:
        where += f" at byte {offset}"
    return where


def _validation_message(
    exc: ValidationError, model: type[BaseModel], source: str, index: int | None, offset: int | None
) -> str:
    where = _where(source, index, offset)
    problems = exc.errors()
    first = problems[0]
    field = ".".join(str(p) for p in first["loc"])
    what = f"field {field!r} of {model.__name__}" if field else model.__name__
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return f"{where}: {what}: {first['msg']}{more}"
