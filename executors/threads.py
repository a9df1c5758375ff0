"""Thread pool backend: for blocking IO-bound stages (``kind="io"``, plain ``def``)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .base import Capabilities, ExecutorBase, call

T = TypeVar("T")


class ThreadExecutor(ExecutorBase):
    name = "threads"

    def __init__(self, max_workers: int = 32) -> None:
        super().__init__()
        self.capabilities = Capabilities(
            in_process=True, runs_coroutines=False, distributed=False, max_workers=max_workers
        )

    def _start(self) -> None:
        self._pool = ThreadPoolExecutor(self.capabilities.max_workers, thread_name_prefix="pipelines-thread")

    def _submit(self, fn: Callable[[], T], key: str) -> Future[T]:
        return self._pool.submit(call, fn)  # key unused here; dask and ray name tasks with it

    def _shutdown(self, wait: bool, cancel_pending: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_pending)
