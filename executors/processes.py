"""Process pool backend: for CPU-bound stages (``kind="cpu"``).

Built on ``concurrent.futures.ProcessPoolExecutor`` with an explicit start method. The
default, ``auto``, forks when the pool starts in a process that runs no other thread — the
workers then start in milliseconds with everything the driver imported — and uses the
forkserver otherwise (``spawn`` off Linux): never ``fork`` from a process that runs threads,
whose locks a child could inherit held. A pool replaced after a worker died is always made
by the forkserver, since by then the driver runs threads. The workers start at once (a
no-op task each), so they are warm when the first real task arrives. Callables are pickled
by reference, so they must be importable in the child; the user's main script is never
re-run in a worker (``_main_guard``), so no ``if __name__ == "__main__":`` guard is needed.

A worker that dies (segfault, ``os._exit``, out of memory, killed) breaks the stdlib pool.
This backend turns that into ``WorkerLostError("worker died: signal 11")`` on every task
that was running or queued in the broken pool, and starts a fresh pool for the next submit,
so one poison task never ends the executor. Workers (and the forkserver) die with the
driver, even when it is killed with SIGKILL (see ``_lifeline``).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from . import _futures
from ._futures import LinkedFuture
from ._lifeline import die_with_parent, start_forkserver
from ._main_guard import no_main_context
from .base import Capabilities, ExecutorBase, call
from .errors import WorkerLostError, describe_exit_codes

T = TypeVar("T")

DEFAULT_START_METHOD = "auto"
THREAD_SAFE_METHOD = "forkserver" if sys.platform.startswith("linux") else "spawn"


class ProcessExecutor(ExecutorBase):
    """Args:
    max_workers: processes in the pool (default: CPU count).
    start_method: ``"auto"``, ``"forkserver"``, ``"spawn"`` or ``"fork"``
        (default: ``auto``; a pipeline run passes ``$PIPELINES_START_METHOD``).
    preload: modules every worker needs: imported before forking, or by the forkserver
        once, so that no worker pays for them at its first task.
    """

    name = "processes"

    def __init__(
        self, max_workers: int | None = None, start_method: str | None = None, preload: Sequence[str] = ()
    ) -> None:
        super().__init__()
        workers = max_workers or os.cpu_count() or 1
        self.capabilities = Capabilities(
            in_process=False, runs_coroutines=False, distributed=False, max_workers=workers, kills_workers=True
        )
        self.start_method = start_method or DEFAULT_START_METHOD
        self._preload = list(preload)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> None:
        method = self.start_method
        if method == "auto":
            method = "fork" if _forking_is_safe() else THREAD_SAFE_METHOD
        self._pool = self._make_pool(method)
        for _ in range(self.capabilities.max_workers):  # start the workers now, not at the first task
            self._pool.submit(os.getpid)

    def _make_pool(self, method: str) -> ProcessPoolExecutor:
        context = no_main_context(method)  # its processes never import __main__, whoever starts them
        if method == "fork":
            for module in self._preload:
                importlib.import_module(module)
        if method == "forkserver":
            context.set_forkserver_preload(["executors._forkserver_lifeline", *self._preload])
            start_forkserver()
        return ProcessPoolExecutor(
            self.capabilities.max_workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(dict(os.environ), os.getpid()),
        )

    def _new_pool(self) -> ProcessPoolExecutor:
        """A replacement pool: by now the driver runs threads, so never forked from it."""
        method = THREAD_SAFE_METHOD if self.start_method in ("auto", "fork") else self.start_method
        self._pool = self._make_pool(method)
        return self._pool

    def _submit(self, fn: Callable[[], T], key: str) -> Future[T]:
        with self._pool_lock:
            pool = self._pool
            assert pool is not None, "submit() runs only on a started executor"
            try:
                inner = pool.submit(call, fn)
            except BrokenProcessPool:
                self.restarts += 1
                pool = self._new_pool()
                inner = pool.submit(call, fn)
            procs = _processes(pool)
        outer: Future[T] = LinkedFuture(inner.cancel)
        inner.add_done_callback(lambda f: self._relay(f, outer, pool, procs))
        return outer

    def _relay(self, inner: Future[Any], outer: Future[Any], pool: ProcessPoolExecutor, procs: dict[int, Any]) -> None:
        if outer.done():
            return
        if inner.cancelled():
            _futures.cancel(outer)
            return
        exc = inner.exception()
        if isinstance(exc, BrokenProcessPool):
            with self._pool_lock:
                if self._pool is pool and self.state.name == "RUNNING":
                    self.restarts += 1
                    self._new_pool()
            pool.shutdown(wait=False, cancel_futures=True)
            lost = WorkerLostError(describe_exit_codes(p.exitcode for p in (procs | _processes(pool)).values()))
            lost.__cause__ = exc
            _futures.set_exception(outer, lost)
        elif exc is not None:
            _futures.set_exception(outer, exc)
        else:
            _futures.set_result(outer, inner.result())

    def kill_workers(self) -> None:
        """Kill every worker now (a task overran its timeout); running tasks get ``WorkerLostError``."""
        with self._pool_lock:
            pool = self._pool
        if pool is None:
            return
        for proc in _processes(pool).values():
            if proc.is_alive():
                proc.kill()

    def _shutdown(self, wait: bool, cancel_pending: bool) -> None:
        pool = self._pool
        if pool is not None:
            if cancel_pending:  # do not wait for running tasks either: the children die now
                # Read these first: the stdlib's shutdown() forgets them.
                procs, manager = _processes(pool), getattr(pool, "_executor_manager_thread", None)
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in procs.values():
                    if proc.is_alive():
                        proc.terminate()
                if wait:
                    for proc in procs.values():
                        proc.join(5)
                    if manager is not None:  # it fails the killed tasks' futures, then exits
                        manager.join(5)
            else:
                pool.shutdown(wait=wait)


def _forking_is_safe() -> bool:
    """Only this thread runs (a forked child inherits no lock held by another thread)."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _init_worker(environ: dict[str, str], driver: int) -> None:
    """Start a worker: die with the driver, and see the driver's environment as of now.

    A forkserver is started once per driver process and keeps the environment it started
    with; a pool made later (a second run, a test that sets a variable) must not see stale values.
    """
    die_with_parent(driver)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the driver's to handle
    os.environ.clear()
    os.environ.update(environ)


def _processes(pool: ProcessPoolExecutor) -> dict[int, Any]:
    """The pool's worker processes. The stdlib keeps them private; read defensively."""
    return dict(getattr(pool, "_processes", None) or {})
