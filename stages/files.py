"""File stages: list the files under a folder, read them, and keep names inside their folder.

``safe_path`` is the guard for names that come from data (a catalog, a URL, a user): it
refuses absolute paths, ``..`` escapes (also through symlinks) and NUL bytes, so a record
saying ``../../etc/passwd`` cannot make a stage read outside its folder.

Example:
    >>> list_files("data", "images/*.png")[:2]              # doctest: +SKIP
    ['images/astronaut.png', 'images/brick.png']
"""
from __future__ import annotations

import os
import stat
from pathlib import Path, PurePath


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


def read_bytes(name: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None,
               max_bytes: int | None = None) -> bytes:
    """Read a whole file, optionally confined to ``root`` and capped in size.

    Args:
        name: the file; relative to ``root`` when ``root`` is given (and checked by ``safe_path``).
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
    path = safe_path(root, name) if root is not None else Path(name)
    # O_NONBLOCK: opening a FIFO for reading would wait for a writer, for ever; it is refused below
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError(f"{os.fspath(name)!r} is {_file_kind(info.st_mode)}, not a regular file; "
                         f"only regular files are read")
    os.set_blocking(fd, True)
    with open(fd, "rb") as f:
        if max_bytes is not None and info.st_size > max_bytes:
            raise ValueError(f"{os.fspath(name)!r}: {info.st_size} bytes exceeds the limit of {max_bytes}")
        return f.read()


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a regular file"
