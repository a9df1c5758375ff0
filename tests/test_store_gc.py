"""``python -m pipelines gc``: retention, orphans left by kills, and running runs left alone.

Real runs of ``tests/dags/durable.py`` through the CLI, a real ``kill -9``, real files.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines import UsageError
from pipelines.store import Store
from pipelines.store.gc import collect, parse_age

from .conftest import ROOT, TEST_DAGS, cli
from .helpers import durable_calls as calls
from .helpers import durable_driver

N = 2000


def run(store: Path, *params: str, log: Path | None = None) -> str:
    """Run durable to the end; return its run id."""
    args = [p for param in params for p in ("--param", param)]
    cli(
        "run",
        "durable",
        "--dags",
        str(TEST_DAGS),
        "--store",
        str(store),
        "--quiet",
        *args,
        env={"DURABLE_LOG": str(log)} if log else None,
        check=0,
    )
    with Store(store) as s:
        return s.ledger.latest_run()["id"]


def files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in files(folder))


def ledger_paths(store: Path) -> set[str]:
    db = sqlite3.connect(store / "ledger.sqlite")
    try:
        return {r[0] for r in db.execute("SELECT path FROM parts")}
    finally:
        db.close()


class TestRetention:
    def test_keep_runs_1_after_three_runs_frees_the_older_runs(self, store: Path, tmp_path: Path) -> None:
        ids = [run(store, f"offset={offset}") for offset in (0, 10_000, 20_000)]  # other content each time
        before = size(store / "runs")
        dry = cli("gc", "--keep-runs", "1", "--dry-run", "--store", str(store), check=0).stdout
        assert f"would remove 2 run(s) ({ids[0]}, {ids[1]})" in dry
        assert f"runs/{ids[0]}/first/" in dry and "kB" in dry  # listed, with sizes
        assert size(store / "runs") == before  # a dry run changes nothing
        out = cli("gc", "--keep-runs", "1", "--store", str(store), check=0).stdout
        assert f"removed 2 run(s) ({ids[0]}, {ids[1]})" in out
        assert not (store / "runs" / ids[0]).exists() and not (store / "runs" / ids[1]).exists()
        assert size(store / "runs") < before / 2
        with Store(store) as s:
            assert [r["id"] for r in s.ledger.runs()] == [ids[2]]
            assert all(p.startswith(f"runs/{ids[2]}/") for p in ledger_paths(store))
        # the latest run stays readable, through inspect and as a table, and is reused whole
        assert f"{N:,} rows" in cli("inspect", ids[2], "second", "--store", str(store), check=0).stdout
        import pipelines
        from pipelines.store.outputs import read_stage

        with Store(store) as s:
            assert read_stage(s, ids[2], "total").to_pylist() == [
                {"rows": N, "sum": sum(3 * x + 1 for x in range(20_000, 20_000 + N))}
            ]
        log = tmp_path / "calls.log"
        run(store, "offset=20000", log=log)
        assert calls(log) == Counter()
        assert pipelines  # imported for its side of the run above

    def test_shared_objects_of_a_dropped_run_stay_while_a_kept_run_uses_them(self, store: Path, tmp_path: Path) -> None:
        first = run(store)
        second = run(store)  # reuses every object of the first run
        cli("gc", "--keep-runs", "1", "--store", str(store), check=0)
        with Store(store) as s:
            assert [r["id"] for r in s.ledger.runs()] == [second]
        assert any(p.startswith(f"runs/{first}/second/") for p in ledger_paths(store))
        log = tmp_path / "calls.log"
        run(store, log=log)
        assert calls(log) == Counter()

    def test_older_than(self, store: Path) -> None:
        old, new = run(store), run(store, "offset=5")
        with Store(store) as s:
            s.ledger.query("UPDATE runs SET started = started - 40 * 86400 WHERE id=?", (old,))
            found = collect(s, older_than=parse_age("30d"), dry_run=True)
            assert found.runs == [old]
            assert collect(s, older_than=parse_age("30d"), keep_runs=2, dry_run=True).runs == []  # both must agree
        assert new

    def test_bad_arguments(self, store: Path) -> None:
        assert parse_age("12h") == 12 * 3600 and parse_age("90m") == 5400 and parse_age("2w") == 14 * 86400
        with pytest.raises(UsageError, match="--older-than 'soon' is not an age"):
            parse_age("soon")
        proc = cli("gc", "--keep-runs", "0", "--store", str(store), check=2)
        assert "--keep-runs must be at least 1" in proc.stderr

    def test_runs_shows_the_store_size(self, store: Path) -> None:
        run(store)
        out = cli("runs", "--store", str(store), check=0).stdout
        assert f"store {store}: " in out and " kB in " in out


class TestOrphans:
    def test_an_orphan_left_by_kill_9_is_found_and_removed(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "calls.log"
        with durable_driver(store, log, delay=0.002) as proc:
            while calls(log)["second"] < 100:
                assert proc.poll() is None, "the run ended before it could be stopped"
                time.sleep(0.02)
            # the driver stops recording; its workers finish the tasks they hold and write their parts
            os.kill(proc.pid, signal.SIGSTOP)
            run_dir = next((store / "runs").iterdir())
            while not {str(p.relative_to(store)) for p in run_dir.glob("*/*.arrow")} - ledger_paths(store):
                time.sleep(0.02)
        (run_dir / "second" / "000001-deadbeef-00009.arrow.tmp-0badf00d").write_bytes(b"half a file")
        orphans = {str(p.relative_to(store)) for p in run_dir.glob("*/*.arrow")} - ledger_paths(store)
        assert orphans
        dry = cli("gc", "--dry-run", "--store", str(store), check=0).stdout
        for rel in orphans:
            assert rel in dry
        assert "orphan part" in dry and "temp file" in dry
        cli("gc", "--store", str(store), check=0)
        assert not any((store / rel).exists() for rel in orphans)
        assert not list(run_dir.glob("*/*.tmp-*"))
        assert all((store / rel).exists() for rel in ledger_paths(store))  # what the ledger names stays
        resumed = cli("resume", "latest", "--store", str(store), env={"DURABLE_LOG": str(log)}, check=0)
        assert "Traceback" not in resumed.stderr


class TestRunningRuns:
    def test_a_running_runs_files_survive_a_concurrent_gc(self, store: Path, tmp_path: Path) -> None:
        old = run(store, "offset=100000")
        log = tmp_path / "calls.log"
        env = {**os.environ, "DURABLE_LOG": str(log), "DURABLE_DELAY": "0.005", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines",
                "run",
                "durable",
                "--dags",
                str(TEST_DAGS),
                "--store",
                str(store),
                "--quiet",
                "--workers",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            while calls(log)["second"] < 100:
                assert proc.poll() is None, "the run ended before gc could run beside it"
                time.sleep(0.02)
            with Store(store) as s:
                running = s.ledger.latest_run()["id"]
            before = files(store / "runs" / running)
            out = cli("gc", "--keep-runs", "1", "--store", str(store), check=0).stdout
            assert "retention skipped" in out
            assert before <= files(store / "runs" / running)  # every file it had is still there
            assert (store / "runs" / old).exists()  # no retention while a run runs
            output, _ = proc.communicate()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, output
        from pipelines.store.outputs import read_stage

        with Store(store) as s:
            assert read_stage(s, running, "total").to_pylist() == [{"rows": N, "sum": sum(3 * x + 1 for x in range(N))}]
        out = cli("gc", "--keep-runs", "1", "--store", str(store), check=0).stdout
        assert f"removed 1 run(s) ({old})" in out
