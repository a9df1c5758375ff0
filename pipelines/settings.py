"""Every ``PIPELINES_*`` environment variable, read here and nowhere else.

Each is read when it is needed, never at import, so a test or a program that embeds
pipelines may set one before a run (and workers, which inherit the environment, see the
same). The README's table of settings is checked against ``SETTINGS`` by a test.

The backends in ``executors/`` know nothing of pipelines: the runner passes them what these
settings say (``start_method``, ``tls_dir``) as ordinary options. ``PIPELINES_DRIVER_PID`` is
no setting: the processes backend sets it for its own workers (``executors/_lifeline.py``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STORE = ".pipelines"
STORE_VARIABLE = "PIPELINES_STORE"  # the pytest plugin sets it for a test's throwaway store
DEFAULT_PROGRESS_INTERVAL = 10.0
DEFAULT_RECENT_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: its name, its default in words, and what it does."""

    name: str
    default: str
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting(STORE_VARIABLE, "`./.pipelines`", "the store: a folder or a URL (`--store` wins)"),
    Setting("PIPELINES_DAGS", "`./dags`", "the folder of pipeline modules (`--dags` wins)"),
    Setting(
        "PIPELINES_LEDGER_DIR",
        "`./.pipelines/remote`",
        "where the SQLite ledger of a store on S3 (or another URL) is kept locally",
    ),
    Setting("PIPELINES_FSYNC", "`0`", "`1`: fsync every part file and run the ledger with `synchronous=FULL`"),
    Setting(
        "PIPELINES_RECENT_BYTES",
        "`67108864` (64 MiB)",
        "bytes of just-written tables kept in memory for in-process readers",
    ),
    Setting(
        "PIPELINES_PROGRESS_INTERVAL",
        "`10`",
        "seconds between plain progress lines (when the output is not a terminal)",
    ),
    Setting(
        "PIPELINES_START_METHOD",
        "`auto`",
        "how the processes backend starts workers: `fork`, `forkserver`, `spawn` or `auto`",
    ),
    Setting(
        "PIPELINES_DASK_TLS",
        "none",
        "a folder of TLS credentials to join a `tls://` Dask scheduler with (`--keep-cluster` prints it)",
    ),
    Setting("PIPELINES_ITEM_REUSE", "`1`", "`0`: no item-level reuse (items are looked up only by their batch's key)"),
    Setting(
        "PIPELINES_SPOOL_DIR",
        "a folder under the temp folder",
        "where `stages.http` writes response bodies too large to hold in memory",
    ),
)


def _get(name: str) -> str | None:
    """The variable's value; unset and empty are the same (``PIPELINES_STORE= cmd`` unsets it)."""
    return os.environ.get(name) or None


def store() -> str:
    """``$PIPELINES_STORE``, else ``./.pipelines``."""
    return _get(STORE_VARIABLE) or DEFAULT_STORE


def dags() -> str:
    """``$PIPELINES_DAGS``, else ``dags``."""
    return _get("PIPELINES_DAGS") or "dags"


def ledger_dir() -> Path:
    """``$PIPELINES_LEDGER_DIR``, else ``./.pipelines/remote`` (absolute)."""
    return Path(_get("PIPELINES_LEDGER_DIR") or Path(DEFAULT_STORE) / "remote").absolute()


def fsync() -> bool:
    """``PIPELINES_FSYNC=1``: sync every file written, and the ledger."""
    return _get("PIPELINES_FSYNC") == "1"


def recent_bytes() -> int:
    """``$PIPELINES_RECENT_BYTES``, else 64 MiB; a value that is not a whole number is ignored."""
    value = _get("PIPELINES_RECENT_BYTES")
    try:
        return max(0, int(value)) if value else DEFAULT_RECENT_BYTES
    except ValueError:
        return DEFAULT_RECENT_BYTES


def progress_interval() -> float:
    """``$PIPELINES_PROGRESS_INTERVAL`` seconds, else 10; a value that is not a number is ignored."""
    value = _get("PIPELINES_PROGRESS_INTERVAL")
    try:
        return max(0.0, float(value)) if value else DEFAULT_PROGRESS_INTERVAL
    except ValueError:
        return DEFAULT_PROGRESS_INTERVAL


def start_method() -> str | None:
    """``$PIPELINES_START_METHOD``, else ``None`` (the processes backend's own default)."""
    return _get("PIPELINES_START_METHOD")


def dask_tls() -> str | None:
    """``$PIPELINES_DASK_TLS``: the credentials folder to join a ``tls://`` scheduler with."""
    return _get("PIPELINES_DASK_TLS")


def item_reuse() -> bool:
    """``PIPELINES_ITEM_REUSE=0`` turns item-level reuse off (the bench's A/B switch)."""
    return _get("PIPELINES_ITEM_REUSE") != "0"


def spool_dir() -> Path:
    """``$PIPELINES_SPOOL_DIR``, else ``pipelines-bodies-<uid>`` under the temp folder."""
    explicit = _get("PIPELINES_SPOOL_DIR")
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / f"pipelines-bodies-{os.getuid()}"
