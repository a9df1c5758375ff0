"""The one interface every backend implements.

An executor runs zero-argument callables and hands back a ``concurrent.futures.Future``,
so a caller can ``wait(..., return_when=FIRST_COMPLETED)`` over any mix of backends.
Backends know nothing about stages or pipelines: the ``key`` passed with each task is only
a label (Dask and Ray show it on their dashboards).

A callable whose result is a coroutine is awaited: on the asyncio backend on its loop, on
every other backend on a long-lived event loop of the worker (see ``worker_loop``), so an
``async def`` stage runs anywhere.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

from .errors import ExecutorStateError
from .worker_loop import run_maybe_coroutine

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a caller may assume about a backend (cf. joblib's ``supports_*`` flags)."""

    in_process: bool  # threads, asyncio, inline: callables and results are not pickled
    runs_coroutines: bool  # the backend awaits coroutines on its own shared loop
    distributed: bool  # dask, ray: workers may be on other hosts (paths must be shared)
    max_workers: int  # how many callables run at once
    kills_workers: bool = False  # ``kill_workers()`` ends a task stuck where no timeout reaches (processes)


@runtime_checkable
class Executor(Protocol):
    """A pool of workers that runs zero-argument callables.

    Every backend has every method; what a backend cannot do is said by its ``capabilities``
    (``kill_workers`` needs ``kills_workers``), never found by probing for attributes.
    """

    name: str
    capabilities: Capabilities
    keep_cluster: bool  # the cluster (and its dashboard) stays up after ``shutdown()``
    dashboard_link: str | None  # after start: the cluster's dashboard, if it has one
    scheduler_address: str | None  # after start: where other clients connect, if they can

    @property
    def join_hint(self) -> str | None:
        """How another run joins this cluster (``--address ...``), or ``None``."""

    def start(self) -> Self: ...
    def submit(self, fn: Callable[[], T], /, *, key: str) -> Future[T]: ...
    def run_on_every_worker(self, fn: Callable[[], Any], *, timeout: float = 120) -> dict[str, Any]: ...
    def kill_workers(self) -> None: ...
    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc_info: object) -> None: ...


class State(enum.Enum):
    """Lifecycle of an executor: one start, one shutdown."""

    UNSTARTED = 1
    RUNNING = 2
    CLOSED = 3


class ExecutorBase:
    """Lifecycle, context manager and guards; a backend fills in three methods.

    Example:
        >>> from executors import get_executor
        >>> with get_executor("threads", max_workers=4) as ex:
        ...     ex.submit(lambda: 6 * 7, key="answer").result()
        42
    """

    name: str = "base"
    capabilities: Capabilities
    keep_cluster: bool = False
    dashboard_link: str | None = None
    scheduler_address: str | None = None

    def __init__(self) -> None:
        self._state = State.UNSTARTED
        self._lock = threading.Lock()

    # -- public -----------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    def start(self) -> Self:
        """Start the workers; ``with executor:`` does this for you."""
        with self._lock:
            if self._state is not State.UNSTARTED:
                raise ExecutorStateError(f"{self.name} executor already {self._state.name.lower()}")
            started = time.perf_counter()
            self._start()
            self._state = State.RUNNING
        logger.debug("%r started in %.2f s", self, time.perf_counter() - started)
        return self

    def submit(self, fn: Callable[[], T], /, *, key: str) -> Future[T]:
        """Run ``fn()`` on a worker; the future holds its result or its exception."""
        if self._state is not State.RUNNING:
            raise ExecutorStateError(f"cannot submit {key!r}: {self.name} executor is {self._state.name.lower()}")
        return self._submit(fn, key)

    @property
    def join_hint(self) -> str | None:
        """How another run joins this cluster; ``None``: it cannot (a pool of this process)."""
        return None

    def run_on_every_worker(self, fn: Callable[[], Any], *, timeout: float = 120) -> dict[str, Any]:
        """Run ``fn`` once on every worker. A pool on this host runs it once: its workers all see
        what this host sees. Cluster backends override this to reach every node."""
        return {self.name: self.submit(fn, key="every-worker").result(timeout=timeout)}

    def kill_workers(self) -> None:
        """Kill every worker now; running tasks fail with ``WorkerLostError``. Only backends whose
        ``capabilities.kills_workers`` is true can; the others raise ``ExecutorStateError``."""
        raise ExecutorStateError(f"the {self.name} executor cannot kill its workers")

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False) -> None:
        """Stop the workers. Idempotent. ``cancel_pending`` cancels tasks not yet started."""
        with self._lock:
            if self._state is not State.RUNNING:
                self._state = State.CLOSED
                return
            self._state = State.CLOSED
        self._shutdown(wait, cancel_pending)
        logger.debug("%r shut down (wait=%s, cancel_pending=%s)", self, wait, cancel_pending)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True, cancel_pending=exc_info[0] is not None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self._state.name.lower()} workers={self.capabilities.max_workers}>"

    # -- for subclasses -----------------------------------------------------------
    def _start(self) -> None:
        raise NotImplementedError

    def _submit(self, fn: Callable[[], T], key: str) -> Future[T]:
        raise NotImplementedError

    def _shutdown(self, wait: bool, cancel_pending: bool) -> None:
        raise NotImplementedError


def call(fn: Callable[[], Any]) -> Any:
    """Call ``fn``; if it returns a coroutine, run it on this thread's worker loop."""
    return run_maybe_coroutine(fn())
