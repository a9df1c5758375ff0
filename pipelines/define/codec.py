"""Python values to Arrow tables and back, driven by type annotations.

A stage's output type (its return annotation) decides the table's shape:

* a *record* type (dataclass, pydantic model, TypedDict, NamedTuple, ``dict``) becomes one
  column per field, nested records become structs;
* any other type (``int``, ``str``, ``bytes``, ``list[float]`` ...) becomes one column named
  after the stage;
* no annotation: Arrow infers the type from the values of each batch (over all of them:
  dicts with different keys give the union of their keys);
* tables (``pa.Table``, ``pd.DataFrame``) pass through.

Two cases need more than one column's type:

* an optional record (``-> Point | None``): a ``None`` value is a row of nulls, marked in the
  engine column ``_none`` (dropped, like ``_item``, from what users and batch stages see), so
  reading back gives ``None`` and not a ``Point`` of ``None`` fields;
* ``datetime`` values: naive values are stored as naive timestamps; timezone-aware values
  are stored as their instant in UTC (``timestamp[us, tz=UTC]``), so every batch of a stage
  has one schema whatever zones its values were in. Aware values read back aware, in UTC,
  equal to the originals. One batch may not mix naive and aware values; a batch with no
  datetime there at all (only ``None``) stores a ``null`` column, which joins either kind
  when a stage's batches are read as one table.

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
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from pipelines.define.annotations import admits_none, is_union, strip_optional
from pipelines.errors import ConversionError

ITEM_COLUMN = "_item"  # the input item each row came from (sources, maps, flat-maps)
NONE_COLUMN = "_none"  # true where an optional record output was None
ENGINE_COLUMNS = (ITEM_COLUMN, NONE_COLUMN)
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
        module.startswith("pandas") and name == "DataFrame"
    )


def is_record_type(tp: Any) -> bool:
    """Dataclasses, pydantic models, TypedDicts, NamedTuples and ``dict`` become columns."""
    tp = strip_optional(tp)
    if tp is dict or (typing.get_origin(tp) is dict and not typing.get_args(tp)):
        return True
    if not isinstance(tp, type):
        return False
    return (
        dataclasses.is_dataclass(tp)
        or _is_pydantic(tp)
        or typing.is_typeddict(tp)
        or (issubclass(tp, tuple) and hasattr(tp, "_fields"))
    )


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_fields") and hasattr(tp, "model_validate")


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
    tp = strip_optional(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        if len(kinds) != 1:
            raise TypeError(f"Literal{list(args)} mixes types")
        return _arrow_type(kinds.pop())
    if is_union(tp):
        raise TypeError(f"{tp} is a union of different types; Arrow columns have one type")
    if origin is typing.Annotated:
        return _arrow_type(args[0])
    if origin in (list, tuple, set, frozenset, Sequence, Iterable):
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
        if issubclass(tp, enum.Enum):  # stored as the members' values
            kinds = {type(m.value) for m in tp}
            if len(kinds) > 1:
                raise TypeError(
                    f"the members of {tp.__name__} have values of different types "
                    f"({', '.join(sorted(k.__name__ for k in kinds))}); Arrow columns have one type"
                )
            return _arrow_type(kinds.pop()) if kinds else pa.large_string()
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
    raise TypeError(
        f"{getattr(tp, '__name__', tp)!r} has no Arrow equivalent; return a dict, dataclass, "
        f"pydantic model or plain values"
    )


# -- encoding ---------------------------------------------------------------------------

_ENCODE_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def _plain(value: Any) -> Any:
    """Dataclasses, models, enums and tuples to dicts, values and lists, recursively."""
    if isinstance(value, (str, int, float, bytes, bool, type(None), dt.date, dt.time, dt.timedelta)):
        return value.value if isinstance(value, enum.Enum) else value  # IntEnum and StrEnum too
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "model_dump") and _is_pydantic(type(value)):
        return {k: _plain(v) for k, v in value.__dict__.items() if k in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: _plain(v) for k, v in zip(value._fields, value, strict=True)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def _is_record_value(value: Any) -> bool:
    return isinstance(value, Mapping) or is_record_type(type(value))


def encode(
    values: Sequence[Any], *, stage: str, output_type: Any, item_ids: Sequence[int] | None = None, first_item: int = 0
) -> pa.Table:
    """Build one batch table from a stage's values (``item_ids`` fills ``_item``).

    Raises:
        ConversionError: naming the stage and the first item that cannot be converted
            (``exc.item`` is its position in ``values``); ``exc.misfits`` maps that position to
            a message without the item, which the error record names (``_engine/schemas.py``).
    """
    try:
        table = _encode(values, stage, output_type)
    except _ENCODE_ERRORS as exc:
        if not values:
            raise ConversionError(f"stage {stage!r}: cannot make an empty table of {output_type!r}: {exc}") from None
        bad, cause = _first_bad(values, stage, output_type, exc)
        ids = item_ids if item_ids is not None else range(first_item, first_item + len(values))
        what = f"cannot convert {type(values[bad]).__name__} value to Arrow: {cause}"
        err = ConversionError(f"stage {stage!r}, item {ids[bad]}: {what}")
        err.item = bad  # type: ignore[attr-defined]
        err.misfits = {bad: f"stage {stage!r}: {what}"}  # type: ignore[attr-defined]  # the record names the item
        raise err from None
    if item_ids is not None:
        table = table.append_column(ITEM_COLUMN, pa.array(item_ids, type=pa.int64()))
    return table


def _first_bad(values: Sequence[Any], stage: str, output_type: Any, exc: BaseException) -> tuple[int, str]:
    """The position of the item to blame for ``exc``, and why.

    The first item that cannot be converted on its own; else (each converts alone, but
    their inferred types differ) the first item that does not fit with the items before
    it, found by bisecting prefixes; or the first item, when all the others agree.
    """

    def fails(some: Sequence[Any]) -> str | None:
        try:
            _encode(some, stage, output_type)
        except _ENCODE_ERRORS as error:
            return str(error) or type(error).__name__
        return None

    for i, value in enumerate(values):
        single = fails([value])
        if single is not None:
            return i, single
    cause = fails(values)
    if cause is None or len(values) < 2:
        return 0, str(exc)
    lo, hi = 2, len(values)  # values[:hi] fails, values[:1] converts: find the shortest failing prefix
    while lo < hi:
        mid = (lo + hi) // 2
        problem = fails(values[:mid])
        if problem is None:
            lo = mid + 1
        else:
            hi, cause = mid, problem
    bad = hi - 1
    if bad == 1 and len(values) > 2 and fails(values[1:]) is None:
        return 0, f"it does not fit with the items after it: {cause}"
    return bad, f"it does not fit with the items before it: {cause}"


def _encode(values: Sequence[Any], stage: str, output_type: Any) -> pa.Table:
    arrow = arrow_type(output_type) if output_type is not None else None
    if output_type is not None and is_record_type(output_type):  # a bare ``dict``: fields inferred
        return _encode_records(
            values,
            arrow if isinstance(arrow, pa.StructType) else None,
            optional=is_union(output_type) and admits_none(output_type),
        )
    if output_type is None:
        first = next((v for v in values if v is not None), None)
        if first is not None and _is_record_value(first):
            return _encode_records(values, None, optional=True)
    if isinstance(arrow, pa.DataType):
        plain = [_plain(v) for v in values] if _needs_plain(arrow, output_type) else values
        column = pa.array(plain, type=_zoned(arrow, plain) if _has_naive_timestamp(arrow) else arrow)
    else:
        column = pa.array([_plain(v) for v in values])
    return pa.table({stage: column}, metadata={SHAPE_KEY: b"scalar"})


def _needs_plain(arrow: pa.DataType, output_type: Any) -> bool:
    """Whether values must be converted before ``pa.array`` (records, enums, sets inside)."""
    try:
        return _annotation_needs_plain(output_type)
    except TypeError:  # unhashable annotation: be safe
        return True


@functools.lru_cache(maxsize=256)
def _annotation_needs_plain(tp: Any) -> bool:
    """``list[float]`` goes to Arrow as it is; ``list[Point]`` or ``set[str]`` need converting."""
    tp = strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _annotation_needs_plain(typing.get_args(tp)[0])
    if origin in (set, frozenset) or tp in (set, frozenset):
        return True
    if origin is not None:
        return any(_annotation_needs_plain(a) for a in typing.get_args(tp) if a is not Ellipsis)
    if isinstance(tp, type):
        return issubclass(tp, enum.Enum) or is_record_type(tp) or tp in (tuple, list, dict)
    return True


def _encode_records(values: Sequence[Any], arrow: pa.StructType | None, *, optional: bool) -> pa.Table:
    """One column per field; ``arrow`` ``None`` infers the fields from every row."""
    rows: list[dict[str, Any] | None] = []
    for value in values:
        row = _plain(value)
        if not isinstance(row, dict) and not (row is None and optional):
            raise TypeError(f"expected a record, got {type(value).__name__}")
        rows.append(row)
    if arrow is None and not rows:  # nothing to infer fields from
        return pa.table({}).replace_schema_metadata({SHAPE_KEY: b"record"})
    if arrow is not None and _has_naive_timestamp(arrow):
        arrow = _zoned(arrow, rows)
    array = pa.array(rows, type=arrow)  # a struct array: over all rows, unlike Table.from_pylist
    table = pa.Table.from_struct_array(array)
    if optional and (arrow is not None or array.null_count):  # declared fields: always, for one schema
        table = table.append_column(NONE_COLUMN, array.is_null())
    return table.replace_schema_metadata({SHAPE_KEY: b"record"})


@functools.lru_cache(maxsize=256)
def _has_naive_timestamp(arrow: pa.DataType) -> bool:
    if pa.types.is_timestamp(arrow):
        return arrow.tz is None
    return any(_has_naive_timestamp(arrow.field(i).type) for i in range(arrow.num_fields))


def _zoned(arrow: pa.DataType, values: Iterable[Any]) -> pa.DataType:
    """``arrow`` with each naive timestamp decided by its values.

    Aware values make it ``tz="UTC"``; no datetime at all (only ``None``, or no rows) makes
    it ``null``, which joins either kind when a stage's batches are read as one table.
    """
    if pa.types.is_timestamp(arrow):
        aware = _aware(values)
        return pa.null() if aware is None else pa.timestamp(arrow.unit, tz="UTC") if aware else arrow
    present = [v for v in values if v is not None]
    if pa.types.is_struct(arrow):
        return pa.struct(
            [
                f.with_type(_zoned(f.type, [row.get(f.name) for row in present])) if _has_naive_timestamp(f.type) else f
                for f in arrow
            ]
        )
    if pa.types.is_map(arrow):
        pairs = [p for v in present for p in (v.items() if isinstance(v, Mapping) else v)]
        return pa.map_(_zoned(arrow.key_type, [k for k, _ in pairs]), _zoned(arrow.item_type, [x for _, x in pairs]))
    if pa.types.is_large_list(arrow):
        return pa.large_list(_zoned(arrow.value_type, [x for v in present for x in v]))
    return arrow


def _aware(values: Iterable[Any]) -> bool | None:
    """True if the datetimes are timezone-aware, False if naive, None if there are none.

    Raises:
        TypeError: naive and aware datetimes are mixed.
    """
    kinds = {v.utcoffset() is not None for v in values if isinstance(v, dt.datetime)}
    if len(kinds) > 1:
        raise TypeError("naive and timezone-aware datetimes are mixed; make them all aware (or all naive)")
    return kinds.pop() if kinds else None


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
    try:
        if isinstance(result, list) and (not result or _is_record_value(result[0])):
            return _encode(result, stage, None) if result else pa.table({})
        return _encode([result], stage, None)
    except _ENCODE_ERRORS as exc:
        raise ConversionError(
            f"stage {stage!r}: cannot convert its result ({type(result).__name__}) to Arrow: {exc}"
        ) from None


# -- decoding ---------------------------------------------------------------------------


def data_columns(table: pa.Table) -> pa.Table:
    """The table without engine columns (what users and batch stages see)."""
    engine = [c for c in ENGINE_COLUMNS if c in table.column_names]
    return table.drop_columns(engine) if engine else table


def shape(table: pa.Table) -> str:
    meta: dict[bytes, bytes] = table.schema.metadata or {}
    return meta.get(SHAPE_KEY, b"record").decode()


def decode(table: pa.Table, *, want: Any = None, producer_type: Any = None) -> list[Any]:
    """The values of a batch table, as the consumer's annotated type if it has one."""
    data = data_columns(table)
    if shape(table) == "scalar" and data.num_columns == 1:
        values = _scalars(data.column(0))
        target = want if want is not None and not is_record_type(want) else producer_type
        return _convert_all(values, target) if target is not None else values
    rows: list[Any] = data.to_pylist()
    if NONE_COLUMN in table.column_names:
        rows = [None if none else row for row, none in zip(rows, table.column(NONE_COLUMN).to_pylist(), strict=True)]
    target = want if want is not None and is_record_type(want) else producer_type
    if target is not None and is_record_type(target):
        return _convert_all(rows, target)
    return rows


def _scalars(column: pa.ChunkedArray) -> list[Any]:
    """Python values of a column; numbers without nulls go through numpy, twice as fast."""
    kind = column.type
    values: list[Any]
    if column.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        values = column.to_numpy().tolist()
    else:
        values = column.to_pylist()
    return values


def _convert_all(values: list[Any], target: Any) -> list[Any]:
    build = _builder(target)
    if build is _identity:
        return values
    return [None if v is None else build(v) for v in values]


def _identity(value: Any) -> Any:
    return value


@functools.lru_cache(maxsize=256)
def _builder_cached(tp: Any) -> Callable[[Any], Any]:
    return _make_builder(tp)


def _builder(tp: Any) -> Callable[[Any], Any]:
    """A function turning the plain (non-None) value Arrow gives back into an instance of ``tp``."""
    try:
        return _builder_cached(tp)
    except TypeError:  # an unhashable annotation
        return _make_builder(tp)


def _make_builder(tp: Any) -> Callable[[Any], Any]:
    tp = strip_optional(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _builder(args[0])
    if isinstance(tp, type) and tp is not dict and is_record_type(tp):
        return _record_builder(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    if origin in (list, tuple, set, frozenset, Sequence, Iterable):
        make = origin if origin in (tuple, set, frozenset) else list
        inner = _builder(args[0]) if args else _identity
        if inner is _identity:
            return _identity if make is list else make
        return lambda xs: make(None if x is None else inner(x) for x in xs)
    if origin in (dict, Mapping):
        key, value = (_builder(args[0]), _builder(args[1])) if len(args) == 2 else (_identity, _identity)
        return _map_builder(key, value)
    if tp is tuple:
        return tuple
    return _identity


def _map_builder(key: Callable[[Any], Any], value: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Arrow gives a map back as a list of (key, value) pairs."""
    if key is _identity and value is _identity:
        return lambda pairs: dict(pairs) if isinstance(pairs, list) else pairs

    def build(pairs: Any) -> dict[Any, Any]:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        return {key(k): None if v is None else value(v) for k, v in items}

    return build


def _record_builder(tp: type) -> Callable[[Any], Any]:
    """Dataclasses, pydantic models, NamedTuples and TypedDicts, their fields converted first."""
    fields = record_fields(tp)
    convert = {name: b for name, b in ((n, _builder(ann)) for n, ann in fields.items()) if b is not _identity}
    make: Callable[[dict[str, Any]], Any]
    if _is_pydantic(tp):
        make = _pydantic_maker(tp)
    elif typing.is_typeddict(tp):
        make = _identity
    else:
        make = functools.partial(_construct, tp, frozenset(fields))
    if not convert:
        return make

    def build(row: dict[str, Any]) -> Any:
        row = dict(row)
        for name, field_builder in convert.items():
            value = row.get(name)
            if value is not None:
                row[name] = field_builder(value)
        return make(row)

    return build


def _pydantic_maker(tp: Any) -> Callable[[dict[str, Any]], Any]:
    """``model_validate`` on a row: columns carry field names, and a field with an alias is
    validated by its alias (``populate_by_name`` is off by default), so those keys are renamed."""
    aliases = {}
    for name, f in tp.model_fields.items():
        alias = f.validation_alias if isinstance(f.validation_alias, str) else f.alias
        if alias and alias != name:
            aliases[name] = alias
    if not aliases:
        validate: Callable[[dict[str, Any]], Any] = tp.model_validate
        return validate

    def make(row: dict[str, Any]) -> Any:
        return tp.model_validate({aliases.get(k, k): v for k, v in row.items()})

    return make


def _construct(tp: type, fields: frozenset[str], row: dict[str, Any]) -> Any:
    """A dataclass or NamedTuple from the fields it declares (a producer may have more columns)."""
    if len(row) == len(fields):
        return tp(**row)
    return tp(**{k: v for k, v in row.items() if k in fields})
