"""Shared fixtures: a fresh store per test, the test dags folder, and a CLI runner.

Test pipelines live in ``tests/dags/`` (one module per shape, like Hamilton's resources) and
are loaded through ``pipelines.loader`` exactly as a user's would be.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_DAGS = Path(__file__).resolve().parent / "dags"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A fresh, empty store folder."""
    return tmp_path / "store"


@pytest.fixture
def load():
    """Load a pipeline from tests/dags by name."""
    from pipelines import loader

    def _load(name: str):
        return loader.load(name, TEST_DAGS)

    return _load


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120,
        check: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipelines ARGS`` in a subprocess; optionally assert its exit code."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}, wanted {check}\n{proc.stdout}\n{proc.stderr}"
    return proc
