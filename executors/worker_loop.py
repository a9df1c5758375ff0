"""One long-lived event loop per worker thread, for coroutines on non-asyncio backends.

A process, thread, Dask or Ray worker that receives an ``async def`` task runs it on a loop
that lives as long as the worker thread, so per-loop resources (an aiohttp session, a
semaphore) survive from one task to the next instead of being rebuilt per task.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

_local = threading.local()


def get_loop() -> asyncio.AbstractEventLoop:
    """This thread's worker loop, created on first use."""
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def run_maybe_coroutine(value: Any) -> Any:
    """Return ``value``, or its result if it is awaitable (run on this thread's loop)."""
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # already inside a loop (a worker that runs one): refuse rather than deadlock
        raise RuntimeError("cannot run a coroutine task from inside a running event loop")
    return get_loop().run_until_complete(value)
