"""Async gather: download the bundled images with aiohttp, 16 at a time, and total their bytes per content type.

Replaces ``asyncio.gather`` over aiohttp requests::

    import asyncio

    import aiohttp

    from stages.files import list_files
    from stages.serve import serve_directory


    async def fetch(session, url):
        async with session.get(url) as response:
            response.raise_for_status()
            return response.content_type, len(await response.read())


    async def main(base_url):
        connector = aiohttp.TCPConnector(limit=16)  # at most 16 requests in flight
        async with aiohttp.ClientSession(connector=connector) as session:
            return await asyncio.gather(*(fetch(session, base_url + name) for name in list_files("data/images")))


    with serve_directory("data/images") as base_url:
        results = asyncio.run(main(base_url))
    totals = {}
    for content_type, size in results:
        files, total = totals.get(content_type, (0, 0))
        totals[content_type] = (files + 1, total + size)
    print(sorted(totals.items()))

with one declaration: an ``async def`` stage runs on an event loop, ``concurrency=`` bounds
the requests in flight, and the session is a per-worker resource, made once and closed at
the end (add ``retries=3`` for a real server: only timeouts, broken connections, 5xx and 429
are retried)::

    @pipeline.map(over=images, concurrency=16)
    @uses(session=http.client_session)
    async def fetch(name: str, session: aiohttp.ClientSession) -> Fetched: ...

The run serves the folder on 127.0.0.1 itself (``serve_folder``, a lifespan, as in ingest).

Run:    python -m pipelines run async_gather
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from pydantic import BaseModel, Field

from pipelines import Pipeline, uses
from stages import aggregate, files, http, serve

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "images"
BASE_URL_ENV = "PIPELINES_ASYNC_GATHER_BASE_URL"  # set by the lifespan: the port stays out of items


class Params(BaseModel):
    """Parameters of the async_gather pipeline (``--param name=value``)."""

    folder: str | None = Field(None, description="the folder to serve and download; None: the bundled data/images/")


@dataclasses.dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded file's name, content type and size."""

    name: str
    content_type: str
    bytes: int


pipeline = Pipeline("async_gather", params=Params)


def folder_of(params: Params) -> Path:
    """The folder the run reads: ``folder``, or the bundled one."""
    return Path(params.folder) if params.folder is not None else BUNDLED


@pipeline.set_lifespan
@contextlib.contextmanager
def serve_folder(params: Params) -> Iterator[dict[str, str]]:
    """Serve the folder on 127.0.0.1 for the run."""
    with serve.serve_directory(folder_of(params)) as base_url:
        yield {BASE_URL_ENV: base_url}


@pipeline.source
def images(params: Params) -> list[str]:
    """The folder's files, by name."""
    return files.list_files(folder_of(params))


@pipeline.map(over=images, concurrency=16)
@uses(session=http.client_session)
async def fetch(name: str, session: aiohttp.ClientSession) -> Fetched:
    """Download one file on the worker's event loop; a 4xx or 5xx answer raises."""
    response = await http.download(os.environ[BASE_URL_ENV] + name, session=session)
    return Fetched(name, response.content_type, len(response.body))


by_type = pipeline.reduce(
    aggregate.summarize,
    inputs=[fetch],
    name="by_type",
    by="content_type",
    aggregations={"files": ("name", "count"), "bytes": ("bytes", "sum")},
)
