"""Helpers for the executor tests: loopback checks, free ports, child processes, and clusters
started from the command line (``dask scheduler`` + ``dask worker``, ``ray start --head``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


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
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# -- clusters from the command line ------------------------------------------------------------------
@dataclass(frozen=True)
class DaskWorkers:
    """One ``dask worker`` command: its processes, the threads of each, extra environment
    variables (a worker sees only its own environment, never the driver's), and a command
    to run it under (say ``unshare -m sh -c '...' sh``)."""

    nworkers: int = 2
    nthreads: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    wrap: tuple[str, ...] = ()


@contextlib.contextmanager
def dask_cli_cluster(folder: Path, *workers: DaskWorkers, tls: Path | None = None) -> Iterator[str]:
    """``dask scheduler`` plus one ``dask worker`` per spec (default: 2 single-threaded
    processes), all on 127.0.0.1 with dashboards on free ports; yields the scheduler's
    address once every worker has joined, and stops them all after. With ``tls``, a folder of
    credentials (``python -m executors.dask_tls``), they speak TLS and require them."""
    import distributed

    specs = workers or (DaskWorkers(),)
    tls_args: list[str] = []
    security = None
    if tls is not None:
        from executors import dask_tls

        tls_args = [
            "--tls-ca-file",
            str(tls / dask_tls.CA),
            "--tls-cert",
            str(tls / dask_tls.CERT),
            "--tls-key",
            str(tls / dask_tls.KEY),
        ]
        security = dask_tls.load(tls)
    scheduler_file = folder / "scheduler.json"
    dask_cli = str(Path(sys.executable).with_name("dask"))
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        logs.append(open(folder / "scheduler.log", "w"))  # noqa: SIM115 - closed below
        procs.append(
            subprocess.Popen(
                [
                    dask_cli,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--dashboard-address",
                    "127.0.0.1:0",
                    "--scheduler-file",
                    str(scheduler_file),
                    *(["--protocol", "tls", *tls_args] if tls else []),
                ],
                stdout=logs[-1],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        address = json.loads(wait_for_file(scheduler_file, procs[0]))["address"]
        for i, spec in enumerate(specs):
            logs.append(open(folder / f"worker-{i}.log", "w"))  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [
                        *spec.wrap,
                        dask_cli,
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--dashboard-address",
                        "127.0.0.1:0",
                        "--nworkers",
                        str(spec.nworkers),
                        "--nthreads",
                        str(spec.nthreads),
                        *tls_args,
                    ],
                    stdout=logs[-1],
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **spec.env},
                    start_new_session=True,
                )
            )
        with distributed.Client(address, timeout=30, security=security, set_as_default=False) as client:
            client.wait_for_workers(sum(s.nworkers for s in specs), timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)
        for log in logs:
            log.close()


@contextlib.contextmanager
def ray_head_node(folder: Path, *, num_cpus: int = 1, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``ray start --head --block`` with a temp dir of its own; yields its address (``ip:port``).

    Only inside a network namespace with nothing but loopback (Ray binds every interface).
    Stopped by killing its process group, never with ``ray stop``; fails if any process of
    that temp dir outlives it.
    """
    import psutil

    skip_unless_only_loopback()
    temp_dir = tempfile.mkdtemp(prefix="ray-head-")  # short: socket paths must fit in 107 bytes
    log = open(folder / "ray-head.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            "--port=0",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **RAY_ENV, **(env or {})},
        start_new_session=True,
    )
    try:
        yield wait_for_file(Path(temp_dir) / "ray_current_cluster", proc, timeout=120).strip()
    finally:
        stop(proc)
        log.close()
        deadline = time.monotonic() + 15
        while left := [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]:
            if time.monotonic() > deadline:
                raise AssertionError(f"Ray processes outlived the head node: {left}")
            time.sleep(0.2)
        shutil.rmtree(temp_dir, ignore_errors=True)
