"""Thread pool: download the bundled images with blocking urllib calls on threads, and checksum each one.

Replaces ``ThreadPoolExecutor.map`` over a blocking download::

    import hashlib
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from stages.files import list_files
    from stages.serve import serve_directory

    NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via $http_proxy


    def checksum(url):
        with NO_PROXY.open(url, timeout=30) as response:
            return hashlib.sha256(response.read()).hexdigest()


    with serve_directory("data/images") as base_url, ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(checksum, [base_url + name for name in list_files("data/images")]))
    print(digests)

with one declaration: the same blocking function, with ``kind="io"`` to put it on threads::

    @pipeline.map(over=images, kind="io", concurrency=8)
    def checksum(name: str) -> Checksum: ...

The run serves the folder on 127.0.0.1 itself (``serve_folder``, a lifespan, as in ingest).

Run:    python -m pipelines run thread_pool
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from pipelines import Pipeline
from stages import files, serve

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "images"
BASE_URL_ENV = "PIPELINES_THREAD_POOL_BASE_URL"  # set by the lifespan: the port stays out of items
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via $http_proxy


class Params(BaseModel):
    """Parameters of the thread_pool pipeline (``--param name=value``)."""

    folder: str | None = Field(None, description="the folder to serve and download; None: the bundled data/images/")


@dataclasses.dataclass(frozen=True, slots=True)
class Checksum:
    """A downloaded file's name, size and SHA-256."""

    name: str
    bytes: int
    sha256: str


pipeline = Pipeline("thread_pool", params=Params)


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


@pipeline.map(over=images, kind="io", concurrency=8)
def checksum(name: str) -> Checksum:
    """Download one file with a blocking call and hash it."""
    with NO_PROXY.open(os.environ[BASE_URL_ENV] + name, timeout=30) as response:
        body = response.read()
    return Checksum(name, len(body), hashlib.sha256(body).hexdigest())


@pipeline.reduce(inputs=[checksum])
def total(checksums: pa.Table) -> pa.Table:
    """How many files were downloaded, and their bytes."""
    return pa.table({"files": [checksums.num_rows], "bytes": [pc.sum(checksums["bytes"]).as_py()]})
