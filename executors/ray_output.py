"""What Ray prints while it starts, kept out of a run's output unless its logs are asked for.

``ray.init`` prints notes a user of a pipeline cannot act on: that token authentication is on,
or that the probe of 8.8.8.8 for the machine's address failed. Some come from Ray's Python
loggers (their own handler, so a log filter of ours never sees them), some from its C++ core,
which writes to file descriptor 2 before Ray's logging is set up (no variable reaches it then).

So, unless the ``executors`` loggers are enabled for INFO (``-v`` on the command line), Ray's
Python loggers start at ERROR and whatever reaches descriptor 2 during the start is held: lines
Ray marks as errors (and lines of no Ray format) are printed after it, its notes are logged at
DEBUG. Ray's own processes write to the log files of its session folder, not to this one's
descriptor 2, so nothing they print later is held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# "[2026-12-07 21:16:53,377 W 13088 13088] network_util.cc:330: ..." (C++: D, I, W, E, F)
_CORE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,.]+ ([DIWEF]) \d+ \d+\] ")
# "2026-12-07 21:17:19,861\tWARNING authentication_token_setup.py:85 -- ..." (Python)
_PYTHON = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+:\d+ -- ")
_NOTES = {"D", "I", "W", "DEBUG", "INFO", "WARNING"}


def wanted() -> bool:
    """Whether Ray's own logs are asked for: the ``executors`` loggers show INFO records."""
    return logger.isEnabledFor(logging.INFO)


def logs_kept() -> bool:
    """Whether the session folder of a Ray this process started outlives it, for its processes'
    logs: the ``executors`` loggers show DEBUG (``-vv``)."""
    return logger.isEnabledFor(logging.DEBUG)


def python_level() -> int:
    """The level of Ray's ``ray`` logger for ``ray.init``: INFO if asked for, else ERROR."""
    return logging.INFO if wanted() else logging.ERROR


@contextlib.contextmanager
def held_start() -> Iterator[None]:
    """Around ``ray.init``: hold what reaches descriptor 2, then print its errors (see module doc)."""
    if wanted():
        yield
        return
    ray_logger = logging.getLogger("ray")
    level = ray_logger.level
    ray_logger.setLevel(logging.ERROR)  # a started ``ray.init`` sets it again from ``logging_level``
    lines: list[str] = []
    try:
        with _descriptor_2_held(lines):
            yield
    except BaseException:
        ray_logger.setLevel(level)
        raise
    finally:
        for line in _errors(lines):
            print(line, file=sys.stderr)


@contextlib.contextmanager
def _descriptor_2_held(lines: list[str]) -> Iterator[None]:
    with tempfile.TemporaryFile() as held:
        _flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines.extend(held.read().decode("utf-8", "replace").splitlines())


def _flush() -> None:
    with contextlib.suppress(Exception):  # a closed or replaced sys.stderr
        sys.stderr.flush()


def _errors(lines: list[str]) -> list[str]:
    """The lines to show: Ray's error records (with their continuation lines) and unknown lines."""
    shown: list[str] = []
    keep = True
    for line in lines:
        mark = _CORE.match(line) or _PYTHON.match(line)
        if mark:
            keep = mark.group(1) not in _NOTES
        elif not line.strip():
            continue
        if keep:
            shown.append(line)
        else:
            logger.debug("ray: %s", line)
    return shown
