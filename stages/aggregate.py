"""Aggregation stages: group-by summaries over Arrow tables, in a stable order.

Both functions take and return ``pa.Table`` and use Arrow's own hash aggregation
(``pa.Table.group_by``). Output rows are sorted by the group keys, so the result of a run
does not depend on how its batches happened to be ordered.

Example:
    >>> t = pa.table({"category": ["b", "a", "b"], "width": [1, 2, 3]})
    >>> count_by(t, key="category").to_pylist()
    [{'category': 'a', 'count': 1}, {'category': 'b', 'count': 2}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa


def count_by(table: pa.Table, *, key: str | Sequence[str], name: str = "count") -> pa.Table:
    """Count the rows of each group.

    Args:
        table: the rows to count.
        key: the column (or columns) to group by.
        name: the name of the count column.

    Returns:
        One row per group: the key column(s), then ``name``; sorted by key.

    Raises:
        KeyError: a key column is missing (the message lists the table's columns).

    Example:
        >>> count_by(pa.table({"k": ["b", "a", "b"]}), key="k").to_pylist()
        [{'k': 'a', 'count': 1}, {'k': 'b', 'count': 2}]
    """
    keys = _keys(table, key)
    counted = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
    return _tidy(counted, keys, [name])


def summarize(table: pa.Table, *, by: str | Sequence[str], aggregations: Mapping[str, tuple[str, str]]) -> pa.Table:
    """Summarize each group with Arrow aggregate functions.

    Args:
        table: the rows to summarize.
        by: the column (or columns) to group by.
        aggregations: output column name -> ``(input column, function)``, where the function
            is an Arrow hash aggregate such as ``count``, ``sum``, ``mean``, ``min``, ``max``,
            ``count_distinct``, ``stddev``. Output columns keep this order.

    Returns:
        One row per group: the key column(s), then one column per aggregation; sorted by key.

    Raises:
        KeyError: a key or input column is missing.
        pyarrow.ArrowNotImplementedError: an unknown aggregate function, or one the column's
            type does not support.

    Example:
        >>> t = pa.table({"category": ["b", "a", "b"], "width": [1, 2, 3]})
        >>> summarize(t, by="category", aggregations={"n": ("width", "count"),
        ...                                           "mean_width": ("width", "mean")}).to_pylist()
        [{'category': 'a', 'n': 1, 'mean_width': 2.0}, {'category': 'b', 'n': 2, 'mean_width': 2.0}]
    """
    keys = _keys(table, by)
    _keys(table, [column for column, _ in aggregations.values()])
    grouped = table.group_by(keys, use_threads=False).aggregate(
        [(column, function) for column, function in aggregations.values()]
    )
    return _tidy(grouped, keys, list(aggregations))


def _keys(table: pa.Table, key: str | Sequence[str]) -> list[str]:
    keys = [key] if isinstance(key, str) else list(key)
    missing = [k for k in keys if k not in table.column_names]
    if missing:
        raise KeyError(f"no column {missing[0]!r} to group by; the table has {table.column_names}")
    return keys


def _tidy(grouped: pa.Table, keys: list[str], names: list[str]) -> pa.Table:
    """Keys first, then the aggregations under their names; rows sorted by key.

    Arrow names aggregations ``column_function`` (never a bare key name) and has put the
    keys first or last depending on its version; the aggregations keep their given order.
    """
    aggregated = [col for name, col in zip(grouped.column_names, grouped.columns, strict=True) if name not in keys]
    tidy = pa.table([grouped.column(k) for k in keys] + aggregated, names=[*keys, *names])
    return tidy.sort_by([(k, "ascending") for k in keys])
