"""Error policies (fail, skip, collect) and poison items that kill their worker, with real processes.

Test pipelines are ``tests/dags/fault_*.py``; their stages log what they do to files named by
environment variables, so each test checks what really happened, not only what the run reports.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

import executors
import pipelines
from pipelines import RunStatus
from pipelines.store import Store
from tests.failure_support import (
    _no_run_left_behind,  # noqa: F401 - fixtures this module's tests use
    dags,
    done_positions,
    errors,
    lines,
    outcome_line,
    stage_table,
)

from .conftest import cli
from .helpers import run_id_of

# == 1. error policies =========================================================================


class TestErrorPolicies:
    N = 40

    @pytest.mark.parametrize("executor", ["threads", "processes"])
    def test_fail_stops_scheduling_and_keeps_what_was_in_flight(
        self, executor: str, store: Path, tmp_path: Path
    ) -> None:
        log = tmp_path / "log"
        env = {"FAULT_LOG": str(log), "FAULT_FAIL": "2", "FAULT_DELAY": "0.4"}
        proc = dags("run", "fault_fail", "--executor", executor, store=store, env=env, check=1)
        run_id = run_id_of(proc.stdout)
        started = {int(e[1]) for e in lines(log) if e[0] == "start"}
        ended = {int(e[1]) for e in lines(log) if e[0] == "end"}
        assert 2 in started and 2 not in ended
        assert len(started) < self.N, "scheduling went on after the failure"
        assert ended == started - {2}, "a task that was running when item 2 failed did not finish"
        assert done_positions(store, "handle", 10) == ended, "finished work was not kept in the ledger"
        with Store(store) as s:
            assert s.ledger.run(run_id)["status"] == "failed"

        # the hint: one line naming stage, item and cause, and the command that resumes
        line = outcome_line(proc.stdout)
        assert "stage 'handle'" in line and "item 2" in line and "RecordError: cannot handle rec-002" in line
        assert line.endswith(f"resume with: python -m pipelines resume {run_id} --store {store}")
        assert "Traceback" not in proc.stdout + proc.stderr

        # fixed: a resume computes exactly what was not done
        before = len(lines(log))
        dags("resume", run_id, store=store, env={"FAULT_LOG": str(log)}, check=0)
        redo = Counter(e[1] for e in lines(log)[before:] if e[0] == "start")
        assert set(map(int, redo)) == set(range(self.N)) - ended and set(redo.values()) == {1}
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": self.N}]

    def test_skip_records_the_failures_and_goes_on(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        proc = dags("run", "fault_skip", store=store, env={"FAULT_LOG": str(log), "FAULT_FAIL": "3,17,31"}, check=0)
        run_id = run_id_of(proc.stdout)
        assert f"fault_skip · {run_id} · partial" in proc.stdout
        line = outcome_line(proc.stdout)
        assert line.startswith("3 of 40 items failed in stage 'handle'"), line
        assert "RecordError: cannot handle rec-003" in line and "item 3" in line, line  # the first failure
        assert line.endswith(f"retry them with: python -m pipelines resume {run_id} --store {store}")
        assert sorted(e.position for e in errors(store, run_id)) == [3, 17, 31]
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": 37}]
        with Store(store) as s:
            assert s.ledger.run(run_id)["status"] == "partial"

        before = len(lines(log))
        resumed = dags("resume", run_id, store=store, env={"FAULT_LOG": str(log)}, check=0)
        assert f"fault_skip · {run_id} · ok" in resumed.stdout
        assert sorted(int(e[1]) for e in lines(log)[before:] if e[0] == "start") == [3, 17, 31]
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": 40}]
        assert errors(store, run_id) == []

    def test_collect_writes_a_dead_letter_table_inspect_shows_it_and_resume_retries(
        self, store: Path, tmp_path: Path
    ) -> None:
        log = tmp_path / "log"
        proc = dags("run", "fault_collect", store=store, env={"FAULT_LOG": str(log), "FAULT_FAIL": "3,23"}, check=0)
        run_id = run_id_of(proc.stdout)
        tries = Counter(int(e[1]) for e in lines(log) if e[0] == "start")
        assert tries[3] == tries[23] == 3 and tries[4] == 1  # retries=2 for an error that says it is retryable

        path = store / "runs" / run_id / "dead_letter" / "handle.arrow"
        table = ipc.open_file(pa.memory_map(str(path))).read_all()
        assert table.column_names == [
            "stage",
            "batch",
            "item",
            "input",
            "error_type",
            "message",
            "traceback",
            "attempts",
        ]
        rows = sorted(table.to_pylist(), key=lambda r: (r["batch"], r["item"]))
        for row, (batch, item) in zip(rows, [(0, 3), (2, 3)], strict=True):
            record = f"rec-{10 * batch + item:03d}"
            assert {k: row[k] for k in ("stage", "batch", "item", "input", "error_type", "message", "attempts")} == {
                "stage": "handle",
                "batch": batch,
                "item": item,
                "input": repr(record),
                "error_type": "RecordError",
                "message": f"cannot handle {record}",
                "attempts": 3,
            }
            assert "Traceback (most recent call last)" in row["traceback"]
            assert "in handle" in row["traceback"] and row["traceback"].rstrip().endswith(
                f"RecordError: cannot handle {record}"
            )
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": 38}]

        shown = cli("inspect", run_id, "handle", "--store", str(store), check=0).stdout
        assert "2 failed items" in shown
        assert "item 3: RecordError: cannot handle rec-003 (attempts: 3)" in shown
        assert "item 23: RecordError: cannot handle rec-023 (attempts: 3)" in shown
        assert "input: 'rec-023'" in shown and "dead-letter table:" in shown

        before = len(lines(log))
        dags("resume", run_id, store=store, env={"FAULT_LOG": str(log)}, check=0)
        assert sorted(int(e[1]) for e in lines(log)[before:] if e[0] == "start") == [3, 23]
        assert ipc.open_file(pa.memory_map(str(path))).read_all().num_rows == 0  # nothing dead any more
        assert stage_table(store, run_id, "tally").to_pylist() == [{"rows": 40}]

    def test_resume_while_the_cause_remains_retries_only_the_dead_items(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "log"
        env = {"FAULT_LOG": str(log), "FAULT_FAIL": "5"}
        run_id = run_id_of(dags("run", "fault_collect", store=store, env=env, check=0).stdout)
        before = len(lines(log))
        again = dags("resume", run_id, store=store, env=env, check=0)
        assert f"· {run_id} · partial" in again.stdout
        assert [int(e[1]) for e in lines(log)[before:] if e[0] == "start"] == [5, 5, 5]  # only it, with its retries
        assert outcome_line(again.stdout).startswith("1 of 40 items failed in stage 'handle'")
        assert {(e.position, e.error_type, e.attempts) for e in errors(store, run_id)} == {(5, "RecordError", 3)}

    def test_a_dead_item_is_one_error_however_often_it_is_retried(
        self, load, store: Path, tmp_path: Path, monkeypatch
    ) -> None:
        monkeypatch.setenv("FAULT_LOG", str(tmp_path / "log"))
        monkeypatch.setenv("FAULT_FAIL", "5")
        first = pipelines.run(load("fault_collect"), store=store)
        pipelines.resume(first.run_id, store=store)
        last = pipelines.resume(first.run_id, store=store)
        assert last.status is RunStatus.PARTIAL and last.stages["handle"].failed_items == 1
        assert len(last.failures) == 1, [(e.position, e.attempts) for e in last.failures]
        path = store / "runs" / first.run_id / "dead_letter" / "handle.arrow"
        assert ipc.open_file(pa.memory_map(str(path))).read_all().column("item").to_pylist() == [5]


# == 5. poison items ===========================================================================

POISON = {
    7: ("exit", "worker died: exit code 3"),
    23: ("segv", "worker died: signal 11 (SIGSEGV)"),
    41: ("kill", "worker died: signal 9 (SIGKILL)"),
}


@pytest.mark.parametrize(
    "executor",
    [
        "processes",
        pytest.param("joblib", marks=pytest.mark.skipif(not executors.available("joblib"), reason="joblib missing")),
    ],
)
def test_poison_items_fail_alone_with_their_cause(executor: str, store: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    env = {"FAULT_LOG": str(log), "FAULT_POISON": ",".join(f"{i}:{how}" for i, (how, _) in POISON.items())}
    proc = dags(
        "run", "fault_poison", "--executor", executor, "--workers", "2", store=store, env=env, check=0, timeout=240
    )
    run_id = run_id_of(proc.stdout)
    assert f"· {run_id} · partial" in proc.stdout
    found = {e.position: (e.error_type, e.message) for e in errors(store, run_id)}
    assert found == {i: ("WorkerLostError", cause) for i, (_, cause) in POISON.items()}, found
    table = stage_table(store, run_id, "risky")
    assert table.column("risky").to_pylist() == [10 * x for x in range(60) if x not in POISON]
    called = Counter(int(e[0]) for e in lines(log))
    assert set(called) == set(range(60))

    # the cause gone, a resume computes the three and nothing else
    before = len(lines(log))
    dags("resume", run_id, store=store, env={"FAULT_LOG": str(log)}, check=0)
    assert sorted(int(e[0]) for e in lines(log)[before:]) == sorted(POISON)
    assert stage_table(store, run_id, "risky").column("risky").to_pylist() == [10 * x for x in range(60)]
