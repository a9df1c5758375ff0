"""The Ray backend against real Ray, inside a network namespace that has only loopback.

Run as::

    unshare -n bash -c 'ip link set lo up; exec .venv/bin/python -m pytest -m ray tests/executors -q'

One Ray per session is shared (``ray_session``); what needs a Ray of its own (a local instance
the executor starts, a head node reached by ``address=``) runs in a subprocess. The head node
is stopped by killing its process group, never with ``ray stop`` (which kills every Ray
process on the machine).
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from executors.errors import ExecutorError
from executors.testing import ContractError, raise_contract_error, square

from .helpers import RAY_ENV, free_port, only_loopback, python, ray_head_node

pytestmark = [pytest.mark.cluster, pytest.mark.ray]

if not only_loopback():
    pytest.skip(
        "Ray binds to every interface: run inside `unshare -n` (see this module's docstring)", allow_module_level=True
    )

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from executors.ray_cluster import RayExecutor, RemoteTraceback  # noqa: E402


def task_name() -> str:
    """The name Ray gave the task this runs in."""
    return ray.get_runtime_context().get_task_name()


@pytest.fixture
def executor(ray_session: object) -> Iterator[RayExecutor]:
    with RayExecutor(max_workers=8) as ex:
        yield ex


def test_joins_the_running_ray_and_leaves_it_running(executor: RayExecutor) -> None:
    assert executor.capabilities.max_workers == 2  # the session's CPUs, not max_workers=8
    assert executor.capabilities.distributed and not executor.capabilities.in_process
    assert executor.submit(partial(square, 12), key="square-000000-00000").result(timeout=60) == 144
    executor.shutdown()
    assert ray.is_initialized()


def test_tasks_are_named_by_key(executor: RayExecutor) -> None:
    assert executor.submit(task_name, key="by_category-000003-00001").result(timeout=60) == "by_category-000003-00001"


def test_task_error_is_the_original_type_with_the_worker_traceback(executor: RayExecutor) -> None:
    exc = executor.submit(partial(raise_contract_error, "m"), key="failing-000001-00000").exception(timeout=60)
    assert type(exc) is ContractError  # not Ray's RayTaskError(ContractError) hybrid
    assert isinstance(exc.__cause__, RemoteTraceback)
    text = str(exc.__cause__)
    assert "ray::failing-000001-00000" in text and "raise_contract_error" in text
    assert "\x1b[" not in text  # Ray's colours are stripped for logs and the ledger


def test_an_address_next_to_the_running_ray_is_refused(ray_session: object) -> None:
    with pytest.raises(ExecutorError, match="already initialised"):
        RayExecutor(address=f"127.0.0.1:{free_port()}").start()


# -- Rays of their own, in subprocesses --------------------------------------------------------------
RUN_ONE = """
import json, time
from functools import partial
from executors.ray_cluster import RayExecutor
from executors.testing import square
started = time.perf_counter()
with RayExecutor(**{options}) as ex:
    ready = time.perf_counter() - started
    result = ex.submit(partial(square, 9), key="square-000000-00000").result(timeout=60)
    first = time.perf_counter() - started
    workers = ex.capabilities.max_workers
print(json.dumps({{"result": result, "workers": workers, "start_s": ready, "first_result_s": first,
                  "closed_s": time.perf_counter() - started}}))
"""


def run_one(**options: object) -> dict[str, object]:
    proc = python(textwrap.dedent(RUN_ONE.format(options=repr(options))), env=RAY_ENV, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ray_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("pipelines-ray-*")}


@pytest.mark.slow
def test_a_local_ray_of_its_own_starts_and_goes_away() -> None:
    before = ray_temp_dirs()
    report = run_one(max_workers=1)
    print(f"RayExecutor local start-up: {report}")
    assert report["result"] == 81 and report["workers"] == 1
    assert ray_temp_dirs() <= before  # its temporary folder was removed


@pytest.fixture
def head_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ray start --head --block`` with its own temp dir; yields its address; killed after."""
    with ray_head_node(tmp_path_factory.mktemp("ray-head"), num_cpus=1) as address:
        yield address


@pytest.mark.slow
def test_address_of_a_head_node(head_node: str) -> None:
    report = run_one(address=head_node)
    print(f"RayExecutor connect: {report}")
    assert report["result"] == 81 and report["workers"] == 1  # the head's one CPU
    assert run_one(address=head_node)["result"] == 81  # the first client's shutdown left the cluster up


def test_unreachable_address_fails_fast_naming_it() -> None:
    address = f"127.0.0.1:{free_port()}"
    code = f"""
from executors.ray_cluster import RayExecutor
from executors.errors import ClusterUnreachableError
try:
    RayExecutor(address={address!r}).start()
except ClusterUnreachableError as exc:
    print("unreachable:", exc)
"""
    proc = python(code, env=RAY_ENV, timeout=240)  # a hang guard, not a measure
    assert proc.returncode == 0, proc.stderr
    assert f"unreachable: cannot reach the Ray cluster at {address}" in proc.stdout
