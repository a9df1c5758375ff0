"""Retries and backoff, rate limits and timeouts on every local executor, against a real HTTP server on 127.0.0.1.

Test pipelines are ``tests/dags/fault_*.py``; their stages log what they do to files named by
environment variables, so each test checks what really happened, not only what the run reports.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import pipelines
from pipelines import RunStatus
from pipelines.define import retry
from stages import http
from tests.failure_support import Server, _no_run_left_behind, dags, errors, key, lines, server, stage_table  # noqa: F401 - fixtures this module's tests use

from .helpers import run_id_of, wait_gone

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
