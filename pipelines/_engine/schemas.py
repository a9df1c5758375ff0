"""One Arrow schema per stage, so that a stage's parts on disk never disagree on type.

A stage whose return annotation gives its Arrow type has that schema by construction. A
stage without one (``def f(x): return x if x < 5 else f"s{x}"``) would get a type inferred
from each part's values: ``int64`` in one part, ``string`` in the next, and no reader could
put them together again. So the schema of a stage is fixed once, by the annotation or by its
first part, and recorded in the ledger (``stage_schemas``) under the stage's fingerprint:
every part of every run that computes the stage with that code shares it, resumes included.

* The driver gives the schema to each task it submits; the task converts its values to it
  (an ``int`` where a ``float`` is expected is fine, ``encode``) and fails, alone, each item
  whose value does not fit, with its index, its value's type and the expected type.
* A task submitted before the first part was recorded reports the schema of the part it
  wrote; the driver then records it (the first), refines it (a column that was all nulls gets
  the type of the first values; fields missing so far are added) or, when the two disagree,
  converts the part itself, failing the items that do not fit (``StageSchemas.settle``).
* Readers join a stage's parts with ``concat``: parts that still disagree (a store written
  before schemas were fixed) are a ``ConversionError`` naming the stage and the cure, never
  an ``ArrowTypeError``.

What "fits" means: Arrow converts the Python value to the expected type and gives back a
value equal to it (``5.0`` fits ``int64``, ``5.5`` and ``"5"`` do not).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines.define import codec
from pipelines.define.codec import ITEM_COLUMN, NONE_COLUMN, SHAPE_KEY
from pipelines.errors import ConversionError

if TYPE_CHECKING:
    from pipelines._engine.task import TaskResult
    from pipelines.define.model import Stage
    from pipelines.store.ledger import Ledger

_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


# -- schemas as bytes ---------------------------------------------------------------------


def _without_item(schema: pa.Schema) -> pa.Schema:
    index = schema.get_field_index(ITEM_COLUMN)
    return schema.remove(index) if index >= 0 else schema


def to_bytes(schema: pa.Schema) -> bytes:
    """The schema as Arrow IPC bytes, without the engine's ``_item`` column."""
    return bytes(_without_item(schema).serialize().to_pybytes())


@functools.lru_cache(maxsize=64)
def from_bytes(data: bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(data))


def new_schema(schema: pa.Schema, given: bytes | None) -> bytes | None:
    """``schema`` as bytes for the driver to record, or None when it is the ``given`` one."""
    if given is not None and _without_item(schema).equals(from_bytes(given), check_metadata=True):
        return None
    return to_bytes(schema)


def _shape(schema: pa.Schema) -> bytes:
    return bytes((schema.metadata or {}).get(SHAPE_KEY, b"record"))


def _data_fields(schema: pa.Schema) -> list[pa.Field]:
    return [f for f in schema if f.name not in (ITEM_COLUMN, NONE_COLUMN)]


def undecided(schema: pa.Schema) -> bool:
    """No typed column yet (only nulls, or no rows at all): the next part decides."""
    return all(pa.types.is_null(f.type) for f in _data_fields(schema))


def merge(expected: pa.Schema, got: pa.Schema) -> pa.Schema | None:
    """``expected`` refined by ``got`` (null columns typed, new fields added); None if they disagree."""
    if undecided(expected):
        return got
    if undecided(got):
        return expected
    if _shape(expected) != _shape(got):
        return None
    try:
        return pa.unify_schemas([expected, got])  # only null merges with another type
    except _ERRORS:
        return None


def _merge_tables(expected: pa.Schema, got: pa.Schema) -> pa.Schema | None:
    """For batch stages, whose tables are the user's own: what a reader can still join (an
    ``int64`` column and a ``double`` one, as pandas makes them where a value is missing)."""
    try:
        return pa.unify_schemas([expected, got], promote_options="permissive")
    except _ERRORS:
        return None


def concat(tables: Sequence[pa.Table], *, stage: str) -> pa.Table:
    """A stage's parts as one table.

    Raises:
        ConversionError: the parts disagree on a column's type (a store written before a
            stage's schema was fixed); it names the stage, the column and the cure.
    """
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    decided = [t.schema for t in tables if not undecided(t.schema)]
    if decided and any(undecided(t.schema) and _shape(t.schema) != _shape(decided[0]) for t in tables):
        # parts of Nones only, written before the first values said records: rows of nulls
        tables = [_nulls_like(t, decided[0]) if undecided(t.schema) else t for t in tables]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise ConversionError(
            f"stage {stage!r}: its stored parts disagree on type ({exc}); compute it again with `run --fresh {stage}`"
        ) from None


# -- converting values and tables to the stage's schema -------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _fits(value: Any, kind: pa.DataType) -> bool:
    try:
        return _same(pa.array([value], type=kind).to_pylist()[0], value)
    except _ERRORS:
        return False


def _convert(values: list[Any], kind: pa.DataType) -> tuple[pa.Array | None, list[int]]:
    """The values as ``kind``, or None and the positions of those that do not fit."""
    try:
        array = pa.array(values, type=kind)
        if all(_same(a, b) for a, b in zip(array.to_pylist(), values, strict=True)):
            return array, []
    except _ERRORS:
        pass
    return None, [i for i, v in enumerate(values) if not _fits(v, kind)]


def conform(table: pa.Table, expected: pa.Schema) -> tuple[pa.Table, dict[int, str]]:
    """``table`` with its columns converted to ``expected``'s types, and the rows that do not fit.

    Returns:
        The converted table holding only the rows that fit (columns ``expected`` lacks are
        kept: ``merge`` adds them), and, for each row that does not fit (by position in
        ``table``), what was expected (``"int64"``, ``"field 'x' of type int64"``).
    """
    if table.num_rows == 0 or undecided(expected):
        return table, {}
    fields = _data_fields(expected)
    if _shape(table.schema) == _shape(expected) and all(  # the common case: a comparison, no conversion
        f.name not in table.column_names or table.schema.field(f.name).type.equals(f.type) for f in fields
    ):
        return table, {}
    if undecided(table.schema):  # a part of Nones only: a row of nulls in the expected columns
        return _nulls_like(table, expected), {}
    scalar = _shape(expected) == b"scalar"
    if _shape(table.schema) != _shape(expected):
        want = str(fields[0].type) if scalar else f"a record of ({_describe(expected)})"
        return table.slice(0, 0), dict.fromkeys(range(table.num_rows), want)
    bad: dict[int, str] = {}
    columns: dict[str, pa.Array] = {}
    for field in fields:
        if field.name not in table.column_names:
            continue
        column = table.column(field.name)
        if column.type.equals(field.type):
            continue
        if pa.types.is_null(column.type):
            columns[field.name] = pa.nulls(table.num_rows, field.type)
            continue
        array, misfits = _convert(column.to_pylist(), field.type)
        if array is not None:
            columns[field.name] = array
        want = str(field.type) if scalar else f"field {field.name!r} of type {field.type}"
        for i in misfits:
            bad.setdefault(i, want)
    if bad:  # convert again without the rows that do not fit
        keep = np.array([i for i in range(table.num_rows) if i not in bad], dtype=np.int64)
        fitted, more = conform(table.take(pa.array(keep)), expected)
        assert not more, "rows that fit alone fit together"
        return fitted, bad
    for name, array in columns.items():
        table = table.set_column(table.schema.get_field_index(name), expected.field(name), array)
    return table, {}


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in _data_fields(schema))


def _nulls_like(table: pa.Table, expected: pa.Schema) -> pa.Table:
    columns = {f.name: pa.nulls(table.num_rows, f.type) for f in _data_fields(expected)}
    if _shape(expected) == b"record":
        columns[NONE_COLUMN] = pa.array([True] * table.num_rows)
    if ITEM_COLUMN in table.column_names:
        columns[ITEM_COLUMN] = table.column(ITEM_COLUMN)
    return pa.table(columns, metadata=expected.metadata)


def misfit_message(stage: str, value: Any, want: str, *, first_part: bool) -> str:
    """``stage 'mix': str value 's5' does not fit the stage's type int64 (...)``."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    why = (
        " (fixed by the stage's first part: return one type, or annotate the stage's return type)" if first_part else ""
    )
    return f"stage {stage!r}: {type(value).__name__} value {text} does not fit the stage's type {want}{why}"


def encode(
    values: Sequence[Any], *, stage: str, output_type: Any, item_ids: Sequence[int], schema: bytes | None
) -> pa.Table:
    """``codec.encode``, converted to the stage's ``schema`` when it is known.

    Raises:
        ConversionError: ``exc.item`` is the position of the first value to blame, and
            ``exc.misfits`` maps the position of each value that does not fit ``schema`` to
            its own message (one value alone that cannot be converted: just that one).
    """
    if schema is None:
        return codec.encode(values, stage=stage, output_type=output_type, item_ids=item_ids)
    expected = from_bytes(schema)
    inferred = output_type is None or output_type is dict
    try:
        table = codec.encode(values, stage=stage, output_type=output_type, item_ids=item_ids)
    except ConversionError as exc:  # the values disagree: try each alone against the schema
        messages: dict[int, str] = {}
        for i, value in enumerate(values):
            try:
                _, misfit = conform(codec.encode([value], stage=stage, output_type=output_type), expected)
            except ConversionError as alone:  # its message without the item, which is 0 alone
                messages[i] = getattr(alone, "misfits", {}).get(0, str(alone))
                continue
            if misfit:
                messages[i] = misfit_message(stage, value, misfit[0], first_part=inferred)
        if not messages:
            raise exc from None  # each fits alone: ``codec`` blamed the one that disagrees
        raise _misfits(messages) from None
    table, bad = conform(table, expected)
    if bad:
        raise _misfits({i: misfit_message(stage, values[i], want, first_part=inferred) for i, want in bad.items()})
    return table


def _misfits(messages: dict[int, str]) -> ConversionError:
    first = min(messages)
    err = ConversionError(messages[first])
    err.item = first  # type: ignore[attr-defined]
    err.misfits = messages  # type: ignore[attr-defined]
    return err


# -- the driver's side --------------------------------------------------------------------


class StageSchemas:
    """The schema of each stage of a run, recorded in the ledger by stage fingerprint."""

    def __init__(self, ledger: Ledger, fingerprints: dict[str, str]) -> None:
        self._ledger = ledger
        self._fingerprints = fingerprints
        self._known: dict[str, bytes | None] = {}

    def expected(self, stage: str) -> bytes | None:
        """The stage's schema for a task to convert to, once its first part is recorded."""
        if stage not in self._known:
            self._known[stage] = self._ledger.stage_schema(stage, self._fingerprints[stage])
        return self._known[stage]

    def _save(self, stage: str, schema: pa.Schema, replacing: bytes | None) -> bool:
        """Record ``schema``; False if another run sharing the store recorded one first."""
        data = to_bytes(schema)
        if self._ledger.save_stage_schema(stage, self._fingerprints[stage], data, replacing=replacing):
            self._known[stage] = data
            return True
        self._known.pop(stage, None)  # read it again
        return False

    def settle(self, stage: Stage, batch: int, result: TaskResult) -> TaskResult:
        """Record, refine or enforce the stage's schema with a task's part (see the module's docstring)."""
        if result.schema is None or result.file is None:
            return result
        got = from_bytes(result.schema)
        while True:  # again only when another run recorded the schema meanwhile
            known = self.expected(stage.name)
            if known is None:
                if self._save(stage.name, got, None):
                    return dataclasses.replace(result, schema=None)
                continue
            expected = from_bytes(known)
            merged = merge(expected, got) if stage.itemwise else _merge_tables(expected, got)
            if merged is None:
                return self._convert_part(stage, batch, result, expected)
            if merged.equals(expected, check_metadata=True) or self._save(stage.name, merged, known):
                return dataclasses.replace(result, schema=None)

    def _convert_part(self, stage: Stage, batch: int, result: TaskResult, expected: pa.Schema) -> TaskResult:
        """Rewrite a part that disagrees with the stage's schema; its misfits fail, alone."""
        from pipelines._engine.idset import IdSet
        from pipelines.store import arrow as batch_files
        from pipelines.store.ledger import ItemError

        assert result.file is not None
        raw = batch_files.read_table(result.file.path, expect=result.file, raw=True)
        meta = batch_files.part_info(raw) or {}
        table = batch_files.read_table(result.file.path, expect=result.file)
        fitted, bad = conform(table, expected)
        if not stage.itemwise:  # a batch stage's table is one result: it fits whole or fails
            reason = "; ".join(sorted(set(bad.values()))) or "its columns"
            message = f"the batch's table does not fit the stage's schema ({reason}): {_describe(table.schema)}"
            error = ItemError(stage.name, batch, None, "ConversionError", message, "", 1)
            batch_files.remove(result.file.path)
            return dataclasses.replace(result, file=None, done=IdSet(), errors=(*result.errors, error), schema=None)
        ids = table.column(ITEM_COLUMN).to_pylist()
        data = table.drop_columns([ITEM_COLUMN]).to_pylist()
        scalar = _shape(table.schema) == b"scalar"
        failed: dict[int, ItemError] = {}
        for row, want in sorted(bad.items()):
            item = int(ids[row])
            value = next(iter(data[row].values())) if scalar else data[row]
            message = misfit_message(stage.name, value, want, first_part=True)
            failed.setdefault(item, ItemError(stage.name, batch, item, "ConversionError", message, "", 1))
        if stage.granularity == "flat_map":  # a flat-map item whose other rows fit: all of its rows go
            keep = [i for i, item in enumerate(fitted.column(ITEM_COLUMN).to_pylist()) if item not in failed]
            fitted = fitted.take(pa.array(keep, type=pa.int64()))
        done = result.done - IdSet.of(failed)
        info = None
        if fitted.num_rows or done:
            stem, ext = os.path.splitext(result.file.path)
            info = batch_files.write_table(f"{stem}-fit{ext}", fitted, part={**meta, "ids": done.to_json()})
        batch_files.remove(result.file.path)
        return dataclasses.replace(result, file=info, done=done, errors=(*result.errors, *failed.values()), schema=None)


# -- a source's side ----------------------------------------------------------------------


class SourceSchema:
    """The schema of a source's batches, fixed like a stage's: by its annotation or its first items.

    A source is read once, in order, by one reader: its schema is the type of its first
    items (or its annotation), and every later window of items is converted to it. A value
    that does not fit ends the read there, with its index, its value and type and the
    expected type; the items before it still make batches (nothing finished is lost).
    """

    def __init__(self, stage: str, output_type: Any) -> None:
        self._stage = stage
        self._output_type = output_type
        self._inferred = output_type is None or output_type is dict
        self._schema: bytes | None = None

    def encode(self, values: Sequence[Any], first_item: int) -> tuple[pa.Table | None, ConversionError | None]:
        """The values as a table of the source's schema, up to the first that does not fit, and its error.

        ``first_item`` is the index of ``values[0]`` in the source; the error names it and its
        ``item`` is the index of the value to blame in the source.
        """
        stage, output_type = self._stage, self._output_type
        try:
            table = codec.encode(values, stage=stage, output_type=output_type, first_item=first_item)
        except ConversionError as exc:
            table, error = None, exc
        if self._schema is None:
            if table is not None:
                self._fix(table.schema)
                return table, None
            fit = self._longest_prefix(values)
            if fit == 0:  # the first value cannot be converted even alone: the codec says why
                error.item = first_item  # type: ignore[attr-defined]
                return None, error
            self._fix(codec.encode(values[:fit], stage=stage, output_type=output_type).schema)
            if self._schema is None:  # Nones, then values that do not agree: the Nones make a batch
                return self._before(values, fit, first_item, error)
        assert self._schema is not None
        if table is not None:
            merged = merge(from_bytes(self._schema), table.schema)  # null columns typed, new fields added
            if merged is not None:
                self._schema = to_bytes(merged)
                return table, None
        try:
            fitted = encode(
                values, stage=stage, output_type=output_type, item_ids=range(len(values)), schema=self._schema
            )
        except ConversionError as exc:
            at = getattr(exc, "item", 0)
            message = getattr(exc, "misfits", {}).get(at, str(exc))
            message = message.replace(
                "the stage's first part: return one type", "the source's first items: yield one type"
            )
            error = ConversionError(
                message.replace(f"stage {stage!r}:", f"stage {stage!r}, item {first_item + at}:", 1)
            )
            return self._before(values, at, first_item, error)
        return fitted.drop_columns([ITEM_COLUMN]), None

    def _before(
        self, values: Sequence[Any], at: int, first_item: int, error: ConversionError
    ) -> tuple[pa.Table | None, ConversionError]:
        """The values before position ``at`` as a table, and ``error``, the reason the read ends at ``at``."""
        error.item = first_item + at  # type: ignore[attr-defined]
        if at == 0:
            return None, error
        table, more = self.encode(values[:at], first_item)
        assert more is None, "the values before the first misfit fit"
        return table, error

    def _fix(self, schema: pa.Schema) -> None:
        if not undecided(schema):  # only Nones so far: the next items decide
            self._schema = to_bytes(schema)

    def _longest_prefix(self, values: Sequence[Any]) -> int:
        """How many of the first values convert together (bisecting: a prefix of a prefix that converts converts)."""
        lo, hi = 0, len(values)  # values[:lo] converts, values[:hi + 1] does not (or is all of them)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                codec.encode(values[:mid], stage=self._stage, output_type=self._output_type)
            except ConversionError:
                hi = mid - 1
            else:
                lo = mid
        return lo
