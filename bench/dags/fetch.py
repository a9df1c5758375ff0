"""Async IO: download N URLs with the library's HTTP stage, 64 in flight (bench ``async_io``)."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from pipelines import Pipeline
from stages import http


class Params(BaseModel):
    base_url: str
    n: int = 2000
    concurrency: int = 64


pipeline = Pipeline("bench_fetch", params=Params)


@pipeline.source
def urls(params: Params) -> Iterator[str]:
    for i in range(params.n):
        yield f"{params.base_url}blob/{i}"


pipeline.map(http.download, over=urls, kind="io", concurrency=64, name="download")
