"""Shared fixtures: a fresh store per test, the test dags folder, a CLI runner, and one Ray.

Test pipelines live in ``tests/dags/`` (one module per shape, like Hamilton's resources) and
are loaded through ``pipelines.define.loader`` exactly as a user's would be.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .executors.helpers import RAY_ENV, skip_unless_only_loopback

ROOT = Path(__file__).resolve().parent.parent
TEST_DAGS = Path(__file__).resolve().parent / "dags"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C tests need Python's own SIGINT handler.

    A suite started as a background job (``make test &``, many CI shells) inherits SIGINT as
    ignored, and Python then installs no handler: a test's ``os.kill(pid, SIGINT)`` would do
    nothing, and the processes the tests start would inherit the same deafness.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A fresh, empty store folder."""
    return tmp_path / "store"


@pytest.fixture
def load():
    """Load a pipeline from tests/dags by name."""
    from pipelines.define import loader

    def _load(name: str):
        return loader.load(name, TEST_DAGS)

    return _load


def cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    check: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipelines ARGS`` in a subprocess; optionally assert its exit code."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}, wanted {check}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """One ``ray.init`` per test session (it costs 3-5 s), shared by the executor and engine tests.

    Ray binds to every interface, so it starts only inside a network namespace that has
    nothing but loopback (``python tests/loopback_only.py python -m pytest ...``); elsewhere
    the tests that use it skip. Its workers start with the environment of this moment: a
    variable set later (a lifespan's, a monkeypatch's) does not reach them.
    """
    skip_unless_only_loopback()
    ray = pytest.importorskip("ray")
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    temp_dir = tempfile.mkdtemp(prefix="ray-test-")  # short: Ray's socket paths must fit in 107 bytes
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
