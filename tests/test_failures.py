"""Failure handling with real processes, a real HTTP server on 127.0.0.1 and real files.

Error policies, retries and backoff, rate limits, timeouts on every local executor, poison
items that kill their worker, Ctrl-C, bad definitions, hostile data, a full disk, and a
randomized fault-injection run. Test pipelines are ``tests/dags/fault_*.py``; their stages
log what they do to files named by environment variables, so each test can check not only
what the run reports but what really happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from aiohttp import web

import executors
import pipelines
from pipelines import Pipeline, RunStatus, UsageError
from pipelines._engine.idset import IdSet
from pipelines.define import retry
from pipelines.store import Store
from pipelines.store.outputs import read_stage
from stages import files, http
from stages.serve import serve_app

from .conftest import ROOT, TEST_DAGS, cli
from .helpers import alive_not_zombie, run_id_of, wait_gone

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


# == 1. error policies =========================================================================


class TestErrorPolicies:
    N = 40

    @pytest.mark.parametrize("executor", ["threads", "processes"])
    def test_fail_stops_scheduling_and_keeps_what_was_in_flight(
        self, executor: str, store: Path, tmp_path: Path
    ) -> None:
        log = tmp_path / "log"
        env = {"FAULT_LOG": str(log), "FAULT_FAIL": "2", "FAULT_DELAY": "0.4"}
        proc = dags("run", "fault_fail", "--executor", executor, store=store, env=env, check=1)
        run_id = run_id_of(proc.stdout)
        started = {int(e[1]) for e in lines(log) if e[0] == "start"}
        ended = {int(e[1]) for e in lines(log) if e[0] == "end"}
        assert 2 in started and 2 not in ended
        assert len(started) < self.N, "scheduling went on after the failure"
        assert ended == started - {2}, "a task that was running when item 2 failed did not finish"
        assert done_positions(store, "handle", 10) == ended, "finished work was not kept in the ledger"
        with Store(store) as s:
            assert s.ledger.run(run_id)["status"] == "failed"

        # the hint: one line naming stage, item and cause, and the command that resumes
        line = outcome_line(proc.stdout)
        assert "stage 'handle'" in line and "item 2" in line and "RecordError: cannot handle rec-002" in line
        assert line.endswith(f"resume with: python -m pipelines resume {run_id} --store {store}")
        assert "Traceback" not in proc.stdout + proc.stderr

        # fixed: a resume computes exactly what was not done
        before = len(lines(log))
        dags("resume", run_id, store=store, env={"FAULT_LOG": str(log)}, check=0)
        redo = Counter(e[1] for e in lines(log)[before:] if e[0] == "start")
        assert set(map(int, redo)) == set(range(self.N)) - ended and set(redo.values()) == {1}
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": self.N}]

    def test_skip_records_the_failures_and_goes_on(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = dags("run", "fault_skip", store=store, env={"FAULT_LOG": str(log), "FAULT_FAIL": "3,17,31"}, check=0)
        run_id = run_id_of(proc.stdout)
        assert f"fault_skip · {run_id} · partial" in proc.stdout
        line = outcome_line(proc.stdout)
        assert line.startswith("3 of 40 items failed in stage 'handle'"), line
        assert "RecordError: cannot handle rec-003" in line and "item 3" in line, line  # the first failure
        assert line.endswith(f"retry them with: python -m pipelines resume {run_id} --store {store}")
        assert sorted(e.position for e in errors(store, run_id)) == [3, 17, 31]
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": 37}]
        with Store(store) as s:
            assert s.ledger.run(run_id)["status"] == "partial"

        before = len(lines(log))
        resumed = dags("resume", run_id, store=store, env={"FAULT_LOG": str(log)}, check=0)
        assert f"fault_skip · {run_id} · ok" in resumed.stdout
        assert sorted(int(e[1]) for e in lines(log)[before:] if e[0] == "start") == [3, 17, 31]
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": 40}]
        assert errors(store, run_id) == []

    def test_collect_writes_a_dead_letter_table_inspect_shows_it_and_resume_retries(
        self, store: Path, tmp_path: Path
    ) -> None:
        log = tmp_path / "log"
        proc = dags("run", "fault_collect", store=store, env={"FAULT_LOG": str(log), "FAULT_FAIL": "3,23"}, check=0)
        run_id = run_id_of(proc.stdout)
        tries = Counter(int(e[1]) for e in lines(log) if e[0] == "start")
        assert tries[3] == tries[23] == 3 and tries[4] == 1  # retries=2 for an error that says it is retryable

        path = store / "runs" / run_id / "dead_letter" / "handle.arrow"
        table = ipc.open_file(pa.memory_map(str(path))).read_all()
        assert table.column_names == [
            "stage",
            "batch",
            "item",
            "input",
            "error_type",
            "message",
            "traceback",
            "attempts",
        ]
        rows = sorted(table.to_pylist(), key=lambda r: (r["batch"], r["item"]))
        for row, (batch, item) in zip(rows, [(0, 3), (2, 3)], strict=True):
            record = f"rec-{10 * batch + item:03d}"
            assert {k: row[k] for k in ("stage", "batch", "item", "input", "error_type", "message", "attempts")} == {
                "stage": "handle",
                "batch": batch,
                "item": item,
                "input": repr(record),
                "error_type": "RecordError",
                "message": f"cannot handle {record}",
                "attempts": 3,
            }
            assert "Traceback (most recent call last)" in row["traceback"]
            assert "in handle" in row["traceback"] and row["traceback"].rstrip().endswith(
                f"RecordError: cannot handle {record}"
            )
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": 38}]

        shown = cli("inspect", run_id, "handle", "--store", str(store), check=0).stdout
        assert "2 failed items" in shown
        assert "item 3: RecordError: cannot handle rec-003 (attempts: 3)" in shown
        assert "item 23: RecordError: cannot handle rec-023 (attempts: 3)" in shown
        assert "input: 'rec-023'" in shown and "dead-letter table:" in shown

        before = len(lines(log))
        dags("resume", run_id, store=store, env={"FAULT_LOG": str(log)}, check=0)
        assert sorted(int(e[1]) for e in lines(log)[before:] if e[0] == "start") == [3, 23]
        assert ipc.open_file(pa.memory_map(str(path))).read_all().num_rows == 0  # nothing dead any more
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": 40}]

    def test_resume_while_the_cause_remains_retries_only_the_dead_items(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        env = {"FAULT_LOG": str(log), "FAULT_FAIL": "5"}
        run_id = run_id_of(dags("run", "fault_collect", store=store, env=env, check=0).stdout)
        before = len(lines(log))
        again = dags("resume", run_id, store=store, env=env, check=0)
        assert f"· {run_id} · partial" in again.stdout
        assert [int(e[1]) for e in lines(log)[before:] if e[0] == "start"] == [5, 5, 5]  # only it, with its retries
        assert outcome_line(again.stdout).startswith("1 of 40 items failed in stage 'handle'")
        assert {(e.position, e.error_type, e.attempts) for e in errors(store, run_id)} == {(5, "RecordError", 3)}

    def test_a_dead_item_is_one_error_however_often_it_is_retried(
        self, load, store: Path, tmp_path: Path, monkeypatch
    ) -> None:
        monkeypatch.setenv("FAULT_LOG", str(tmp_path / "log"))
        monkeypatch.setenv("FAULT_FAIL", "5")
        first = pipelines.run(load("fault_collect"), store=store)
        pipelines.resume(first.run_id, store=store)
        last = pipelines.resume(first.run_id, store=store)
        assert last.status is RunStatus.PARTIAL and last.stages["handle"].failed_items == 1
        assert len(last.failures) == 1, [(e.position, e.attempts) for e in last.failures]
        path = store / "runs" / first.run_id / "dead_letter" / "handle.arrow"
        assert ipc.open_file(pa.memory_map(str(path))).read_all().column("item").to_pylist() == [5]


# == 2. retries ================================================================================


class TestRetries:
    def test_two_500s_then_success_takes_three_requests(
        self, load, server: Server, store: Path, request: pytest.FixtureRequest
    ) -> None:
        k = key(request)
        result = pipelines.run(load("fault_http"), {"urls": [server.url(f"flaky/{k}/2")]}, store=store)
        assert result.status is RunStatus.OK
        assert server.hits[k] == 3
        assert result.table("fetch").column("body").to_pylist() == [b"ok after 3"]

    def test_429_retry_after_is_honoured(
        self, load, server: Server, store: Path, request: pytest.FixtureRequest
    ) -> None:
        k = key(request)
        result = pipelines.run(load("fault_http"), {"urls": [server.url(f"busy/{k}")]}, store=store)
        assert result.status is RunStatus.OK and server.hits[k] == 2
        first, second = server.times[k]
        assert second - first >= 0.95, f"retried after {second - first:.2f} s despite Retry-After: 1"

    def test_404_is_never_retried(self, load, server: Server, store: Path, request: pytest.FixtureRequest) -> None:
        k = key(request)
        result = pipelines.run(
            load("fault_http"), {"urls": [server.url(f"status/404/{k}"), server.url(f"hit/{k}x")]}, store=store
        )
        assert result.status is RunStatus.PARTIAL
        assert server.hits[k] == 1
        (lost,) = result.failures
        assert (lost.error_type, lost.attempts, lost.position) == ("HTTPStatusError", 1, 0)
        assert "HTTP 404" in lost.message and server.url(f"status/404/{k}") in lost.message
        assert result.table("fetch").column("body").to_pylist() == [f"{k}x".encode()]

    def test_type_error_is_never_retried(self, load, store: Path, tmp_path: Path, monkeypatch) -> None:
        log = tmp_path / "log"
        monkeypatch.setenv("FAULT_LOG", str(log))
        monkeypatch.setenv("FAULT_MODE", "typeerror")
        result = pipelines.run(load("fault_retry"), {"n": 3}, store=store)  # cpu stages: worker processes
        assert Counter((e[0], e[1]) for e in lines(log))[("typed", "1")] == 1
        (bug,) = result.failures
        assert (bug.stage, bug.error_type, bug.attempts, bug.position) == ("typed", "TypeError", 1, 1)
        assert result.table("backed_off").column("backed_off").to_pylist() == [0, 2]

    def test_a_custom_retry_on_retries_what_it_says(self, load, store: Path, tmp_path: Path, monkeypatch) -> None:
        log = tmp_path / "log"
        monkeypatch.setenv("FAULT_LOG", str(log))
        monkeypatch.setenv("FAULT_MODE", "lookup")  # LookupError: not transient, but retry_on says yes
        result = pipelines.run(load("fault_retry"), {"n": 3}, store=store)
        assert result.status is RunStatus.OK
        calls = Counter((e[0], int(e[1])) for e in lines(log))
        assert [calls[("looked_up", i)] for i in range(3)] == [3, 3, 3]
        assert [calls[("typed", i)] for i in range(3)] == [1, 1, 1]

    def test_a_custom_retry_on_can_refuse_a_transient_error(
        self, load, store: Path, tmp_path: Path, monkeypatch
    ) -> None:
        log = tmp_path / "log"
        monkeypatch.setenv("FAULT_LOG", str(log))
        monkeypatch.setenv("FAULT_MODE", "connection")  # transient by default; retry_on=never
        result = pipelines.run(load("fault_retry"), {"n": 3}, store=store)
        assert result.status is RunStatus.PARTIAL
        calls = Counter((e[0], int(e[1])) for e in lines(log))
        assert [calls[("connected", i)] for i in range(3)] == [1, 1, 1]
        assert {(e.stage, e.error_type, e.attempts) for e in result.failures} == {("connected", "ConnectionError", 1)}

    def test_backoff_between_attempts_in_a_run(self, load, store: Path, tmp_path: Path, monkeypatch) -> None:
        log = tmp_path / "log"
        monkeypatch.setenv("FAULT_LOG", str(log))
        monkeypatch.setenv("FAULT_MODE", "always")
        result = pipelines.run(load("fault_retry"), {"n": 3}, store=store)
        assert sorted((e.stage, e.attempts) for e in result.failures) == [("backed_off", 5)] * 3
        for item in ("0", "1", "2"):
            stamps = [float(e[3]) for e in lines(log) if e[:2] == ["backed_off", item]]
            assert [int(e[2]) for e in lines(log) if e[:2] == ["backed_off", item]] == [1, 2, 3, 4, 5]
            assert stamps == sorted(stamps)
        # how long each wait may be is checked on retry.delay itself, below

    def test_delay_is_full_jitter_exponential_and_capped(self) -> None:
        rng_state = random.getstate()
        random.seed(20240611)
        try:
            means = []
            for attempt in range(12):
                bound = min(retry.MAX_DELAY, retry.BASE_DELAY * 2**attempt)
                samples = [retry.delay(attempt) for _ in range(3000)]
                assert all(0 <= d <= bound for d in samples), attempt
                assert max(samples) > 0.9 * bound and min(samples) < 0.1 * bound  # spread over the whole range
                assert len(set(samples)) > 2900  # jitter: no two retries in lockstep
                means.append(sum(samples) / len(samples))
            grows = [b > 1.5 * a for a, b in itertools.pairwise(means)]
            uncapped = [retry.BASE_DELAY * 2 ** (a + 1) <= retry.MAX_DELAY for a in range(11)]
            assert grows == uncapped, (means, uncapped)  # doubles until the cap, then stays
            assert all(retry.delay(60) <= retry.MAX_DELAY for _ in range(1000))  # no overflow far out
            assert all(retry.delay(5, base=0.5, cap=1.0) <= 1.0 for _ in range(1000))
        finally:
            random.setstate(rng_state)

    def test_retry_after_wins_over_backoff_but_not_over_the_cap(self) -> None:
        later = http.HTTPStatusError("u", 429, retry_after=1.0)
        assert retry.delay(0, later) == 1.0 and retry.delay(9, later) == 1.0
        too_long = http.HTTPStatusError("u", 503, retry_after=3600.0)
        assert not retry.is_transient(too_long)  # waiting an hour is not a retry: it fails at once
        assert retry.delay(0, too_long) == retry.MAX_RETRY_AFTER
        assert retry.delay(0, http.HTTPStatusError("u", 503, retry_after=90.0)) == 90.0  # beyond the backoff cap
        assert retry.delay(0, http.HTTPStatusError("u", 503, retry_after=None)) <= retry.BASE_DELAY
        assert retry.is_transient(later) and not retry.is_transient(http.HTTPStatusError("u", 404))
        assert not retry.is_transient(TypeError("bug")) and retry.is_transient(ConnectionError("reset"))


# == 3. rate limits ============================================================================


class TestRateLimits:
    @pytest.mark.parametrize("executor", ["threads", "processes"])
    def test_stage_rate_holds_over_all_workers(
        self, executor: str, load, store: Path, tmp_path: Path, monkeypatch
    ) -> None:
        log = tmp_path / "log"
        monkeypatch.setenv("FAULT_LOG", str(log))
        result = pipelines.run(load("fault_rate"), {"n": 40}, store=store, executor=executor, max_workers=2)
        assert result.status is RunStatus.OK, (result.error, result.failures[:3])
        assert result.table("stamp").num_rows == 40
        calls = [(int(e[0]), int(e[1]), float(e[2])) for e in lines(log)]
        assert sorted(c[0] for c in calls) == list(range(40))
        stamps = sorted(c[2] for c in calls)
        # a token bucket (burst 1) lets n calls through in no less than (n - 1) / rate seconds, give or take
        # one call whose token refilled while its worker was between tasks
        least = 1.8 if executor == "threads" else 1.7
        assert stamps[-1] - stamps[0] >= least, f"40 items at 20/s took {stamps[-1] - stamps[0]:.2f} s"
        if executor == "processes":
            by_pid: dict[int, list[float]] = defaultdict(list)
            for _, pid, t in calls:
                by_pid[pid].append(t)
            assert len(by_pid) == 2, "both workers should have taken part"
            for pid, times in by_pid.items():  # each worker has half of the rate: 10/s, not 20/s
                span = max(times) - min(times)
                assert span >= 0.9 * (len(times) - 2) / 10, f"worker {pid}: {len(times)} calls in {span:.2f} s"

    def test_per_host_rate_spaces_requests_to_each_host(
        self, load, server: Server, store: Path, request: pytest.FixtureRequest
    ) -> None:
        k = key(request)
        # two host names; the stage's session resolves both to 127.0.0.1
        urls = [server.url(f"hit/{k}-{host}-{i}", host=host) for i in range(8) for host in ("alpha.test", "beta.test")]
        result = pipelines.run(load("fault_polite"), {"urls": urls}, store=store)
        assert result.status is RunStatus.OK, result.failures
        seen = [(host, t) for name, host, t in server.requests if name.startswith(k)]
        assert Counter(h for h, _ in seen) == {"alpha.test": 8, "beta.test": 8}
        spans = {}
        for host in ("alpha.test", "beta.test"):
            times = sorted(t for h, t in seen if h == host)
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert min(gaps) >= 0.18, f"{host}: requests {min(gaps):.3f} s apart at per_host_rate=5"
            spans[host] = (times[0], times[-1])
        # one bucket per host, not one for all: the hosts' requests interleave
        lo, hi = spans["alpha.test"]
        assert sum(lo < t < hi for h, t in seen if h == "beta.test") >= 4

    def test_host_limiter_is_one_bucket_per_host_and_loop(self) -> None:
        async def buckets() -> tuple[object, ...]:
            return (
                http.host_limiter("example.org", 5),
                http.host_limiter("EXAMPLE.org", "5/s"),
                http.host_limiter("example.net", 5),
                http.host_limiter("example.org", 10),
            )

        a, a_again, other_host, other_rate = asyncio.run(buckets())
        assert a is a_again and a is not other_host and a is not other_rate
        assert (a.per_second, other_rate.per_second) == (5.0, 10.0)
        (b, *_) = asyncio.run(buckets())
        assert b is not a  # another event loop, another bucket
        with pytest.raises(ValueError, match="per_host_rate"):
            asyncio.run(_limiter(0))
        with pytest.raises(RuntimeError):
            http.host_limiter("example.org", 5)  # outside any event loop

    def test_per_host_rate_applies_to_plain_downloads(self, server: Server, request: pytest.FixtureRequest) -> None:
        k = key(request)

        async def go() -> list[float]:
            async with http.client_session() as session:
                await asyncio.gather(
                    *(http.download(server.url(f"hit/{k}"), session=session, per_host_rate="4/s") for _ in range(5))
                )
            return server.times[k]

        times = asyncio.run(go())
        assert len(times) == 5
        assert min(b - a for a, b in itertools.pairwise(times)) >= 0.22


async def _limiter(rate: float) -> object:
    return http.host_limiter("example.org", rate)


# == 4. timeouts ===============================================================================


class TestTimeouts:
    def test_async_item_is_cancelled_and_reported(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = dags("run", "fault_async_timeout", store=store, env={"FAULT_LOG": str(log)}, check=0)
        run_id = run_id_of(proc.stdout)
        events = lines(log)
        assert ["cancelled", "3"] in [e[:2] for e in events], "the coroutine never saw CancelledError"
        assert ["end", "3"] not in [e[:2] for e in events]
        (late,) = errors(store, run_id)
        assert (late.position, late.error_type, late.message) == (3, "ItemTimeout", "timed out after 0.5 s")
        assert stage_table(store, run_id, "wait").column("wait").to_pylist() == [x for x in range(12) if x != 3]

    def test_process_items_are_interrupted_or_their_worker_is_killed(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = dags("run", "fault_proc_timeout", "--workers", "2", store=store, env={"FAULT_LOG": str(log)}, check=0)
        run_id = run_id_of(proc.stdout)
        found = {e.position: e for e in errors(store, run_id)}
        assert set(found) == {5, 9}
        assert (found[5].error_type, found[5].message) == ("ItemTimeout", "timed out after 1 s")  # SIGALRM
        assert found[9].error_type == "WorkerLostError"
        assert found[9].message == "timed out: ran past 1 s per item, and its worker was killed"
        assert stage_table(store, run_id, "nap").column("nap").to_pylist() == [x for x in range(12) if x not in (5, 9)]
        events = lines(log)
        assert not [e for e in events if e[0] == "end" and e[1] in ("5", "9")]
        hung = {int(e[2]) for e in events if e[:2] == ["start", "9"]}
        pids = {int(e[2]) for e in events}
        assert len(pids) > 2, "the killed worker was not replaced (2 workers)"
        assert not wait_gone(sorted(hung)), "the hung worker is still alive"

    def test_thread_item_is_abandoned_and_the_run_does_not_wait(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = dags("run", "fault_thread_timeout", store=store, env={"FAULT_LOG": str(log)}, check=0)
        run_id = run_id_of(proc.stdout)
        # the process has exited; the item's thread would log "finished" only after 20 s
        assert ["finished", "3"] not in [e[:2] for e in lines(log)]
        (late,) = errors(store, run_id)
        assert (late.position, late.error_type) == (3, "ItemTimeout")
        assert late.message.startswith("timed out after 0.5 s") and "thread, which runs on" in late.message
        assert stage_table(store, run_id, "block").column("block").to_pylist() == [x for x in range(12) if x != 3]


# == 5. poison items ===========================================================================

POISON = {
    7: ("exit", "worker died: exit code 3"),
    23: ("segv", "worker died: signal 11 (SIGSEGV)"),
    41: ("kill", "worker died: signal 9 (SIGKILL)"),
}


@pytest.mark.parametrize(
    "executor",
    [
        "processes",
        pytest.param("joblib", marks=pytest.mark.skipif(not executors.available("joblib"), reason="joblib missing")),
    ],
)
def test_poison_items_fail_alone_with_their_cause(executor: str, store: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    env = {"FAULT_LOG": str(log), "FAULT_POISON": ",".join(f"{i}:{how}" for i, (how, _) in POISON.items())}
    proc = dags(
        "run", "fault_poison", "--executor", executor, "--workers", "2", store=store, env=env, check=0, timeout=240
    )
    run_id = run_id_of(proc.stdout)
    assert f"· {run_id} · partial" in proc.stdout
    found = {e.position: (e.error_type, e.message) for e in errors(store, run_id)}
    assert found == {i: ("WorkerLostError", cause) for i, (_, cause) in POISON.items()}, found
    table = stage_table(store, run_id, "risky")
    assert table.column("risky").to_pylist() == [10 * x for x in range(60) if x not in POISON]
    called = Counter(int(e[0]) for e in lines(log))
    assert set(called) == set(range(60))

    # the cause gone, a resume computes the three and nothing else
    before = len(lines(log))
    dags("resume", run_id, store=store, env={"FAULT_LOG": str(log)}, check=0)
    assert sorted(int(e[0]) for e in lines(log)[before:]) == sorted(POISON)
    assert stage_table(store, run_id, "risky").column("risky").to_pylist() == [10 * x for x in range(60)]


# == 6. interrupts =============================================================================


@dataclass(frozen=True)
class Interrupted:
    """A run of ``fault_slow`` stopped by one SIGINT, and what was true right after it."""

    store: Path
    log: Path
    output: str
    returncode: int
    run_id: str
    leftover_children: list[int]
    done: set[int]
    open_errors: list


@pytest.fixture(scope="class")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    base = tmp_path_factory.mktemp("sigint")
    store, log = base / "store", base / "log"
    proc = start("run", "fault_slow", "--workers", "2", store=store, env={"FAULT_LOG": str(log), "FAULT_DELAY": "0.05"})
    wait_until(lambda: len(lines(log)) >= 60, proc)
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert children, "a process stage should have worker processes"
    os.kill(proc.pid, signal.SIGINT)
    output = finish(proc)
    run_id = run_id_of(output)
    return Interrupted(
        store,
        log,
        output,
        proc.returncode,
        run_id,
        wait_gone(children),
        done_positions(store, "slow", 50),
        errors(store, run_id),
    )


class TestInterrupts:
    def test_first_sigint_stops_cleanly_and_keeps_checkpoints(self, interrupted: Interrupted) -> None:
        run, store = interrupted, interrupted.store
        assert run.returncode == 130, run.output
        assert outcome_line(run.output).endswith(
            f"interrupted; resume with: python -m pipelines resume {run.run_id} --store {store}"
        )
        assert not run.leftover_children, "child processes outlived the interrupted run"
        assert run.done, "no finished checkpoint was kept"
        with Store(store) as s:
            assert s.ledger.run(run.run_id)["status"] == "interrupted"
            for row in s.ledger.query("SELECT path, rows FROM parts"):
                assert ipc.open_file(pa.memory_map(s.ledger.absolute(row["path"]))).read_all().num_rows == row["rows"]

        before = len(lines(run.log))
        dags("resume", run.run_id, store=store, env={"FAULT_LOG": str(run.log), "FAULT_DELAY": "0"}, check=0)
        assert sum(1 for e in lines(run.log)[before:] if e[0] == "slow") == 400 - len(run.done)
        assert stage_table(store, run.run_id, "total").to_pylist() == [
            {"rows": 400, "sum": sum(2 * x + 1 for x in range(400))}
        ]

    def test_first_sigint_records_no_failures_and_prints_no_traceback(self, interrupted: Interrupted) -> None:
        assert "Traceback" not in interrupted.output, interrupted.output
        assert interrupted.open_errors == [], {(e.error_type, e.message) for e in interrupted.open_errors}

    def test_second_sigint_exits_at_once_with_a_stuck_thread(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = start("run", "fault_stuck", store=store, env={"FAULT_LOG": str(log)})
        wait_until(lambda: ["stuck", "5"] in lines(log), proc)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGINT)
        output = finish(proc)  # the stuck thread would hold the process forever: pytest-timeout
        assert "stopping now" in output
        assert proc.returncode == 130, f"exit {proc.returncode}:\n{output}"
        assert "interrupted; resume with: python -m pipelines resume" in output
        done = done_positions(store, "stuck", 50)
        assert done and 5 not in done  # what finished is kept; the stuck item is left for a resume

    def test_first_sigint_waits_only_the_grace_period_for_a_stuck_thread(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = start("run", "fault_stuck", store=store, env={"FAULT_LOG": str(log)})
        wait_until(lambda: ["stuck", "5"] in lines(log), proc)
        os.kill(proc.pid, signal.SIGINT)
        output = finish(proc)  # the stuck thread would hold the process forever: pytest-timeout
        assert proc.returncode == 130, f"exit {proc.returncode}:\n{output}"
        assert "interrupted; resume with: python -m pipelines resume" in output
        done = done_positions(store, "stuck", 50)
        assert done and 5 not in done


def test_workers_die_with_a_driver_killed_while_they_start(store: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = start(
        "run",
        "fault_chaos",
        "--param",
        "n=600",
        "--workers",
        "2",
        store=store,
        env={"FAULT_LOG": str(log), "PIPELINES_START_METHOD": "spawn"},
    )
    driver = psutil.Process(proc.pid)

    def spawned() -> bool:
        kids = driver.children(recursive=True)
        return sum("multiprocessing.spawn" in " ".join(_cmdline(k)) for k in kids) >= 2

    wait_until(spawned, proc)
    left = kill_and_count_leftovers(proc, log)
    assert left == 0, f"{left} process(es) of the killed run were still alive 10 s later"


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


# == 7. bad definitions and options ============================================================

CLOSURE_SCRIPT = """
import sys
import threading
from collections.abc import Iterator

import pipelines
from pipelines import Pipeline


def build() -> Pipeline:
    lock = threading.Lock()
    pipeline = Pipeline("closure")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(10)

    @pipeline.map(over=numbers, kind="cpu")
    def guarded(x: int) -> int:
        with lock:
            with open(sys.argv[2], "a") as f:
                f.write(f"{x}\\n")
            return x * 2

    return pipeline


if __name__ == "__main__":
    try:
        pipelines.run(build(), store=sys.argv[1])
    except pipelines.UsageError as exc:
        print(f"refused: {exc}", flush=True)
    result = pipelines.run(build(), store=sys.argv[1], executor="threads")  # what the message suggests
    print("threads:", result.status.value, result.table("guarded").column("guarded").to_pylist())
"""


def locked_closure(calls: list[int]) -> Pipeline:
    """A CPU stage that closes over a lock: it cannot be pickled for a worker process."""
    import threading

    lock = threading.Lock()
    pipeline = pipelines.Pipeline("local_closure")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(5)

    @pipeline.map(over=numbers, kind="cpu")
    def locked(x: int) -> int:
        with lock:
            calls.append(x)
            return x

    return pipeline


class TestBadDefinitions:
    def test_unpicklable_stage_is_refused_before_the_run_starts(self, tmp_path: Path) -> None:
        script = tmp_path / "script.py"
        script.write_text(CLOSURE_SCRIPT)
        log = tmp_path / "calls.log"
        proc = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "store"), str(log)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        refused = next(ln for ln in proc.stdout.splitlines() if ln.startswith("refused:"))
        assert "stage 'guarded' cannot be sent to processes workers" in refused
        assert "cannot pickle '_thread.lock'" in refused and 'executor="threads"' in refused
        assert "threads: ok [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in proc.stdout
        assert sorted(int(x) for x in log.read_text().split()) == list(range(10))  # only the threads run called it

    def test_unpicklable_stage_in_process_is_a_usage_error(self, tmp_path: Path) -> None:
        calls: list[int] = []
        with pytest.raises(UsageError, match=r"stage 'locked' cannot be sent to processes workers.*threads"):
            pipelines.run(locked_closure(calls), store=tmp_path / "store")
        assert calls == []

    def test_a_refused_definition_leaves_no_crashed_run_behind(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError):
            pipelines.run(locked_closure([]), store=tmp_path / "store")
        shown = cli("runs", "--store", str(tmp_path / "store"), check=0).stdout
        assert "crashed" not in shown and "running" not in shown, shown

    def test_unknown_executor(self, store: Path) -> None:
        proc = dags("run", "fault_rate", "--executor", "proccesses", store=store, check=2)
        assert "unknown executor 'proccesses' (did you mean 'processes'?)" in proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        debug = dags("run", "fault_rate", "--executor", "proccesses", "--debug", store=store, check=2)
        assert "Traceback (most recent call last)" in debug.stderr

    def test_store_that_cannot_be_written(self, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        proc = dags("run", "fault_rate", store=blocker / "store", check=2)
        assert f"store {blocker / 'store'} is not writable" in proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        debug = dags("run", "fault_rate", "--debug", store=blocker / "store", check=2)
        assert "Traceback (most recent call last)" in debug.stderr

    @pytest.mark.skipif(
        not (executors.available("dask") and (ROOT / "executors" / "dask_cluster.py").exists()),
        reason="needs dask and executors/dask_cluster.py",
    )
    def test_unreachable_dask_address(self, store: Path) -> None:
        import socket

        with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = dags(
            "run",
            "fault_rate",
            "--executor",
            "dask",
            "--address",
            f"tcp://127.0.0.1:{port}",
            store=store,
            check=2,
            timeout=180,
        )
        assert f"127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr


# == 8. hostile data ===========================================================================

GOOD = {0: "camera.png", 1: "coffee.png", 10: "horse.png"}


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A data folder whose records and images try everything."""
    root = tmp_path / "data"
    (root / "records").mkdir(parents=True)
    (root / "images").mkdir()
    for name in GOOD.values():
        shutil.copy(DATA / "images" / name, root / "images" / name)
    whole = (DATA / "images" / "coffee.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "images" / "outside").symlink_to("/etc")
    records = {
        0: '{"id": 0, "title": "camera", "image": "images/camera.png"}',
        1: '{"id": 1, "title": "coffee", "image": "images/coffee.png"}',
        2: '{"id": 2, "title": "broken" "image": "images/coffee.png"}',  # malformed JSON
        3: '{"id": "three", "title": "typed", "image": "images/coffee.png"}',  # id is no integer
        4: '{"id": 4, "title": ["a", "list"], "image": "images/coffee.png"}',  # title is no string
        5: '{"id": 5, "title": "climb", "image": "../../etc/passwd"}',
        6: '{"id": 6, "title": "absolute", "image": "/etc/passwd"}',
        7: '{"id": 7, "title": "nul", "image": "images/camera.png\\u0000.txt"}',
        8: '{"id": 8, "title": "symlink", "image": "images/outside/passwd"}',
        9: '{"id": 9, "title": "truncated", "image": "images/truncated.png"}',
        10: '{"id": 10, "title": "horse", "image": "images/horse.png"}',
        11: '{"id": 11, "title": "not an image", "image": "records/r00.json"}',
    }
    for i, text in records.items():
        (root / "records" / f"r{i:02d}.json").write_text(text)
    return root


def test_hostile_records_and_images_fail_alone(hostile: Path, store: Path) -> None:
    proc = dags("run", "fault_ingest", "--param", f"data_dir={hostile}", store=store, check=0)
    run_id = run_id_of(proc.stdout)
    parse = {e.position: e for e in errors(store, run_id, "parse")}
    assert sorted(parse) == [2, 3, 4]
    assert "invalid JSON at byte" in parse[2].message and parse[2].message.startswith("records/r02.json")
    assert "field 'id' of Record" in parse[3].message
    assert "field 'title' of Record" in parse[4].message
    describe = {e.position: e.message for e in errors(store, run_id, "describe")}
    assert sorted(describe) == [5, 6, 7, 8, 9, 11]
    assert describe[5] == f"'../../etc/passwd' escapes the folder {hostile}"
    assert describe[6].startswith("'/etc/passwd' is an absolute path")
    assert "contains a NUL byte" in describe[7]
    assert describe[8] == f"'images/outside/passwd' escapes the folder {hostile}"
    assert describe[9].startswith("images/truncated.png: cannot decode image")
    assert "not a recognised image format" in describe[11]
    assert stage_table(store, run_id, "summary").to_pylist() == [{"images": 3, "ids": [0, 1, 10]}]
    described = stage_table(store, run_id, "describe").to_pylist()
    digests = {hashlib.sha256((hostile / "images" / GOOD[r["id"]]).read_bytes()).hexdigest() for r in described}
    assert {r["sha256"] for r in described} == digests  # what was described is what the records named
    for path in store.rglob("*.arrow"):
        assert b"root:x:0:0" not in path.read_bytes(), f"{path} holds /etc/passwd"


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "images/../../../x", "a\0b", "", ".", "images/outside/passwd"]
)
def test_safe_path_refuses_names_that_escape(hostile: Path, name: str) -> None:
    with pytest.raises(ValueError):
        files.safe_path(hostile, name)
    with pytest.raises(ValueError):
        files.read_bytes(name, root=hostile)


def test_safe_path_keeps_names_inside(hostile: Path) -> None:
    assert files.safe_path(hostile, "images/camera.png") == (hostile / "images" / "camera.png").resolve()
    assert files.safe_path(hostile, "images/../records/r00.json") == (hostile / "records" / "r00.json").resolve()
    assert files.read_bytes("images/camera.png", root=hostile) == (DATA / "images" / "camera.png").read_bytes()


# -- a disk that fills up -------------------------------------------------------------------

DISK_SCRIPT = r"""
set -u
mount -t tmpfs -o size=300k tmpfs "$STORE" || exit 99
"$PY" -m pipelines run fault_disk --dags "$DAGS" --store "$STORE" --quiet > "$OUT/first.out" 2>&1
echo $? > "$OUT/first.rc"
mkdir -p "$OUT/after_fail" && cp -a "$STORE/." "$OUT/after_fail/"
mount -o remount,size=64m "$STORE"
"$PY" -m pipelines resume latest --store "$STORE" --quiet > "$OUT/resume.out" 2>&1
echo $? > "$OUT/resume.rc"
mkdir -p "$OUT/after_resume" && cp -a "$STORE/." "$OUT/after_resume/"
"""


@dataclass(frozen=True)
class DiskFull:
    out: Path

    def rc(self, name: str) -> int:
        return int((self.out / f"{name}.rc").read_text())

    def output(self, name: str) -> str:
        return (self.out / f"{name}.out").read_text()


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory: pytest.TempPathFactory) -> DiskFull:
    """``fault_disk`` run on a 300 KiB tmpfs in a private mount namespace, then resumed with room."""
    unshare = shutil.which("unshare")
    if not unshare or subprocess.run([unshare, "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a private mount namespace here (unshare -m)")
    base = tmp_path_factory.mktemp("disk")
    (base / "store").mkdir()
    (base / "out").mkdir()
    env = {
        **os.environ,
        "STORE": str(base / "store"),
        "OUT": str(base / "out"),
        "PY": sys.executable,
        "DAGS": str(TEST_DAGS),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [unshare, "-m", "sh", "-c", DISK_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return DiskFull(base / "out")


def _expected_digest(n: int = 40) -> str:
    sys.path.insert(0, str(TEST_DAGS))
    try:
        from fault_disk import blob_of  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(TEST_DAGS))
    h = hashlib.sha256()
    for blob in sorted(blob_of(x) for x in range(n)):
        h.update(blob)
    return h.hexdigest()


def test_disk_full_loses_nothing_and_resumes_with_room(disk_full: DiskFull) -> None:
    assert disk_full.rc("first") == 1, disk_full.output("first")
    store = disk_full.out / "after_fail"
    arrows = sorted(store.rglob("*.arrow"))
    assert any("/numbers/" in str(p) for p in arrows)
    for path in arrows:  # whatever was written is whole: atomic writes, even on a full disk
        with pa.memory_map(str(path)) as source:
            ipc.open_file(source).read_all().validate(full=True)
    db = sqlite3.connect(store / "ledger.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ((run_id, status),) = db.execute("SELECT id, status FROM runs").fetchall()
    finally:
        db.close()
    assert status in ("failed", "running")

    assert disk_full.rc("resume") == 0, disk_full.output("resume")
    assert run_id_of(disk_full.output("resume")) == run_id
    table = pq.read_table(disk_full.out / "after_resume" / "runs" / run_id / "outputs" / "digest.parquet")
    assert table.to_pylist() == [{"rows": 40, "sha256": _expected_digest()}]


def test_disk_full_fails_cleanly(disk_full: DiskFull) -> None:
    output = disk_full.output("first")
    assert disk_full.rc("first") == 1
    assert "Traceback" not in output, output
    # whichever write meets the full disk first, a checkpoint or the ledger, says so
    assert re.search(
        r"cannot write its checkpoint: No space left on device"
        r"|the ledger could not be written: database or disk is full",
        output,
    ), output


def test_a_reduce_receives_its_input_in_item_order(load, store: Path) -> None:
    result = pipelines.run(load("fault_order"), store=store)
    assert result.table("slowly").column("slowly").to_pylist() == list(range(8))
    assert result.table("received").to_pylist() == [{"order": list(range(8))}]


# == 9. randomized fault injection =============================================================

CHAOS_N = 600
CHAOS_BUDGET_S = 55.0  # no new scenario after this; one scenario takes up to ~25 s


def _chaos_faults(rng: random.Random, strength: float, exit: bool | None = None) -> dict[str, str]:
    """Faults for one run: items that raise, maybe an item that kills its worker, a per-item delay."""
    raising = rng.sample(range(CHAOS_N), rng.randint(0, round(3 * strength)))
    if exit is None:
        exit = rng.random() < 0.25 * strength
    exiting = rng.sample(range(150), 1 if exit else 0)  # early, so a run reaches it
    return {
        "FAULT_RAISE": ",".join(map(str, raising)),
        "FAULT_EXIT": ",".join(map(str, exiting)),
        "FAULT_DELAY": "0.004",
    }


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


@pytest.mark.slow
def test_randomized_fault_injection(tmp_path: Path) -> None:
    expected_rows = [x**3 - 1 for x in range(CHAOS_N)]
    expected_total = [{"rows": CHAOS_N, "sum": sum(expected_rows)}]
    stats: Counter[str] = Counter()
    started = time.monotonic()
    scenario = 0
    while scenario < 4 or (scenario < 12 and time.monotonic() - started < CHAOS_BUDGET_S):
        store, log = tmp_path / f"store{scenario}", tmp_path / f"log{scenario}"
        rng = random.Random(20240611 + scenario)  # each scenario's faults are fixed, whatever the timing did
        name = rng.choice(["fault_chaos", "fault_chaos_skip"])
        faults = _chaos_faults(rng, 1.0, exit=scenario % 3 == 1)
        # a run with a worker-killing item is not killed itself (its resumes may be)
        kill_after = rng.uniform(0.8, 3.0) if not faults["FAULT_EXIT"] and rng.random() < 0.7 else None
        command: tuple[str, ...] = ("run", name, "--param", f"n={CHAOS_N}", "--workers", "2")
        for attempt in range(6):
            proc = start(*command, store=store, env={"FAULT_LOG": str(log), **faults})
            stats["runs" if attempt == 0 else "resumes"] += 1
            if kill_after is not None:
                try:
                    proc.wait(kill_after)
                except subprocess.TimeoutExpired:
                    stats["kills"] += 1
                    # none may outlive it, not even a worker forked just before the kill
                    stats["orphans"] += kill_and_count_leftovers(proc, log)
            output = finish(proc)
            assert "Traceback" not in output, output
            assert proc.returncode in (0, 1, -signal.SIGKILL), output
            with Store(store) as s:
                latest = s.ledger.latest_run()
            if proc.returncode == 0 and latest["status"] == "ok":
                break
            # next: a resume (or a new run if the kill came before the run was recorded), with fewer faults
            command = ("resume", "latest") if latest is not None else command
            last = attempt >= 3
            kill_after = rng.uniform(0.5, 2.0) if not last and rng.random() < 0.25 else None
            faults = {"FAULT_DELAY": "0.004"} if last or rng.random() < 0.5 else _chaos_faults(rng, 0.5)
        else:
            pytest.fail(f"scenario {scenario}: no ok run after 6 attempts:\n{output}")
        with Store(store) as s:
            latest = s.ledger.latest_run()
            assert read_stage(s, latest["id"], "total").to_pylist() == expected_total
            assert read_stage(s, latest["id"], "shift").column("shift").to_pylist() == expected_rows
            stats["failed items"] += s.ledger.query("SELECT count(*) AS n FROM errors")[0]["n"]
        stats["crashed workers"] += sum(1 for e in lines(log) if e[0] == "exit")
        scenario += 1
    print(
        f"\nfault injection: {scenario} scenarios, {stats['runs']} runs + {stats['resumes']} resumes, "
        f"{stats['kills']} driver kills, {stats['crashed workers']} crashed workers, {stats['failed items']} "
        f"failed items, {stats['orphans']} processes outliving a killed driver; final output always equal to the "
        f"fault-free output ({time.monotonic() - started:.0f} s)"
    )
    assert scenario >= 4
    assert stats["kills"] and stats["crashed workers"] and stats["failed items"], "the faults were not injected"
    assert stats["orphans"] == 0, "processes of a killed driver lived on (they were killed by the test)"
