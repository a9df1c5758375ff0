"""Python values to Arrow tables and back, driven by type annotations.

A stage's output type (its return annotation) decides the table's shape:

* a *record* type (dataclass, pydantic model, TypedDict, NamedTuple, ``dict``) becomes one
  column per field, nested records become structs;
* any other type (``int``, ``str``, ``bytes``, ``list[float]`` ...) becomes one column named
  after the stage;
* no annotation: Arrow infers the type from the values of each batch;
* tables (``pa.Table``, ``pd.DataFrame``) pass through.

Reading back, a consumer gets values of the type its parameter is annotated with (a
``Response`` dataclass, a pydantic model), else of the producer's type, else plain Python.
A value that cannot be converted raises ``ConversionError`` naming the stage and the item.
Checkpoints hold only Arrow data: no pickle is ever written or read.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from .errors import ConversionError

ITEM_COLUMN = "_item"  # the input item each row came from (sources, maps, flat-maps)
SHAPE_KEY = b"pipelines.shape"  # b"scalar" or b"record"


class _Table:
    """Marker: the stage returns whole tables."""

    def __repr__(self) -> str:
        return "TABLE"


TABLE = _Table()

_SCALARS: dict[type, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.large_string(),
    bytes: pa.large_binary(),
    bytearray: pa.large_binary(),
    dt.datetime: pa.timestamp("us"),
    dt.date: pa.date32(),
    dt.time: pa.time64("us"),
    dt.timedelta: pa.duration("us"),
}


# -- types ------------------------------------------------------------------------------

def is_table_type(tp: Any) -> bool:
    module = getattr(tp, "__module__", "") or ""
    name = getattr(tp, "__name__", "")
    return (module.startswith("pyarrow") and name in ("Table", "RecordBatch")) or (
        module.startswith("pandas") and name == "DataFrame")


def is_record_type(tp: Any) -> bool:
    """Dataclasses, pydantic models, TypedDicts, NamedTuples and ``dict`` become columns."""
    tp = _strip_optional(tp)
    if tp is dict or typing.get_origin(tp) is dict and not typing.get_args(tp):
        return True
    if not isinstance(tp, type):
        return False
    return (dataclasses.is_dataclass(tp) or _is_pydantic(tp) or typing.is_typeddict(tp)
            or (issubclass(tp, tuple) and hasattr(tp, "_fields")))


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_fields") and hasattr(tp, "model_validate")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def record_fields(tp: Any) -> dict[str, Any]:
    """Field name to annotation, for a record type."""
    if _is_pydantic(tp):
        return {name: f.annotation for name, f in tp.model_fields.items()}
    hints = typing.get_type_hints(tp)
    if dataclasses.is_dataclass(tp):
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(tp)}
    return dict(hints)


@functools.lru_cache(maxsize=512)
def _arrow_type_cached(tp: Any) -> pa.DataType | None:
    return _arrow_type(tp)


def arrow_type(tp: Any) -> pa.DataType | _Table | None:
    """The Arrow type of a Python annotation; ``None`` means "infer from values".

    Raises:
        TypeError: for a type Arrow cannot hold (a socket, a union of unrelated types).
    """
    if is_table_type(tp):
        return TABLE
    try:
        return _arrow_type_cached(tp)
    except TypeError as exc:
        if "unhashable" in str(exc):
            return _arrow_type(tp)
        raise


def _arrow_type(tp: Any) -> pa.DataType | None:
    if tp is Any or tp is object or tp is None:
        return None
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        if len(kinds) != 1:
            raise TypeError(f"Literal{list(args)} mixes types")
        return _arrow_type(kinds.pop())
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{tp} is a union of different types; Arrow columns have one type")
    if origin is typing.Annotated:
        return _arrow_type(args[0])
    if origin in (list, tuple, set, frozenset, Sequence, Iterable, typing.List, typing.Tuple):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            kinds = {a for a in args}
            if len(kinds) != 1:
                raise TypeError(f"{tp}: tuples of mixed types are not supported; use a dataclass")
        inner = _arrow_type(args[0]) if args else None
        return pa.large_list(inner) if inner is not None else None
    if origin in (dict, Mapping):
        if not args:
            return None
        key, value = (_arrow_type(a) for a in args)
        if key is None or value is None:
            return None
        return pa.map_(key, value)
    if tp in (list, tuple, set, dict):
        return None
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            kinds = {type(m.value) for m in tp}
            return _arrow_type(kinds.pop()) if len(kinds) == 1 else pa.large_string()
        for base, arrow in _SCALARS.items():
            if tp is base:
                return arrow
        if is_record_type(tp):
            fields = []
            for name, ann in record_fields(tp).items():
                inner = _arrow_type(ann)
                if inner is None:
                    raise TypeError(f"field {name!r} of {tp.__name__} needs a concrete type annotation, not {ann!r}")
                fields.append(pa.field(name, inner))
            return pa.struct(fields)
        for base in (bool, int, float, str, bytes):  # str and int subclasses (StrEnum, HttpUrl-like)
            if issubclass(tp, base):
                return _SCALARS[base]
        module = getattr(tp, "__module__", "")
        if module.startswith(("numpy", "pyarrow", "pandas")):
            return None
    raise TypeError(f"{getattr(tp, '__name__', tp)!r} has no Arrow equivalent; return a dict, dataclass, "
                    f"pydantic model or plain values")


# -- encoding ---------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """Dataclasses, models, enums and tuples to dicts, values and lists, recursively."""
    if isinstance(value, (str, int, float, bytes, bool, type(None), dt.date, dt.time, dt.timedelta)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "model_dump") and _is_pydantic(type(value)):
        return {k: _plain(v) for k, v in value.__dict__.items() if k in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: _plain(v) for k, v in zip(value._fields, value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def _is_record_value(value: Any) -> bool:
    return isinstance(value, Mapping) or is_record_type(type(value))


def encode(values: Sequence[Any], *, stage: str, output_type: Any, item_ids: Sequence[int] | None = None,
           first_item: int = 0) -> pa.Table:
    """Build one batch table from a stage's values (``item_ids`` fills ``_item``).

    Raises:
        ConversionError: naming the stage and the first item that cannot be converted
            (``exc.item`` is its position in ``values``).
    """
    try:
        table = _encode(values, stage, output_type)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        bad, cause = _first_bad(values, stage, output_type, exc)
        ids = item_ids if item_ids is not None else range(first_item, first_item + len(values))
        err = ConversionError(f"stage {stage!r}, item {ids[bad]}: cannot convert {type(values[bad]).__name__} "
                              f"value to Arrow: {cause}")
        err.item = bad  # type: ignore[attr-defined]
        raise err from None
    if item_ids is not None:
        table = table.append_column(ITEM_COLUMN, pa.array(item_ids, type=pa.int64()))
    return table


def _first_bad(values: Sequence[Any], stage: str, output_type: Any, exc: BaseException) -> tuple[int, str]:
    for i, value in enumerate(values):
        try:
            _encode([value], stage, output_type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as single:
            return i, str(single) or type(single).__name__
    return 0, str(exc)


def _encode(values: Sequence[Any], stage: str, output_type: Any) -> pa.Table:
    arrow = arrow_type(output_type) if output_type is not None else None
    if output_type is not None and is_record_type(output_type) and arrow is not None:
        return _encode_records(values, arrow)
    if output_type is None and values and _is_record_value(values[0]):
        rows = [_plain(v) for v in values]
        if not all(isinstance(r, dict) for r in rows):
            raise TypeError("values mix records and plain values")
        table = pa.Table.from_pylist(rows)
        return table.replace_schema_metadata({SHAPE_KEY: b"record"})
    if isinstance(arrow, pa.DataType):
        column = pa.array([_plain(v) for v in values] if _needs_plain(arrow) else values, type=arrow)
    else:
        column = pa.array([_plain(v) for v in values])
    return pa.table({stage: column}, metadata={SHAPE_KEY: b"scalar"})


def _needs_plain(arrow: pa.DataType) -> bool:
    return pa.types.is_struct(arrow) or pa.types.is_large_list(arrow) or pa.types.is_map(arrow)


def _encode_records(values: Sequence[Any], arrow: pa.StructType) -> pa.Table:
    rows = []
    for value in values:
        row = _plain(value)
        if not isinstance(row, dict):
            raise TypeError(f"expected a record, got {type(value).__name__}")
        rows.append(row)
    schema = pa.schema(list(arrow), metadata={SHAPE_KEY: b"record"})
    return pa.Table.from_pylist(rows, schema=schema)


def table_from_result(result: Any, *, stage: str) -> pa.Table:
    """A batch or reduce stage's return value as a table (tables, DataFrames, records, scalars)."""
    if isinstance(result, pa.Table):
        return result
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    module = type(result).__module__
    if module.startswith("pandas"):
        import pandas as pd

        if isinstance(result, pd.Series):
            result = result.to_frame()
        return pa.Table.from_pandas(result, preserve_index=not isinstance(result.index, pd.RangeIndex))
    if isinstance(result, list) and (not result or _is_record_value(result[0])):
        return _encode(result, stage, None) if result else pa.table({})
    try:
        if _is_record_value(result):
            return _encode([result], stage, None)
        return _encode([result], stage, None)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise ConversionError(f"stage {stage!r}: cannot convert its result ({type(result).__name__}) to Arrow: {exc}") from None


# -- decoding ---------------------------------------------------------------------------

def data_columns(table: pa.Table) -> pa.Table:
    """The table without engine columns (what users and batch stages see)."""
    if ITEM_COLUMN in table.column_names:
        return table.drop_columns([ITEM_COLUMN])
    return table


def shape(table: pa.Table) -> str:
    meta = table.schema.metadata or {}
    return meta.get(SHAPE_KEY, b"record").decode()


def decode(table: pa.Table, *, want: Any = None, producer_type: Any = None) -> list[Any]:
    """The values of a batch table, as the consumer's annotated type if it has one."""
    data = data_columns(table)
    if shape(table) == "scalar" and data.num_columns == 1:
        values = data.column(0).to_pylist()
        target = want if want is not None and not is_record_type(want) else producer_type
        return _convert_all(values, target) if target is not None else values
    rows = data.to_pylist()
    target = want if want is not None and is_record_type(want) else producer_type
    if target is not None and is_record_type(target):
        build = _builder(_strip_optional(target))
        return [build(row) for row in rows]
    return rows


def _convert_all(values: list[Any], target: Any) -> list[Any]:
    build = _builder(_strip_optional(target))
    if build is _identity:
        return values
    return [None if v is None else build(v) for v in values]


def _identity(value: Any) -> Any:
    return value


@functools.lru_cache(maxsize=256)
def _builder_cached(tp: Any) -> Callable[[Any], Any]:
    return _make_builder(tp)


def _builder(tp: Any) -> Callable[[Any], Any]:
    try:
        return _builder_cached(tp)
    except TypeError:
        return _make_builder(tp)


def _make_builder(tp: Any) -> Callable[[Any], Any]:
    """A function turning the plain value Arrow gives back into an instance of ``tp``."""
    tp = _strip_optional(tp)
    if _is_pydantic(tp):
        return tp.model_validate
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        fields = {name: _builder(ann) for name, ann in record_fields(tp).items()}
        plain = all(b is _identity for b in fields.values())
        if plain:
            return lambda row: tp(**row)
        return lambda row: tp(**{k: (b(row[k]) if row.get(k) is not None else row.get(k)) for k, b in fields.items()})
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):
        return lambda row: tp(**row)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    origin = typing.get_origin(tp)
    if origin in (list, Sequence, Iterable):
        inner = _builder(typing.get_args(tp)[0]) if typing.get_args(tp) else _identity
        return _identity if inner is _identity else (lambda xs: [inner(x) for x in xs])
    if origin is tuple:
        return tuple
    if origin in (set, frozenset):
        return origin
    if origin in (dict, Mapping):
        return lambda pairs: dict(pairs) if isinstance(pairs, list) else pairs
    if tp is tuple:
        return tuple
    return _identity
