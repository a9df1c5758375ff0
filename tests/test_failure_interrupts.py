"""Ctrl-C on a real run: what is kept, what the resume asks for, and that no worker outlives its driver.

Test pipelines are ``tests/dags/fault_*.py``; their stages log what they do to files named by
environment variables, so each test checks what really happened, not only what the run reports.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from pipelines.store import Store
from tests.failure_support import (
    _no_run_left_behind,  # noqa: F401 - fixtures this module's tests use
    dags,
    done_positions,
    errors,
    finish,
    kill_and_count_leftovers,
    lines,
    outcome_line,
    stage_table,
    start,
    wait_until,
)

from .helpers import run_id_of, wait_gone

# == 6. interrupts =============================================================================


@dataclass(frozen=True)
class Interrupted:
    """A run of ``fault_slow`` stopped by one SIGINT, and what was true right after it."""

    store: Path
    log: Path
    output: str
    returncode: int
    run_id: str
    leftover_children: list[int]
    done: set[int]
    open_errors: list


@pytest.fixture(scope="class")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    base = tmp_path_factory.mktemp("sigint")
    store, log = base / "store", base / "log"
    proc = start("run", "fault_slow", "--workers", "2", store=store, env={"FAULT_LOG": str(log), "FAULT_DELAY": "0.05"})
    wait_until(lambda: len(lines(log)) >= 60, proc)
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert children, "a process stage should have worker processes"
    os.kill(proc.pid, signal.SIGINT)
    output = finish(proc)
    run_id = run_id_of(output)
    return Interrupted(
        store,
        log,
        output,
        proc.returncode,
        run_id,
        wait_gone(children),
        done_positions(store, "slow", 50),
        errors(store, run_id),
    )


class TestInterrupts:
    def test_first_sigint_stops_cleanly_and_keeps_checkpoints(self, interrupted: Interrupted) -> None:
        run, store = interrupted, interrupted.store
        assert run.returncode == 130, run.output
        assert outcome_line(run.output).endswith(
            f"interrupted; resume with: python -m pipelines resume {run.run_id} --store {store}"
        )
        assert not run.leftover_children, "child processes outlived the interrupted run"
        assert run.done, "no finished checkpoint was kept"
        with Store(store) as s:
            assert s.ledger.run(run.run_id)["status"] == "interrupted"
            for row in s.ledger.query("SELECT path, rows FROM parts"):
                assert ipc.open_file(pa.memory_map(s.ledger.absolute(row["path"]))).read_all().num_rows == row["rows"]

        before = len(lines(run.log))
        dags("resume", run.run_id, store=store, env={"FAULT_LOG": str(run.log), "FAULT_DELAY": "0"}, check=0)
        assert sum(1 for e in lines(run.log)[before:] if e[0] == "slow") == 400 - len(run.done)
        assert stage_table(store, run.run_id, "total").to_pylist() == [
            {"rows": 400, "sum": sum(2 * x + 1 for x in range(400))}
        ]

    def test_first_sigint_records_no_failures_and_prints_no_traceback(self, interrupted: Interrupted) -> None:
        assert "Traceback" not in interrupted.output, interrupted.output
        assert interrupted.open_errors == [], {(e.error_type, e.message) for e in interrupted.open_errors}

    def test_second_sigint_exits_at_once_with_a_stuck_thread(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = start("run", "fault_stuck", store=store, env={"FAULT_LOG": str(log)})
        wait_until(lambda: ["stuck", "5"] in lines(log), proc)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGINT)
        output = finish(proc)  # the stuck thread would hold the process forever: pytest-timeout
        assert "stopping now" in output
        assert proc.returncode == 130, f"exit {proc.returncode}:\n{output}"
        assert "interrupted; resume with: python -m pipelines resume" in output
        done = done_positions(store, "stuck", 50)
        assert done and 5 not in done  # what finished is kept; the stuck item is left for a resume

    def test_first_sigint_waits_only_the_grace_period_for_a_stuck_thread(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = start("run", "fault_stuck", store=store, env={"FAULT_LOG": str(log)})
        wait_until(lambda: ["stuck", "5"] in lines(log), proc)
        os.kill(proc.pid, signal.SIGINT)
        output = finish(proc)  # the stuck thread would hold the process forever: pytest-timeout
        assert proc.returncode == 130, f"exit {proc.returncode}:\n{output}"
        assert "interrupted; resume with: python -m pipelines resume" in output
        done = done_positions(store, "stuck", 50)
        assert done and 5 not in done


def test_workers_die_with_a_driver_killed_while_they_start(store: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = start(
        "run",
        "fault_chaos",
        "--param",
        "n=600",
        "--workers",
        "2",
        store=store,
        env={"FAULT_LOG": str(log), "PIPELINES_START_METHOD": "spawn"},
    )
    driver = psutil.Process(proc.pid)

    def spawned() -> bool:
        kids = driver.children(recursive=True)
        return sum("multiprocessing.spawn" in " ".join(_cmdline(k)) for k in kids) >= 2

    wait_until(spawned, proc)
    left = kill_and_count_leftovers(proc, log)
    assert left == 0, f"{left} process(es) of the killed run were still alive 10 s later"


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []
