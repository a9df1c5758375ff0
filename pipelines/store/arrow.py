"""Batch files: Arrow IPC, written atomically, read memory-mapped, checked by checksum.

Write = serialise in memory, checksum, write a temp file beside the target (fsync it when
``PIPELINES_FSYNC=1``), ``os.replace``. A reader therefore sees either no file or a whole one; a crash leaves at most
a ``*.tmp-*`` file that nothing reads. With fsync the data reaches the disk before the rename,
so after a power cut a file is whole or absent; the folder is not synced per file (that would
double the cost), so a rename may be lost, and the batch is then computed again. The checksum (CRC-32 of the file's bytes) and size go
to the ledger; a reused file whose size or checksum differ is treated as missing.

Paths may also be URLs of any filesystem pyarrow knows (``s3://bucket/prefix/...``, ``gs://``,
``hdfs://``): there an object is written in one ``open_output_stream`` (object stores make
it visible only once complete) and read without memory mapping.
"""
from __future__ import annotations

import functools
import os
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from ..errors import CheckpointError
from . import recent

# Durability: a written part survives any crash of the process (kill -9, OOM) without fsync;
# what fsync adds is surviving a power cut. Off by default, as for the ledger (SQLite WAL with
# synchronous=NORMAL): after a power cut the last seconds of work may be lost, and checksums
# make sure a lost or torn file is computed again, never read. PIPELINES_FSYNC=1 syncs both.
FSYNC = os.environ.get("PIPELINES_FSYNC", "0") == "1"


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the ledger keeps about one written batch file."""

    path: str
    rows: int
    bytes: int
    checksum: str


def serialize(table: pa.Table) -> pa.Buffer:
    """The table as Arrow IPC file bytes, in one buffer of exactly the right size.

    A dry run measures the size first, so the bytes are copied once, not regrown and
    recopied as a growing stream would.
    """
    mock = pa.MockOutputStream()
    with ipc.new_file(mock, table.schema) as writer:
        writer.write_table(table)
    buffer = pa.allocate_buffer(mock.size())
    with ipc.new_file(pa.FixedSizeBufferWriter(buffer), table.schema) as writer:
        writer.write_table(table)
    return buffer


def checksum(data: pa.Buffer | bytes | memoryview) -> str:
    return f"{zlib.crc32(memoryview(data)):08x}"


def write_table(path: str | os.PathLike[str], table: pa.Table, *, fsync: bool = FSYNC,
                keep: bool = False) -> FileInfo:
    """Write ``table`` to ``path`` atomically; return its size and checksum.

    ``keep``: also hand the table to readers in this process (``recent``), sparing them the file.
    """
    data = serialize(table)
    info = write_bytes(path, data, rows=table.num_rows, fsync=fsync)
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
    return pafs.FileSystem.from_uri(url)


def join(base: str, *parts: str) -> str:
    """``base/part/part`` for a local path or a URL (its query string kept at the end)."""
    if not is_url(base):
        return str(Path(base, *parts))
    location, sep, query = base.partition("?")
    return "/".join([location.rstrip("/"), *parts]) + (f"?{query}" if sep else "")


def write_bytes(path: str | os.PathLike[str], data: pa.Buffer | bytes, *, rows: int, fsync: bool = FSYNC) -> FileInfo:
    if is_url(path):
        fs, inner = filesystem(str(path))
        with fs.open_output_stream(inner) as out:  # visible only once whole
            out.write(data)
        view = memoryview(data)
        return FileInfo(str(path), rows, len(view), checksum(view))
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
    return FileInfo(str(target), rows, len(view), checksum(view))


def read_table(path: str | os.PathLike[str], *, expect: FileInfo | None = None) -> pa.Table:
    """Read a batch file memory-mapped; with ``expect``, verify size and checksum first.

    Raises:
        CheckpointError: the file is missing, truncated, unreadable or fails its checksum.
    """
    if expect is None and (kept := recent.recall(str(path))) is not None:
        return kept
    try:
        if is_url(path):
            fs, inner = filesystem(str(path))
            source = fs.open_input_file(inner)
        else:
            source = pa.memory_map(str(path), "r")
    except (FileNotFoundError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is missing: {exc}") from None
    try:
        if expect is not None:
            if source.size() != expect.bytes:
                raise CheckpointError(f"checkpoint {path} is truncated: {source.size()} bytes, expected {expect.bytes}")
            buf = source.read_buffer()
            if checksum(buf) != expect.checksum:
                raise CheckpointError(f"checkpoint {path} fails its checksum")
            return ipc.open_file(buf).read_all()
        return ipc.open_file(source).read_all()
    except pa.ArrowInvalid as exc:
        raise CheckpointError(f"checkpoint {path} is not a valid Arrow file: {exc}") from None


def verify(info: FileInfo) -> str | None:
    """``None`` if the file is whole, else what is wrong with it."""
    try:
        if is_url(info.path):
            fs, inner = filesystem(info.path)
            size = fs.get_file_info(inner).size
            if size is None:
                return "missing"
            opener = fs.open_input_stream(inner)
        else:
            size = os.path.getsize(info.path)
            opener = open(info.path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return "missing"
    with opener as f:
        if size != info.bytes:
            return f"truncated ({size} of {info.bytes} bytes)"
        crc = 0
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    if f"{crc:08x}" != info.checksum:
        return "checksum mismatch"
    return None


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
