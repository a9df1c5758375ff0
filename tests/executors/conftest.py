"""Clusters shared by the executor tests: one of each per test session, all on loopback.

- ``dask_cluster``: a ``LocalCluster`` on 127.0.0.1 (dashboard on a free port) whose scheduler
  gives up on a task at its first worker death, so crash tests take one death, not four.
- ``ray_session``: one ``ray.init`` per session (it costs 3-5 s). Ray binds to every
  interface, so it only starts inside a network namespace that has nothing but loopback::

      unshare -n bash -c 'ip link set lo up; exec .venv/bin/python -m pytest -m ray tests/executors -q'

  (or ``python tests/loopback_only.py python -m pytest ...``); elsewhere Ray tests skip.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import RAY_ENV, skip_unless_only_loopback


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    pytest.importorskip("distributed")
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
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
