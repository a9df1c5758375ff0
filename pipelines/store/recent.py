"""Recently written batch tables, kept in memory for readers in the same process.

In-process executors (inline, threads, asyncio) read what the previous stage just wrote;
the file is immutable once written (every part has a path of its own), so the table that was
written can be handed over instead of being mapped and parsed again. Bounded by bytes;
other processes read the file as usual.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow as pa

from pipelines import settings

_lock = threading.Lock()
_tables: OrderedDict[str, pa.Table] = OrderedDict()
_bytes = 0


def remember(path: str, table: pa.Table) -> None:
    global _bytes
    size = table.nbytes
    budget = settings.recent_bytes()
    if size > budget // 4:
        return
    with _lock:
        if path in _tables:
            return
        _tables[path] = table
        _bytes += size
        while _bytes > budget and _tables:
            _, old = _tables.popitem(last=False)
            _bytes -= old.nbytes


def recall(path: str) -> pa.Table | None:
    with _lock:
        table = _tables.get(path)
        if table is not None:
            _tables.move_to_end(path)
        return table
