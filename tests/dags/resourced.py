"""Resourced: stages that take a per-worker resource; every creation and every call is logged
with the process and thread it happened on."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator

from pipelines import Pipeline, uses

pipeline = Pipeline("resourced")


def note(what: str) -> None:
    with open(os.environ["RESOURCE_LOG"], "a") as f:
        f.write(f"{what} {os.getpid()} {threading.get_ident()}\n")


@contextlib.contextmanager
def connection() -> Iterator[dict[str, int]]:
    note("open-sync")
    yield {"calls": 0}
    note("close-sync")


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[dict[str, int]]:
    note("open-async")
    yield {"calls": 0}
    note("close-async")


@pipeline.source(batch_size=50)
def numbers() -> Iterator[int]:
    yield from range(600)


@pipeline.map(over=numbers, kind="io", concurrency=3, task_size=5)
@uses(conn=connection)
def with_connection(x: int, conn: dict[str, int]) -> int:
    conn["calls"] += 1
    note("call-sync")
    return x


@pipeline.map(over=with_connection, kind="io", concurrency=8)
@uses(sess=session)
async def with_session(x: int, sess: dict[str, int]) -> int:
    sess["calls"] += 1
    note("call-async")
    return x


@pipeline.map(over=with_session, kind="cpu", task_size=20)
@uses(conn=connection)
def in_process(x: int, conn: dict[str, int]) -> int:
    note("call-sync")
    return x
