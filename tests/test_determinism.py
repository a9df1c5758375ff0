"""Deterministic outputs: every consumer receives its input in item order, so the same inputs
give byte-identical results whatever the executor, the timing, the kills and the resumes.

``ordered`` has two streamed maps whose tasks finish in no particular order (so their parts
hold ids in completion order) and a reduce that digests the order of the rows it receives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pipelines
from pipelines.store import Store
from pipelines.store.outputs import read_stage

from .conftest import ROOT, TEST_DAGS

ITEMS = 4000
EXPECTED = {
    "rows": ITEMS,
    "in_order": True,
    "digest": hashlib.sha256(repr([3 * x + 1 for x in range(ITEMS)]).encode()).hexdigest(),
}


@pytest.mark.parametrize("executor", ["processes", "threads", pytest.param("dask", marks=pytest.mark.cluster)])
def test_a_reduce_sees_a_streamed_stage_in_item_order_on_every_executor(load, tmp_path: Path, executor: str) -> None:
    pipeline = load("ordered")
    seen = []
    for i in range(3):
        result = pipelines.run(pipeline, store=tmp_path / f"store{i}", executor=executor)
        assert result.status is pipelines.RunStatus.OK, result.error
        seen.append(result.table("digest").to_pylist()[0])
    assert seen == [EXPECTED] * 3


def _start(*args: str, store: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ORDERED_DELAY": "0.01"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines",
            *args,
            "--executor",
            "processes",
            "--dags",
            str(TEST_DAGS),
            "--store",
            str(store),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.slow
def test_kills_and_resumes_give_the_same_bytes(tmp_path: Path) -> None:
    """kill -9 the driver at random moments, ten times, resuming after each: the same digest."""
    store = tmp_path / "store"
    rng = random.Random(11)
    kills = 0
    proc = _start("run", "ordered", store=store)
    try:
        while kills < 10:
            # a random moment of the run: while it starts, streams, or writes its end
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(rng.uniform(0.3, 2.0))
            if proc.poll() is not None:
                assert proc.returncode == 0
                break  # it finished first
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = _resume(store)
        assert proc.wait() == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert kills == 10, "the run finished before it was killed ten times"
    with Store(store) as s:
        run = s.ledger.latest_run()
        assert run["status"] == "ok"
        assert read_stage(s, run["id"], "digest").to_pylist() == [EXPECTED]


def _resume(store: Path) -> subprocess.Popen[bytes]:
    """Resume the killed run (a kill before the run was recorded leaves none: start it again)."""
    with Store(store) as s:
        row = s.ledger.latest_run()
    return _start("resume", row["id"], store=store) if row is not None else _start("run", "ordered", store=store)
