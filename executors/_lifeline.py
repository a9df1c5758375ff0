"""Worker processes die with the process that started them, even after a ``kill -9``.

Linux's ``PR_SET_PDEATHSIG`` asks the kernel to send SIGKILL to a process when its parent
exits. Pool workers set it at start (their initializer); a forkserver sets it by importing
``executors._forkserver_lifeline``, so the chain driver → forkserver → workers unwinds when
the driver dies. Elsewhere these calls do nothing (workers then exit on their own when their
pipes close).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator

from ._main_guard import main_not_imported

PR_SET_PDEATHSIG = 1
DRIVER_ENV = "PIPELINES_DRIVER_PID"
_keeper: threading.Thread | None = None
_keeper_lock = threading.Lock()


def die_with_parent(driver: int | None = None) -> None:
    """Ask for SIGKILL when the parent exits; exit now if the driver is already gone.

    ``driver``: the process whose death must end this one (the parent, or the parent's parent
    for forkserver children); it may have died before ``prctl`` took effect.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1 or (driver is not None and not _alive(driver)):
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Processes started in this block ignore SIGINT (an ignored signal stays ignored across exec).

    A terminal's Ctrl-C reaches every process of its group; workers must leave it to the
    driver, which stops them in order, instead of each dying with a traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may change signal handlers
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start_forkserver() -> None:
    """Start the forkserver from a thread that lives as long as this process.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that started a process exits, so a forkserver
    started from a short-lived thread (a run driven from a worker thread) would die with it.
    """
    global _keeper
    with _keeper_lock:
        if _keeper is not None and _keeper.is_alive():
            from multiprocessing import forkserver

            with main_not_imported():
                forkserver.ensure_running()  # restarts it if it died
            return
        os.environ[DRIVER_ENV] = str(os.getpid())
        ready = threading.Event()
        failure: list[BaseException] = []

        def keep() -> None:
            from multiprocessing import forkserver

            try:
                with main_not_imported():  # the forkserver never imports the user's script either
                    forkserver.ensure_running()
            except BaseException as exc:  # reported to the caller
                failure.append(exc)
            finally:
                ready.set()
            threading.Event().wait()  # live as long as the process

        _keeper = threading.Thread(target=keep, name="pipelines-forkserver", daemon=True)
        _keeper.start()
        ready.wait()
        if failure:
            raise failure[0]
