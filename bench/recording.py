"""A process-pool executor that keeps every ``TaskResult`` it hands back (for timings per task).

Registered under the name ``bench_processes`` through the public ``executors.register``;
``pipelines.run(..., executor="bench_processes")`` then runs exactly as on ``processes``
(same pool, same preload) while the bench reads each task's read, compute and write seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from executors.processes import ProcessExecutor

NAME = "bench_processes"
RESULTS: list[Any] = []
_lock = threading.Lock()


class RecordingProcessExecutor(ProcessExecutor):
    name = NAME

    def __init__(
        self,
        max_workers: int | None = None,
        start_method: str | None = None,
        preload: tuple[str, ...] = ("pipelines._engine.task",),
    ) -> None:
        super().__init__(max_workers=max_workers, start_method=start_method, preload=preload)

    def _submit(self, fn: Callable[[], Any], key: str) -> Future[Any]:
        future = super()._submit(fn, key)
        future.add_done_callback(_keep)
        return future


def _keep(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        result = future.result()
        with _lock:  # a task over several batches returns one result per batch
            RESULTS.extend(result if isinstance(result, tuple) else [result])


def register() -> str:
    import executors

    if NAME not in executors.names():
        executors.register(NAME, RecordingProcessExecutor)
    return NAME


def take() -> list[Any]:
    """The results recorded so far, and forget them."""
    with _lock:
        out = list(RESULTS)
        RESULTS.clear()
    return out
