"""Worker processes die with the process that started them, even after a ``kill -9``.

Linux's ``PR_SET_PDEATHSIG`` asks the kernel to send SIGKILL to a process when its parent
exits. Pool workers set it at start (their initializer); a forkserver sets it by importing
``executors._forkserver_lifeline``, so the chain driver → forkserver → workers unwinds when
the driver dies. Elsewhere these calls do nothing (workers then exit on their own when their
pipes close).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask for SIGKILL when the parent exits; exit now if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
