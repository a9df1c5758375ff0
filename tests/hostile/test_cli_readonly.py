"""Read-only stores and ledgers: ``run`` and ``resume`` are a clear usage error (exit 2, one
line, nothing set aside as damaged), while ``runs``, ``inspect``, ``export`` and ``report``
work and create no file.

Read-only means a real read-only bind mount (``mount --bind -o ro`` in a mount namespace of
the command's own): the tests run as root, and root bypasses file permissions.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from pipelines.store import Store
from tests.conftest import cli
from tests.helpers import write_dags
from tests.hostile.test_cli_options import GOOD, as_command, assert_one_line_error, run_in


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(
    not _can_mount(), reason="read-only bind mounts need root and unshare -m (root ignores chmod, so no fallback)"
)


def read_only(path: Path, *command: str) -> list[str]:
    """``command`` run where ``path`` (a folder or one file) is a read-only bind mount."""
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(path), *command]


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    return write_dags(tmp_path / "dags", good=GOOD)


@pytest.fixture
def finished(dags: Path, store: Path) -> str:
    """The id of a finished run of ``good`` in ``store``."""
    proc = cli("run", "good", "--dags", str(dags), "--store", str(store), check=0)
    return re.search(r"run (\S+) · pipeline", proc.stdout).group(1)  # type: ignore[union-attr]


@needs_mount
class TestReadOnlyMount:
    def test_runs_inspect_export_and_report_read_it(self, store: Path, finished: str, tmp_path: Path) -> None:
        before = files(store)
        proc = run_in(read_only(store, *as_command("runs", "--store", str(store))))
        assert proc.returncode == 0, proc.stderr
        assert re.search(rf"│ {finished}\s*│ good\s*│ ok\s*│", proc.stdout), proc.stdout
        proc = run_in(read_only(store, *as_command("inspect", finished, "double", "--store", str(store))))
        assert proc.returncode == 0, proc.stderr
        assert "stage double: 5 rows" in proc.stdout and "│ 8 " in proc.stdout
        proc = run_in(read_only(store, *as_command("inspect", "latest", "--store", str(store))))
        assert proc.returncode == 0 and re.search(r"│ double\s*│ done\s*│", proc.stdout), proc.stdout
        out = tmp_path / "double.csv"
        proc = run_in(
            read_only(store, *as_command("export", "latest", "double", "-o", str(out), "--store", str(store)))
        )
        assert proc.returncode == 0, proc.stderr
        assert out.read_text().split()[1:] == ["0", "2", "4", "6", "8"]
        html = tmp_path / "report.html"
        proc = run_in(read_only(store, *as_command("report", "latest", "-o", str(html), "--store", str(store))))
        assert proc.returncode == 0 and "double" in html.read_text(), proc.stderr
        assert files(store) == before

    def test_while_a_writer_holds_the_ledger(self, store: Path, finished: str) -> None:
        """With the ledger open elsewhere (its -wal and -shm exist), reads go through them."""
        writer = sqlite3.connect(store / "ledger.sqlite")
        writer.execute("SELECT count(*) FROM runs").fetchone()
        try:
            assert (store / "ledger.sqlite-shm").exists()
            proc = run_in(read_only(store, *as_command("runs", "--store", str(store))))
            assert proc.returncode == 0 and finished in proc.stdout, proc.stderr
        finally:
            writer.close()

    def test_run_is_a_usage_error(self, dags: Path, store: Path, finished: str) -> None:
        before = files(store)
        proc = run_in(read_only(store, *as_command("run", "good", "--dags", str(dags), "--store", str(store))))
        assert_one_line_error(proc, f"store {store} is not writable", "Read-only file system")
        assert files(store) == before

    @pytest.mark.parametrize("command", ["run", "resume"])
    def test_a_read_only_ledger_is_a_usage_error(self, dags: Path, store: Path, finished: str, command: str) -> None:
        ledger = store / "ledger.sqlite"
        before = ledger.read_bytes()
        args = ("run", "good") if command == "run" else ("resume", finished)
        proc = run_in(read_only(ledger, *as_command(*args, "--dags", str(dags), "--store", str(store))))
        assert_one_line_error(proc, f"store {store}: its ledger cannot be written", "readonly database")
        assert ledger.read_bytes() == before
        assert not [f for f in files(store) if "damaged" in f]

    def test_an_old_read_only_ledger_is_not_set_aside_as_damaged(self, dags: Path, store: Path, finished: str) -> None:
        """Migrating it would write: that fails as read-only, which is not damage."""
        with sqlite3.connect(store / "ledger.sqlite") as db:
            db.execute("PRAGMA user_version=0")
        proc = run_in(
            read_only(store / "ledger.sqlite", *as_command("run", "good", "--dags", str(dags), "--store", str(store)))
        )
        assert_one_line_error(proc, "its ledger cannot be written")
        assert not [f for f in files(store) if "damaged" in f]
        proc = run_in(read_only(store, *as_command("runs", "--store", str(store))))  # and it still reads
        assert proc.returncode == 0 and finished in proc.stdout, proc.stderr


class TestReadingWritesNothing:
    def test_reading_creates_no_file(self, dags: Path, store: Path, finished: str) -> None:
        before = files(store)
        cli("runs", "--store", str(store), check=0)
        cli("inspect", finished, "double", "--store", str(store), check=0)
        assert files(store) == before

    def test_runs_on_a_missing_store_creates_nothing(self, tmp_path: Path) -> None:
        proc = cli("runs", "--store", str(tmp_path / "none"), check=0)
        assert f"no runs in {tmp_path / 'none'}" in proc.stdout
        assert not (tmp_path / "none").exists()

    def test_a_damaged_ledger_is_an_error_when_reading(self, tmp_path: Path) -> None:
        (tmp_path / "s").mkdir()
        (tmp_path / "s" / "ledger.sqlite").write_bytes(b"not a database" * 100)
        assert_one_line_error(cli("runs", "--store", str(tmp_path / "s")), "cannot read its ledger")
        assert files(tmp_path / "s") == {"ledger.sqlite"}  # reading sets nothing aside

    def test_a_read_only_store_answers_in_process(self, store: Path, finished: str) -> None:
        with Store(store, read_only=True) as s:
            assert s.ledger.run(finished)["status"] == "ok"
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                s.ledger.finish_run(finished, status="failed", items=0, failed=0, message=None)
