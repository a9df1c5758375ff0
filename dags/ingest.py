"""Ingest: download the image catalog and its images over HTTP, describe each image, summarize by category.

By default the run serves the bundled data/ folder on a loopback port (see ``serve_data``),
so it works offline; ``--param base_url=https://...`` reads the same layout from elsewhere.
``scale`` repeats every catalog record under distinct ids and URLs, which turns the same
pipeline into a benchmark.

Run:    python -m pipelines run ingest --param scale=100
Resume: python -m pipelines resume RUN_ID
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator

from pipelines import Pipeline, uses
from stages import aggregate, files, http, images, json, serve

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BASE_URL_ENV = "PIPELINES_INGEST_BASE_URL"  # set by the lifespan: the port stays out of params and items


class IngestParams(BaseModel):
    """Parameters of the ingest pipeline (``--param name=value``)."""

    base_url: str | None = Field(None, description="where catalog.json and images/ live; None serves data_dir locally")
    data_dir: str | None = Field(None, description="the folder to serve when base_url is None; None: the bundled data/")
    catalog: str = Field("catalog.json", description="the catalog's path, relative to the base URL")
    scale: int = Field(1, ge=1, description="copies of each catalog record, under distinct ids and URLs")
    limit: int | None = Field(None, ge=0, description="take at most this many records (after scaling)")


class Entry(BaseModel):
    """One record of the catalog."""

    id: str
    title: str
    category: str
    path: str
    license: str
    source: str
    credit: str = ""

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        parts = urlsplit(path)
        if parts.scheme or parts.netloc or not stays_below(parts.path):
            raise ValueError(
                f"{path!r} must be a relative path below the base URL, without '..' (even percent-encoded)"
            )
        return path


def stays_below(path: str) -> bool:
    """True if ``path``, percent-decoded (repeatedly) and normalised, names something below its base.

    A server decodes ``%2e%2e`` to ``..`` (some decode twice, and some read ``\\`` as ``/``),
    so the check looks at what the server will see, not at the text as written.
    """
    decoded, previous = path, None
    while decoded != previous:
        previous, decoded = decoded, unquote(decoded)
    decoded = decoded.replace("\\", "/")
    if decoded.startswith("/") or "\x00" in decoded or ".." in decoded.split("/"):
        return False
    normal = posixpath.normpath(decoded)
    return normal != ".." and not normal.startswith("../")


class Listing(Entry):
    """A catalog record as the run lists it: with, when the run serves a local folder, the
    identity of its image file (``files.FileRef``: size and mtime), so that an edited image is
    a new item. Unchanged records are downloaded once, whatever else the catalog gained."""

    local: str | None = None


class Downloaded(Entry):
    """A catalog record with its image: its bytes, or the file they went to when large."""

    content_type: str
    body: bytes
    body_file: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Described(images.ImageInfo):
    """An image's description, with the record it belongs to."""

    id: str
    category: str
    path: str


pipeline = Pipeline("ingest", params=IngestParams)


@pipeline.set_lifespan
@contextlib.contextmanager
def serve_data(params: IngestParams) -> Iterator[dict[str, str]]:
    """Serve ``data_dir`` on 127.0.0.1 for the run, unless ``base_url`` points elsewhere."""
    if params.base_url is not None:
        yield {}
        return
    with serve.serve_directory(params.data_dir or DATA_DIR) as base_url:
        yield {BASE_URL_ENV: base_url}


def url_for(path: str, params: IngestParams) -> str:
    """The absolute URL of a catalog path: under ``base_url``, or the run's local server."""
    base = params.base_url or os.environ.get(BASE_URL_ENV)
    if not base:
        raise RuntimeError(f"no base URL: pass base_url, or run the pipeline (its lifespan sets ${BASE_URL_ENV})")
    return urljoin(base if base.endswith("/") else base + "/", path)


@dataclasses.dataclass(frozen=True, slots=True)
class Listed:
    """The catalog to fetch: its path under the base URL and, when the run serves a local
    folder, a digest of that folder's files (names, sizes, mtimes: ``files.FileRef``)."""

    path: str
    local: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Catalog:
    """The catalog's JSON, with the local folder's digest it was listed with (see ``Listed``)."""

    document: bytes
    local: str | None = None


def local_files(params: IngestParams) -> str | None:
    """What the local data folder holds, as one digest; ``None`` when reading from ``base_url``.

    With this in the source's item and the catalog, an edited file makes the catalog's records
    be listed again (``parse_catalog`` reads the files' identities); each record carries its
    own image's (``local_file``), so only the records whose image changed are downloaded again.
    """
    if params.base_url is not None:
        return None
    refs = files.source("**/*", root=params.data_dir or DATA_DIR)()
    return hashlib.blake2b(repr(list(refs)).encode(), digest_size=16).hexdigest()


def local_file(path: str, params: IngestParams) -> str | None:
    """The identity (size, mtime) of the local file a catalog path names; ``None`` when reading
    from ``base_url`` or when there is no such file (its download fails, as it should).

    A URL alone does not say which content it served: with this in the record, an edited
    image makes its record a new item, downloaded again; the others are still reused.
    """
    if params.base_url is not None:
        return None
    try:
        ref = files.FileRef.of(params.data_dir or DATA_DIR, unquote(urlsplit(path).path))
    except (OSError, ValueError):
        return None
    return f"{ref.size}:{ref.mtime_ns}"


@pipeline.source
def catalog(params: IngestParams) -> Iterator[Listed]:
    """The catalog's path, relative to the base URL: one item."""
    yield Listed(params.catalog, local_files(params))


@pipeline.map(over=catalog, kind="io", retries=3, timeout=60, reuse="never")
@uses(session=http.client_session)
async def fetch_catalog(listed: Listed, params: IngestParams, session: aiohttp.ClientSession) -> Catalog:
    """Download the catalog's JSON, in every run: what a URL serves may change. When it is the
    same as before, every stage after it is reused; when it gained records, only those are
    downloaded (item-level reuse finds the others by their content)."""
    response = await http.download(
        url_for(listed.path, params), session=session, expect_content_type="application/json"
    )
    return Catalog(response.body, listed.local)


@pipeline.flat_map(over=fetch_catalog)
def parse_catalog(catalog: Catalog, params: IngestParams) -> Iterator[Listing]:
    """Validate the catalog's records; ``scale`` copies each under a distinct id and URL."""
    entries = json.parse_records(catalog.document, Entry, source=params.catalog)
    copies = (
        entry if n == 0 else entry.model_copy(update={"id": f"{entry.id}~{n}", "path": f"{entry.path}?copy={n}"})
        for n in range(params.scale)
        for entry in entries
    )
    local = functools.cache(lambda path: local_file(path, params))
    return (Listing(**entry.model_dump(), local=local(entry.path)) for entry in itertools.islice(copies, params.limit))


@pipeline.map(over=parse_catalog, kind="io", concurrency=64, retries=3, timeout=60, on_error="collect")
@uses(session=http.client_session)
async def download(entry: Listing, params: IngestParams, session: aiohttp.ClientSession) -> Downloaded:
    """Download one image; a 404 or a wrong content type fails only this item."""
    response = await http.download(url_for(entry.path, params), session=session, expect_content_type="image/*")
    return Downloaded(
        **entry.model_dump(exclude={"local"}),
        content_type=response.content_type,
        body=response.body,
        body_file=response.body_file,
    )


@pipeline.map(over=download, kind="cpu", on_error="skip")
def describe(image: Downloaded) -> Described:
    """Decode one image and describe it; a truncated image fails only this item."""
    info = images.describe(image, name=image.path)
    return Described(**dataclasses.asdict(info), id=image.id, category=image.category, path=image.path)


by_category = pipeline.reduce(
    aggregate.summarize,
    inputs=[describe],
    name="by_category",
    by="category",
    aggregations={
        "images": ("id", "count"),
        "bytes": ("byte_size", "sum"),
        "mean_width": ("width", "mean"),
        "mean_height": ("height", "mean"),
    },
)


@pipeline.reduce(inputs=[parse_catalog, describe])
def report(listed: pa.Table, described: pa.Table) -> pa.Table:
    """Per category: records listed in the catalog, images described, and how many are missing."""
    counts = (
        aggregate.count_by(listed, key="category", name="listed")
        .join(
            aggregate.count_by(described, key="category", name="described"),
            "category",
            join_type="left outer",
        )
        .sort_by("category")
    )
    done = pc.fill_null(counts["described"], 0)
    return pa.table(
        {
            "category": counts["category"],
            "listed": counts["listed"],
            "described": done,
            "missing": pc.subtract(counts["listed"], done),
        }
    )
