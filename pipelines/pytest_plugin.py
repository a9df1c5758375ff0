"""A pytest plugin for projects that use pipelines: plain ``pytest`` works as ``python -m pytest`` does.

Registered through the ``pytest11`` entry point, so installing the package is enough.
``python -m pytest`` puts the current folder on ``sys.path`` and plain ``pytest`` does not,
so ``from dags.process_pool import pipeline`` failed with ``No module named 'dags'``. When the
project's root folder (pytest's ``rootdir``) holds a ``dags/`` folder, the plugin puts the
root on ``sys.path``. Its fixture ``pipelines_store`` is a throwaway store for a test:

    def test_pipeline(pipelines_store):
        result = pipeline.run({"count": 3}, executor="inline", store=pipelines_store)
        assert result.ok
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import settings


def pytest_configure(config: pytest.Config) -> None:
    """Put the project's root on ``sys.path`` when it holds a ``dags/`` folder."""
    root = Path(config.rootpath)
    if (root / "dags").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))


@pytest.fixture
def pipelines_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty store folder for one test; also ``$PIPELINES_STORE``, so that the
    command line and ``pipelines.run`` without ``store=`` use it too."""
    store = tmp_path_factory.mktemp("pipelines-store")
    monkeypatch.setenv(settings.STORE_VARIABLE, str(store))
    yield store
