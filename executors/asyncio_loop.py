"""Asyncio backend: one event loop on one thread, for ``async def`` stages.

``submit`` schedules the callable on the loop with ``run_coroutine_threadsafe``, which already
returns a ``concurrent.futures.Future``. The callable itself is called in the loop's default
thread pool, so a plain blocking callable cannot stall the loop; when it returns a coroutine
(an async stage's batch), that coroutine is awaited on the loop. The loop lives as long as the executor,
so per-loop resources such as one ``aiohttp.ClientSession`` are shared by every task.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .base import Capabilities, ExecutorBase

T = TypeVar("T")


class AsyncioExecutor(ExecutorBase):
    name = "asyncio"

    def __init__(self, max_workers: int = 1) -> None:
        super().__init__()
        # One loop; concurrency inside it is the stage's own business (its semaphore).
        self.capabilities = Capabilities(in_process=True, runs_coroutines=True, distributed=False, max_workers=1)
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The executor's loop (for callers that need ``run_coroutine_threadsafe`` themselves)."""
        return self._loop

    def _start(self) -> None:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="pipelines-asyncio", daemon=True)
        self._thread.start()
        ready.wait()

    def _submit(self, fn: Callable[[], T], key: str) -> Future[T]:
        async def run() -> Any:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                # Call off-loop: a plain callable may block; an async one returns its
                # coroutine at once, which is then awaited here, on the shared loop.
                result = await asyncio.to_thread(fn)
                if inspect.isawaitable(result):
                    result = await result
                return result
            finally:
                self._tasks.discard(task)

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def _shutdown(self, wait: bool, cancel_pending: bool) -> None:
        async def close() -> None:
            if cancel_pending:
                for task in list(self._tasks):
                    task.cancel()
            pending = [t for t in self._tasks if not t.done()]
            if pending and wait:
                await asyncio.gather(*pending, return_exceptions=True)
            await self._loop.shutdown_asyncgens()
            await self._loop.shutdown_default_executor()

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
