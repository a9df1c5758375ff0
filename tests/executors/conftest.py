"""Clusters shared by the executor tests: one of each per test session, all on loopback.

- ``dask_cluster``: a ``LocalCluster`` on 127.0.0.1 (dashboard on a free port) whose scheduler
  gives up on a task at its first worker death, so crash tests take one death, not four.
- ``ray_session`` lives in ``tests/conftest.py``: one ``ray.init`` per session, shared with the
  engine's cluster tests (``tests/test_clusters.py``). Ray binds to every interface, so it only
  starts inside a network namespace that has nothing but loopback::

      unshare -n bash -c 'ip link set lo up; exec .venv/bin/python -m pytest -m ray tests/executors -q'

  (or ``python tests/loopback_only.py python -m pytest ...``); elsewhere Ray tests skip.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    pytest.importorskip("distributed")
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )
    try:
        yield cluster
    finally:
        cluster.close()
