"""Per-worker resources: made once per worker, never per item.

A stage function asks for a resource by naming a parameter; the factory that makes it is
declared next to the function, as data, without wrapping it:

    @uses(session=client_session)
    async def download(url: str, *, session: aiohttp.ClientSession) -> Response: ...

or per stage with ``pipeline.map(fn, resources={"session": client_session})``.

A factory is a zero-argument callable returning the resource, a context manager, or an
async context manager (entered on the worker's event loop). Async resources live once per
event loop (an aiohttp session is bound to its loop); sync resources once per worker thread
(a sqlite3 connection is bound to its thread). All are closed when the worker shuts down
(``close_all``), or at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

_ATTR = "__pipelines_resources__"


def uses(**factories: Callable[[], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the per-worker resources a stage function takes, by parameter name.

    Returns the same function object, with the factories recorded as metadata.
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _ATTR, {**resources_of(fn), **factories})
        return fn

    return mark


def resources_of(fn: Callable[..., Any]) -> dict[str, Callable[[], Any]]:
    """The resources declared on ``fn`` with ``uses``."""
    return dict(getattr(fn, _ATTR, None) or {})


class _Cache:
    """Resources of one process: per (thread, factory) for sync, per (loop, factory) for async."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sync: dict[tuple[int, Callable[[], Any]], Any] = {}
        self.sync_stacks: dict[int, contextlib.ExitStack] = {}
        self.async_: dict[tuple[int, Callable[[], Any]], Any] = {}
        self.async_stacks: dict[int, tuple[asyncio.AbstractEventLoop, contextlib.AsyncExitStack]] = {}
        self.async_locks: dict[tuple[int, Callable[[], Any]], asyncio.Lock] = {}


_cache = _Cache()


def get_sync(factory: Callable[[], Any]) -> Any:
    """This thread's instance of a sync resource, made on first use."""
    key = (threading.get_ident(), factory)
    try:
        return _cache.sync[key]
    except KeyError:
        pass
    made = factory()
    if hasattr(made, "__enter__") and hasattr(made, "__exit__"):
        with _cache.lock:
            stack = _cache.sync_stacks.setdefault(key[0], contextlib.ExitStack())
        made = stack.enter_context(made)
    elif hasattr(made, "__aenter__"):
        raise TypeError(f"resource factory {factory!r} makes an async context manager; use it from an async stage")
    _cache.sync[key] = made
    return made


async def get_async(factory: Callable[[], Any]) -> Any:
    """This event loop's instance of a resource, made on first use (sync or async)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), factory)
    try:
        return _cache.async_[key]
    except KeyError:
        pass
    lock = _cache.async_locks.setdefault(key, asyncio.Lock())
    async with lock:  # two tasks on one loop must not both make it
        if key in _cache.async_:
            return _cache.async_[key]
        made = factory()
        if hasattr(made, "__aenter__"):
            with _cache.lock:
                _, stack = _cache.async_stacks.setdefault(id(loop), (loop, contextlib.AsyncExitStack()))
            made = await stack.enter_async_context(made)
        elif hasattr(made, "__enter__") and hasattr(made, "__exit__"):
            with _cache.lock:
                _, stack = _cache.async_stacks.setdefault(id(loop), (loop, contextlib.AsyncExitStack()))
            made = stack.enter_context(made)
        elif asyncio.iscoroutine(made):
            made = await made
        _cache.async_[key] = made
        return made


async def resolve_async(factories: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    return {name: await get_async(f) for name, f in factories.items()}


def resolve_sync(factories: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    return {name: get_sync(f) for name, f in factories.items()}


def close_all(timeout: float = 10.0) -> None:
    """Close every resource this process made (async ones on their own loops)."""
    with _cache.lock:
        async_stacks = list(_cache.async_stacks.values())
        sync_stacks = list(_cache.sync_stacks.values())
        _cache.async_stacks.clear()
        _cache.sync_stacks.clear()
        _cache.async_.clear()
        _cache.sync.clear()
        _cache.async_locks.clear()
    for loop, stack in async_stacks:
        if loop.is_closed():
            continue
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout)
            else:
                loop.run_until_complete(stack.aclose())
        except Exception:  # closing is best effort; the run's result stands
            pass
    for sync_stack in sync_stacks:
        with contextlib.suppress(Exception):
            sync_stack.close()


atexit.register(close_all)
