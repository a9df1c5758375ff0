"""Helpers shared by test files: what the ledger holds, run ids in output, processes ending,
pipeline modules written for a test, a ``durable`` driver killed mid-run.

What the tests read from the ledger goes through these functions, so the ledger's tables are
named in one place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil

from pipelines._engine.idset import IdSet
from pipelines.store import Store
from pipelines.store.ledger import Part

RUN_ID = r"\d{8}-\d{6}-[0-9a-f]+"
ROOT = Path(__file__).resolve().parent.parent
TEST_DAGS = ROOT / "tests" / "dags"


def done_in_ledger(store: Path) -> Counter[str]:
    """Items each stage has checkpointed in ``store``, over every run, according to the ledger."""
    with Store(store) as s:
        out: Counter[str] = Counter()
        for row in s.ledger.query("SELECT o.stage, p.done FROM parts p JOIN objects o ON o.key = p.key"):
            out[row["stage"]] += len(IdSet.from_json(row["done"]))
        return out


def stage_parts(store: Path, stage: str) -> list[Part]:
    """Every checkpointed part of ``stage`` in ``store``, whatever its batch or run."""
    with Store(store) as s:
        rows = s.ledger.query("SELECT key FROM objects WHERE stage = ? ORDER BY key", (stage,))
        return [part for row in rows for part in s.ledger.parts(row["key"])]


def run_id_of(output: str) -> str:
    """The run id in a command's output: its ``resume`` hint, or its first line."""
    match = re.search(rf"resume ({RUN_ID})", output) or re.search(rf"\b(?:run|resuming) ({RUN_ID})", output)
    assert match, output
    return match.group(1)


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    """Those of ``pids`` still alive (not zombies) after up to ``timeout`` seconds (returns as soon
    as all are gone: the long default is for a loaded machine)."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if alive_not_zombie(p)]
        time.sleep(0.05)
    return alive


def alive_not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def write_dags(folder: Path, **modules: str) -> Path:
    """Write ``name=source`` as ``folder/name.py`` (dedented); return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip("\n"))
    return folder


def durable_calls(log: Path, start: int = 0) -> Counter[str]:
    """The calls ``tests/dags/durable.py`` logged to ``log`` (from line ``start``), by stage."""
    lines = log.read_text().splitlines()[start:] if log.exists() else []
    return Counter(line.split()[0] for line in lines)


@contextlib.contextmanager
def durable_driver(store: Path, log: Path, delay: float, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``run durable`` (quiet, 2 workers, each call logged to ``log`` after ``delay`` s; ``args``
    added to the command) in a session of its own; on leaving, ``kill -9`` of its whole process
    group, driver and workers."""
    env = {**os.environ, "DURABLE_LOG": str(log), "DURABLE_DELAY": str(delay), "PYTHONUNBUFFERED": "1"}
    argv = ["run", "durable", "--dags", str(TEST_DAGS), "--store", str(store), "--quiet", "--workers", "2", *args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def on_a_pty(command: list[str], *, cwd: Path, env: dict[str, str], columns: int | None = None) -> tuple[int, str]:
    """Run ``command`` with stdout and stderr on a pseudo-terminal (``columns`` wide, if given);
    its exit code and everything it wrote, read until every writer has closed the terminal."""
    leader, follower = pty.openpty()
    if columns is not None:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(), b"".join(chunks).decode(errors="replace")
