"""File stages: files as inputs with an identity, listing and reading them inside their folder.

A path alone does not say which content a stage saw: edit a file and its path stays the
same, so a rerun would reuse what was computed from the old content. ``FileRef`` is a file
as an input: its path relative to a root, with its size and modification time (and, when
asked, a digest of its bytes), so an edited file is a new item and only its work is redone.
``source`` makes a pipeline source of the files matching a pattern.

``safe_path`` is the guard for names that come from data (a catalog, a URL, a user): it
refuses absolute paths, ``..`` escapes (also through symlinks) and NUL bytes, so a record
saying ``../../etc/passwd`` cannot make a stage read outside its folder.

Example:
    >>> list_files("data", "images/*.png")[:2]              # doctest: +SKIP
    ['images/astronaut.png', 'images/brick.png']
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import Any

Root = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True, slots=True)
class FileRef:
    """A file as a pipeline input: what it is, not only where.

    Attributes:
        path: POSIX path relative to the root it was listed under (the root is not part of
            the identity, so moving the folder whole changes nothing).
        size: bytes, when listed.
        mtime_ns: modification time in nanoseconds, when listed.
        digest: BLAKE2b of the content (hex), when the source was asked for it, else ``None``.
    """

    path: str
    size: int
    mtime_ns: int
    digest: str | None = None

    @classmethod
    def of(cls, root: Root, path: str, *, digest: bool = False) -> FileRef:
        """Describe ``root / path`` as it is now."""
        full = safe_path(root, path)
        stat = full.stat()
        return cls(path, stat.st_size, stat.st_mtime_ns, _digest(full) if digest else None)

    def resolve(self, root: Root) -> Path:
        """The file's absolute path under ``root`` (checked by ``safe_path``)."""
        return safe_path(root, self.path)


def source(
    pattern: str = "**/*",
    *,
    root: Root | Callable[[Any], Root] = ".",
    digest: bool = False,
) -> Callable[..., Iterator[FileRef]]:
    """A pipeline source of the files under ``root`` matching ``pattern``, as ``FileRef`` items.

    Args:
        pattern: a ``pathlib`` glob relative to ``root`` (``"**/*.json"``).
        root: the folder; or a function of the pipeline's params that returns it (the source
            then takes ``params``).
        digest: also hash every file's bytes, for file systems or tools that keep a changed
            file's size and mtime (coarse timestamps, ``cp -p``); it reads every file.

    Example:
        >>> pipeline.source(files.source("*.json", root="data/json_files"), name="json_files")  # doctest: +SKIP
    """

    def listing(folder: Root) -> Iterator[FileRef]:
        for name in list_files(folder, pattern):
            yield FileRef.of(folder, name, digest=digest)

    if callable(root):
        root_of = root

        def files_of(params: Any) -> Iterator[FileRef]:
            """The matching files, in name order, each with its size and mtime."""
            return listing(root_of(params))

        return files_of

    def files() -> Iterator[FileRef]:
        """The matching files, in name order, each with its size and mtime."""
        return listing(root)

    return files


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def safe_path(root: str | os.PathLike[str], name: str | os.PathLike[str]) -> Path:
    """Resolve ``name`` under ``root``, refusing anything that would leave ``root``.

    Args:
        root: the folder that must contain the result.
        name: a relative path such as ``images/coffee.png``.

    Returns:
        The resolved absolute path (it need not exist).

    Raises:
        ValueError: ``name`` is empty, absolute, contains a NUL byte, or resolves (after
            ``..`` and symlinks) outside ``root``.

    Example:
        >>> safe_path("data", "../../etc/passwd")
        Traceback (most recent call last):
        ValueError: '../../etc/passwd' escapes the folder data
    """
    text = os.fspath(name)
    if not text or text in (".", "./"):
        raise ValueError(f"{text!r} does not name a file under {os.fspath(root)}")
    if "\0" in text:
        raise ValueError(f"{text!r} contains a NUL byte")
    if PurePath(text).is_absolute():
        raise ValueError(f"{text!r} is an absolute path; expected a path relative to {os.fspath(root)}")
    base = Path(root).resolve()
    path = (base / text).resolve()
    if not path.is_relative_to(base):
        raise ValueError(f"{text!r} escapes the folder {os.fspath(root)}")
    return path


def list_files(root: str | os.PathLike[str], pattern: str = "**/*") -> list[str]:
    """The files under ``root`` matching a glob pattern, as sorted POSIX-style relative paths.

    The order depends only on the names (not on the file system), so a source built on it
    yields the same items on every machine.

    Args:
        root: the folder to search.
        pattern: a ``pathlib`` glob relative to ``root``; ``**`` matches subfolders.

    Returns:
        Relative paths of regular files (directories excluded), sorted.

    Raises:
        NotADirectoryError: ``root`` is not a folder.

    Example:
        >>> list_files("data", "*.json")                     # doctest: +SKIP
        ['cars.json', 'catalog.json']
    """
    base = Path(root)
    if not base.is_dir():
        raise NotADirectoryError(f"cannot list {os.fspath(root)!r}: not a directory")
    return sorted(p.relative_to(base).as_posix() for p in base.glob(pattern) if p.is_file())


def read_bytes(
    name: str | os.PathLike[str] | FileRef, *, root: str | os.PathLike[str] | None = None, max_bytes: int | None = None
) -> bytes:
    """Read a whole file, optionally confined to ``root`` and capped in size.

    Args:
        name: the file; relative to ``root`` when ``root`` is given (and checked by ``safe_path``).
            A ``FileRef`` must still have the size and mtime it was listed with: a file
            that changed since is refused rather than read under the old identity.
        root: the folder the file must be in, or ``None`` to read ``name`` as given.
        max_bytes: refuse files larger than this many bytes.

    Returns:
        The file's content.

    Raises:
        ValueError: ``name`` escapes ``root``, is not a regular file (a FIFO, a device, a
            socket: reading one could block for ever or never end), or is larger than ``max_bytes``.
        OSError: the file cannot be read (``FileNotFoundError`` names it).

    Example:
        >>> len(read_bytes("images/coffee.png", root="data", max_bytes=10**6))    # doctest: +SKIP
        466706
    """
    ref, where = (name, name.path) if isinstance(name, FileRef) else (None, os.fspath(name))
    path = safe_path(root, where) if root is not None else Path(where)
    # O_NONBLOCK: opening a FIFO for reading would wait for a writer, for ever; it is refused below
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is
        if exc.errno == errno.ENXIO and not stat.S_ISREG(mode := os.stat(path).st_mode):
            raise ValueError(
                f"{where!r} is {_file_kind(mode)}, not a regular file; only regular files are read"
            ) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError(f"{where!r} is {_file_kind(info.st_mode)}, not a regular file; only regular files are read")
    os.set_blocking(fd, True)
    with open(fd, "rb") as f:
        if max_bytes is not None and info.st_size > max_bytes:
            raise ValueError(f"{where!r}: {info.st_size} bytes exceeds the limit of {max_bytes}")
        if ref is not None and (info.st_size, info.st_mtime_ns) != (ref.size, ref.mtime_ns):
            raise ValueError(
                f"{where!r} changed since it was listed ({ref.size} bytes, mtime_ns "
                f"{ref.mtime_ns}; now {info.st_size} bytes, mtime_ns {info.st_mtime_ns}); run again"
            )
        return f.read()


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return kind
    return "not a regular file"
