"""The Dask backend against real clusters on 127.0.0.1.

- a ``LocalCluster`` the executor starts itself (dashboard, stage groups, ``/metrics``, shutdown);
- ``keep_cluster``: the cluster outlives ``shutdown()`` until Ctrl-C;
- a ``dask scheduler`` and ``dask worker`` started from the command line, used through ``address=``;
- an address where nothing listens.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from functools import partial

import pytest

from executors.errors import ClusterUnreachableError, WorkerLostError
from executors.testing import echo, exit_worker, sleep_then_return, square

from .helpers import DaskWorkers, dask_cli_cluster, free_port

distributed = pytest.importorskip("distributed")
pytest.importorskip("bokeh")  # the dashboard

from dask.utils import key_split  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from executors.dask_cluster import DaskExecutor  # noqa: E402

pytestmark = pytest.mark.cluster


def get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return response.read().decode()


def base_url(dashboard_link: str) -> str:
    return dashboard_link.rsplit("/", 1)[0]


def listening(address: str) -> bool:
    """Something accepts connections at ``address`` (a closed cluster's port is free again)."""
    host, port = address.split("://")[-1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def joinable(ex: DaskExecutor) -> bool:
    """A client holding the cluster's credentials connects."""
    assert ex.scheduler_address is not None
    with distributed.Client(ex.scheduler_address, timeout=10, security=ex.security, set_as_default=False):
        return True


@pytest.fixture(scope="module")
def local() -> Iterator[DaskExecutor]:
    """An executor with a LocalCluster of its own (two single-threaded workers)."""
    with DaskExecutor(max_workers=2, dashboard_address="127.0.0.1:0") as ex:
        yield ex


# -- a cluster of its own ------------------------------------------------------------------------
def test_local_cluster_listens_on_loopback_with_a_dashboard(local: DaskExecutor) -> None:
    assert local.capabilities.max_workers == 2
    assert local.capabilities.distributed and not local.capabilities.in_process
    assert local.scheduler_address is not None and local.scheduler_address.startswith("tls://127.0.0.1:")
    assert local.dashboard_link is not None and local.dashboard_link.startswith("http://127.0.0.1:")
    assert local.dashboard_link != "http://127.0.0.1:8787/status"  # the dashboard_address asked for a free port
    assert get(base_url(local.dashboard_link) + "/health") == "ok"
    with distributed.Client(local.scheduler_address, security=local.security, set_as_default=False) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    assert len(workers) == 2 and all(addr.startswith("tls://127.0.0.1:") for addr in workers)
    assert all(w["nthreads"] == 1 for w in workers.values())


def test_task_keys_group_by_stage(local: DaskExecutor) -> None:
    """Dask keys keep the caller's key as prefix; ``key_split`` gives the stage, underscores included."""
    futures = [local.submit(partial(sleep_then_return, 0.5, i), key=f"by_category-{i:06d}-00000") for i in range(4)]
    ours: set[str] = set()
    with distributed.Client(local.scheduler_address, security=local.security, set_as_default=False) as client:
        while len(ours) < 4 and not all(f.done() for f in futures):
            keys = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
            ours |= {k for k in keys if k.startswith("by_category-")}
    assert [f.result(timeout=30) for f in futures] == [0, 1, 2, 3]
    assert len(ours) == 4
    assert {key_split(k) for k in ours} == {"by_category"}
    assert all(k.startswith(f"by_category-{i:06d}-00000-") for i, k in enumerate(sorted(ours)))


@pytest.mark.parametrize(
    "key", ["describe-000003-00001", "by_category-000000-00012", "x-000001-00000", "two_words_here-999999-99999"]
)
def test_key_split_of_every_token_is_the_stage(local: DaskExecutor, key: str) -> None:
    """Whatever the random token and counter, the prefix Dask sees is the stage name."""
    stage = key.split("-")[0]
    assert local.submit(partial(echo, key), key=key).result(timeout=30) == key
    with distributed.Client(local.scheduler_address, security=local.security, set_as_default=False) as client:
        prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert stage in prefixes  # the scheduler keeps a prefix after its tasks are forgotten


def test_metrics_show_one_prefix_per_stage(local: DaskExecutor) -> None:
    """While tasks of two stages run, the dashboard's Prometheus page labels them by stage."""
    futures = [
        local.submit(partial(sleep_then_return, 0.2, i), key=f"{stage}-{i:06d}-00000")
        for i in range(6)
        for stage in ("alpha", "beta_gamma")
    ]
    url = base_url(local.dashboard_link or "") + "/metrics"
    seen: set[str] = set()
    while not {"alpha", "beta_gamma"} <= seen:  # the scheduler keeps prefixes: they show up (or pytest-timeout)
        for family in text_string_to_metric_families(get(url)):
            seen |= {s.labels["task_prefix_name"] for s in family.samples if "task_prefix_name" in s.labels}
        time.sleep(0.1)
    assert {"alpha", "beta_gamma"} <= seen, seen
    assert sorted(f.result(timeout=30) for f in futures) == sorted(list(range(6)) * 2)


def exit_noting(path: str) -> None:
    """Note this call in ``path``, then kill the worker process the hard way."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    exit_worker(1)


def test_a_dead_worker_fails_its_task_at_once(local: DaskExecutor, tmp_path) -> None:
    """The executor's own cluster gives up on a task at its first worker death (no 4 deaths)."""
    log = tmp_path / "calls"
    exc = local.submit(partial(exit_noting, str(log)), key="crash-000000-00000").exception()
    assert isinstance(exc, WorkerLostError) and exc.cause.startswith("worker died: tls://127.0.0.1:"), exc
    assert "crash-000000-00000" in exc.cause
    assert len(log.read_text().split()) == 1, "the task ran again after its worker died"
    assert local.submit(partial(square, 3), key="square-000000-00000").result(timeout=60) == 9


def test_shutdown_closes_the_cluster_it_started() -> None:
    ex = DaskExecutor(max_workers=1, dashboard_address="127.0.0.1:0").start()
    address, dashboard = ex.scheduler_address, ex.dashboard_link
    assert address is not None and dashboard is not None
    assert ex.submit(partial(square, 7), key="square-000000-00000").result(timeout=30) == 49
    ex.shutdown()
    assert not listening(address)
    with pytest.raises(OSError):
        get(base_url(dashboard) + "/health", timeout=2)


def test_keep_cluster_outlives_shutdown_until_ctrl_c() -> None:
    ex = DaskExecutor(max_workers=1, dashboard_address="127.0.0.1:0", keep_cluster=True).start()
    address, dashboard = ex.scheduler_address, ex.dashboard_link
    assert address is not None and dashboard is not None
    assert ex.submit(partial(square, 5), key="square-000000-00000").result(timeout=30) == 25
    ex.shutdown()
    assert joinable(ex)  # another run could use it through --address
    assert get(base_url(dashboard) + "/health") == "ok"

    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))  # Ctrl-C, as a person would
    timer.start()
    started = time.monotonic()
    ex.wait_until_interrupted()
    timer.join()
    assert time.monotonic() - started > 0.4  # it waited for the Ctrl-C
    assert not listening(address)


def test_close_from_another_thread_ends_the_wait() -> None:
    ex = DaskExecutor(max_workers=1, dashboard_address="127.0.0.1:0", keep_cluster=True).start()
    address = ex.scheduler_address
    ex.shutdown()
    threading.Timer(0.3, ex.close).start()
    ex.wait_until_interrupted()
    assert address is not None and not listening(address)


def test_wait_returns_at_once_without_a_kept_cluster(local: DaskExecutor) -> None:
    ex = DaskExecutor(address=local.scheduler_address, keep_cluster=True, tls_dir=local.tls_dir).start()
    ex.shutdown()
    ex.wait_until_interrupted()  # waiting for a Ctrl-C that never comes would end on pytest-timeout
    assert joinable(local)  # a cluster it joined is never closed


# -- a cluster from the command line -------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` + ``dask worker --nworkers 2``, all on 127.0.0.1; yields the address."""
    with dask_cli_cluster(tmp_path_factory.mktemp("dask-cli"), DaskWorkers(nworkers=2, nthreads=1)) as address:
        yield address


@pytest.mark.slow
def test_address_of_a_cli_scheduler(cli_cluster: str) -> None:
    with DaskExecutor(address=cli_cluster) as ex:
        assert ex.capabilities.max_workers == 2  # the cluster's threads, not the local CPU count
        assert ex.scheduler_address == cli_cluster
        assert ex.dashboard_link is not None and ex.dashboard_link.startswith("http://127.0.0.1:")
        futures = [ex.submit(partial(square, i), key=f"square-{i:06d}-00000") for i in range(20)]
        assert [f.result(timeout=30) for f in futures] == [i * i for i in range(20)]
    assert listening(cli_cluster)  # shutdown closed the client, not the cluster


@pytest.mark.slow
def test_same_key_from_two_runs_stays_two_tasks(cli_cluster: str) -> None:
    """Two executors (say, two runs) on one cluster submit the same key at once: two tasks."""
    with DaskExecutor(address=cli_cluster) as first, DaskExecutor(address=cli_cluster) as second:
        a = first.submit(partial(sleep_then_return, 0.3, "first"), key="load-000000-00000")
        b = second.submit(partial(sleep_then_return, 0.3, "second"), key="load-000000-00000")
        assert (a.result(timeout=30), b.result(timeout=30)) == ("first", "second")


# -- nothing there ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_unreachable_address_fails_fast_naming_it() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    ex = DaskExecutor(address=address)
    with pytest.raises(ClusterUnreachableError, match=address) as info:
        ex.start()  # retrying forever would end on pytest-timeout
    assert isinstance(info.value, ConnectionError)


@pytest.mark.slow
def test_an_address_where_something_else_listens_fails_fast() -> None:
    """An HTTP server never answers Dask's handshake; distributed alone would wait forever."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"tcp://127.0.0.1:{server.server_port}"
        with pytest.raises(ClusterUnreachableError, match=address):
            DaskExecutor(address=address, connect_timeout=2).start()  # not forever: pytest-timeout
    finally:
        server.shutdown()
        server.server_close()
