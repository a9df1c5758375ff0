"""Helpers for the executor tests: loopback checks, free ports, and child processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def only_loopback() -> bool:
    """True inside a network namespace whose only interface is ``lo``.

    Uses ``if_nameindex`` (the calling process's namespace), not ``/sys/class/net``, which
    shows the namespace of whoever mounted sysfs and so still lists eth0 under ``unshare -n``.
    """
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def skip_unless_only_loopback() -> None:
    if not only_loopback():
        pytest.skip("Ray binds to every interface: run Ray tests inside `unshare -n` (see tests/executors/conftest.py)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for 'unreachable' tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python(code: str, *, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (for what needs a process of its own, like a second Ray)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def wait_for_file(path: Path, proc: subprocess.Popen[Any], timeout: float = 60) -> str:
    """The text of ``path`` once ``proc`` has written it; fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode} before writing {path}")
        time.sleep(0.1)
    raise TimeoutError(f"{path} not written within {timeout} s")


def stop(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Stop a process started with ``start_new_session=True``, then anything it left behind.

    SIGTERM goes to the process alone, so it can stop its children in order (``ray start
    --block`` and ``dask worker`` do); whatever still carries its process group then gets SIGKILL.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
