"""Ctrl-C that never lands inside a ledger transaction.

A ``KeyboardInterrupt`` raised while a loop turn's transaction is open would roll the turn
back: tasks whose files are whole would be left unrecorded and computed again. Inside
``deferred()`` SIGINT is only noted; it is delivered again, to whatever handler was there,
as soon as the block ends (after the commit).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT until the block ends (main thread only: the only one Python signals reach)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)
