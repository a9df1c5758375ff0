"""The ``PIPELINES_*`` settings: read in ``pipelines/settings.py`` only, each when it is needed,
and listed in the README's table."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines import settings
from pipelines._engine.plan import RunOptions, plan
from pipelines._engine.workers import Workers
from pipelines.observe.hooks import Observers
from pipelines.store import arrow as batch_files
from pipelines.store import default_store_path, recent

ROOT = Path(__file__).resolve().parent.parent
NAMES = {s.name for s in settings.SETTINGS}
NOT_SETTINGS = {"PIPELINES_DRIVER_PID"}  # set by the processes backend for its own workers


def test_the_readme_table_lists_every_setting_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Settings") :]
    listed = re.findall(r"^\| `(PIPELINES_[A-Z_]+)` \|", table, re.MULTILINE)
    assert sorted(listed) == sorted(NAMES)


def _named_variables(path: Path) -> set[str]:
    """String constants that are exactly a ``PIPELINES_*`` name: how a variable is looked up."""
    tree = ast.parse(path.read_text(), str(path))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"PIPELINES_[A-Z_]+", node.value)
    }


def test_no_module_but_settings_names_a_variable() -> None:
    offenders = {}
    for folder in ("pipelines", "stages", "executors"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "pipelines" / "settings.py":
                continue
            names = _named_variables(path) - NOT_SETTINGS
            if path == ROOT / "executors" / "dask_tls.py":
                names -= {"PIPELINES_DASK_TLS"}  # only in messages that say how to set it
            if names:
                offenders[str(path.relative_to(ROOT))] = names
    assert not offenders
    assert _named_variables(ROOT / "pipelines" / "settings.py") - NAMES == set()


def test_settings_are_read_when_needed_not_at_import(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every module is imported already; variables set now still take effect."""
    monkeypatch.setenv("PIPELINES_STORE", str(tmp_path / "from-env"))
    assert default_store_path() == str(tmp_path / "from-env")

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    batch_files.write_bytes(tmp_path / "a.bin", b"x", rows=0)
    assert not synced
    monkeypatch.setenv("PIPELINES_FSYNC", "1")
    batch_files.write_bytes(tmp_path / "b.bin", b"x", rows=0)
    assert synced

    table = pa.table({"x": list(range(1000))})
    monkeypatch.setenv("PIPELINES_RECENT_BYTES", "0")
    recent.remember(str(tmp_path / "small-budget"), table)
    assert recent.recall(str(tmp_path / "small-budget")) is None
    monkeypatch.setenv("PIPELINES_RECENT_BYTES", str(64 << 20))
    recent.remember(str(tmp_path / "big-budget"), table)
    assert recent.recall(str(tmp_path / "big-budget")) is table

    monkeypatch.setenv("PIPELINES_SPOOL_DIR", str(tmp_path / "spool"))
    assert settings.spool_dir() == tmp_path / "spool"


def test_unset_empty_and_malformed_values_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("", "soon"):
        monkeypatch.setenv("PIPELINES_PROGRESS_INTERVAL", value)
        monkeypatch.setenv("PIPELINES_RECENT_BYTES", value)
        assert settings.progress_interval() == settings.DEFAULT_PROGRESS_INTERVAL
        assert settings.recent_bytes() == settings.DEFAULT_RECENT_BYTES
    monkeypatch.setenv("PIPELINES_STORE", "")
    assert settings.store() == settings.DEFAULT_STORE


def test_the_runner_hands_the_start_method_to_the_processes_backend(monkeypatch: pytest.MonkeyPatch, load) -> None:
    """The backends read no environment; the run passes them what the setting says."""
    pipeline = load("cli_squares")
    monkeypatch.setenv("PIPELINES_START_METHOD", "spawn")
    the_plan = plan(pipeline, RunOptions(executor="processes", max_workers=1))
    workers = Workers(pipeline, the_plan, Observers([]))
    slots = [sp.slot for sp in the_plan.stages.values() if sp.backend == "processes" and sp.slot]
    assert slots
    try:
        assert workers.get(slots[0]).start_method == "spawn"  # type: ignore[attr-defined]
    finally:
        workers.shutdown(cancel=True)
