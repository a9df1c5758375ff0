"""A local HTTP server in a background thread: for offline runs, tests and benchmarks.

``serve_app`` runs any ``aiohttp.web.Application`` on its own event loop in a daemon
thread and yields its base URL; ``serve_directory`` does so for a folder of static files
(query strings are ignored, so ``images/a.png?copy=7`` serves ``images/a.png``; a path
longer than ``MAX_PATH_CHARS`` gets 414, one the file system cannot even look up, such as a
file name over 255 bytes, gets 404 — answers a client does not retry, and no traceback in
the server's log). Both bind
to 127.0.0.1 on a free port by default and stop cleanly when the ``with`` block ends.

Example:
    >>> with serve_directory("data") as base_url:           # doctest: +SKIP
    ...     print(base_url)
    http://127.0.0.1:40213/
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

START_TIMEOUT_S = 10.0
MAX_PATH_CHARS = 2048
T = TypeVar("T")


@contextmanager
def serve_app(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 0.5
) -> Iterator[str]:
    """Serve ``app`` from a background thread for the duration of the ``with`` block.

    Args:
        app: the application to serve.
        host: the address to bind; keep the loopback default in tests.
        port: the port; 0 picks a free one.
        shutdown_timeout: seconds to let unfinished requests complete when the block ends.

    Yields:
        The base URL, ending in ``/``, e.g. ``http://127.0.0.1:40213/``.

    Example:
        >>> app = web.Application()
        >>> with serve_app(app) as url:                       # doctest: +SKIP
        ...     ...
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"serve-{host}:{port}", daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)

    async def start() -> tuple[str, int]:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        return bound_host, bound_port

    def call(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(START_TIMEOUT_S)

    async def stop() -> None:
        await runner.cleanup()
        stragglers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in stragglers:  # handlers still running after shutdown_timeout
            task.cancel()
        await asyncio.gather(*stragglers, return_exceptions=True)

    try:
        bound_host, bound_port = call(start())
        yield f"http://{bound_host}:{bound_port}/"
    finally:
        try:
            call(stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(START_TIMEOUT_S)
            loop.close()


@contextmanager
def serve_directory(root: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the files under ``root`` (no directory listings, no symlinks out of it).

    Args:
        root: the folder to serve.
        host: the address to bind.
        port: the port; 0 picks a free one.

    Yields:
        The base URL, ending in ``/``.

    Raises:
        NotADirectoryError: ``root`` is not a folder.

    Example:
        >>> with serve_directory("data") as base_url:         # doctest: +SKIP
        ...     urllib.request.urlopen(base_url + "catalog.json").status
        200
    """
    folder = Path(root).resolve()
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot serve {str(root)!r}: not a directory")
    app = web.Application(middlewares=[_refuse_unservable_paths])
    app.router.add_static("/", folder, show_index=False, follow_symlinks=False)
    with serve_app(app, host=host, port=port) as url:
        yield url


@web.middleware
async def _refuse_unservable_paths(request: web.Request, handler: Handler) -> web.StreamResponse:
    """414 for an overlong path, 404 for one the file system refuses to look up (not a 500)."""
    if len(request.raw_path) > MAX_PATH_CHARS:
        length = len(request.raw_path)
        raise web.HTTPRequestURITooLong(text=f"path of {length} characters; the limit is {MAX_PATH_CHARS}")
    try:
        return await handler(request)
    except OSError:  # ENAMETOOLONG, ELOOP...: there is no such file to serve
        raise web.HTTPNotFound() from None
