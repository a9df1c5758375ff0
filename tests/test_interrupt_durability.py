"""Ctrl-C never loses recorded or finished work.

* A SIGINT that arrives while a loop turn's ledger transaction is open waits for the commit:
  the turn's finished tasks stay recorded, and a resume computes each item once in all.
* A task still running when the grace period ends is asked to stop: an async task cancels its
  unfinished items and reports the finished ones, which are kept.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pyarrow as pa
from aiohttp import web

import pipelines
from pipelines import Pipeline, RunStatus
from pipelines.store import Store
from pipelines.store.ledger import Ledger
from stages.serve import serve_app

ITEMS = 2000


def counted_pipeline(calls: Counter[str]) -> Pipeline:
    pipeline = Pipeline("durable_turns")

    @pipeline.source(batch_size=500)
    def numbers() -> Iterator[int]:
        yield from range(ITEMS)

    @pipeline.map(over=numbers, executor="threads", task_size=25)
    def doubled(x: int) -> int:
        calls["doubled"] += 1
        return 2 * x

    @pipeline.map(over=doubled, executor="threads", task_size=25)
    def plus_one(x: int) -> int:
        calls["plus_one"] += 1
        return x + 1

    @pipeline.reduce(inputs=[plus_one])
    def total(plus_one: pa.Table) -> pa.Table:
        return pa.table({"sum": [sum(plus_one.column("plus_one").to_pylist())]})

    return pipeline


def test_a_sigint_inside_a_turns_transaction_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    calls: Counter[str] = Counter()
    pipeline = counted_pipeline(calls)
    record_part = Ledger.record_part
    recorded = {"n": 0}

    def record_then_sigint(self: Ledger, **kwargs) -> None:
        recorded["n"] += 1
        if recorded["n"] == 12:  # in the middle of a turn's transaction, between two tasks' records
            signal.raise_signal(signal.SIGINT)
        record_part(self, **kwargs)

    monkeypatch.setattr(Ledger, "record_part", record_then_sigint)
    first = pipelines.run(pipeline, store=tmp_path / "store")
    monkeypatch.setattr(Ledger, "record_part", record_part)
    assert first.status is RunStatus.INTERRUPTED
    computed_first = Counter(calls)
    assert 0 < computed_first["doubled"] < ITEMS

    resumed = pipelines.resume(first.run_id, store=tmp_path / "store", pipeline=pipeline)
    assert resumed.status is RunStatus.OK
    # every item computed exactly once over the two runs: what the first run finished was recorded
    assert calls == Counter({"doubled": ITEMS, "plus_one": ITEMS}), (computed_first, calls)
    assert resumed.table("total").to_pylist() == [{"sum": sum(2 * x + 1 for x in range(ITEMS))}]


# -- a long async task -------------------------------------------------------------------------

URLS = 20
TRICKLING = 7


class Server:
    """20 paths; one of them trickles (sends its body a byte a second) until ``fast`` is set."""

    def __init__(self) -> None:
        self.served: list[int] = []  # paths answered in full
        self.requested: list[int] = []
        self.fast = False
        self.changed = threading.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{n}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        self._note(self.requested, n)
        response = web.StreamResponse()
        await response.prepare(request)
        if n == TRICKLING and not self.fast:
            while True:  # until the client goes away
                await response.write(b".")
                await asyncio.sleep(1.0)
        await response.write(b"x" * (n + 1))
        await response.write_eof()
        self._note(self.served, n)
        return response

    def _note(self, where: list[int], n: int) -> None:
        with self.changed:
            where.append(n)
            self.changed.notify_all()


def download_pipeline(base: str) -> Pipeline:
    pipeline = Pipeline("trickle")

    @pipeline.source
    def urls() -> Iterator[str]:
        yield from (f"{base}{n}" for n in range(URLS))

    @pipeline.map(over=urls, kind="io", task_size=URLS, concurrency=URLS)
    async def fetch(url: str) -> int:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return len(await response.read())

    return pipeline


def test_ctrl_c_during_a_long_task_keeps_its_finished_items(tmp_path: Path) -> None:
    server = Server()
    with serve_app(server.app()) as base:
        pipeline = download_pipeline(base)

        def interrupt_when_only_the_trickle_is_left() -> None:
            with server.changed:
                server.changed.wait_for(lambda: len(server.served) == URLS - 1 and TRICKLING in server.requested)
            signal.raise_signal(signal.SIGINT)  # Ctrl-C: delivered to the main thread, which runs the run

        threading.Thread(target=interrupt_when_only_the_trickle_is_left, daemon=True).start()
        first = pipelines.run(pipeline, store=tmp_path / "store")
        assert first.status is RunStatus.INTERRUPTED
        assert first.stages["fetch"].items == URLS - 1  # the task's 19 finished downloads are kept

        server.fast = True
        before = len(server.requested)
        resumed = pipelines.resume(first.run_id, store=tmp_path / "store", pipeline=pipeline)
        assert resumed.status is RunStatus.OK
        assert server.requested[before:] == [TRICKLING]  # the resume asks only for what was not finished
        assert sorted(resumed.table("fetch").column("fetch").to_pylist()) == [n + 1 for n in range(URLS)]
    with Store(tmp_path / "store") as store:
        assert store.ledger.open_errors(first.run_id) == []
