"""stages.json on the bundled data (cars.json, catalog.json) and on broken input."""

from __future__ import annotations

import json as stdlib_json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from stages import json

DATA = Path(__file__).resolve().parents[2] / "data"


class Car(BaseModel):
    Name: str
    Miles_per_Gallon: float | None
    Cylinders: int
    Horsepower: float | None
    Year: str
    Origin: str


class Point(BaseModel):
    x: int
    y: int = Field(ge=0)


def test_cars_validate_with_their_nulls():
    cars = json.parse_records(DATA / "cars.json", Car)
    assert len(cars) == 406
    assert sum(c.Miles_per_Gallon is None for c in cars) == 8
    assert sum(c.Horsepower is None for c in cars) == 6
    assert {c.Origin for c in cars} == {"USA", "Europe", "Japan"}


def test_offsets_point_at_each_record():
    raw = (DATA / "cars.json").read_bytes()
    pairs = list(json.iter_values(raw))
    assert len(pairs) == 406
    for offset, value in pairs[::50]:
        decoded, _ = stdlib_json.JSONDecoder().raw_decode(raw[offset:].decode())
        assert decoded == value


def test_offsets_are_bytes_not_characters():
    text = '[{"x": 1, "y": 2, "note": "éééé"}, {"x": 2, "y": -1}]'
    with pytest.raises(ValueError) as info:
        json.parse_records(text.encode(), Point, source="points.json")
    byte = text.encode().index(b'{"x": 2')
    assert str(info.value).startswith(f"points.json, record 1 at byte {byte}: field 'y' of Point:")
    assert byte != text.index('{"x": 2')  # the test means something only if they differ


def test_json_lines_and_parsed_dicts():
    lines = b'{"x": 1, "y": 2}\n{"x": 3, "y": 4}\n'
    assert json.parse_records(lines, Point) == [Point(x=1, y=2), Point(x=3, y=4)]
    assert json.parse_records([{"x": 5, "y": 6}], Point) == [Point(x=5, y=6)]
    assert json.parse_records(b" [ ] ", Point) == []


def test_invalid_record_names_index_offset_and_field():
    data = b'[{"x": 1, "y": 2}, {"x": 2, "y": 3}, {"x": "q", "y": 1}]'
    byte = data.index(b'{"x": "q"')
    message = rf"<data>, record 2 at byte {byte}: field 'x' of Point: Input should be a valid integer"
    with pytest.raises(ValueError, match=message):
        json.parse_records(data, Point)


def test_missing_field_in_a_jsonl_record():
    with pytest.raises(ValueError, match=r"record 1 at byte 17: field 'y' of Point: Field required"):
        json.parse_records(b'{"x": 1, "y": 2}\n{"x": 3}\n', Point)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b'{"a": 1,}', "byte 8 (line 1, column 9)"),
        (b"[1, 2", "byte 5"),
        (b"[1, 2,", "byte 6"),
        (b'[{"x": 1, "y": 2} {"x": 3, "y": 4}]', "byte 18 (line 1, column 19)"),
        (b"[]\n[]", "byte 3 (line 2, column 1)"),
        (b'\n\n  {"x": 1, "y": ]', "byte 18 (line 3, column 17)"),
    ],
)
def test_malformed_json_names_the_byte_offset(data, where):
    with pytest.raises(ValueError, match=r"in\.json: invalid JSON at " + re.escape(where)):
        list(json.iter_values(data, source="in.json"))


def test_loads_and_load(tmp_path):
    assert json.loads('{"a": [1, null]}') == {"a": [1, None]}
    bad = tmp_path / "bad.json"
    bad.write_bytes('{"é": tru}'.encode())
    with pytest.raises(ValueError, match=r"bad\.json: invalid JSON at byte 7 "):  # 'é' is two bytes
        json.load(bad)


def test_invalid_utf8_names_the_byte():
    with pytest.raises(ValueError, match="invalid UTF-8 at byte 7"):
        json.loads(b'{"a": "\xff"}')


def test_parse_record_of_one_object():
    assert json.parse_record('{"x": 1, "y": 0}', Point) == Point(x=1, y=0)
    with pytest.raises(ValueError, match=r"one, record 4: field 'y' of Point: Input should be greater than or equal"):
        json.parse_record({"x": 1, "y": -5}, Point, source="one", index=4)


class TestHostileDocuments:
    def test_a_huge_json_string_is_a_string_record_not_invalid_json(self):
        document = b'"' + b"x" * (60 * 2**20) + b'"'
        with pytest.raises(ValueError) as info:
            json.parse_records(document, Point, source="catalog.json")
        message = str(info.value)
        assert message.startswith("catalog.json, record 0 at byte 0: Point: Input should be a valid dictionary")
        assert "invalid JSON" not in message and len(message) < 300

    def test_string_records_are_not_decoded_twice(self):
        for document in (b'"{\\"x\\": 1, \\"y\\": 2}"', b'["{\\"x\\": 1, \\"y\\": 2}"]'):
            with pytest.raises(ValueError, match=r"record 0 at byte \d+: Point: Input should be a valid dictionary"):
                json.parse_records(document, Point)
        with pytest.raises(ValueError, match="record 0: Point: Input should be a valid dictionary"):
            json.parse_records(['{"x": 1, "y": 2}'], Point)  # already-parsed values are validated as they are
        assert json.parse_record('{"x": 1, "y": 2}', Point) == Point(x=1, y=2)  # text given to parse_record is JSON

    @pytest.mark.parametrize(
        "parse", [json.loads, lambda d: list(json.iter_values(d)), lambda d: json.parse_records(d, Point)]
    )
    def test_deep_nesting_is_a_value_error_naming_the_depth(self, parse):
        deep = "[" * 100_000 + "]" * 100_000
        pattern = r"invalid JSON at byte \d+: the value nests (100,000|99,999) levels deep"
        with pytest.raises(ValueError, match=pattern) as info:
            parse(deep)
        assert not isinstance(info.value, RecursionError)

    def test_deep_nesting_inside_a_record_names_its_byte(self):
        document = '[{"x": 1, "y": 2}, {"x": ' + "[" * 50_000 + "]" * 50_000 + "}]"
        with pytest.raises(ValueError, match=r"invalid JSON at byte 19: the value nests 50,001 levels deep"):
            list(json.iter_values(document))
