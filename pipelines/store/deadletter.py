"""Dead-letter tables: the failed items of ``on_error="collect"`` stages, as Arrow.

Written at the end of a run to ``runs/<run id>/dead_letter/<stage>.arrow`` from the ledger's
open errors: stage, batch, item, input (its repr), error type, message, traceback, attempts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from pipelines.store import arrow as batch_files

if TYPE_CHECKING:
    from pipelines.store import Store

SCHEMA = pa.schema(
    [
        ("stage", pa.string()),
        ("batch", pa.int64()),
        ("item", pa.int64()),
        ("input", pa.large_string()),
        ("error_type", pa.string()),
        ("message", pa.large_string()),
        ("traceback", pa.large_string()),
        ("attempts", pa.int64()),
    ]
)


def write_dead_letters(store: Store, run_id: str, stages: list[str]) -> dict[str, str]:
    """Write one table per collecting stage (an empty file clears an earlier one)."""
    written = {}
    for stage in stages:
        errors = store.ledger.open_errors(run_id, stage)
        table = pa.Table.from_pylist(
            [
                {
                    "stage": e.stage,
                    "batch": e.batch,
                    "item": e.item,
                    "input": e.input,
                    "error_type": e.error_type,
                    "message": e.message,
                    "traceback": e.traceback,
                    "attempts": e.attempts,
                }
                for e in errors
            ],
            schema=SCHEMA,
        )
        path = dead_letter_path(store, run_id, stage)
        batch_files.write_table(path, table)
        written[stage] = path
    return written


def dead_letter_path(store: Store, run_id: str, stage: str) -> str:
    return store.run_data(run_id, "dead_letter", f"{stage}.arrow")
