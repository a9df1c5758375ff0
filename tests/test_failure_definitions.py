"""Bad definitions and options: clear errors before anything runs.

Test pipelines are ``tests/dags/fault_*.py``; their stages log what they do to files named by
environment variables, so each test checks what really happened, not only what the run reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import executors
import pipelines
from pipelines import Pipeline, UsageError
from tests.failure_support import (
    _no_run_left_behind,  # noqa: F401 - fixtures this module's tests use
    dags,
)

from .conftest import ROOT, cli

# == 7. bad definitions and options ============================================================

CLOSURE_SCRIPT = """
import sys
import threading
from collections.abc import Iterator

import pipelines
from pipelines import Pipeline


def build() -> Pipeline:
    lock = threading.Lock()
    pipeline = Pipeline("closure")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(10)

    @pipeline.map(over=numbers, kind="cpu")
    def guarded(x: int) -> int:
        with lock:
            with open(sys.argv[2], "a") as f:
                f.write(f"{x}\\n")
            return x * 2

    return pipeline


if __name__ == "__main__":
    try:
        pipelines.run(build(), store=sys.argv[1])
    except pipelines.UsageError as exc:
        print(f"refused: {exc}", flush=True)
    result = pipelines.run(build(), store=sys.argv[1], executor="threads")  # what the message suggests
    print("threads:", result.status.value, result.table("guarded").column("guarded").to_pylist())
"""


def locked_closure(calls: list[int]) -> Pipeline:
    """A CPU stage that closes over a lock: it cannot be pickled for a worker process."""
    import threading

    lock = threading.Lock()
    pipeline = pipelines.Pipeline("local_closure")

    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(5)

    @pipeline.map(over=numbers, kind="cpu")
    def locked(x: int) -> int:
        with lock:
            calls.append(x)
            return x

    return pipeline


class TestBadDefinitions:
    def test_unpicklable_stage_is_refused_before_the_run_starts(self, tmp_path: Path) -> None:
        script = tmp_path / "script.py"
        script.write_text(CLOSURE_SCRIPT)
        log = tmp_path / "calls.log"
        proc = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "store"), str(log)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        refused = next(ln for ln in proc.stdout.splitlines() if ln.startswith("refused:"))
        assert "stage 'guarded' cannot be sent to processes workers" in refused
        assert "cannot pickle '_thread.lock'" in refused and 'executor="threads"' in refused
        assert "threads: ok [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in proc.stdout
        assert sorted(int(x) for x in log.read_text().split()) == list(range(10))  # only the threads run called it

    def test_unpicklable_stage_in_process_is_a_usage_error(self, tmp_path: Path) -> None:
        calls: list[int] = []
        with pytest.raises(UsageError, match=r"stage 'locked' cannot be sent to processes workers.*threads"):
            pipelines.run(locked_closure(calls), store=tmp_path / "store")
        assert calls == []

    def test_a_refused_definition_leaves_no_crashed_run_behind(self, tmp_path: Path) -> None:
        with pytest.raises(UsageError):
            pipelines.run(locked_closure([]), store=tmp_path / "store")
        shown = cli("runs", "--store", str(tmp_path / "store"), check=0).stdout
        assert "crashed" not in shown and "running" not in shown, shown

    def test_unknown_executor(self, store: Path) -> None:
        proc = dags("run", "fault_rate", "--executor", "proccesses", store=store, check=2)
        assert "unknown executor 'proccesses' (did you mean 'processes'?)" in proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        debug = dags("run", "fault_rate", "--executor", "proccesses", "--debug", store=store, check=2)
        assert "Traceback (most recent call last)" in debug.stderr

    def test_store_that_cannot_be_written(self, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        proc = dags("run", "fault_rate", store=blocker / "store", check=2)
        assert f"store {blocker / 'store'} is not writable" in proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        debug = dags("run", "fault_rate", "--debug", store=blocker / "store", check=2)
        assert "Traceback (most recent call last)" in debug.stderr

    @pytest.mark.skipif(
        not (executors.available("dask") and (ROOT / "executors" / "dask_cluster.py").exists()),
        reason="needs dask and executors/dask_cluster.py",
    )
    def test_unreachable_dask_address(self, store: Path) -> None:
        import socket

        with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = dags(
            "run",
            "fault_rate",
            "--executor",
            "dask",
            "--address",
            f"tcp://127.0.0.1:{port}",
            store=store,
            check=2,
            timeout=180,
        )
        assert f"127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr
