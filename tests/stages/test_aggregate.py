"""stages.aggregate: Arrow group-bys with a stable, sorted output."""

from __future__ import annotations

import pyarrow as pa
import pytest

from stages import aggregate


@pytest.fixture
def table() -> pa.Table:
    return pa.table(
        {
            "category": ["textures", "animals", "textures", "science", "animals", "textures"],
            "kind": ["png", "png", "jpg", "jpg", "png", "png"],
            "width": [512, 451, 512, 1000, 400, 296],
            "bytes": [10, 20, 30, 40, 50, 60],
        }
    )


def test_count_by_sorted_by_key(table):
    assert aggregate.count_by(table, key="category").to_pylist() == [
        {"category": "animals", "count": 2},
        {"category": "science", "count": 1},
        {"category": "textures", "count": 3},
    ]


def test_count_by_is_independent_of_row_order(table):
    shuffled = table.take([5, 3, 1, 0, 4, 2])
    assert aggregate.count_by(shuffled, key="category").equals(aggregate.count_by(table, key="category"))


def test_count_by_several_keys_and_a_custom_name(table):
    out = aggregate.count_by(table, key=["category", "kind"], name="n")
    assert out.column_names == ["category", "kind", "n"]
    assert out.to_pylist() == [
        {"category": "animals", "kind": "png", "n": 2},
        {"category": "science", "kind": "jpg", "n": 1},
        {"category": "textures", "kind": "jpg", "n": 1},
        {"category": "textures", "kind": "png", "n": 2},
    ]


def test_summarize_names_and_orders_columns(table):
    out = aggregate.summarize(
        table,
        by="category",
        aggregations={
            "images": ("width", "count"),
            "total_bytes": ("bytes", "sum"),
            "mean_width": ("width", "mean"),
            "widest": ("width", "max"),
            "also_mean": ("width", "mean"),
        },
    )
    assert out.column_names == ["category", "images", "total_bytes", "mean_width", "widest", "also_mean"]
    assert out.to_pydict() == {
        "category": ["animals", "science", "textures"],
        "images": [2, 1, 3],
        "total_bytes": [70, 40, 100],
        "mean_width": [425.5, 1000.0, 440.0],
        "widest": [451, 1000, 512],
        "also_mean": [425.5, 1000.0, 440.0],
    }


def test_null_keys_form_their_own_group_last():
    t = pa.table({"k": ["b", None, "a", None]})
    assert aggregate.count_by(t, key="k").to_pylist() == [
        {"k": "a", "count": 1},
        {"k": "b", "count": 1},
        {"k": None, "count": 2},
    ]


def test_empty_table_keeps_the_schema(table):
    out = aggregate.summarize(table.slice(0, 0), by="category", aggregations={"n": ("width", "count")})
    assert out.num_rows == 0 and out.column_names == ["category", "n"]


def test_missing_columns_are_named(table):
    with pytest.raises(KeyError, match="no column 'colour'"):
        aggregate.count_by(table, key="colour")
    with pytest.raises(KeyError, match="no column 'height'"):
        aggregate.summarize(table, by="category", aggregations={"h": ("height", "mean")})


def test_unknown_function_is_arrows_error(table):
    with pytest.raises(pa.ArrowException):
        aggregate.summarize(table, by="category", aggregations={"x": ("width", "no_such_function")})
