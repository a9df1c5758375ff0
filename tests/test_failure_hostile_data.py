"""Hostile data (records, images, names that escape a folder) and a full disk: items fail alone,
nothing finished is lost.

Test pipelines are ``tests/dags/fault_*.py``; their stages log what they do to files named by
environment variables, so each test checks what really happened, not only what the run reports.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

import pipelines
from stages import files
from tests.failure_support import (
    DATA,
    _no_run_left_behind,  # noqa: F401 - fixtures this module's tests use
    dags,
    errors,
    stage_table,
)

from .conftest import ROOT, TEST_DAGS
from .helpers import run_id_of

# == 8. hostile data ===========================================================================

GOOD = {0: "camera.png", 1: "coffee.png", 10: "horse.png"}


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A data folder whose records and images try everything."""
    root = tmp_path / "data"
    (root / "records").mkdir(parents=True)
    (root / "images").mkdir()
    for name in GOOD.values():
        shutil.copy(DATA / "images" / name, root / "images" / name)
    whole = (DATA / "images" / "coffee.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "images" / "outside").symlink_to("/etc")
    records = {
        0: '{"id": 0, "title": "camera", "image": "images/camera.png"}',
        1: '{"id": 1, "title": "coffee", "image": "images/coffee.png"}',
        2: '{"id": 2, "title": "broken" "image": "images/coffee.png"}',  # malformed JSON
        3: '{"id": "three", "title": "typed", "image": "images/coffee.png"}',  # id is no integer
        4: '{"id": 4, "title": ["a", "list"], "image": "images/coffee.png"}',  # title is no string
        5: '{"id": 5, "title": "climb", "image": "../../etc/passwd"}',
        6: '{"id": 6, "title": "absolute", "image": "/etc/passwd"}',
        7: '{"id": 7, "title": "nul", "image": "images/camera.png\\u0000.txt"}',
        8: '{"id": 8, "title": "symlink", "image": "images/outside/passwd"}',
        9: '{"id": 9, "title": "truncated", "image": "images/truncated.png"}',
        10: '{"id": 10, "title": "horse", "image": "images/horse.png"}',
        11: '{"id": 11, "title": "not an image", "image": "records/r00.json"}',
    }
    for i, text in records.items():
        (root / "records" / f"r{i:02d}.json").write_text(text)
    return root


def test_hostile_records_and_images_fail_alone(hostile: Path, store: Path) -> None:
    proc = dags("run", "fault_ingest", "--param", f"data_dir={hostile}", store=store, check=0)
    run_id = run_id_of(proc.stdout)
    parse = {e.position: e for e in errors(store, run_id, "parse")}
    assert sorted(parse) == [2, 3, 4]
    assert "invalid JSON at byte" in parse[2].message and parse[2].message.startswith("records/r02.json")
    assert "field 'id' of Record" in parse[3].message
    assert "field 'title' of Record" in parse[4].message
    describe = {e.position: e.message for e in errors(store, run_id, "describe")}
    assert sorted(describe) == [5, 6, 7, 8, 9, 11]
    assert describe[5] == f"'../../etc/passwd' escapes the folder {hostile}"
    assert describe[6].startswith("'/etc/passwd' is an absolute path")
    assert "contains a NUL byte" in describe[7]
    assert describe[8] == f"'images/outside/passwd' escapes the folder {hostile}"
    assert describe[9].startswith("images/truncated.png: cannot decode image")
    assert "not a recognised image format" in describe[11]
    assert stage_table(store, run_id, "summary").to_pylist() == [{"images": 3, "ids": [0, 1, 10]}]
    described = stage_table(store, run_id, "describe").to_pylist()
    digests = {hashlib.sha256((hostile / "images" / GOOD[r["id"]]).read_bytes()).hexdigest() for r in described}
    assert {r["sha256"] for r in described} == digests  # what was described is what the records named
    for path in store.rglob("*.arrow"):
        assert b"root:x:0:0" not in path.read_bytes(), f"{path} holds /etc/passwd"


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "images/../../../x", "a\0b", "", ".", "images/outside/passwd"]
)
def test_safe_path_refuses_names_that_escape(hostile: Path, name: str) -> None:
    with pytest.raises(ValueError):
        files.safe_path(hostile, name)
    with pytest.raises(ValueError):
        files.read_bytes(name, root=hostile)


def test_safe_path_keeps_names_inside(hostile: Path) -> None:
    assert files.safe_path(hostile, "images/camera.png") == (hostile / "images" / "camera.png").resolve()
    assert files.safe_path(hostile, "images/../records/r00.json") == (hostile / "records" / "r00.json").resolve()
    assert files.read_bytes("images/camera.png", root=hostile) == (DATA / "images" / "camera.png").read_bytes()


# -- a disk that fills up -------------------------------------------------------------------

DISK_SCRIPT = r"""
set -u
mount -t tmpfs -o size=300k tmpfs "$STORE" || exit 99
"$PY" -m pipelines run fault_disk --dags "$DAGS" --store "$STORE" --quiet > "$OUT/first.out" 2>&1
echo $? > "$OUT/first.rc"
mkdir -p "$OUT/after_fail" && cp -a "$STORE/." "$OUT/after_fail/"
mount -o remount,size=64m "$STORE"
"$PY" -m pipelines resume latest --store "$STORE" --quiet > "$OUT/resume.out" 2>&1
echo $? > "$OUT/resume.rc"
mkdir -p "$OUT/after_resume" && cp -a "$STORE/." "$OUT/after_resume/"
"""


@dataclass(frozen=True)
class DiskFull:
    out: Path

    def rc(self, name: str) -> int:
        return int((self.out / f"{name}.rc").read_text())

    def output(self, name: str) -> str:
        return (self.out / f"{name}.out").read_text()


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory: pytest.TempPathFactory) -> DiskFull:
    """``fault_disk`` run on a 300 KiB tmpfs in a private mount namespace, then resumed with room."""
    unshare = shutil.which("unshare")
    if not unshare or subprocess.run([unshare, "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a private mount namespace here (unshare -m)")
    base = tmp_path_factory.mktemp("disk")
    (base / "store").mkdir()
    (base / "out").mkdir()
    env = {
        **os.environ,
        "STORE": str(base / "store"),
        "OUT": str(base / "out"),
        "PY": sys.executable,
        "DAGS": str(TEST_DAGS),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [unshare, "-m", "sh", "-c", DISK_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return DiskFull(base / "out")


def _expected_digest(n: int = 40) -> str:
    sys.path.insert(0, str(TEST_DAGS))
    try:
        from fault_disk import blob_of  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(TEST_DAGS))
    h = hashlib.sha256()
    for blob in sorted(blob_of(x) for x in range(n)):
        h.update(blob)
    return h.hexdigest()


def test_disk_full_loses_nothing_and_resumes_with_room(disk_full: DiskFull) -> None:
    assert disk_full.rc("first") == 1, disk_full.output("first")
    store = disk_full.out / "after_fail"
    arrows = sorted(store.rglob("*.arrow"))
    assert any("/numbers/" in str(p) for p in arrows)
    for path in arrows:  # whatever was written is whole: atomic writes, even on a full disk
        with pa.memory_map(str(path)) as source:
            ipc.open_file(source).read_all().validate(full=True)
    db = sqlite3.connect(store / "ledger.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ((run_id, status),) = db.execute("SELECT id, status FROM runs").fetchall()
    finally:
        db.close()
    assert status in ("failed", "running")

    assert disk_full.rc("resume") == 0, disk_full.output("resume")
    assert run_id_of(disk_full.output("resume")) == run_id
    table = pq.read_table(disk_full.out / "after_resume" / "runs" / run_id / "outputs" / "digest.parquet")
    assert table.to_pylist() == [{"rows": 40, "sha256": _expected_digest()}]


def test_disk_full_fails_cleanly(disk_full: DiskFull) -> None:
    output = disk_full.output("first")
    assert disk_full.rc("first") == 1
    assert "Traceback" not in output, output
    # whichever write meets the full disk first, a checkpoint or the ledger, says so
    assert re.search(
        r"cannot write its checkpoint: No space left on device"
        r"|the ledger could not be written: database or disk is full",
        output,
    ), output


def test_a_reduce_receives_its_input_in_item_order(load, store: Path) -> None:
    result = pipelines.run(load("fault_order"), store=store)
    assert result.table("slowly").column("slowly").to_pylist() == list(range(8))
    assert result.table("received").to_pylist() == [{"order": list(range(8))}]
