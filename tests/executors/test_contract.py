"""The ``executors.testing`` contract, run against every registered backend.

The backend list comes from the registry, so a new backend is tested the day it is registered.
Dask runs on the session's shared local cluster (through ``address=``, so each test's
``shutdown`` closes only its client); Ray on the session's shared Ray (inside a network
namespace only, see ``conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import wait
from functools import partial
from typing import Any

import pytest

import executors
import executors.testing as contract

CLUSTER = {"dask", "ray"}
OPTIONAL_DEPS = {"dask": "distributed", "ray": "ray", "joblib": "joblib"}


def _param(name: str) -> Any:
    marks = [pytest.mark.cluster] if name in CLUSTER else []
    if name == "ray":
        marks.append(pytest.mark.ray)
    return pytest.param(name, marks=marks, id=name)


BACKENDS = [_param(name) for name in executors.names()]


@pytest.fixture(params=BACKENDS)
def executor(request: pytest.FixtureRequest) -> Iterator[executors.Executor]:
    name = request.param
    if dep := OPTIONAL_DEPS.get(name):
        pytest.importorskip(dep)
    options: dict[str, Any] = {"max_workers": 2}
    if name == "dask":
        options["address"] = request.getfixturevalue("dask_cluster").scheduler_address
    elif name == "ray":
        request.getfixturevalue("ray_session")
    with executors.get_executor(name, **options) as ex:
        yield ex


def test_has_the_whole_interface(executor: executors.Executor) -> None:
    contract.check_has_the_whole_interface(executor)


def test_kill_workers_as_declared(executor: executors.Executor) -> None:
    contract.check_kill_workers_as_declared(executor)


def test_result_round_trips(executor: executors.Executor) -> None:
    contract.check_result_round_trips(executor)


def test_exception_keeps_remote_traceback(executor: executors.Executor) -> None:
    contract.check_exception_keeps_remote_traceback(executor)


def test_submit_after_shutdown_raises(executor: executors.Executor) -> None:
    contract.check_submit_after_shutdown_raises(executor)


def test_many_tasks(executor: executors.Executor) -> None:
    contract.check_many_tasks(executor)


def test_coroutine_task(executor: executors.Executor) -> None:
    contract.check_coroutine_task(executor)


def test_worker_crash_becomes_worker_lost(executor: executors.Executor) -> None:
    if executor.capabilities.in_process:
        pytest.skip(f"{executor.name} runs tasks in this process: a crash would end the test run")
    contract.check_worker_crash_becomes_worker_lost(executor)


def test_cancel_is_honest(executor: executors.Executor) -> None:
    contract.check_cancel_is_honest(executor)


def test_shutdown_cancel_pending(executor: executors.Executor) -> None:
    contract.check_shutdown_cancel_pending(executor)


NOTIFY_AT_ONCE = {"processes", "joblib", "dask", "ray"}  # the stdlib thread pool notifies cancelled futures late


def test_cancelled_futures_wake_wait(executor: executors.Executor) -> None:
    """Beyond the contract: ``concurrent.futures.wait`` sees every future once shutdown returns."""
    if executor.name not in NOTIFY_AT_ONCE:
        pytest.skip(f"{executor.name} keeps the stdlib's late notification of cancelled futures")
    futures = [
        executor.submit(partial(contract.sleep_then_return, 0.5, i), key=f"sleepy-{i:06d}-00000") for i in range(12)
    ]
    assert not futures[-1].cancel() or futures[-1].cancelled()
    executor.shutdown(wait=True, cancel_pending=True)
    _, not_done = wait(futures, timeout=5)
    assert not not_done


def test_every_check_is_run() -> None:
    """A check added to ``executors.testing.CHECKS`` needs a test here."""
    tests = {name for name in globals() if name.startswith("test_")}
    assert {check.__name__.replace("check_", "test_", 1) for check in contract.CHECKS} <= tests
