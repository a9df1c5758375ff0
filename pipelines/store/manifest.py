"""A run's manifest: what its part files cannot tell a rebuilt ledger.

Part files describe their own batches (``arrow.py``), not the run that wrote them: its
parameters, options, and where its pipeline is defined. ``runs/<run>/run.json`` holds those,
written once when the run is created, so that a run ``repair.py`` recreates after the ledger
was lost can be resumed, not only inspected. Writing it is best effort: a run whose manifest
could not be written still runs; after a lost ledger it comes back without parameters.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.store import arrow as batch_files

if TYPE_CHECKING:
    from pipelines.store import Store

NAME = "run.json"
FIELDS = ("pipeline", "module", "dags_dir", "params", "options")
logger = logging.getLogger(__name__)


def write(store: Store, run_id: str, fields: dict[str, Any]) -> None:
    """Write run ``run_id``'s manifest (whole, or not at all)."""
    data = json.dumps({k: fields.get(k) for k in FIELDS}, sort_keys=True).encode()
    try:
        batch_files.write_bytes(store.run_data(run_id, NAME), data, rows=0)
    except OSError as exc:
        logger.warning(
            "run %s: its manifest could not be written (%s); a rebuilt ledger will lack its params", run_id, exc
        )


def read(data_root: str, run_id: str) -> dict[str, Any]:
    """The manifest of run ``run_id`` under ``data_root``; empty when it has none or it is unreadable."""
    path = batch_files.join(data_root, "runs", run_id, NAME)
    try:
        if batch_files.is_url(path):
            fs, inner = batch_files.filesystem(path)
            with fs.open_input_stream(inner) as f:
                text = f.read().decode()
        else:
            text = Path(path).read_text(encoding="utf-8")
        found = json.loads(text)
    except (OSError, ValueError):
        return {}
    return {k: found.get(k) for k in FIELDS} if isinstance(found, dict) else {}
