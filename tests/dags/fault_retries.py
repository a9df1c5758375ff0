"""Fault retries: HTTP downloads and plain functions under ``retries``, ``retry_on`` and backoff.

``fault_http`` downloads its ``urls`` param with ``stages.http.download`` (three retries);
``fault_polite`` does so at most 5 requests a second per host (``per_host_rate``), with a session
whose resolver sends every host name to 127.0.0.1 (so ``alpha.test`` and ``beta.test`` are two
hosts on the test server);
``fault_retry`` runs plain functions, one per stage, that fail the way FAULT_MODE says
(every call is logged to FAULT_LOG as ``STAGE ITEM ATTEMPT TIME``):
    typeerror   ``typed`` raises TypeError (a bug: never retried)
    lookup      ``looked_up`` raises LookupError twice per item, then succeeds (retried by its
                own ``retry_on``, although a LookupError is not transient)
    connection  ``connected`` raises ConnectionError (transient, but its ``retry_on`` says no)
    always      ``backed_off`` always raises a transient error (four retries with backoff)
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import aiohttp.abc
from pydantic import BaseModel

from pipelines import Pipeline
from stages import http


class Urls(BaseModel):
    urls: list[str]


def urls(params: Urls) -> Iterator[str]:
    yield from params.urls


fetching = Pipeline("fault_http", params=Urls)
fetching.source(urls)
fetching.map(http.download, over=urls, name="fetch", kind="io", concurrency=8, retries=3, on_error="skip")


class LoopbackResolver(aiohttp.abc.AbstractResolver):
    """Every host name is 127.0.0.1: many hosts, no traffic beyond the loopback address."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def loopback_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(resolver=LoopbackResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


polite = Pipeline("fault_polite", params=Urls)
polite.source(urls)
polite.map(
    http.download,
    over=urls,
    name="fetch",
    kind="io",
    concurrency=16,
    on_error="skip",
    per_host_rate=5,
    resources={"session": loopback_session},
)


# -- plain functions ---------------------------------------------------------------------


class Params(BaseModel):
    n: int = 3


class Flaky(Exception):
    """Transient by its own say-so."""

    retryable = True


def attempt(stage: str, item: int) -> int:
    """Log this call; return how many calls of (stage, item) came before it."""
    path = os.environ["FAULT_LOG"]
    earlier = 0
    if os.path.exists(path):
        with open(path) as f:
            earlier = sum(1 for line in f if line.split()[:2] == [stage, str(item)])
    with open(path, "a") as f:
        f.write(f"{stage} {item} {earlier + 1} {time.time():.6f}\n")
    return earlier


def numbers(params: Params) -> Iterator[int]:
    yield from range(params.n)


def typed(x: int) -> int:
    attempt("typed", x)
    if os.environ.get("FAULT_MODE") == "typeerror" and x == 1:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
    return x


def only_lookups(exc: BaseException) -> bool:
    return isinstance(exc, LookupError)


def looked_up(x: int) -> int:
    earlier = attempt("looked_up", x)
    if os.environ.get("FAULT_MODE") == "lookup" and earlier < 2:
        raise LookupError(f"no entry for {x} yet")
    return x


def never(exc: BaseException) -> bool:
    return False


def connected(x: int) -> int:
    attempt("connected", x)
    if os.environ.get("FAULT_MODE") == "connection":
        raise ConnectionError(f"connection to {x} refused")
    return x


def backed_off(x: int) -> int:
    attempt("backed_off", x)
    if os.environ.get("FAULT_MODE") == "always":
        raise Flaky(f"item {x} is still flaky")
    return x


retrying = Pipeline("fault_retry", params=Params)
retrying.source(numbers)
retrying.map(typed, over=numbers, kind="cpu", retries=3, on_error="collect")
retrying.map(looked_up, over=typed, kind="cpu", retries=3, retry_on=only_lookups, on_error="collect")
retrying.map(connected, over=looked_up, kind="cpu", retries=3, retry_on=never, on_error="collect")
retrying.map(backed_off, over=connected, kind="cpu", retries=4, on_error="collect")
