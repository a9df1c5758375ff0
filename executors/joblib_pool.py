"""joblib backend: loky's reusable process pool, for CPU-bound stages.

loky is the process pool under ``joblib.Parallel``. Compared with the stdlib pool it pickles
callables with cloudpickle (lambdas and closures work), starts workers with its own
fork-safe method, and reports a crashed worker's exit code. Like joblib, this backend uses
the *reusable* executor: one pool per driver process, kept warm between runs and resized to
``max_workers`` on start; idle workers exit after ``idle_worker_timeout`` seconds, and the
pool goes away with the driver (workers also watch for a driver killed with SIGKILL). Two
executors alive at once share the pool; one with another ``max_workers`` resizes it, which
loky does only once the running tasks are done.

A worker that dies (segfault, ``os._exit``, out of memory, killed) breaks the pool: every
task that was running or queued in it fails with ``WorkerLostError("worker died: signal 11
(SIGSEGV)")``, and the next submit gets a fresh pool from ``get_reusable_executor``.

Because the pool is shared, ``shutdown()`` leaves it warm; ``shutdown(cancel_pending=True)``
cancels this executor's tasks and kills the workers (as ``joblib.Parallel`` does when a call is
aborted), and the next executor starts a fresh pool.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from typing import Any, TypeVar

from joblib import cpu_count
from joblib.externals.loky import get_reusable_executor
from joblib.externals.loky.backend.utils import kill_process_tree
from joblib.externals.loky.process_executor import (
    BrokenProcessPool,
    ShutdownExecutorError,
    TerminatedWorkerError,
)

from . import _futures
from .base import Capabilities, ExecutorBase, call
from .errors import WorkerLostError, describe_exit_codes

T = TypeVar("T")

_EXIT_CODE = re.compile(r"\b[A-Z0-9_]+\((-?\d+)\)")  # loky writes "{SIGSEGV(-11), EXIT(1)}"


class JoblibExecutor(ExecutorBase):
    """Args:
        max_workers: worker processes (default: ``joblib.cpu_count()``, which honours cgroups).
        idle_worker_timeout: seconds an idle worker waits for work before exiting (joblib's default).

    Example:
        >>> with JoblibExecutor(max_workers=2) as ex:
        ...     ex.submit(os.getpid, key="pid").result() != os.getpid()
        True
    """

    name = "joblib"

    def __init__(self, max_workers: int | None = None, idle_worker_timeout: float = 300) -> None:
        super().__init__()
        workers = max_workers or cpu_count()
        self.capabilities = Capabilities(
            in_process=False, runs_coroutines=False, distributed=False, max_workers=workers
        )
        self.idle_worker_timeout = idle_worker_timeout
        self._pool_lock = threading.Lock()
        self._outstanding: dict[Future[Any], Future[Any]] = {}  # ours -> loky's
        self.restarts = 0

    def _start(self) -> None:
        self._pool = self._get_pool()

    def _get_pool(self) -> Any:
        # Returns the live shared pool (resized if needed) or a new one if it broke or shut down.
        return get_reusable_executor(
            max_workers=self.capabilities.max_workers, timeout=self.idle_worker_timeout, initializer=_exit_with_parent
        )

    def _submit(self, fn: Callable[[], T], key: str) -> Future[T]:
        with self._pool_lock:
            try:
                inner = self._pool.submit(call, fn)
            except (BrokenProcessPool, ShutdownExecutorError):
                # A crash broke the pool since the last submit: start over on a fresh one.
                self.restarts += 1
                self._pool = self._get_pool()
                inner = self._pool.submit(call, fn)
            outer: Future[T] = _futures.LinkedFuture(inner.cancel)  # loky cancels only tasks not yet sent
            self._outstanding[outer] = inner
        inner.add_done_callback(lambda f: self._relay(f, outer))
        return outer

    def _relay(self, inner: Future[Any], outer: Future[Any]) -> None:
        with self._pool_lock:
            self._outstanding.pop(outer, None)
        if inner.cancelled():
            _futures.cancel(outer)
            return
        exc = inner.exception()
        if isinstance(exc, BrokenProcessPool):  # TerminatedWorkerError: a worker died
            lost = WorkerLostError(_death_cause(exc))
            lost.__cause__ = exc
            _futures.set_exception(outer, lost)
        elif isinstance(exc, ShutdownExecutorError):  # the pool stopped before this task ran
            _futures.cancel(outer)
        elif exc is not None:
            _futures.set_exception(outer, exc)  # loky chains the worker's traceback as __cause__
        else:
            _futures.set_result(outer, inner.result())

    def _shutdown(self, wait: bool, cancel_pending: bool) -> None:
        with self._pool_lock:
            outstanding = dict(self._outstanding)
        if cancel_pending:
            # Cancel ours, then kill the workers: loky marks the pool broken, fails what it
            # held and cleans up; the next executor gets a fresh pool. (Not
            # ``shutdown(kill_workers=True)``: with tasks still queued, loky 3.6 loses its
            # manager thread to a KeyError and leaks its semaphores.)
            for outer in outstanding:
                _futures.cancel(outer)
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                with contextlib.suppress(ProcessLookupError):
                    kill_process_tree(proc)  # the worker and any pool it started
            # Let loky see the dead workers and flag the pool, so the next executor can
            # never be handed this one.
            self._pool.shutdown(wait=True)
        if wait:
            wait_for(list(outstanding))


def _exit_with_parent() -> None:
    """Start a worker: exit when the driver is gone, even after a ``kill -9``.

    Polls for re-parenting rather than using ``PR_SET_PDEATHSIG``, whose signal follows the
    *thread* that started the worker, and a reusable pool outlives the thread that made it.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="pipelines-lifeline", daemon=True).start()


def _death_cause(exc: BaseException) -> str:
    """``worker died: signal 11 (SIGSEGV)`` from the exit codes in loky's message."""
    codes = [int(code) for code in _EXIT_CODE.findall(str(exc))]
    if not codes and not isinstance(exc, TerminatedWorkerError):
        return f"worker pool broke: {str(exc).splitlines()[0]}" if str(exc) else "worker pool broke"
    return describe_exit_codes(codes)
