"""The store as an index of self-describing files: verified reads, relocation, a lost ledger.

Real runs of ``tests/dags/durable.py`` (every call logged), real files flipped, moved, copied
and deleted, a real ``kill -9`` of the driver; the CLI runs in subprocesses.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import pipelines
from pipelines import CheckpointError, RunStatus
from pipelines._engine.idset import IdSet
from pipelines.store import Store
from pipelines.store import arrow as batch_files
from pipelines.store.ledger import SCHEMA_VERSION

from .conftest import ROOT, TEST_DAGS, cli
from .helpers import durable_calls as calls
from .helpers import durable_driver

N = 2000


def expected(n: int = N, offset: int = 0) -> list[dict[str, int]]:
    return [{"rows": n, "sum": sum(3 * x + 1 for x in range(offset, offset + n))}]


def run_cli(store: Path, log: Path, *args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
    return cli(
        "run",
        "durable",
        "--dags",
        str(TEST_DAGS),
        "--store",
        str(store),
        "--quiet",
        *args,
        env={"DURABLE_LOG": str(log)},
        check=check,
    )


def part_files(store: Path, run_id: str) -> dict[str, list[Path]]:
    """The run's part files by stage, from the ledger, made whole."""
    with Store(store) as s:
        rows = s.ledger.query(
            "SELECT o.stage, p.path FROM parts p JOIN objects o ON o.key = p.key WHERE p.run_id=?", (run_id,)
        )
        out: dict[str, list[Path]] = {}
        for row in rows:
            out.setdefault(row["stage"], []).append(Path(s.ledger.absolute(row["path"])))
        return out


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.fixture
def finished(load, store: Path) -> pipelines.RunResult:
    # in this process; the reruns the tests compare it with go through the command line
    result = pipelines.run(load("durable"), {"n": N}, store=store)
    assert result.status is RunStatus.OK and result.table("total").to_pylist() == expected()
    return result


class TestVerifiedReads:
    def test_one_flipped_byte_anywhere_in_any_part_never_shows_as_data(self, finished, store: Path) -> None:
        files = part_files(store, finished.run_id)
        assert set(files) == {"numbers", "first", "second", "total"}
        originals = {stage: finished.table(stage) for stage in files}
        checked = 0
        for stage, paths in files.items():
            for path in paths:
                size = path.stat().st_size
                # the magic, the schema (and the metadata in it), the data, the footer, the trailing magic
                for offset in sorted({0, 9, 40, size // 4, size // 2, 3 * size // 4, size - 40, size - 8, size - 1}):
                    flip(path, offset)
                    try:
                        table = finished.table(stage)
                    except CheckpointError as exc:
                        assert str(path) in str(exc)
                    else:  # never: a flipped byte is always caught
                        pytest.fail(
                            f"{path} with byte {offset} flipped read back as data "
                            f"({'equal' if table.equals(originals[stage]) else 'WRONG'})"
                        )
                    flip(path, offset)
                    checked += 1
        assert checked >= 9 * sum(len(p) for p in files.values())
        assert finished.table("total").to_pylist() == expected()

    def test_inspect_names_the_damaged_file_and_fails(self, finished, store: Path) -> None:
        for stage, paths in part_files(store, finished.run_id).items():
            path = paths[len(paths) // 2]
            flip(path, path.stat().st_size // 2)
            proc = cli("inspect", finished.run_id, stage, "--store", str(store), check=1)
            assert str(path) in proc.stderr and "checksum" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr

    def test_a_rerun_recomputes_a_damaged_part_and_reuses_the_rest(
        self, load, finished, store: Path, tmp_path: Path, monkeypatch
    ) -> None:
        damaged = part_files(store, finished.run_id)["second"][0]
        ids = IdSet.from_json(batch_files.part_info(batch_files.read_table(damaged, raw=True))["ids"])
        flip(damaged, damaged.stat().st_size // 2)
        log = tmp_path / "calls.log"
        monkeypatch.setenv("DURABLE_LOG", str(log))
        again = pipelines.run(load("durable"), {"n": N}, store=store)
        assert again.table("total").to_pylist() == expected()
        assert calls(log)["first"] == 0
        assert calls(log)["second"] == len(ids)  # that part's items, no more

    def test_a_file_is_checked_against_its_own_checksum_without_the_ledger(self, tmp_path: Path) -> None:
        import pyarrow as pa

        info = batch_files.write_table(
            tmp_path / "p.arrow",
            pa.table({"x": list(range(100))}),
            part={"key": "k", "stage": "s", "batch": 0, "part": 0, "ids": "[[0,100]]"},
        )
        raw = batch_files.read_table(info.path, raw=True)
        assert batch_files.carried_checksum(raw) == info.checksum
        assert batch_files.part_info(raw)["key"] == "k"
        assert batch_files.read_table(info.path).schema.metadata is None  # readers never see the store's keys
        flip(Path(info.path), 700)
        with pytest.raises(CheckpointError, match=r"p\.arrow fails its checksum"):
            batch_files.read_table(info.path)  # no ledger, no expect: the file checks itself


class TestRelocation:
    def test_after_mv_inspect_works_and_a_rerun_reuses_everything(self, finished, store: Path, tmp_path: Path) -> None:
        moved = tmp_path / "elsewhere" / "moved"
        moved.parent.mkdir()
        shutil.move(store, moved)
        out = cli("inspect", finished.run_id, "total", "--store", str(moved), check=0).stdout
        assert "2000" in out
        log = tmp_path / "calls.log"
        run_cli(moved, log)
        assert calls(log) == Counter()  # nothing computed again

    def test_a_copy_reads_only_its_own_files(self, finished, store: Path, tmp_path: Path) -> None:
        copy = tmp_path / "copy"
        subprocess.run(["cp", "-a", str(store), str(copy)], check=True)
        shutil.rmtree(store)  # the original is gone: the copy must not need it
        out = cli("inspect", finished.run_id, "second", "--store", str(copy), check=0).stdout
        assert f"{N:,} rows" in out
        log = tmp_path / "calls.log"
        run_cli(copy, log)
        assert calls(log) == Counter()
        with Store(copy) as s:
            assert all(p.startswith("runs/") for p in (r["path"] for r in s.ledger.query("SELECT path FROM parts")))
            assert s.ledger.version == SCHEMA_VERSION

    def test_an_old_ledger_with_absolute_paths_is_migrated(self, finished, store: Path, tmp_path: Path) -> None:
        db = sqlite3.connect(store / "ledger.sqlite")
        with db:  # make it look as the previous version wrote it: absolute paths, schema version 0
            db.execute("UPDATE parts SET path = ? || '/' || path", (str(store),))
            db.execute("PRAGMA user_version=0")
        db.close()
        moved = tmp_path / "moved"
        shutil.move(store, moved)  # moved before the upgrade: the paths name the old place
        with Store(moved) as s:
            assert s.ledger.version == SCHEMA_VERSION
            assert all(r["path"].startswith("runs/") for r in s.ledger.query("SELECT path FROM parts"))
        log = tmp_path / "calls.log"
        run_cli(moved, log)
        assert calls(log) == Counter()


class TestInProcessAndCommandLine:
    def test_in_process_and_command_line_runs_reuse_each_others_work(
        self, load, store: Path, tmp_path: Path, monkeypatch
    ) -> None:
        # a dags folder named like another one this process already imported: imported here
        # under a fallback name (dags_1a2b3c), by the command line under its own
        dags = tmp_path / "dags"
        dags.mkdir()
        shutil.copy(TEST_DAGS / "durable.py", dags / "durable.py")
        load("durable")  # tests/dags
        from pipelines.define import loader

        loader.load("json_files", ROOT / "dags")  # and the project's own dags folder
        import tests.helpers  # noqa: F401 - test modules imported, as in a whole session

        pipeline = loader.load("durable", dags)
        assert pipeline.module != "dags.durable"
        log = tmp_path / "calls.log"
        monkeypatch.setenv("DURABLE_LOG", str(log))
        first = pipelines.run(pipeline, {"n": N}, store=store)
        assert first.table("total").to_pylist() == expected()
        assert calls(log)["first"] == N
        seen = len(log.read_text().splitlines())
        cli("run", "durable", "--dags", str(dags), "--store", str(store), "--quiet", "--param", f"n={N}", check=0)
        assert calls(log, seen) == Counter()  # the command line reuses the in-process run's work
        again = pipelines.run(loader.load("durable", dags), {"n": N}, store=store)
        assert again.table("total").to_pylist() == expected()
        assert calls(log, seen) == Counter()  # and the other way round


class TestLostLedger:
    def test_after_a_finished_run_a_rerun_recomputes_nothing(self, finished, store: Path, tmp_path: Path) -> None:
        for path in store.glob("ledger.sqlite*"):
            path.unlink()
        log = tmp_path / "calls.log"
        proc = run_cli(store, log)
        assert "rebuilt it from its files" in proc.stderr
        assert calls(log) == Counter()
        out = cli("inspect", finished.run_id, "total", "--store", str(store), check=0).stdout
        assert "rebuilt" in out

    def test_a_damaged_ledger_is_set_aside_and_rebuilt(self, finished, store: Path, tmp_path: Path) -> None:
        (store / "ledger.sqlite").write_bytes(b"this is not a database" * 100)
        for path in store.glob("ledger.sqlite-*"):
            path.unlink()
        log = tmp_path / "calls.log"
        proc = run_cli(store, log)
        assert "damaged" in proc.stderr
        assert calls(log) == Counter()
        assert list(store.glob("ledger.sqlite.damaged-*"))

    def test_repair_adopts_the_parts_a_lost_wal_forgot(self, finished, store: Path, tmp_path: Path) -> None:
        with Store(store) as s:  # forget half of the parts, as a lost WAL would
            s.ledger.query("DELETE FROM parts WHERE rowid % 2 = 0")
        out = cli("repair", "--store", str(store), check=0).stdout
        assert re.search(r"\b[1-9]\d* part file\(s\) adopted", out), out  # "20 ... adopted" holds "0 ... adopted"
        log = tmp_path / "calls.log"
        run_cli(store, log)
        assert calls(log) == Counter()

    def test_after_kill_9_mid_run_finished_work_is_not_computed_again(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "calls.log"
        with durable_driver(store, log, delay=0.01) as proc:
            started = time.monotonic()
            # first stage finished, second under way, and the run older than two WAL checkpoints
            while calls(log)["first"] < N or calls(log)["second"] < 200 or time.monotonic() - started < 5:
                assert proc.poll() is None, "the run ended before it could be killed"
                time.sleep(0.05)
        # the database alone (its WAL lost) already holds records: the WAL was checkpointed mid-run
        alone = tmp_path / "alone.sqlite"
        shutil.copy(store / "ledger.sqlite", alone)
        db = sqlite3.connect(alone)
        assert db.execute("SELECT count(*) FROM parts").fetchone()[0] > 0
        db.close()
        for path in store.glob("ledger.sqlite*"):
            path.unlink()
        on_disk = Counter()  # the items of whole part files, by stage
        for path in store.glob("runs/*/*/*.arrow"):
            meta = batch_files.part_info(batch_files.read_table(path, raw=True))
            on_disk[meta["stage"]] += len(IdSet.from_json(meta["ids"]))
        assert on_disk["first"] == N
        before = len(log.read_text().splitlines())
        run_cli(store, log)
        redo = calls(log, before)
        assert redo["first"] == 0  # the finished stage: nothing again
        assert redo["second"] == N - on_disk["second"]  # exactly what no whole file held
        with Store(store) as s:
            latest = s.ledger.latest_run()["id"]
        from pipelines.store.outputs import read_stage

        with Store(store) as s:
            assert read_stage(s, latest, "total").to_pylist() == expected()

    def test_a_run_rebuilt_after_kill_9_is_resumed_with_its_params(self, store: Path, tmp_path: Path) -> None:
        log = tmp_path / "calls.log"
        with durable_driver(store, log, 0.01, "--param", "offset=7") as proc:
            while calls(log)["first"] < N or calls(log)["second"] < 200:  # the first stage finished
                assert proc.poll() is None, "the run ended before it could be killed"
                time.sleep(0.05)
        with Store(store) as s:
            killed = s.ledger.latest_run()["id"]
        manifest = json.loads((store / "runs" / killed / "run.json").read_text())
        assert json.loads(manifest["params"]) == {"n": N, "offset": 7}
        for path in store.glob("ledger.sqlite*"):
            path.unlink()
        before = len(log.read_text().splitlines())
        cli("resume", killed, "--store", str(store), "--quiet", env={"DURABLE_LOG": str(log)}, check=0)
        redo = calls(log, before)
        assert redo["first"] == 0  # the finished stage, rebuilt from its files, is not computed again
        result = pipelines.load(killed, store=store)
        assert result.status is RunStatus.OK  # the rebuilt run itself resumed, with offset=7
        assert result.table("total").to_pylist() == expected(offset=7)
