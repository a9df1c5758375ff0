"""Inline backend: runs each callable at submit time in the caller's thread.

The debugging backend (dask's synchronous scheduler): breakpoints and ``pdb`` work, and a
traceback points straight at the stage. Nothing runs in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from .base import Capabilities, ExecutorBase, call

T = TypeVar("T")


class InlineExecutor(ExecutorBase):
    name = "inline"

    def __init__(self, max_workers: int = 1) -> None:
        super().__init__()
        self.capabilities = Capabilities(in_process=True, runs_coroutines=False, distributed=False, max_workers=1)

    def _start(self) -> None:
        pass

    def _submit(self, fn: Callable[[], T], key: str) -> Future[T]:
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(call(fn))
        except BaseException as exc:  # the future carries it, like a pool would
            if not isinstance(exc, Exception):
                raise
            future.set_exception(exc)
        return future

    def _shutdown(self, wait: bool, cancel_pending: bool) -> None:
        pass
