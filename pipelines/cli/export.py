"""``python -m pipelines export RUN STAGE -o FILE``: a stage of a past run, as a file others open.

The format follows the file's extension: ``.parquet``, ``.csv`` or ``.arrow`` (Arrow IPC,
also ``.feather`` and ``.ipc``). The file is written whole (temp file, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from pipelines.errors import UsageError

FORMATS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}


def write(table: pa.Table, path: str | os.PathLike[str]) -> str:
    """Write ``table`` to ``path`` in the format its extension names.

    Raises:
        UsageError: an extension that names no format, or a CSV of nested values.
    """
    target = Path(path)
    kind = FORMATS.get(target.suffix.lower())
    if kind is None:
        raise UsageError(
            f"-o {path}: unknown format {target.suffix or '(no extension)'!r}; use one of {', '.join(FORMATS)}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif kind == "csv":
            import pyarrow.csv as pcsv

            nested = [
                f.name
                for f in table.schema
                if pa.types.is_nested(f.type) or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
            ]
            if nested:
                raise UsageError(
                    f"-o {path}: CSV cannot hold the nested or binary column(s) {', '.join(nested)}; "
                    f"use .parquet or .arrow"
                )
            pcsv.write_csv(table, tmp)
        else:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)
