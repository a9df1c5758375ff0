"""Pipeline parameters: ``--param key=value`` text (or a dict) validated by the params model."""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from pipelines.define.annotations import NoneType, admits_none, is_union, non_none_args
from pipelines.define.checks import did_you_mean
from pipelines.errors import ParamError


def parse_params(
    pipeline: str, model: type[BaseModel] | None, values: Mapping[str, Any] | BaseModel | None
) -> BaseModel | None:
    """The validated params of pipeline ``pipeline``; ``ParamError`` names a bad key or value."""
    if model is None:
        if values:
            raise ParamError(f"pipeline {pipeline!r} takes no parameters, got: {', '.join(dict(values))}")
        return None
    if isinstance(values, model):
        return values
    raw = dict(values or {})
    fields = model.model_fields
    for key in raw:
        if key not in fields:
            raise ParamError(
                did_you_mean(f"pipeline {pipeline!r} has no parameter {key!r}", key, fields)
                + f"; its parameters: {', '.join(fields)}"
            )
    try:
        return model.model_validate({k: _parse_cli_value(v, fields[k].annotation) for k, v in raw.items()})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
        raise ParamError(f"invalid parameters for pipeline {pipeline!r}: {problems}") from None


def _parse_cli_value(value: Any, annotation: Any) -> Any:
    """A ``--param`` string as pydantic should see it.

    The text itself, which pydantic's lax mode converts to the field's type (``"5"`` to an
    int, ``"2024"`` to a ``Path``, kept as text for ``str | None``), except for fields that
    take containers or nested models (``list``, ``dict``, a model) or non-text choices
    (``Literal[1, 2]``, an ``Enum`` of numbers): their text is JSON, ``'["a", "b"]'``.
    ``null`` is ``None`` for an optional field whose other types take no text.
    """
    if not isinstance(value, str):
        return value
    if _wants_json(annotation):
        try:
            return json.loads(value)
        except ValueError:
            return value  # pydantic reports the field and what it wanted
    if value == "null" and admits_none(annotation) and not _takes_text(annotation, value):
        return None
    return value


_CONTAINERS = (list, tuple, set, frozenset, dict, Mapping, Iterable, typing.Sequence, typing.MutableMapping)


def _wants_json(annotation: Any) -> bool:
    """Containers, models, dataclasses, TypedDicts and non-text ``Literal``s (anywhere in a union)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _wants_json(args[0])
    if is_union(annotation):
        return any(_wants_json(a) for a in args if a is not NoneType)
    if origin is Literal:
        return any(not isinstance(a, str) for a in args)
    if origin is not None:
        return origin in _CONTAINERS or (isinstance(origin, type) and issubclass(origin, (list, tuple, set, dict)))
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):  # like a Literal: JSON unless every value is text
            return not all(isinstance(m.value, str) for m in annotation)
        return (
            annotation in _CONTAINERS
            or issubclass(annotation, (BaseModel, list, tuple, set, frozenset, dict))
            or dataclasses.is_dataclass(annotation)
            or typing.is_typeddict(annotation)
        )
    return False


def _takes_text(annotation: Any, text: str) -> bool:
    """Whether an optional field's other types accept ``text`` as it is (``str``, ``Path``)."""
    from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

    others = non_none_args(annotation)
    if not others:
        return False
    try:
        union: Any = typing.Union[others]  # noqa: UP007 - a union built at run time from a tuple
        TypeAdapter(union).validate_python(text)
    except ValidationError:
        return False
    except PydanticSchemaGenerationError:  # an arbitrary type: pydantic decides, given the text
        return True
    return True
