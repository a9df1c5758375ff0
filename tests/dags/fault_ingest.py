"""Fault ingest: hostile records and images through the ingest path (list, parse, read, decode).

The ``data_dir`` param holds ``records/*.json`` (one record each) and the images they name.
Records that are malformed JSON, have fields of the wrong type, name a file outside
``data_dir`` (``..``, absolute, NUL, a symlink out) or a truncated image fail alone, under
``on_error="collect"``; the rest go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pyarrow as pa
from pydantic import BaseModel

from pipelines import Pipeline
from stages import files, images, json


class Params(BaseModel):
    data_dir: str


class Record(BaseModel):
    id: int
    title: str
    image: str


@dataclasses.dataclass(frozen=True, slots=True)
class Described(images.ImageInfo):
    id: int
    title: str


pipeline = Pipeline("fault_ingest", params=Params)


@pipeline.source
def record_files(params: Params) -> Iterator[str]:
    yield from files.list_files(params.data_dir, "records/*.json")


@pipeline.map(over=record_files, kind="io", on_error="collect")
def parse(name: str, params: Params) -> Record:
    data = files.read_bytes(name, root=params.data_dir, max_bytes=1 << 16)
    return json.parse_record(data, Record, source=name)


@pipeline.map(over=parse, kind="cpu", on_error="collect")
def describe(record: Record, params: Params) -> Described:
    data = files.read_bytes(record.image, root=params.data_dir, max_bytes=1 << 24)
    info = images.describe(data, name=record.image)
    return Described(**dataclasses.asdict(info), id=record.id, title=record.title)


@pipeline.reduce(inputs=[describe])
def summary(describe: pa.Table) -> pa.Table:
    return pa.table({"images": [describe.num_rows], "ids": [sorted(describe.column("id").to_pylist())]})
