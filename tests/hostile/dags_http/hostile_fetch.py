"""Hostile fetch: download the URLs given as a parameter, and describe the images among them.

The hostile HTTP tests run these pipelines through the command line against a misbehaving
loopback server. ``fetch`` keeps what it downloads (small bodies in memory, large ones in
files); ``describe`` decodes images with the image stage's pixel limit.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
from pydantic import BaseModel

from pipelines import Pipeline, uses
from stages import http, images


class Params(BaseModel):
    urls: list[str]
    timeout_s: float = 5.0
    max_bytes: int = 256 * 2**20


pipeline = Pipeline("hostile_fetch", params=Params)
pictures = Pipeline("hostile_pictures", params=Params, description="Hostile fetch, then describe each image.")


def _urls(params: Params) -> Iterator[str]:
    yield from params.urls


async def _fetch(url: str, params: Params, session: aiohttp.ClientSession) -> http.Response:
    return await http.download(url, session=session, timeout_s=params.timeout_s, max_bytes=params.max_bytes)


for _p in (pipeline, pictures):
    _p.source(_urls, name="urls")
    _p.map(
        uses(session=http.client_session)(_fetch),
        over="urls",
        name="fetch",
        kind="io",
        concurrency=8,
        retries=3,
        on_error="collect",
    )


class Picture(BaseModel):
    url: str
    width: int
    height: int
    sha256: str


@pictures.map(over="fetch", kind="cpu", on_error="collect")
def describe(response: http.Response) -> Picture:
    """The image stage, with its default pixel limit."""
    info = images.describe(response)
    return Picture(url=response.url, width=info.width, height=info.height, sha256=info.sha256)
