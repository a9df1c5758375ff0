"""One definition per number: the live line, the summary, ``inspect``, ``runs``, ``load`` and
``RunResult`` agree.

* a stage's items: every item it processed, computed, reused or failed (the failed among them);
* a source's rows: its batches once each, however many runs stored the same bytes;
* a run's items in ``runs``: what its sources read, checkpointed ones for a run that was killed;
* no rate for a source (its pace is its reader's) or for fewer than ten items.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pipelines
from pipelines.define import loader
from pipelines.observe.hooks import StageStats
from pipelines.observe.report import progress_line
from pipelines.store import Store
from tests.conftest import ROOT, TEST_DAGS, cli


class Collect(pipelines.RunObserver):
    def __init__(self) -> None:
        self.final: dict[str, StageStats] = {}

    def stage_progress(self, stats: StageStats) -> None:
        if stats.final:
            self.final[stats.stage] = stats


def test_items_agree_with_failures_counted_in_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULT_FAIL", "3,17,31")
    seen = Collect()
    result = pipelines.run(loader.load("fault_skip", TEST_DAGS), store=tmp_path, executor="threads", observers=[seen])
    handle = result.stages["handle"]
    assert (handle.items, handle.failed_items, handle.rows, handle.computed_items) == (40, 3, 37, 37)
    live = seen.final["handle"]
    assert (live.items_processed, live.items_failed) == (handle.items, handle.failed_items)
    assert progress_line(live).startswith("handle: finished, 40 items, 3 failed")
    loaded = pipelines.load(result.run_id, store=tmp_path)
    assert (loaded.stages["handle"].items, loaded.stages["handle"].failed_items) == (40, 3)
    with Store(tmp_path) as store:
        row = store.ledger.stages(result.run_id)["handle"]
        assert (row["items"], row["failed"]) == (40, 3)  # what inspect shows
    inspected = cli("inspect", result.run_id, "--store", str(tmp_path), check=0).stdout
    assert re.search(r"│ handle\s*│ partial\s*│ threads\s*│ \d+\s*│ \d+\s*│ 40\s*│ 3\s*│", inspected), inspected


def test_a_reused_source_counts_its_rows_once(tmp_path: Path) -> None:
    """Three failed runs store the same source batch three times; the resume counts it once."""
    for _ in range(3):
        failed = pipelines.run(loader.load("cli_failing", TEST_DAGS), store=tmp_path, executor="threads")
        assert failed.status is pipelines.RunStatus.FAILED
    resumed = pipelines.resume("latest", store=tmp_path, executor="threads")
    numbers = resumed.stages["numbers"]
    assert (numbers.items, numbers.rows) == (11, 11)
    assert pipelines.load(resumed.run_id, store=tmp_path).stages["numbers"].rows == 11


def test_runs_counts_the_checkpointed_items_of_a_killed_run(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run",
            "slowed",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(tmp_path),
            "--param",
            "n=60",
            "--param",
            "delay=0.5",
            "-q",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with Store(tmp_path) as store:
            while True:  # until the source's three batches are checkpointed
                rows = store.ledger.query(
                    "SELECT COUNT(*) AS n FROM run_batches WHERE stage='numbers' AND key IS NOT NULL"
                )
                if rows and rows[0]["n"] >= 3:
                    break
                assert proc.poll() is None, "the run ended first"
                time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = cli("runs", "--store", str(tmp_path), check=0).stdout
    assert re.search(r"│ slowed\s*│ crashed\s*│[^│]*│[^│]*│ 60\s*│", out), out


def test_no_rate_for_a_source_or_a_handful_of_items() -> None:
    def stats(backend: str, done: int) -> StageStats:
        return StageStats(
            stage="s",
            backend=backend,
            items_done=done,
            items_reused=0,
            items_failed=0,
            items_in_flight=0,
            batches_final=1,
            batches_seen=1,
            final=True,
            seconds=0.4,
            wall_seconds=0.4,
        )

    assert "items/s" not in progress_line(stats("driver", 5000))  # a source: range(5) showed "13 items/s"
    assert "items/s" not in progress_line(stats("threads", 5))
    assert progress_line(stats("threads", 40)) == "s: finished, 40 items, 100 items/s, 0.4s"


def test_one_duration_in_the_end_of_run_line_runs_and_load(tmp_path: Path) -> None:
    args = ("--dags", str(TEST_DAGS), "--store", str(tmp_path))
    first = cli("run", "cli_failing", *args, check=1).stdout
    resumed = cli("resume", "latest", *args, check=1).stdout
    listed = cli("runs", "--store", str(tmp_path), check=0).stdout
    for out, since in ((first, ""), (resumed, " since it first started")):
        title = re.search(r"^cli_failing · (\S+) · failed · ([\d.]+)s" + since + "$", out, re.MULTILINE)
        assert title, out
        run_id, seconds = title.groups()
    assert re.search(rf"│ {run_id}\s*│ cli_failing\s*│ failed\s*│[^│]*│ {re.escape(seconds)}s\s*│", listed), listed
    loaded = pipelines.load(run_id, store=tmp_path)
    assert f"{loaded.seconds:.1f}" == seconds
