"""Batch files: Arrow IPC, written atomically, read memory-mapped, checked by checksum.

Write = serialise in memory, checksum, write a temp file beside the target (fsync it when
``PIPELINES_FSYNC=1``), ``os.replace``. A reader therefore sees either no file or a whole one; a crash leaves at most
a ``*.tmp-*`` file that nothing reads. With fsync the data reaches the disk before the rename,
so after a power cut a file is whole or absent; the folder is not synced per file (that would
double the cost), so a rename may be lost, and the batch is then computed again.

Every file describes itself: its Arrow schema metadata holds ``pipelines.checksum``, the CRC-32
of the file's bytes with that value's own 8 hex digits masked (they sit, once each, in the
schema at the head of the file and in the footer), and, for a part, ``pipelines.part``: its
batch key, stage, batch, part number and item ids (JSON). A file is therefore checked against
itself, with no ledger: every read verifies it (one CRC pass over bytes the reader maps
anyway), and a lost ledger can be rebuilt from the files (``repair.py``). The size and the
same checksum also go to the ledger, so reuse checks a file against what was recorded.
Files written before files carried a checksum verify by their plain CRC-32 when the ledger
has one. Readers never see these two keys: they are dropped from the schema on read.

Paths may also be URLs of any filesystem pyarrow knows (``s3://bucket/prefix/...``, ``gs://``,
``hdfs://``): there an object is written in one ``open_output_stream`` (object stores make
it visible only once complete) and read without memory mapping.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from pipelines import settings
from pipelines.errors import CheckpointError
from pipelines.store import recent

# Durability: a written part survives any crash of the process (kill -9, OOM) without fsync;
# what fsync adds is surviving a power cut. Off by default, as for the ledger (SQLite WAL with
# synchronous=NORMAL): after a power cut the last seconds of work may be lost, and checksums
# make sure a lost or torn file is computed again, never read. PIPELINES_FSYNC=1 syncs both
# (``fsync=None`` below: as that setting says).


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the ledger keeps about one written batch file."""

    path: str
    rows: int
    bytes: int
    checksum: str


CHECKSUM_KEY = b"pipelines.checksum"
PART_KEY = b"pipelines.part"
_PREFIX = b"pipelines-crc32:"
_PLACEHOLDER = _PREFIX + b"????????"
# the value as a flatbuffers string: its int32 length, then the bytes; unique in a schema
_MARK = struct.pack("<i", len(_PLACEHOLDER)) + _PREFIX
_MAGIC = b"ARROW1"
NOT_ARROW = "not a valid Arrow file (its head or tail is damaged)"


def serialize(table: pa.Table) -> pa.Buffer:
    """The table as Arrow IPC file bytes, in one buffer of exactly the right size.

    A dry run measures the size first, so the bytes are copied once, not regrown and
    recopied as a growing stream would. No metadata is added: these bytes are the table's
    content (a source batch's key is their digest).
    """
    mock = pa.MockOutputStream()
    with ipc.new_file(mock, table.schema) as writer:
        writer.write_table(table)
    buffer = pa.allocate_buffer(mock.size())
    with ipc.new_file(pa.FixedSizeBufferWriter(buffer), table.schema) as writer:
        writer.write_table(table)
    return buffer


def serialize_part(table: pa.Table, part: Mapping[str, Any] | None = None) -> tuple[pa.Buffer, str]:
    """The table as a self-describing file: ``part`` and the file's own checksum in its schema metadata.

    Returns:
        the bytes and their checksum (see ``checksum``).
    """
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k not in (CHECKSUM_KEY, PART_KEY)}
    meta[CHECKSUM_KEY] = _PLACEHOLDER
    if part is not None:
        meta[PART_KEY] = json.dumps(dict(part), separators=(",", ":")).encode()
    data = serialize(table.replace_schema_metadata(meta))
    view = memoryview(data).cast("B")
    spans = _checksum_spans(view)
    value = _masked_crc(view, spans)
    digits = value.encode()
    for at in spans:
        view[at : at + 8] = digits
    return data, value


def _regions(view: memoryview) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(head, footer) byte ranges of an Arrow IPC file: where its schema is; None if not one."""
    size = len(view)
    if size < 26 or bytes(view[:6]) != _MAGIC or bytes(view[-6:]) != _MAGIC:
        return None
    (head_len,) = struct.unpack_from("<i", view, 12)
    (footer_len,) = struct.unpack_from("<i", view, size - 10)
    head_end, footer_start = 16 + head_len, size - 10 - footer_len
    if head_len < 0 or footer_len < 0 or head_end > footer_start or footer_start < 8:
        return None
    return (8, head_end), (footer_start, size - 10)


def _checksum_spans(view: memoryview) -> list[int]:
    """Offsets of the 8 checksum digits in the file's schema copies (none for an older file)."""
    regions = _regions(view)
    if regions is None:
        return []
    spans = []
    for start, end in regions:
        at = bytes(view[start:end]).find(_MARK)
        if at >= 0:
            spans.append(start + at + len(_MARK))
    return spans


def _masked_crc(view: memoryview, spans: list[int]) -> str:
    crc, at = 0, 0
    for span in spans:
        crc = zlib.crc32(view[at:span], crc)
        crc = zlib.crc32(b"????????", crc)
        at = span + 8
    return f"{zlib.crc32(view[at:], crc):08x}"


def checksum(data: pa.Buffer | bytes | memoryview) -> str:
    """A file's checksum: CRC-32 of its bytes, its own embedded checksum digits masked."""
    view = memoryview(data)
    return _masked_crc(view, _checksum_spans(view))


def check(data: pa.Buffer | bytes | memoryview, expect: str | None = None) -> str | None:
    """``None`` if the bytes are whole, else what is wrong with them.

    Args:
        expect: the checksum the ledger recorded; without it the file is checked against the
            checksum it carries (an Arrow file written before files carried one passes).
    """
    view = memoryview(data)
    if _regions(view) is None:  # no Arrow head or tail: whole only if they were never there
        if expect is None:
            return NOT_ARROW
        return None if f"{zlib.crc32(view):08x}" == expect else "checksum mismatch"
    spans = _checksum_spans(view)
    carried = {bytes(view[at : at + 8]).decode(errors="replace") for at in spans}
    if expect is None:
        if not carried:
            return None
        expect = next(iter(carried))
    if carried - {expect}:
        return "checksum mismatch"
    if _masked_crc(view, spans) == expect:
        return None
    # a file recorded before files carried checksums: its plain CRC-32 was recorded
    return None if not carried and f"{zlib.crc32(view):08x}" == expect else "checksum mismatch"


def part_info(table: pa.Table) -> dict[str, Any] | None:
    """The ``pipelines.part`` metadata of a table read raw (``read_table(..., raw=True)``)."""
    text = (table.schema.metadata or {}).get(PART_KEY)
    return json.loads(text) if text else None


def carried_checksum(table: pa.Table) -> str | None:
    """The checksum a file read raw carries in its metadata (``None`` for older files)."""
    value = (table.schema.metadata or {}).get(CHECKSUM_KEY, b"")
    return value[len(_PREFIX) :].decode() if value.startswith(_PREFIX) and len(value) == len(_PLACEHOLDER) else None


def _plain(table: pa.Table) -> pa.Table:
    """The table without the store's own metadata keys (zero-copy)."""
    meta = table.schema.metadata
    if not meta or (CHECKSUM_KEY not in meta and PART_KEY not in meta):
        return table
    rest = {k: v for k, v in meta.items() if k not in (CHECKSUM_KEY, PART_KEY)}
    return table.replace_schema_metadata(rest or None)


def write_table(
    path: str | os.PathLike[str],
    table: pa.Table,
    *,
    fsync: bool | None = None,
    keep: bool = False,
    part: Mapping[str, Any] | None = None,
) -> FileInfo:
    """Write ``table`` to ``path`` atomically, self-describing; return its size and checksum.

    Args:
        keep: also hand the table to readers in this process (``recent``), sparing them the file.
        part: what identifies the file as a part (key, stage, batch, part, ids), kept in its
            metadata so that the ledger can be rebuilt from the files.
    """
    data, crc = serialize_part(table, part)
    info = write_bytes(path, data, rows=table.num_rows, fsync=fsync, crc=crc)
    if keep:
        recent.remember(str(path), table)
    return info


_made_dirs: set[Path] = set()  # folders known to exist: one mkdir per folder, not per file


def is_url(path: str | os.PathLike[str]) -> bool:
    text = str(path)
    return "://" in text and not text.startswith("file://")


@functools.lru_cache(maxsize=16)
def _filesystem(base: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(base)[0]


def filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a URL (cached per scheme, host and query) and the path in it."""
    scheme, _, rest = url.partition("://")
    location, _, query = rest.partition("?")
    suffix = f"?{query}" if query else ""
    if scheme in ("s3", "gs", "gcs"):  # the path in the filesystem is bucket/key
        return _filesystem(f"{scheme}://{location.split('/', 1)[0]}{suffix}"), location
    fs, path = pafs.FileSystem.from_uri(url)
    return fs, str(path)


def join(base: str, *parts: str) -> str:
    """``base/part/part`` for a local path or a URL (its query string kept at the end)."""
    if not is_url(base):
        return str(Path(base, *parts))
    location, sep, query = base.partition("?")
    return "/".join([location.rstrip("/"), *parts]) + (f"?{query}" if sep else "")


def write_bytes(
    path: str | os.PathLike[str],
    data: pa.Buffer | bytes,
    *,
    rows: int,
    fsync: bool | None = None,
    crc: str | None = None,
) -> FileInfo:
    """Write bytes atomically (``crc``: their checksum, when the caller has it already)."""
    if fsync is None:
        fsync = settings.fsync()
    if is_url(path):
        fs, inner = filesystem(str(path))
        with fs.open_output_stream(inner) as out:  # visible only once whole
            out.write(data)
        view = memoryview(data)
        return FileInfo(str(path), rows, len(view), crc or checksum(view))
    target = Path(path)
    if target.parent not in _made_dirs:
        target.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(target.parent)
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    view = memoryview(data)
    try:
        try:
            f = open(tmp, "wb")  # noqa: SIM115 - closed below
        except FileNotFoundError:  # the folder went away (a store deleted under us): make it again
            _made_dirs.discard(target.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            f = open(tmp, "wb")  # noqa: SIM115
        with f:
            f.write(view)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return FileInfo(str(target), rows, len(view), crc or checksum(view))


def read_table(path: str | os.PathLike[str], *, expect: FileInfo | None = None, raw: bool = False) -> pa.Table:
    """Read a batch file memory-mapped, verified: every read checks size and checksum first.

    Args:
        expect: what the ledger recorded (size, checksum); without it, the file is checked
            against the checksum it carries.
        raw: keep the store's own metadata keys in the schema (``part_info`` reads them).

    Raises:
        CheckpointError: the file is missing, truncated, unreadable or fails its checksum;
            the message names the file.
    """
    if not raw and (kept := recent.recall(str(path))) is not None:
        return kept  # the very table that was written: nothing on disk to doubt
    try:
        if is_url(path):
            fs, inner = filesystem(str(path))
            source = fs.open_input_file(inner)
        else:
            source = pa.memory_map(str(path), "r")
    except (FileNotFoundError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is missing: {exc}") from None
    try:
        if expect is not None and source.size() != expect.bytes:
            raise CheckpointError(f"checkpoint {path} is truncated: {source.size()} bytes, expected {expect.bytes}")
        buf = source.read_buffer()
        problem = check(buf, expect.checksum if expect is not None else None)
        if problem:
            raise CheckpointError(
                f"checkpoint {path} " + (f"is {problem}" if problem == NOT_ARROW else "fails its checksum")
            )
        table = ipc.open_file(buf).read_all()
    except (pa.ArrowException, OSError) as exc:  # ArrowInvalid, "Invalid flatbuffers message"...
        raise CheckpointError(f"checkpoint {path} is not a valid Arrow file: {exc}") from None
    return table if raw else _plain(table)


def verify(info: FileInfo) -> str | None:
    """``None`` if the file is whole, else what is wrong with it."""
    try:
        if is_url(info.path):
            fs, inner = filesystem(info.path)
            size = fs.get_file_info(inner).size
            if size is None:
                return "missing"
            if size != info.bytes:
                return f"truncated ({size} of {info.bytes} bytes)"
            with fs.open_input_file(inner) as f:
                return check(f.read_buffer(), info.checksum)
        size = os.path.getsize(info.path)
        if size != info.bytes:
            return f"truncated ({size} of {info.bytes} bytes)"
        if not size:
            return check(b"", info.checksum)
        return check(pa.memory_map(info.path, "r").read_buffer(), info.checksum)
    except OSError:
        return "missing"


def remove(path: str) -> None:
    """Delete a file if it is there (a local path or a URL)."""
    try:
        if is_url(path):
            fs, inner = filesystem(path)
            fs.delete_file(inner)
        else:
            os.unlink(path)
    except (FileNotFoundError, OSError):
        pass


def probe(location: str, token: str) -> str:
    """Read the token file the driver wrote at ``location`` (run on a worker at start)."""
    try:
        if is_url(location):
            fs, inner = filesystem(location)
            with fs.open_input_stream(inner) as f:
                found = f.read().decode()
        else:
            found = Path(location).read_text()
    except OSError as exc:
        raise OSError(f"cannot read {location}: {exc}") from None
    if found != token:
        raise OSError(f"{location} holds another file here: the store is not shared with this worker")
    import socket

    return socket.gethostname()


def content_digest(data: pa.Buffer | bytes) -> str:
    """A strong digest of a batch's bytes: the identity of source batches."""
    import hashlib

    return hashlib.blake2b(memoryview(data), digest_size=16).hexdigest()
