"""Reading type annotations the same way everywhere: unions, ``Optional`` and ``Annotated``.

``codec`` (values to Arrow and back) and ``params`` (command-line text to a params model)
both ask these questions of an annotation; here is the one answer.
"""

from __future__ import annotations

import types
import typing
from typing import Any

NoneType = type(None)


def is_union(tp: Any) -> bool:
    """``X | Y`` or ``Union[X, Y]`` (``Optional[X]`` included)."""
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def strip_annotated(tp: Any) -> Any:
    """``Annotated[X, ...]`` → ``X`` (however deeply nested)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def admits_none(tp: Any) -> bool:
    """``None`` itself, ``X | None`` or ``Optional[X]``, also inside ``Annotated``."""
    tp = strip_annotated(tp)
    return tp is None or tp is NoneType or (is_union(tp) and NoneType in typing.get_args(tp))


def strip_optional(tp: Any) -> Any:
    """``X | None`` → ``X``; any other annotation as it is."""
    if is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not NoneType]
        if len(args) == 1:
            return args[0]
    return tp


def non_none_args(tp: Any) -> tuple[Any, ...]:
    """The members of a union other than ``None`` (of ``Annotated[...]``'s inner type)."""
    return tuple(a for a in typing.get_args(strip_annotated(tp)) if a is not NoneType)
