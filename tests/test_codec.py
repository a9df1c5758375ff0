"""Python values to Arrow batch tables and back (``pipelines.define.codec``), driven by annotations."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any, NamedTuple, Optional, TypedDict

import pandas as pd
import pyarrow as pa
import pytest
from pydantic import BaseModel

from pipelines import ConversionError
from pipelines.define import codec


def round_trip(values: list[Any], tp: Any, *, want: Any = None) -> tuple[pa.Table, list[Any]]:
    """Encode as a stage of output type ``tp`` would, decode as its consumer would."""
    table = codec.encode(values, stage="s", output_type=tp, item_ids=list(range(len(values))))
    return table, codec.decode(table, want=want, producer_type=tp)


# -- types used below ------------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    label: Optional[str] = None


@dataclasses.dataclass
class Shape:
    origin: Optional[Point]
    corners: list[Point]
    tags: list[str]
    counts: dict[str, int]
    color: Color
    when: dt.datetime


class Pixel(BaseModel):
    x: int
    y: int
    color: Color = Color.RED


class Image(BaseModel):
    name: str
    size: tuple[int, ...]
    pixels: list[Pixel]
    corner: Optional[Pixel] = None
    taken: dt.date


class Row(TypedDict):
    id: int
    text: str


class Pair(NamedTuple):
    left: int
    right: str


# -- round trips ---------------------------------------------------------------------------------------------


class TestScalars:
    @pytest.mark.parametrize(
        ("tp", "values", "arrow"),
        [
            (int, [1, -2, 0, None], pa.int64()),
            (float, [1.5, -0.0, None], pa.float64()),
            (bool, [True, False, None], pa.bool_()),
            (str, ["a", "", "é✓", None], pa.large_string()),
            (bytes, [b"\x00\xff", b"", None], pa.large_binary()),
            (dt.datetime, [dt.datetime(2024, 2, 29, 23, 59, 59, 999999), None], pa.timestamp("us")),
            (dt.date, [dt.date(1970, 1, 1), dt.date(2038, 1, 20)], pa.date32()),
            (dt.time, [dt.time(12, 30, 1, 5)], pa.time64("us")),
            (dt.timedelta, [dt.timedelta(days=1, microseconds=3)], pa.duration("us")),
        ],
    )
    def test_scalar_round_trip(self, tp: Any, values: list[Any], arrow: pa.DataType) -> None:
        table, back = round_trip(values, tp)
        assert table.schema.field("s").type == arrow
        assert codec.shape(table) == "scalar"
        assert back == values

    def test_scalar_column_is_named_after_the_stage_and_items_kept(self) -> None:
        table = codec.encode([10, 20], stage="square", output_type=int, item_ids=[3, 7])
        assert table.column_names == ["square", codec.ITEM_COLUMN]
        assert table.column(codec.ITEM_COLUMN).to_pylist() == [3, 7]
        assert codec.data_columns(table).column_names == ["square"]

    def test_without_item_ids_there_is_no_item_column(self) -> None:
        assert codec.encode([1], stage="s", output_type=int).column_names == ["s"]

    @pytest.mark.parametrize(
        ("tp", "values"),
        [
            (list[int], [[1, 2], [], None]),
            (list[list[str]], [[["a"], []], [["b", "c"]]]),
            (tuple[int, ...], [(1, 2), (3,)]),
            (set[int], [{1, 2}, set()]),
            (dict[str, int], [{"a": 1, "b": 2}, {}]),
            (list[dict[str, float]], [[{"x": 1.0}], []]),
        ],
    )
    def test_containers_round_trip(self, tp: Any, values: list[Any]) -> None:
        _, back = round_trip(values, tp)
        assert back == values
        assert [type(v) for v in back] == [type(v) for v in values]

    def test_dict_becomes_an_arrow_map(self) -> None:
        table, _ = round_trip([{"a": 1}], dict[str, int])
        assert pa.types.is_map(table.schema.field("s").type)

    def test_int_enum_round_trip(self) -> None:
        table, back = round_trip([Level.LOW, Level.HIGH], Level)
        assert table.schema.field("s").type == pa.int64()
        assert back == [Level.LOW, Level.HIGH]
        assert all(isinstance(v, Level) for v in back)

    def test_enum_round_trip(self) -> None:
        _, back = round_trip([Color.RED, Color.BLUE], Color)
        assert back == [Color.RED, Color.BLUE]

    def test_enum_is_stored_as_its_values(self) -> None:
        table, back = round_trip([[Color.BLUE], [], None], Optional[list[Color]])
        assert codec.data_columns(table).column("s").to_pylist() == [["blue"], [], None]
        assert back == [[Color.BLUE], [], None]

    def test_enum_with_values_of_different_types_is_refused(self) -> None:
        class Mixed(enum.Enum):
            ONE = 1
            TWO = "two"

        with pytest.raises(TypeError, match=r"members of Mixed have values of different types \(int, str\)"):
            codec.arrow_type(Mixed)

    def test_aware_datetime_keeps_its_instant_and_zone(self) -> None:
        value = dt.datetime(2024, 1, 2, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        _, back = round_trip([value], dt.datetime)
        assert back[0].tzinfo is not None and back[0] == value

    def test_aware_datetimes_are_stored_in_utc(self) -> None:
        """One schema for every batch of a stage, whatever zones its values were in."""
        values = [
            dt.datetime(2024, 1, 2, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2024, 7, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            None,
        ]
        table, back = round_trip(values, dt.datetime)
        assert table.schema.field("s").type == pa.timestamp("us", tz="UTC")
        assert back == values
        assert all(v.utcoffset() == dt.timedelta(0) for v in back if v is not None)

    def test_aware_datetimes_in_records_and_lists(self) -> None:
        @dataclasses.dataclass
        class Event:
            at: dt.datetime
            seen: list[dt.datetime]

        when = dt.datetime(2024, 1, 2, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        table, back = round_trip([Event(when, [when, when])], Event)
        assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
        assert table.schema.field("seen").type == pa.large_list(pa.timestamp("us", tz="UTC"))
        assert back == [Event(when, [when, when])] and back[0].at.tzinfo is not None

    @pytest.mark.parametrize("tp", [Optional[dt.datetime], Optional[list[dt.datetime]]])
    def test_a_batch_without_datetimes_joins_either_kind(self, tp: Any) -> None:
        """Batches of one stage are read as one table: a batch of only None must not fix the zone."""
        aware = dt.datetime(2024, 1, 2, 3, 0, tzinfo=dt.UTC)
        for value in (aware, aware.replace(tzinfo=None)):
            value = [value] if tp == Optional[list[dt.datetime]] else value
            batches = [codec.encode(values, stage="s", output_type=tp) for values in ([None], [value], [])]
            table = pa.concat_tables(batches, promote_options="permissive")
            assert codec.decode(table, producer_type=tp) == [None, value]

    def test_naive_and_aware_datetimes_in_one_batch_blame_the_odd_item(self) -> None:
        values = [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=dt.UTC)]
        with pytest.raises(ConversionError, match=r"stage 's', item 8: .*naive and timezone-aware datetimes"):
            codec.encode(values, stage="s", output_type=dt.datetime, item_ids=[7, 8])

    def test_aware_datetime_without_annotation_keeps_its_zone(self) -> None:
        value = dt.datetime(2024, 1, 2, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        _, back = round_trip([value], None)
        assert back == [value]
        assert back[0].utcoffset() == dt.timedelta(hours=2)


class TestRecords:
    def test_flat_dataclass_becomes_columns(self) -> None:
        values = [Point(1, "a"), Point(2)]
        table, back = round_trip(values, Point)
        assert codec.shape(table) == "record"
        assert codec.data_columns(table).schema == pa.schema([("x", pa.int64()), ("label", pa.large_string())])
        assert back == values

    def test_nested_dataclass(self) -> None:
        values = [
            Shape(Point(0, "o"), [Point(1), Point(2, "b")], ["t"], {"n": 1}, Color.BLUE, dt.datetime(2024, 1, 1)),
            Shape(None, [], [], {}, Color.RED, dt.datetime(2024, 1, 2, 3)),
        ]
        table, back = round_trip(values, Shape)
        assert pa.types.is_struct(table.schema.field("origin").type)
        assert table.schema.field("color").type == pa.large_string()
        assert back == values
        assert isinstance(back[0].corners[1], Point) and back[0].color is Color.BLUE

    def test_nested_pydantic_model(self) -> None:
        values = [
            Image(
                name="a",
                size=(2, 3),
                pixels=[Pixel(x=1, y=2, color=Color.BLUE)],
                corner=Pixel(x=0, y=0),
                taken=dt.date(2024, 5, 1),
            ),
            Image(name="b", size=(), pixels=[], taken=dt.date(2024, 5, 2)),
        ]
        table, back = round_trip(values, Image)
        assert table.schema.field("pixels").type == pa.large_list(
            pa.struct([("x", pa.int64()), ("y", pa.int64()), ("color", pa.large_string())])
        )
        assert back == values

    def test_pydantic_fields_with_aliases(self) -> None:
        """Columns carry field names; the model is rebuilt through its aliases (JSON keys, say)."""
        from pydantic import Field

        class Tag(BaseModel):
            label: str = Field(alias="Label")

        class Car(BaseModel):
            weight: int = Field(alias="Weight_in_lbs")
            origin: str = Field(validation_alias="Origin")
            tag: Tag | None = None

        values = [
            Car.model_validate({"Weight_in_lbs": 3504, "Origin": "USA", "tag": {"Label": "x"}}),
            Car.model_validate({"Weight_in_lbs": 1, "Origin": "EU"}),
        ]
        table, back = round_trip(values, Car)
        assert codec.data_columns(table).column_names == ["weight", "origin", "tag"]
        assert back == values

    def test_pydantic_model_with_dict_field(self) -> None:
        class Counts(BaseModel):
            counts: dict[str, int]

        _, back = round_trip([Counts(counts={"x": 1})], Counts)
        assert back == [Counts(counts={"x": 1})]

    def test_maps_inside_nested_records_and_lists(self) -> None:
        class Inner(BaseModel):
            counts: dict[str, int]

        class Outer(BaseModel):
            inner: Inner
            many: list[Inner]
            by_name: dict[str, Inner]

        value = Outer(inner=Inner(counts={"a": 1}), many=[Inner(counts={})], by_name={"k": Inner(counts={"b": 2})})
        _, back = round_trip([value], Outer)
        assert back == [value]

    def test_dataclass_with_a_map_of_records(self) -> None:
        @dataclasses.dataclass
        class Index:
            points: dict[str, Point]

        _, back = round_trip([Index({"p": Point(1, "a")}), Index({})], Index)
        assert back == [Index({"p": Point(1, "a")}), Index({})]

    def test_typed_dict(self) -> None:
        values = [Row(id=1, text="a"), Row(id=2, text="b")]
        table, back = round_trip(values, Row)
        assert codec.data_columns(table).column_names == ["id", "text"]
        assert back == values

    def test_named_tuple(self) -> None:
        values = [Pair(1, "a"), Pair(2, "b")]
        table, back = round_trip(values, Pair)
        assert codec.data_columns(table).column_names == ["left", "right"]
        assert back == values and all(isinstance(v, Pair) for v in back)

    def test_list_of_records_in_one_column(self) -> None:
        values = [[Point(1)], [], [Point(2, "z"), Point(3)]]
        table, back = round_trip(values, list[Point])
        assert table.column_names == ["s", codec.ITEM_COLUMN]
        assert back == values

    def test_empty_batch_keeps_the_schema(self) -> None:
        table, back = round_trip([], Point)
        assert codec.data_columns(table).column_names == ["x", "label"]
        assert back == []

    def test_optional_record_output_may_be_none(self) -> None:
        _, back = round_trip([Point(1), None], Optional[Point])
        assert back == [Point(1), None]

    def test_none_row_is_marked_and_users_see_nulls(self) -> None:
        table, _ = round_trip([None, Point(2, "b")], Point | None)
        assert codec.NONE_COLUMN in table.column_names
        data = codec.data_columns(table)
        assert data.column_names == ["x", "label"]
        assert data.to_pylist() == [{"x": None, "label": None}, {"x": 2, "label": "b"}]
        assert list(data.to_pandas().columns) == ["x", "label"]

    def test_optional_record_has_one_schema_with_or_without_none(self) -> None:
        with_none, _ = round_trip([None], Optional[Point])
        without, _ = round_trip([Point(1)], Optional[Point])
        empty, _ = round_trip([], Optional[Point])
        assert with_none.schema == without.schema == empty.schema

    def test_none_row_into_a_pydantic_consumer_stays_none(self) -> None:
        class Loose(BaseModel):
            x: int

        table = codec.encode([Point(3), None], stage="s", output_type=Optional[Point])
        assert codec.decode(table, want=Loose, producer_type=Optional[Point]) == [Loose(x=3), None]

    def test_record_output_not_optional_rejects_none(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 's', item 1: .*expected a record, got NoneType"):
            codec.encode([Point(1), None], stage="s", output_type=Point, item_ids=[0, 1])


class TestInference:
    def test_unannotated_dicts_become_columns(self) -> None:
        values = [{"a": 1, "b": {"c": [1, 2]}}, {"a": 2, "b": {"c": []}}]
        table, back = round_trip(values, None)
        assert codec.shape(table) == "record"
        assert codec.data_columns(table).column_names == ["a", "b"]
        assert back == values

    def test_unannotated_dataclasses_become_dicts(self) -> None:
        _, back = round_trip([Point(1, "a")], None)
        assert back == [{"x": 1, "label": "a"}]

    def test_unannotated_scalars(self) -> None:
        table, back = round_trip([1, 2, None], None)
        assert codec.shape(table) == "scalar"
        assert back == [1, 2, None]

    def test_unannotated_dicts_with_different_keys_lose_nothing(self) -> None:
        _, back = round_trip([{"a": 1}, {"b": 2}], None)
        assert back == [{"a": 1, "b": None}, {"a": None, "b": 2}]

    def test_unannotated_dicts_and_none(self) -> None:
        values = [None, {"a": 1}, {"a": 2, "b": "x"}]
        table, back = round_trip(values, None)
        assert codec.shape(table) == "record"
        assert back == [None, {"a": 1, "b": None}, {"a": 2, "b": "x"}]

    def test_unannotated_dicts_without_none_have_no_marker(self) -> None:
        table, _ = round_trip([{"a": 1}], None)
        assert codec.NONE_COLUMN not in table.column_names


class TestDecodeIntoConsumerType:
    def test_dicts_into_a_dataclass(self) -> None:
        table = codec.encode([{"x": 1, "label": None}], stage="s", output_type=None)
        assert codec.decode(table, want=Point) == [Point(1)]

    def test_pydantic_into_a_dataclass(self) -> None:
        table = codec.encode([Pixel(x=1, y=2)], stage="s", output_type=Pixel)

        @dataclasses.dataclass
        class XY:
            x: int
            y: int
            color: str

        assert codec.decode(table, want=XY, producer_type=Pixel) == [XY(1, 2, "red")]

    def test_dataclass_into_a_pydantic_model(self) -> None:
        class Loose(BaseModel):
            x: int

        table = codec.encode([Point(5, "p")], stage="s", output_type=Point)
        assert codec.decode(table, want=Loose, producer_type=Point) == [Loose(x=5)]

    def test_str_into_an_enum(self) -> None:
        table = codec.encode(["red", "blue"], stage="s", output_type=str)
        assert codec.decode(table, want=Color, producer_type=str) == [Color.RED, Color.BLUE]

    def test_without_annotations_plain_values(self) -> None:
        table = codec.encode([Point(1)], stage="s", output_type=Point)
        assert codec.decode(table) == [{"x": 1, "label": None}]

    def test_consumer_wanting_a_scalar_of_a_record_gets_the_producer_type(self) -> None:
        table = codec.encode([Point(1)], stage="s", output_type=Point)
        assert codec.decode(table, want=int, producer_type=Point) == [Point(1)]


class TestConversionErrors:
    def test_names_stage_and_item_id(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 'parse', item 11: cannot convert str value") as info:
            codec.encode([1, "x", 3], stage="parse", output_type=int, item_ids=[10, 11, 12])
        assert info.value.item == 1  # type: ignore[attr-defined] - position in the batch

    def test_first_item_numbers_items_without_ids(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 's', item 102"):
            codec.encode([1, 2, "x"], stage="s", output_type=int, first_item=100)

    def test_overflow(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 's', item 1: cannot convert int value"):
            codec.encode([1, 2**70], stage="s", output_type=int, item_ids=[0, 1])

    def test_uninferable_object(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 's', item 7: cannot convert object value"):
            codec.encode([object()], stage="s", output_type=None, item_ids=[7])

    def test_record_type_given_a_scalar(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 's', item 5: .*expected a record, got int"):
            codec.encode([Point(1), 3], stage="s", output_type=Point, item_ids=[4, 5])

    def test_is_a_type_error(self) -> None:
        assert issubclass(ConversionError, TypeError)

    def test_mixed_inferred_types_blame_the_odd_item(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 's', item 1:"):
            codec.encode([{"a": 1}, {"a": "x"}], stage="s", output_type=None, item_ids=[0, 1])

    def test_mixed_inferred_types_blame_the_first_item_when_the_rest_agree(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 's', item 10: cannot convert str value.*items after it"):
            codec.encode(["x", 1, 2], stage="s", output_type=None, item_ids=[10, 11, 12])

    def test_mixed_inferred_types_blame_the_first_that_does_not_fit_before(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 's', item 13: cannot convert str value.*items before it"):
            codec.encode([1, 2, 3, "x", "y"], stage="s", output_type=None, item_ids=[10, 11, 12, 13, 14])


class TestArrowType:
    @pytest.mark.parametrize("tp", [object, Any, list, dict])
    def test_infer(self, tp: Any) -> None:
        assert codec.arrow_type(tp) is None

    def test_tables_pass_through(self) -> None:
        assert codec.arrow_type(pa.Table) is codec.TABLE
        assert codec.arrow_type(pd.DataFrame) is codec.TABLE

    @pytest.mark.parametrize("tp", [complex, int | str, tuple[int, str]])
    def test_unsupported(self, tp: Any) -> None:
        with pytest.raises(TypeError):
            codec.arrow_type(tp)

    def test_record_field_without_concrete_type(self) -> None:
        @dataclasses.dataclass
        class Loose:
            anything: Any

        with pytest.raises(TypeError, match=r"field 'anything' of Loose needs a concrete type"):
            codec.arrow_type(Loose)


class TestTableFromResult:
    def test_table_passes_through(self) -> None:
        table = pa.table({"a": [1, 2]})
        assert codec.table_from_result(table, stage="s") is table

    def test_record_batch(self) -> None:
        batch = pa.record_batch({"a": [1, 2]})
        assert codec.table_from_result(batch, stage="s").equals(pa.table({"a": [1, 2]}))

    def test_dataframe_drops_a_range_index(self) -> None:
        table = codec.table_from_result(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), stage="s")
        assert table.column_names == ["a", "b"]
        assert table.to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]

    def test_dataframe_keeps_a_meaningful_index(self) -> None:
        frame = pd.DataFrame({"n": [1, 2]}, index=pd.Index(["x", "y"], name="key"))
        table = codec.table_from_result(frame, stage="s")
        assert table.to_pandas().equals(frame)

    def test_series(self) -> None:
        table = codec.table_from_result(pd.Series([1, 2], name="v"), stage="s")
        assert table.column_names == ["v"]

    def test_list_of_dicts(self) -> None:
        table = codec.table_from_result([{"a": 1}, {"a": 2}], stage="s")
        assert table.to_pylist() == [{"a": 1}, {"a": 2}]

    def test_list_of_dataclasses(self) -> None:
        assert codec.table_from_result([Point(1), Point(2, "b")], stage="s").to_pylist() == [
            {"x": 1, "label": None},
            {"x": 2, "label": "b"},
        ]

    def test_empty_list(self) -> None:
        assert codec.table_from_result([], stage="s").num_rows == 0

    def test_dict_is_one_row(self) -> None:
        assert codec.table_from_result({"a": 1, "b": "x"}, stage="s").to_pylist() == [{"a": 1, "b": "x"}]

    def test_scalar_is_one_row_named_after_the_stage(self) -> None:
        assert codec.table_from_result(42, stage="total").to_pylist() == [{"total": 42}]

    def test_unconvertible_names_the_stage(self) -> None:
        with pytest.raises(ConversionError, match=r"stage 'total': cannot convert its result \(object\)"):
            codec.table_from_result(object(), stage="total")
