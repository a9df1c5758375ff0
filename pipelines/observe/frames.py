"""Arrow tables to pandas without losing types: integers with nulls stay integers.

``pa.Table.to_pandas()`` turns an integer column with a null into ``float64`` (``3`` becomes
``3.0``, and a large id loses digits). Here integer and boolean columns become pandas'
nullable ``Int64``/``boolean`` dtypes (strings stay ``object``, as pandas users expect).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def to_pandas(table: pa.Table) -> Any:
    """``table.to_pandas()``, with nullable integer and boolean dtypes."""
    import pandas as pd

    nullable = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.uint8(): pd.UInt8Dtype(),
        pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(),
        pa.uint64(): pd.UInt64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    return table.to_pandas(types_mapper=nullable.get)
