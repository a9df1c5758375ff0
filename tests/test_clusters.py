"""The engine end to end on real clusters: every executor gives the same tables, a run resumes on
another backend, the Dask dashboard shows the stages, and cluster mistakes fail at start.

Everything listens on 127.0.0.1. Ray binds to every interface, so its tests run only inside a
network namespace with nothing but loopback (elsewhere they skip)::

    .venv/bin/python tests/loopback_only.py .venv/bin/python -m pytest tests/test_clusters.py

Clusters are shared: one ``dask scheduler`` + ``dask worker`` per module (``dask_cli``), one Ray
per session (``ray_session``, tests/conftest.py) and one ``ray start --head`` per module
(``ray_head``). Runs with ``executor="dask"`` start (and close) a LocalCluster of their own.

Environment variables reach only the workers a run starts itself (a LocalCluster, a process
pool), which inherit the driver's environment. Workers that were already running never see
the driver's: the CLI cluster's workers get theirs when they start (``COUNTED_FAIL``,
``LIMITED_LOG``), and ingest, whose lifespan serves ``data/`` and passes the URL in an
environment variable, is given ``base_url`` (a server of this module) on such workers.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pytest

import executors
import pipelines
from pipelines import Pipeline, RunStatus, UsageError
from pipelines.define import loader
from pipelines.store import Store
from pipelines.store.outputs import read_stage
from stages.serve import serve_directory

from .conftest import ROOT, TEST_DAGS, cli
from .executors.helpers import (
    RAY_ENV,
    DaskWorkers,
    dask_cli_cluster,
    free_port,
    ray_head_node,
    skip_unless_only_loopback,
)
from .helpers import done_in_ledger

pytest.importorskip("distributed")

pytestmark = pytest.mark.cluster

INGEST = {"scale": 3}
COUNTED = {"n": 5000}
CLI_CLUSTER_FAILS = 6000  # counted's item that the CLI cluster's workers fail (COUNTED_FAIL in their environment)
LOCAL_DASHBOARD = {"dashboard_address": "127.0.0.1:0"}  # LocalClusters of runs: never the fixed 8787 in tests


# -- helpers ---------------------------------------------------------------------------------------
def tables_of(result: pipelines.RunResult) -> dict[str, pa.Table]:
    assert result.status is RunStatus.OK, result.error
    return {stage: result.table(stage) for stage in result.stages}


def assert_same_tables(got: dict[str, pa.Table], expected: dict[str, pa.Table], where: str) -> None:
    assert set(got) == set(expected)
    for stage, table in expected.items():
        assert table.num_rows > 0, stage
        assert got[stage].equals(table), f"stage {stage!r} differs on {where}"


def latest_run_tables(store: Path) -> tuple[dict[str, pa.Table], dict[str, str]]:
    """The latest run's tables per stage, and the executor each stage ran on (from the ledger)."""
    with Store(store) as s:
        run = s.ledger.latest_run()
        assert run is not None and run["status"] == "ok", dict(run or {})
        backends = {name: row["executor"] for name, row in s.ledger.stages(run["id"]).items()}
        return {name: read_stage(s, run["id"], name) for name in backends}, backends


def counted_total(n: int) -> dict[str, int]:
    return {"rows": n, "sum": sum(x * x + 1 for x in range(n))}


def get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return response.read().decode()


def listening(url: str) -> bool:
    host, port = re.match(r"\w+://([\d.]+):(\d+)", url).groups()  # type: ignore[union-attr]
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def hide_folder(folder: Path) -> tuple[str, ...]:
    """A command prefix that runs its command in a private mount namespace where ``folder`` is
    an empty tmpfs: a worker that sees neither the store nor anything written to it."""
    return ("unshare", "-m", "sh", "-c", f'mount -t tmpfs tmpfs {shlex.quote(str(folder))} && exec "$@"', "sh")


def skip_unless_folders_can_be_hidden(folder: Path) -> None:
    probe = subprocess.run([*hide_folder(folder), "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot make a private mount namespace here (unshare -m): {probe.stderr.strip()}")


# -- shared pipelines, expectations and clusters ------------------------------------------------------
@pytest.fixture(scope="module")
def ingest() -> Pipeline:
    return loader.load("ingest", ROOT / "dags")


@pytest.fixture(scope="module")
def counted() -> Pipeline:
    return loader.load("counted", TEST_DAGS)


@pytest.fixture(scope="module")
def expected(ingest: Pipeline, counted: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every stage's table of each pipeline, from a run on the default executors (by stage kind)."""
    store = tmp_path_factory.mktemp("expected")
    return {
        "ingest": tables_of(pipelines.run(ingest, INGEST, store=store)),
        "counted": tables_of(pipelines.run(counted, COUNTED, store=store)),
    }


@pytest.fixture(scope="module")
def data_url() -> Iterator[str]:
    """The bundled data/ served by this process, for ingest on workers that pre-exist the run."""
    with serve_directory(ROOT / "data") as url:
        yield url


@dataclass(frozen=True)
class CliCluster:
    address: str
    limited_log: Path  # where its workers log tests/dags/limited.py's items (LIMITED_LOG)


@pytest.fixture(scope="module")
def dask_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    """``dask scheduler`` + ``dask worker --nworkers 2 --nthreads 4``, its workers' own environment
    saying which counted item fails and where limited.py logs."""
    folder = tmp_path_factory.mktemp("dask-cli")
    env = {"COUNTED_FAIL": str(CLI_CLUSTER_FAILS), "LIMITED_LOG": str(folder / "limited.log")}
    with dask_cli_cluster(folder, DaskWorkers(nworkers=2, nthreads=4, env=env)) as address:
        yield CliCluster(address, folder / "limited.log")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``ray start --head --block --port=0`` node (namespace only); yields its ``ip:port``."""
    with ray_head_node(tmp_path_factory.mktemp("ray-head"), num_cpus=2) as address:
        yield address


# -- the same tables everywhere ----------------------------------------------------------------------
MARKS = {"dask": [pytest.mark.slow], "ray": [pytest.mark.ray, pytest.mark.slow]}  # a cluster start, a ray.init
TARGETS = [
    *(pytest.param(name, marks=MARKS.get(name, [])) for name in executors.names()),
    pytest.param("dask --address", marks=MARKS["dask"], id="dask-address"),
    pytest.param("ray --address", marks=MARKS["ray"], id="ray-address"),
]


def test_every_registered_executor_is_covered() -> None:
    assert executors.names() == ["asyncio", "dask", "inline", "joblib", "processes", "ray", "threads"]


@pytest.mark.parametrize("name", ["ingest", "counted"])
@pytest.mark.parametrize("target", TARGETS)
def test_every_executor_gives_the_same_tables(
    name: str, target: str, request: pytest.FixtureRequest, expected: dict[str, Any], data_url: str, tmp_path: Path
) -> None:
    backend, _, how = target.partition(" ")
    if backend == "ray":
        skip_unless_only_loopback()
    if not executors.available(backend):
        pytest.skip(f"{backend} is not installed")
    params: dict[str, Any] = dict(INGEST if name == "ingest" else COUNTED)
    workers_pre_exist = how == "--address" or backend == "ray"  # the session's Ray, or a cluster at an address
    if name == "ingest" and workers_pre_exist:
        params["base_url"] = data_url  # the lifespan's URL is in the driver's environment only

    if target == "ray --address":
        dags = ROOT / "dags" if name == "ingest" else TEST_DAGS
        args = [f"--param={k}={v}" for k, v in params.items()]
        cli(
            "run",
            name,
            "--dags",
            str(dags),
            "--store",
            str(tmp_path),
            "--executor",
            "ray",
            "--address",
            request.getfixturevalue("ray_head"),
            "--quiet",
            *args,
            env=RAY_ENV,
            timeout=240,
            check=0,
        )
        got, backends = latest_run_tables(tmp_path)
    else:
        options: dict[str, Any] = dict(LOCAL_DASHBOARD)
        if backend == "ray":
            request.getfixturevalue("ray_session")
        if how == "--address":
            options["address"] = request.getfixturevalue("dask_cli").address
        result = pipelines.run(request.getfixturevalue(name), params, store=tmp_path, executor=backend, **options)
        got = tables_of(result)
        backends = {stage: summary.backend for stage, summary in result.stages.items()}
        assert all(s.computed_batches and not s.reused_items for s in result.stages.values()), result.stages
    sources = {"ingest": "catalog", "counted": "numbers"}[name]
    assert backends == {stage: "driver" if stage == sources else backend for stage in backends}
    want = expected[name]
    if name == "ingest" and "base_url" in params:
        # the catalog's `local` digest names the driver's own data folder, and is None by design
        # when the data comes from base_url: compare the rest
        # (the catalog source's and the fetched catalog's)
        def without_local(tables: dict[str, Any]) -> dict[str, Any]:
            return {
                stage: table.drop_columns(["local"]) if "local" in table.column_names else table
                for stage, table in tables.items()
            }

        got, want = without_local(got), without_local(want)
    assert_same_tables(got, want, target)


# -- resume on another backend ------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["dask", pytest.param("ray", marks=[pytest.mark.ray])])
def test_a_run_failed_on_threads_resumes_on(
    target: str,
    counted: Pipeline,
    expected: dict[str, Any],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if target == "ray":
        request.getfixturevalue("ray_session")
    monkeypatch.setenv("COUNTED_FAIL", "700")
    first = pipelines.run(counted, COUNTED, store=tmp_path, executor="threads")
    assert first.status is RunStatus.FAILED and "item 700 is broken" in str(first.error)
    done = done_in_ledger(tmp_path)
    assert 0 < done["square"] < COUNTED["n"]

    monkeypatch.delenv("COUNTED_FAIL")  # the cause is fixed; the LocalCluster of the resume inherits this
    resumed = pipelines.resume(first.run_id, store=tmp_path, executor=target, **LOCAL_DASHBOARD)
    assert resumed.status is RunStatus.OK, resumed.error
    assert {s.backend for n, s in resumed.stages.items() if n != "numbers"} == {target}
    assert resumed.stages["square"].reused_items == done["square"]  # finished items are not redone
    assert resumed.stages["square"].items == COUNTED["n"]
    assert_same_tables(tables_of(resumed), expected["counted"], f"threads, resumed on {target}")


@pytest.mark.slow
def test_a_run_failed_on_a_cli_dask_cluster_resumes_on_threads(
    dask_cli: CliCluster, counted: Pipeline, tmp_path: Path
) -> None:
    """The cluster's workers fail item 6000 by their own environment; the driver's is clean."""
    n = CLI_CLUSTER_FAILS + 1000
    first = pipelines.run(counted, {"n": n}, store=tmp_path, executor="dask", address=dask_cli.address)
    assert first.status is RunStatus.FAILED and f"item {CLI_CLUSTER_FAILS} is broken" in str(first.error)
    done = done_in_ledger(tmp_path)
    resumed = pipelines.resume(first.run_id, store=tmp_path, executor="threads")
    assert resumed.status is RunStatus.OK, resumed.error
    assert resumed.stages["square"].reused_items == done["square"] > 0
    assert resumed.table("total").to_pylist() == [counted_total(n)]
    assert resumed.table("plus_one").column("plus_one").to_pylist() == [x * x + 1 for x in range(n)]


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_failed_on_a_cli_dask_cluster_resumes_on_ray(dask_cli: CliCluster, tmp_path: Path) -> None:
    """In subprocesses: this process's Ray (``ray_session``) would hide the bug by being joined."""
    skip_unless_only_loopback()
    n = CLI_CLUSTER_FAILS + 1000
    cli(
        "run",
        "counted",
        "--dags",
        str(TEST_DAGS),
        "--store",
        str(tmp_path),
        "--executor",
        "dask",
        "--address",
        dask_cli.address,
        "--param",
        f"n={n}",
        "--quiet",
        check=1,
    )
    resumed = cli(
        "resume", "latest", "--store", str(tmp_path), "--executor", "ray", "--quiet", env=RAY_ENV, timeout=240
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    tables, backends = latest_run_tables(tmp_path)
    assert tables["total"].to_pylist() == [counted_total(n)]
    assert set(backends.values()) == {"driver", "ray"}


# -- the dashboard -------------------------------------------------------------------------------------
class DashboardWatcher(pipelines.RunObserver):
    """Polls the dashboard of every executor that has one, from the moment it starts until the
    run ends: ``/health`` answers, and the stages seen as ``task_prefix_name`` in ``/metrics``."""

    def __init__(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.parse = text_string_to_metric_families
        self.links: list[str] = []
        self.health: set[str] = set()
        self.prefixes: set[str] = set()
        self.polls = 0
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def executor_started(self, slot: str, executor: Any) -> None:
        link = getattr(executor, "dashboard_link", None)
        if link:
            self.links.append(link)
            thread = threading.Thread(target=self._poll, args=(link.rsplit("/", 1)[0],), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _poll(self, base: str) -> None:
        while not self._stop.is_set():
            try:
                self.health.add(get(base + "/health"))
                for family in self.parse(get(base + "/metrics")):
                    self.prefixes |= {
                        s.labels["task_prefix_name"] for s in family.samples if "task_prefix_name" in s.labels
                    }
            except OSError:
                return  # the run closed its cluster
            self.polls += 1
            time.sleep(0.1)

    def run_finished(self, result: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()  # a poll ends within get()'s timeout once the cluster is gone


@pytest.mark.slow
def test_the_dask_dashboard_shows_every_stage_while_the_run_goes(tmp_path: Path) -> None:
    pytest.importorskip("bokeh")
    pytest.importorskip("prometheus_client")
    watcher = DashboardWatcher()
    pipeline = loader.load("slowed", TEST_DAGS)
    result = pipelines.run(pipeline, store=tmp_path, executor="dask", observers=[watcher], **LOCAL_DASHBOARD)
    assert result.status is RunStatus.OK, result.error
    (link,) = watcher.links
    assert link.startswith("http://127.0.0.1:") and link.endswith("/status")
    assert watcher.health == {"ok"} and watcher.polls >= 5
    stages = {"warm_up", "cool_down", "tally"}
    assert stages == {n for n in result.stages if n != "numbers"}
    assert stages <= watcher.prefixes, watcher.prefixes
    assert not listening(link)  # the run closed the cluster it started


# -- async concurrency per worker process -------------------------------------------------------------
def peak_in_flight(log: Path) -> dict[int, int]:
    """The most items in flight at once in each process, from ``start|end PID TIME`` lines."""
    events = sorted(
        (float(t), event == "start", int(pid))
        for event, pid, t in (line.split() for line in log.read_text().splitlines())
    )
    current: Counter[int] = Counter()
    peak: Counter[int] = Counter()
    for _, started, pid in events:  # at equal times an end sorts before a start
        current[pid] += 1 if started else -1
        peak[pid] = max(peak[pid], current[pid])
    return dict(peak)


def run_limited(tmp_path: Path, **options: Any) -> pipelines.RunResult:
    result = pipelines.run(
        loader.load("limited", TEST_DAGS), {"n": 240}, store=tmp_path / "store", executor="dask", **options
    )
    assert result.status is RunStatus.OK, result.error
    return result


@pytest.mark.slow
def test_async_concurrency_holds_per_worker_process_on_dask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "limited.log"
    monkeypatch.setenv("LIMITED_LOG", str(log))  # the LocalCluster the run starts inherits it
    run_limited(tmp_path, **LOCAL_DASHBOARD)
    assert log.read_text().count("start") == 240
    peaks = peak_in_flight(log)
    assert peaks and os.getpid() not in peaks  # the items ran on the workers
    assert max(peaks.values()) <= 3, peaks


@pytest.mark.slow
def test_async_stages_use_their_concurrency_on_dask_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "limited.log"
    monkeypatch.setenv("LIMITED_LOG", str(log))
    run_limited(tmp_path, **LOCAL_DASHBOARD)
    peaks = peak_in_flight(log)
    assert max(peaks.values()) >= 2, peaks  # items of a worker overlap, up to concurrency=3


@pytest.mark.slow
def test_async_concurrency_holds_per_worker_process_on_threaded_dask_workers(
    dask_cli: CliCluster, tmp_path: Path
) -> None:
    dask_cli.limited_log.unlink(missing_ok=True)
    run_limited(tmp_path, address=dask_cli.address)
    peaks = peak_in_flight(dask_cli.limited_log)
    assert peaks and os.getpid() not in peaks
    assert max(peaks.values()) <= 3, peaks


# -- mistakes fail at start ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, template",
    [
        ("dask", "tcp://127.0.0.1:{port}"),
        pytest.param("ray", "127.0.0.1:{port}", marks=pytest.mark.ray),
        pytest.param("ray", "ray://127.0.0.1:{port}", marks=[pytest.mark.ray]),
    ],
    ids=["dask", "ray", "ray-client"],
)
def test_an_address_where_nothing_listens_is_a_short_usage_error(backend: str, template: str, tmp_path: Path) -> None:
    if backend == "ray":
        skip_unless_only_loopback()
    address = template.format(port=free_port())
    proc = cli(
        "run",
        "counted",
        "--dags",
        str(TEST_DAGS),
        "--store",
        str(tmp_path),
        "--executor",
        backend,
        "--address",
        address,
        env=RAY_ENV,
    )  # waiting forever would end on pytest-timeout
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert address in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    with Store(tmp_path) as store:
        assert store.ledger.latest_run() is None  # nothing was recorded


def test_an_address_no_stage_can_use_is_not_silently_ignored(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = cli(
        "run",
        "counted",
        "--dags",
        str(TEST_DAGS),
        "--store",
        str(tmp_path),
        "--address",
        address,
        "--param",
        "n=10",
        "--quiet",
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    why = f"--address {address} is for a Dask or Ray cluster, but no stage runs on one: add --executor dask (or ray)"
    assert why in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(UsageError, match=re.escape(why)):
        pipelines.run(loader.load("counted", TEST_DAGS), {"n": 10}, store=tmp_path, address=address)
    with Store(tmp_path) as store:
        assert store.ledger.latest_run() is None  # refused before anything was recorded


@pytest.mark.slow
def test_a_store_the_workers_cannot_reach_fails_at_start(counted: Pipeline, tmp_path: Path) -> None:
    """The worker runs where the store's folder is an empty tmpfs of its own (a mount namespace)."""
    store = tmp_path / "store"
    store.mkdir()
    skip_unless_folders_can_be_hidden(store)
    with (
        dask_cli_cluster(tmp_path, DaskWorkers(nworkers=1, wrap=hide_folder(store))) as address,
        pytest.raises(UsageError) as info,
    ):
        pipelines.run(counted, COUNTED, store=store, executor="dask", address=address)
    message = str(info.value)
    assert f"store {store} is not reachable from the dask workers" in message, message
    with Store(store) as s:
        assert s.ledger.latest_run() is None
        assert not s.ledger.query("SELECT * FROM parts")  # no stage computed anything


@pytest.mark.slow
def test_every_worker_must_reach_the_store(counted: Pipeline, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    skip_unless_folders_can_be_hidden(store)
    with dask_cli_cluster(
        tmp_path, DaskWorkers(nworkers=1), DaskWorkers(nworkers=1, wrap=hide_folder(store))
    ) as address:
        for _ in range(10):  # each run's probe lands on either worker; every run must refuse to start
            with pytest.raises(UsageError, match="is not reachable from the dask workers"):
                pipelines.run(counted, {"n": 2000}, store=store, executor="dask", address=address, fresh=True)


def test_the_store_probe_leaves_no_file_behind(dask_cli: CliCluster, counted: Pipeline, tmp_path: Path) -> None:
    result = pipelines.run(counted, {"n": 100}, store=tmp_path, executor="dask", address=dask_cli.address)
    assert result.status is RunStatus.OK, result.error
    assert not list(tmp_path.glob("runs/*/.probe-*"))


# -- --keep-cluster ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "ctrl_c",
    [
        "process",
        pytest.param("group"),
    ],
    ids=["to-the-process", "to-its-process-group"],
)
def test_keep_cluster_keeps_the_dashboard_until_ctrl_c(ctrl_c: str, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "counted",
            "--dags",
            "tests/dags",
            "--executor",
            "dask",
            "--keep-cluster",
            "--store",
            str(tmp_path),
            "--param",
            "n=500",
            "--quiet",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    output: list[str] = []

    def read_until(done: Any) -> None:
        while not done():  # pytest-timeout bounds a hang
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=0.5))

    try:
        read_until(lambda: any("cluster kept up" in line for line in output) or proc.poll() is not None)
        kept = re.search(r"cluster kept up: dashboard (http://\S+)/status, scheduler (tls://\S+) ", output[-1])
        assert kept, "".join(output)
        dashboard, scheduler = kept.groups()
        assert dashboard.startswith("http://127.0.0.1:") and scheduler.startswith("tls://127.0.0.1:")
        assert any("total: 1 row → " in line for line in output), "".join(output)  # the run is over
        assert get(dashboard + "/health") == "ok"  # and its dashboard is still up
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert children  # the cluster's worker processes

        (os.kill if ctrl_c == "process" else os.killpg)(proc.pid, signal.SIGINT)
        proc.wait()
        reader.join(60)  # the output ends when every process that held it has ended
        assert not reader.is_alive(), "a process of the run still holds its output"
        while not lines.empty():
            output.append(lines.get())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    after = "".join(output[next(i for i, line in enumerate(output) if "cluster kept up" in line) + 1 :])
    assert proc.returncode == 0 and not after.strip(), f"exit {proc.returncode}:\n{after}"
    assert not listening(dashboard) and not listening(scheduler)
    deadline = time.monotonic() + 60  # they go within seconds; the margin is for a loaded machine
    while (left := alive(children)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, "worker processes outlived the kept cluster"
