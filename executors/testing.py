"""The contract every executor backend must meet, as plain functions a test suite can call.

Like dask's ``GetFunctionTestMixin`` and trio's ``check_*_stream`` helpers, this lives in the
package, not in ``tests/``, so a third-party backend can prove itself with the same checks::

    import executors.testing as contract

    @pytest.fixture
    def executor():
        with MyExecutor(max_workers=2) as ex:
            yield ex

    def test_result_round_trips(executor):
        contract.check_result_round_trips(executor)

Each check takes a started executor and raises ``AssertionError`` when the backend breaks the
contract. Checks marked *consuming* shut the executor down, so give each one a fresh executor.
The checks need no test framework. Every callable they submit is a module-level function (or
a ``functools.partial`` of one), so it pickles by reference for out-of-process backends.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, wait
from functools import partial
from typing import Any

from .base import Executor
from .errors import ExecutorStateError, WorkerLostError

TIMEOUT = 120.0  # seconds any single result may take; generous for a cold cluster


class ContractError(ValueError):
    """The exception the checks raise inside tasks (a subclass, to prove the type survives)."""


# -- callables shipped to workers ---------------------------------------------------------------
def echo(value: Any) -> Any:
    """Return ``value``: pickled there and back for out-of-process backends."""
    return value


def square(i: int) -> int:
    return i * i


def raise_contract_error(marker: str) -> None:
    """Fail with a ``ContractError`` whose message carries ``marker``."""
    raise ContractError(f"task failed on purpose: {marker}")


async def async_add(a: int, b: int) -> int:
    """A coroutine function: calling it returns a coroutine, which the backend must await."""
    await asyncio.sleep(0.01)
    return a + b


def exit_worker(code: int) -> None:
    """Kill the worker process the hard way: no exception, no cleanup."""
    os._exit(code)


def sleep_then_return(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


# -- the checks -------------------------------------------------------------------------------
def check_result_round_trips(executor: Executor) -> None:
    """Values of the common shapes come back equal, under keys shaped like the engine's."""
    values = [
        None,
        42,
        3.5,
        "text é",
        b"\x00\xffbytes",
        [1, [2, 3]],
        {"a": (1, 2), "b": {"c": None}},
        bytes(range(256)) * 4096,
    ]  # ~1 MB
    futures = [executor.submit(partial(echo, v), key=f"round_trip-{i:06d}-00000") for i, v in enumerate(values)]
    for value, future in zip(values, futures, strict=True):
        assert isinstance(future, Future), f"{executor.name}: submit must return a concurrent.futures.Future"
        assert future.result(timeout=TIMEOUT) == value


def check_exception_keeps_remote_traceback(executor: Executor) -> None:
    """A task's exception arrives with its own type, its message, and the worker-side frames."""
    marker = "marker-7f3a"
    future = executor.submit(partial(raise_contract_error, marker), key="failing-000001-00000")
    exc = future.exception(timeout=TIMEOUT)
    assert type(exc) is ContractError, f"{executor.name}: expected ContractError, got {type(exc).__qualname__}: {exc}"
    assert marker in str(exc)
    text = "".join(traceback.format_exception(exc))
    assert "raise_contract_error" in text, f"{executor.name}: the worker's frames are missing:\n{text}"


def check_submit_after_shutdown_raises(executor: Executor) -> None:
    """Consuming. ``submit`` after ``shutdown`` raises ``ExecutorStateError``; shutdown is idempotent."""
    assert executor.submit(partial(square, 3), key="before-000000-00000").result(timeout=TIMEOUT) == 9
    executor.shutdown()
    executor.shutdown()
    try:
        executor.submit(partial(square, 4), key="after-000000-00000")
    except ExecutorStateError:
        return
    raise AssertionError(f"{executor.name}: submit after shutdown did not raise ExecutorStateError")


def check_many_tasks(executor: Executor, n: int = 200) -> None:
    """``n`` submits in a row: every future completes, each with its own task's result."""
    futures = [executor.submit(partial(square, i), key=f"square-{i:06d}-00000") for i in range(n)]
    _, not_done = wait(futures, timeout=TIMEOUT)
    assert not not_done, f"{executor.name}: {len(not_done)} of {n} tasks did not finish in {TIMEOUT} s"
    assert [f.result() for f in futures] == [i * i for i in range(n)]


def check_coroutine_task(executor: Executor) -> None:
    """A callable that returns a coroutine gives the coroutine's awaited result."""
    # the callable returns a coroutine; the backend hands back what the coroutine returns
    futures: list[Future[Any]] = [
        executor.submit(partial(async_add, i, 1), key=f"async_add-{i:06d}-00000") for i in range(4)
    ]
    assert [f.result(timeout=TIMEOUT) for f in futures] == [i + 1 for i in range(4)]


def check_worker_crash_becomes_worker_lost(executor: Executor) -> None:
    """Out-of-process backends: a worker that dies mid-task gives ``WorkerLostError``, and
    the executor keeps running the next tasks."""
    assert not executor.capabilities.in_process, f"{executor.name} runs tasks in this process"
    future = executor.submit(partial(exit_worker, 1), key="crash-000000-00000")
    exc = future.exception(timeout=TIMEOUT)
    assert isinstance(exc, WorkerLostError), f"{executor.name}: expected WorkerLostError, got {exc!r}"
    assert exc.cause.startswith("worker"), exc.cause
    after = [executor.submit(partial(square, i), key=f"after_crash-{i:06d}-00000") for i in range(4)]
    assert [f.result(timeout=TIMEOUT) for f in after] == [0, 1, 4, 9]


def check_cancel_is_honest(executor: Executor, seconds: float = 0.5) -> None:
    """``cancel()`` on the last of a queue of tasks and on the first (usually running by then):
    True only if the future is then cancelled and done; a future that refuses completes normally.

    (Like the stdlib pools, a backend may leave a cancelled future "done" but not yet notified,
    so ``concurrent.futures.wait`` does not see it; the joblib, Dask and Ray backends notify.)"""
    workers = executor.capabilities.max_workers
    blockers = [
        executor.submit(partial(sleep_then_return, seconds, i), key=f"blocker-{i:06d}-00000")
        for i in range(2 * workers)
    ]
    queued = executor.submit(partial(square, 5), key="queued-000000-00000")
    for future, expected in ((queued, 25), (blockers[0], 0)):
        if future.cancel():
            assert future.cancelled() and future.done(), f"{executor.name}: cancel() said True, yet {future!r}"
        else:
            assert future.result(timeout=TIMEOUT) == expected
    for i, future in enumerate(blockers[1:], 1):
        assert future.cancelled() or future.result(timeout=TIMEOUT) == i


def check_shutdown_cancel_pending(executor: Executor, seconds: float = 0.5) -> None:
    """Consuming. ``shutdown(cancel_pending=True)`` cancels queued tasks instead of running them:
    it returns well before the queue could have drained, and leaves every future done, each
    cancelled, finished, or failed with ``WorkerLostError`` (a running task that was killed)."""
    workers = executor.capabilities.max_workers
    n = 4 * workers + 8
    futures: list[Future[Any]] = []
    for i in range(n):
        futures.append(executor.submit(partial(sleep_then_return, seconds, i), key=f"sleepy-{i:06d}-00000"))
        if i == 0 and futures[0].done():  # runs at submit time (inline): nothing is ever pending
            executor.shutdown(wait=True, cancel_pending=True)
            return
    started = time.perf_counter()
    executor.shutdown(wait=True, cancel_pending=True)
    elapsed = time.perf_counter() - started
    assert all(f.done() for f in futures), f"{executor.name}: futures left pending after shutdown(wait=True)"
    cancelled = sum(f.cancelled() for f in futures)
    assert cancelled, f"{executor.name}: nothing was cancelled"
    for i, f in enumerate(futures):
        if not f.cancelled() and f.exception() is not None:
            assert isinstance(f.exception(), WorkerLostError), f"{executor.name}: task {i}: {f.exception()!r}"
        elif not f.cancelled():
            assert f.result() == i
    drain = n * seconds / workers
    assert elapsed < drain - seconds, f"{executor.name}: shutdown took {elapsed:.1f} s; the queue needs {drain:.1f} s"


def check_has_the_whole_interface(executor: Executor) -> None:
    """Every member of ``Executor`` is there (callers never probe with ``hasattr``), and
    ``run_on_every_worker`` gives each worker's result."""
    assert isinstance(executor, Executor), f"{executor.name}: not an Executor"
    results = executor.run_on_every_worker(partial(echo, 7), timeout=TIMEOUT)
    assert results and set(results.values()) == {7}, f"{executor.name}: run_on_every_worker gave {results!r}"
    assert isinstance(executor.keep_cluster, bool)


def check_kill_workers_as_declared(executor: Executor, seconds: float = 60.0) -> None:
    """``kill_workers()`` ends a running task with ``WorkerLostError`` where the capabilities say
    ``kills_workers``, and raises ``ExecutorStateError`` (killing nothing) where they do not."""
    if not executor.capabilities.kills_workers:
        try:
            executor.kill_workers()
        except ExecutorStateError:
            return
        raise AssertionError(f"{executor.name}: kill_workers() without kills_workers did not raise")
    started = executor.submit(partial(sleep_then_return, 0, "up"), key="warm-000000-00000")
    assert started.result(timeout=TIMEOUT) == "up"
    stuck = executor.submit(partial(sleep_then_return, seconds, "late"), key="stuck-000000-00000")
    executor.kill_workers()  # running or queued, the task is lost with the pool's workers
    exc = stuck.exception(timeout=TIMEOUT)
    assert isinstance(exc, WorkerLostError), f"{executor.name}: expected WorkerLostError, got {exc!r}"


CHECKS: tuple[Callable[..., None], ...] = (
    check_has_the_whole_interface,
    check_kill_workers_as_declared,
    check_result_round_trips,
    check_exception_keeps_remote_traceback,
    check_submit_after_shutdown_raises,
    check_many_tasks,
    check_coroutine_task,
    check_worker_crash_becomes_worker_lost,
    check_cancel_is_honest,
    check_shutdown_cancel_pending,
)
