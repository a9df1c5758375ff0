"""The files under a store's data root, local or on an object store, by relative path.

``repair`` and ``gc`` walk the store with it; paths are relative to the data root
(``runs/<run>/<stage>/<file>``), as the ledger stores them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from pipelines.store import arrow as batch_files


@dataclass(frozen=True, slots=True)
class Entry:
    """One file: its path relative to the data root, its size and modification time (seconds)."""

    rel: str
    size: int
    mtime: float

    @property
    def parts(self) -> list[str]:
        return self.rel.split("/")


def walk(data_root: str, prefix: str = "runs") -> Iterator[Entry]:
    """Every file under ``data_root/prefix``, in no particular order; nothing if it is absent."""
    if batch_files.is_url(data_root):
        import pyarrow.fs as pafs

        fs, inner = batch_files.filesystem(batch_files.join(data_root, prefix))
        base = inner.rstrip("/")
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError:
            return
        strip = len(base) - len(prefix)
        for info in infos:
            if info.type == pafs.FileType.File:
                mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
                yield Entry(info.path[strip:], info.size or 0, mtime)
        return
    top = os.path.join(data_root, prefix)
    for folder, _dirs, files in os.walk(top):
        rel_folder = os.path.relpath(folder, data_root).replace(os.sep, "/")
        for name in files:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:  # removed meanwhile
                continue
            yield Entry(f"{rel_folder}/{name}", st.st_size, st.st_mtime)


def has_runs(data_root: str) -> bool:
    """Whether the data root holds any run's files (a cheap look, for a lost ledger)."""
    return next(walk(data_root), None) is not None


def path_of(data_root: str, rel: str) -> str:
    return batch_files.join(data_root, *rel.split("/"))


def remove_empty_dirs(data_root: str, prefix: str = "runs", keep: frozenset[str] = frozenset()) -> None:
    """Remove empty folders under a local ``data_root/prefix`` (object stores have none)."""
    if batch_files.is_url(data_root):
        return
    top = os.path.join(data_root, prefix)
    for folder, _dirs, _files in os.walk(top, topdown=False):
        if folder == top or os.path.relpath(folder, data_root).replace(os.sep, "/") in keep:
            continue
        with contextlib.suppress(OSError):  # not empty
            os.rmdir(folder)
