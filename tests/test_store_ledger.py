"""The SQLite ledger (runs, stages, parts, errors) and the store's per-run lock, on real files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines import RunLockedError, UsageError
from pipelines._engine.idset import IdSet
from pipelines.store import Store
from pipelines.store.arrow import FileInfo
from pipelines.store.ledger import ItemError, Ledger, Part


@pytest.fixture
def ledger(tmp_path: Path):
    ledger = Ledger(tmp_path / "deep" / "ledger.sqlite")  # makes the folder
    yield ledger
    ledger.close()


def error(item: int | None, batch: int = 0, stage: str = "parse", message: str = "bad") -> ItemError:
    return ItemError(stage, batch, item, "ValueError", message, "Traceback ...\nValueError: bad", 2, f"input {item}")


def part(ledger: Ledger, key: str, path: str, done: IdSet, *, errors=(), run_id: str = "r1") -> None:
    info = FileInfo(path, len(done), 100 + len(done), f"{len(done):08x}")
    ledger.record_part(
        run_id=run_id, stage="parse", batch=0, key=key, fingerprint="fp", info=info, done=done, errors=errors
    )


class TestLedger:
    def test_wal_mode(self, ledger: Ledger) -> None:
        assert ledger.query("PRAGMA journal_mode")[0][0] == "wal"
        other = sqlite3.connect(ledger.path)  # the mode is the database's, seen by any connection
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()

    def test_reopening_keeps_data(self, tmp_path: Path) -> None:
        first = Ledger(tmp_path / "l.sqlite")
        first.create_run("r1", pipeline="p", module="dags.p", dags_dir="/d", params=None, options={})
        first.close()
        second = Ledger(tmp_path / "l.sqlite")
        try:
            assert second.run("r1")["pipeline"] == "p"
        finally:
            second.close()

    def test_run_round_trip(self, ledger: Ledger) -> None:
        ledger.create_run(
            "r1", pipeline="p", module="dags.p", dags_dir="/d", params='{"n": 3}', options={"executor": "threads"}
        )
        row = ledger.run("r1")
        assert (row["id"], row["pipeline"], row["module"], row["dags_dir"], row["status"]) == (
            "r1",
            "p",
            "dags.p",
            "/d",
            "running",
        )
        assert json.loads(row["params"]) == {"n": 3}
        assert json.loads(row["options"]) == {"executor": "threads"}
        assert row["pid"] == os.getpid() and row["attempts"] == 1 and row["ended"] is None
        ledger.finish_run("r1", status="failed", items=10, failed=2, message="stage 'x' failed")
        row = ledger.run("r1")
        assert (row["status"], row["items"], row["failed"], row["message"]) == ("failed", 10, 2, "stage 'x' failed")
        assert row["ended"] >= row["started"]
        ledger.reopen_run("r1")
        row = ledger.run("r1")
        assert (row["status"], row["attempts"], row["ended"], row["message"]) == ("running", 2, None, None)
        assert ledger.run("nope") is None

    def test_runs_newest_first(self, ledger: Ledger) -> None:
        for run_id, pipeline in (("r1", "a"), ("r2", "b"), ("r3", "a")):
            ledger.create_run(run_id, pipeline=pipeline, module="m", dags_dir=None, params=None, options={})
        assert [r["id"] for r in ledger.runs()] == ["r3", "r2", "r1"]
        assert [r["id"] for r in ledger.runs(limit=1)] == ["r3"]
        assert ledger.latest_run()["id"] == "r3"
        assert ledger.latest_run("b")["id"] == "r2"
        assert ledger.latest_run("zzz") is None

    def test_stage_round_trip_and_update(self, ledger: Ledger) -> None:
        ledger.create_run("r1", pipeline="p", module="m", dags_dir=None, params=None, options={})
        ledger.save_stage("r1", "parse", fingerprint="f1", executor="threads", status="running", batches=1)
        ledger.save_stage("r1", "parse", status="done", batches=3, items=30)
        ledger.save_stage("r1", "load", status="done")
        stages = ledger.stages("r1")
        assert set(stages) == {"parse", "load"}
        row = stages["parse"]
        assert (row["fingerprint"], row["executor"], row["status"], row["batches"], row["items"]) == (
            "f1",
            "threads",
            "done",
            3,
            30,
        )

    def test_previous_stages(self, ledger: Ledger) -> None:
        for run_id in ("r1", "r2"):
            ledger.create_run(run_id, pipeline="p", module="m", dags_dir=None, params=None, options={})
            ledger.save_stage(run_id, "parse", fingerprint=f"fp-{run_id}")
        previous = ledger.previous_stages("p", before_run="r2")
        assert previous["parse"]["fingerprint"] == "fp-r1"
        assert "other" not in previous

    def test_parts_round_trip(self, ledger: Ledger) -> None:
        part(ledger, "k1", "/s/b-2.arrow", IdSet.span(5, 10))
        part(ledger, "k1", "/s/b-1.arrow", IdSet.of([0, 1, 2, 4]))
        part(ledger, "k2", "/s/c.arrow", IdSet.span(0, 3))
        parts = ledger.parts("k1")
        assert [p.path for p in parts] == ["/s/b-1.arrow", "/s/b-2.arrow"]  # ordered by first id
        assert parts[0] == Part("k1", "/s/b-1.arrow", IdSet.of([0, 1, 2, 4]), 4, 104, "00000004", 0)
        assert parts[1].info == FileInfo("/s/b-2.arrow", 5, 105, "00000005")
        ledger.forget_part("k1", "/s/b-1.arrow")
        assert [p.path for p in ledger.parts("k1")] == ["/s/b-2.arrow"]
        ledger.forget_object("k1")
        assert ledger.parts("k1") == [] and len(ledger.parts("k2")) == 1

    def test_recording_a_part_twice_replaces_it(self, ledger: Ledger) -> None:
        part(ledger, "k1", "/s/b.arrow", IdSet.span(0, 3))
        part(ledger, "k1", "/s/b.arrow", IdSet.span(0, 5))
        assert [p.done for p in ledger.parts("k1")] == [IdSet.span(0, 5)]

    def test_batches_round_trip(self, ledger: Ledger) -> None:
        ledger.set_batch("r1", "parse", 1, "k1", "partial", 9, 1)
        ledger.set_batch("r1", "parse", 0, "k0", "done", 10, 0)
        ledger.set_batch("r1", "parse", 1, "k1", "done", 10, 0)
        rows = ledger.run_batches("r1", "parse")
        assert [(r["batch"], r["key"], r["status"], r["rows"], r["failed"]) for r in rows] == [
            (0, "k0", "done", 10, 0),
            (1, "k1", "done", 10, 0),
        ]
        assert ledger.run_batches("r1", "other") == []


class TestErrors:
    def test_errors_round_trip(self, ledger: Ledger) -> None:
        part(ledger, "k1", "/s/b.arrow", IdSet.of([0, 1, 3]), errors=[error(2), error(4, message="worse")])
        ledger.record_errors(run_id="r1", key="k2", errors=[error(0, batch=1, stage="load")])
        assert ledger.open_errors("r1") == [error(0, batch=1, stage="load"), error(2), error(4, message="worse")]
        assert ledger.open_errors("r1", "parse") == [error(2), error(4, message="worse")]
        assert ledger.open_errors("r2") == []

    def test_error_without_item(self, ledger: Ledger) -> None:
        ledger.record_errors(run_id="r1", key="k1", errors=[error(None)])
        assert ledger.open_errors("r1")[0].item is None

    def test_errors_resolved_when_their_ids_are_done(self, ledger: Ledger) -> None:
        part(ledger, "k1", "/s/b-1.arrow", IdSet.of([0, 1, 5]), errors=[error(2), error(3), error(4)])
        part(ledger, "k1", "/s/b-2.arrow", IdSet.of([2, 4]))  # a resume computed two of them
        assert [e.item for e in ledger.open_errors("r1")] == [3]
        part(ledger, "k1", "/s/b-3.arrow", IdSet.of([3]), run_id="r2")  # even from another run: same object
        assert ledger.open_errors("r1") == []

    def test_resolution_is_per_object(self, ledger: Ledger) -> None:
        part(ledger, "k1", "/s/b.arrow", IdSet(), errors=[error(2)])
        part(ledger, "k2", "/s/c.arrow", IdSet.span(0, 5))  # item 2 of another batch
        assert [e.item for e in ledger.open_errors("r1")] == [2]

    def test_failed_transaction_rolls_back(self, ledger: Ledger) -> None:
        with pytest.raises(RuntimeError), ledger.transaction() as db:
            db.execute("INSERT INTO runs (id, pipeline, status) VALUES ('r9', 'p', 'running')")
            raise RuntimeError("boom")
        assert ledger.run("r9") is None


# -- the store and its run lock -------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pipelines.store import Store
    store = Store(sys.argv[1])
    store.lock(sys.argv[2])
    print("locked", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path: Path):
    """A second process holding the lock of run 'r1' in the store at tmp_path/'store'."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "store"), "r1"], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "locked\n"
    yield child
    if child.poll() is None:
        child.kill()
    child.wait(timeout=30)


class TestStore:
    def test_layout(self, tmp_path: Path) -> None:
        with Store(tmp_path / "store") as store:
            assert (tmp_path / "store" / "runs").is_dir()
            assert (tmp_path / "store" / "ledger.sqlite").is_file()
            assert store.run_dir("r1") == tmp_path / "store" / "runs" / "r1"
            assert store.part_path("r1", "parse", 3, "1f2e3d4c5b6a", 1) == str(
                tmp_path / "store" / "runs" / "r1" / "parse" / "000003-1f2e3d4c-00001.arrow"
            )
        assert [p.name for p in (tmp_path / "store").iterdir() if p.name.startswith(".probe")] == []

    def test_relative_root_is_made_absolute(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        with Store("rel") as store:
            assert store.root == tmp_path / "rel"

    def test_default_root_from_environment(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PIPELINES_STORE", str(tmp_path / "env-store"))
        with Store() as store:
            assert store.root == tmp_path / "env-store"

    def test_default_root(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PIPELINES_STORE", raising=False)
        monkeypatch.chdir(tmp_path)
        with Store() as store:
            assert store.root == tmp_path / ".pipelines"

    def test_new_run_ids_differ(self) -> None:
        ids = {Store.new_run_id() for _ in range(50)}
        assert len(ids) == 50

    def test_path_under_a_file_is_a_usage_error(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(UsageError, match=r"store .*file/store is not writable"):
            Store(tmp_path / "file" / "store")

    def test_unwritable_path_is_a_usage_error(self) -> None:
        with pytest.raises(UsageError, match=r"store /proc/.* is not writable"):
            Store("/proc/pipelines-store")

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
    def test_read_only_folder_is_a_usage_error(self, tmp_path: Path) -> None:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        try:
            with pytest.raises(UsageError, match="is not writable"):
                Store(folder / "store")
        finally:
            folder.chmod(0o700)


class TestRunLock:
    def test_twice_in_one_process(self, tmp_path: Path) -> None:
        with Store(tmp_path / "store") as store:
            store.lock("r1")
            with pytest.raises(RunLockedError, match=rf"run r1 is already running \(pid {os.getpid()}\)"):
                store.lock("r1")
            store.lock("r2")  # other runs are independent

    def test_two_stores_in_one_process(self, tmp_path: Path) -> None:
        with Store(tmp_path / "store") as one, Store(tmp_path / "store") as two:
            one.lock("r1")
            with pytest.raises(RunLockedError, match="run r1 is already running"):
                two.lock("r1")

    def test_unlock_releases(self, tmp_path: Path) -> None:
        with Store(tmp_path / "store") as store:
            store.lock("r1")
            store.unlock("r1")
            store.lock("r1")
            store.unlock("r1")
            store.unlock("r1")  # idempotent

    def test_close_releases(self, tmp_path: Path) -> None:
        with Store(tmp_path / "store") as store:
            store.lock("r1")
        with Store(tmp_path / "store") as store:
            store.lock("r1")

    def test_held_by_another_process(self, tmp_path: Path, holder: subprocess.Popen) -> None:
        with Store(tmp_path / "store") as store:
            with pytest.raises(
                RunLockedError,
                match=rf"run r1 is already running \(pid {holder.pid}\); "
                r"wait for it or stop it first",
            ):
                store.lock("r1")
            store.lock("r2")

    def test_released_when_the_holder_is_killed(self, tmp_path: Path, holder: subprocess.Popen) -> None:
        with Store(tmp_path / "store") as store:
            with pytest.raises(RunLockedError):
                store.lock("r1")
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
            store.lock("r1")
            assert (store.run_dir("r1") / ".lock").read_text() == str(os.getpid())
