"""Shared by the failure tests: helpers, and a misbehaving HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
from aiohttp import web

from pipelines._engine.idset import IdSet
from pipelines.store import Store
from pipelines.store.outputs import read_stage
from stages.serve import serve_app
from tests.conftest import ROOT, TEST_DAGS, cli
from tests.helpers import alive_not_zombie

DATA = ROOT / "data"


# == helpers ===================================================================================


def dags(
    *args: str, store: Path, env: dict[str, str] | None = None, check: int | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m pipelines ARGS --dags tests/dags --store STORE --quiet``."""
    return cli(*args, "--dags", str(TEST_DAGS), "--store", str(store), "--quiet", env=env, check=check, timeout=timeout)


_started: list[subprocess.Popen[str]] = []


def start(*args: str, store: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """The same, without waiting: in its own session, so a test can signal or kill it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", *args, "--dags", str(TEST_DAGS), "--store", str(store), "--quiet"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _started.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_run_left_behind() -> Iterator[None]:
    """A test that fails half-way must not leave its run (and a 60 s sleep) running."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def errors(store: Path, run_id: str, stage: str | None = None) -> list:
    with Store(store) as s:
        return s.ledger.open_errors(run_id, stage)


def done_positions(store: Path, stage: str, batch_size: int) -> set[int]:
    """Items of ``stage`` the ledger holds as done, as source positions (fixed source batches)."""
    with Store(store) as s:
        rows = s.ledger.query(
            "SELECT o.batch, p.done FROM parts p JOIN objects o ON o.key = p.key WHERE o.stage=?", (stage,)
        )
    return {row["batch"] * batch_size + i for row in rows for i in IdSet.from_json(row["done"])}


def stage_table(store: Path, run_id: str, stage: str) -> pa.Table:
    with Store(store) as s:
        return read_stage(s, run_id, stage)


def outcome_line(output: str) -> str:
    """The one-line hint a failed or partial run ends with."""
    found = [ln for ln in output.splitlines() if "python -m pipelines resume" in ln]
    assert found, output
    return found[-1]


def wait_until(predicate, proc: subprocess.Popen[str] | None = None) -> None:
    """Wait until ``predicate()`` holds; fail if ``proc`` ends first (pytest-timeout bounds a hang)."""
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended first:\n{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> str:
    """``proc``'s output once it has ended; a run that never ends fails on pytest-timeout."""
    out, _ = proc.communicate()
    return out


# == a misbehaving HTTP server on 127.0.0.1 ===================================================


@dataclass
class Server:
    """What the server has seen; ``url(path, host=)`` builds URLs to it."""

    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    requests: list[tuple[str, str, float]] = field(default_factory=list)  # (key, Host header, time)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"


def _app(server: Server) -> web.Application:
    routes = web.RouteTableDef()

    def seen(key: str) -> int:
        server.hits[key] += 1
        server.times[key].append(time.monotonic())
        return server.hits[key]

    @routes.get("/flaky/{key}/{n}")
    async def flaky(request: web.Request) -> web.Response:
        """500 for the first ``n`` requests of ``key``, then 200."""
        count = seen(request.match_info["key"])
        if count <= int(request.match_info["n"]):
            return web.Response(status=500, text="try again")
        return web.Response(text=f"ok after {count}")

    @routes.get("/busy/{key}")
    async def busy(request: web.Request) -> web.Response:
        """429 with ``Retry-After: 1`` on the first request of ``key``, then 200."""
        if seen(request.match_info["key"]) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        return web.Response(text="served")

    @routes.get("/status/{code}/{key}")
    async def status(request: web.Request) -> web.Response:
        seen(request.match_info["key"])
        return web.Response(status=int(request.match_info["code"]))

    @routes.get("/hit/{key}")
    async def hit(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        seen(key)
        server.requests.append((key, request.host.rsplit(":", 1)[0], time.monotonic()))
        return web.Response(text=key)

    app = web.Application()
    app.add_routes(routes)
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    state = Server()
    with serve_app(_app(state)) as url:
        state.port = int(url.rstrip("/").rsplit(":", 1)[1])
        yield state


def key(request: pytest.FixtureRequest) -> str:
    return hashlib.blake2b(request.node.nodeid.encode(), digest_size=6).hexdigest()


def marked(log: Path) -> list[psutil.Process]:
    """Processes (but this one) whose environment carries FAULT_LOG=log: a run and all it started."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("FAULT_LOG") == str(log) and alive_not_zombie(proc.pid):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_and_count_leftovers(proc: subprocess.Popen[str], log: Path) -> int:
    """SIGKILL a driver; return how many of its processes are still alive a minute later (and kill them)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60  # they go within a second or two; the margin is for a loaded machine
    while (left := marked(log)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    return len(left)
