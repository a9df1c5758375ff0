"""The Dask cluster a run starts runs only the code of those who hold its credentials.

A plain Dask scheduler runs code for anyone who connects, and on one machine that is every
local user. A run's LocalCluster speaks mutual TLS with credentials made for it in a private
folder; ``--keep-cluster`` prints how another run joins (``PIPELINES_DASK_TLS=FOLDER
--address tls://...``), as the README documents, and a ``dask scheduler`` started with
credentials from ``python -m executors.dask_tls`` is joined the same way.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_DAGS, cli
from tests.executors.helpers import DaskWorkers, dask_cli_cluster

distributed = pytest.importorskip("distributed")
from distributed.security import Security  # noqa: E402

from executors import dask_tls  # noqa: E402

pytestmark = pytest.mark.cluster
JOIN = re.compile(r"other runs join with: PIPELINES_DASK_TLS=(\S+) --address (tls://\S+)\)")


def refused(address: str, security: Security | None = None) -> bool:
    """A client connects and runs a task, or is refused."""
    try:
        with distributed.Client(address, timeout=5, security=security, set_as_default=False) as client:
            client.submit(os.getpid).result(timeout=30)
    except Exception:  # a refusal takes many forms: SSL errors, comm closed, type errors
        # The half-built client is garbage now: finalize it here. Left to a later collection, its
        # __del__ (which stops its loop) can run inside the next Client's loop start and deadlock
        # there, where no timeout reaches it (exceptions in __del__ are swallowed).
        gc.collect()
        return True
    return False


def task_prefixes(address: str, security: Security) -> set[str]:
    with distributed.Client(address, timeout=10, security=security, set_as_default=False) as client:
        return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))


class Lines:
    """A child's output lines, read on a thread, waited for by condition (no time limit here)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc, self.seen, self._lines = proc, [], queue.Queue()
        threading.Thread(target=lambda: [self._lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]

    def until(self, done: Callable[[list[str]], bool]) -> None:
        while not done(self.seen):
            assert self.proc.poll() is None or not self._lines.empty(), "".join(self.seen)
            with contextlib.suppress(queue.Empty):
                self.seen.append(self._lines.get(timeout=0.5))


@pytest.mark.slow
@pytest.mark.timeout(900)  # two runs and a cluster: minutes on a loaded machine
def test_a_kept_cluster_refuses_plain_clients_and_admits_a_run_that_joins_as_printed(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "counted",
            "--dags",
            str(TEST_DAGS),
            "--executor",
            "dask",
            "--keep-cluster",
            "--store",
            str(tmp_path / "first"),
            "--param",
            "n=200",
            "--quiet",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "80"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = Lines(proc)
    try:
        lines.until(lambda seen: any(JOIN.search(line) for line in seen))
        folder, address = next(m for m in map(JOIN.search, lines.seen) if m).groups()
        assert address.startswith("tls://127.0.0.1:")
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert {f: stat.S_IMODE(os.stat(Path(folder, f)).st_mode) for f in os.listdir(folder)} == {
            dask_tls.CA: 0o600,
            dask_tls.CERT: 0o600,
            dask_tls.KEY: 0o600,
        }

        assert refused(address)  # a plain client
        assert refused(address, Security.temporary())  # TLS, with credentials of its own
        assert refused(address.replace("tls://", "tcp://"))  # no TLS at all

        joined = cli(
            "run",
            "cli_squares",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(tmp_path / "second"),
            "--executor",
            "dask",
            "--address",
            address,
            "--quiet",
            env={dask_tls.ENV: folder},
            check=0,
        )
        assert "total" in joined.stdout
        assert {"square", "total"} <= task_prefixes(address, dask_tls.load(folder))  # it ran on the kept cluster

        without = cli(
            "run",
            "cli_squares",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(tmp_path / "third"),
            "--executor",
            "dask",
            "--address",
            address,
            "--quiet",
            env={dask_tls.ENV: ""},
            check=2,
        )
        assert dask_tls.ENV in without.stderr and "Traceback" not in without.stderr

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C ends the kept cluster
        assert proc.wait() == 0, "".join(lines.seen)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not Path(folder).exists()  # the credentials go with the cluster


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_dask_scheduler_with_tls_is_joined_with_the_credentials_folder(tmp_path: Path) -> None:
    folder = tmp_path / "dask-tls"
    made = subprocess.run(
        [sys.executable, "-m", "executors.dask_tls", str(folder)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "dask scheduler --host 127.0.0.1 --protocol tls --tls-ca-file" in made.stdout
    with dask_cli_cluster(tmp_path, DaskWorkers(nworkers=1), tls=folder) as address:
        assert address.startswith("tls://127.0.0.1:")
        assert refused(address)
        cli(
            "run",
            "cli_squares",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(tmp_path / "store"),
            "--executor",
            "dask",
            "--address",
            address,
            "--quiet",
            env={dask_tls.ENV: str(folder)},
            check=0,
        )
        assert {"square", "total"} <= task_prefixes(address, dask_tls.load(folder))


def test_credentials_are_private_and_refuse_a_stranger(tmp_path: Path) -> None:
    from executors.dask_cluster import DaskExecutor

    ex = DaskExecutor(max_workers=1, dashboard_address="127.0.0.1:0").start()
    try:
        folder = ex.tls_dir
        assert folder is not None and ex.security is not None
        assert ex.scheduler_address is not None and ex.scheduler_address.startswith("tls://127.0.0.1:")
        assert ex.dashboard_link is not None and ex.dashboard_link.startswith("http://127.0.0.1:")
        assert ex.join_hint == f"{dask_tls.ENV}={folder} --address {ex.scheduler_address}"
        assert refused(ex.scheduler_address) and refused(ex.scheduler_address, Security.temporary())
        assert not refused(ex.scheduler_address, dask_tls.load(folder))
    finally:
        ex.shutdown()
    assert not Path(folder).exists()
