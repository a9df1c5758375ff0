"""One long-lived event loop per worker process, for coroutines on non-asyncio backends.

A process, thread, Dask or Ray worker that receives an ``async def`` task runs it on a loop
that lives as long as the worker process, in a thread of its own. Every thread of the
process (a Dask worker with ``--nthreads 4``, a thread pool) hands its coroutines to that one
loop, so per-loop resources (an aiohttp session, the stage's concurrency semaphore) are
shared by the whole process and made once, not once per thread or per task.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from typing import Any

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_owner_pid = 0


def get_loop() -> asyncio.AbstractEventLoop:
    """This process's worker loop, started on first use (and again in a forked child)."""
    global _loop, _owner_pid
    with _lock:
        if _loop is None or _owner_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="pipelines-worker-loop", daemon=True).start()
            ready.wait()
            _loop, _owner_pid = loop, os.getpid()
        return _loop


def run_maybe_coroutine(value: Any) -> Any:
    """Return ``value``, or its result if it is awaitable (run on the process's worker loop)."""
    if not inspect.isawaitable(value):
        return value
    loop = get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # called from a task already on the worker loop: waiting would deadlock
        raise RuntimeError("cannot wait for a coroutine task on the worker loop's own thread")
    return asyncio.run_coroutine_threadsafe(_awaited(value), loop).result()


async def _awaited(value: Any) -> Any:
    return await value
