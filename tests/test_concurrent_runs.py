"""Two drivers on one store share work: a batch is computed by whichever driver leases its key
first; the other waits for it and reuses the result. A dead driver's leases are freed.

The drivers are real ``python -m pipelines run`` processes on one real SQLite ledger.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pipelines._engine.leases import LEASE_SECONDS, Leases
from pipelines.store import Store
from pipelines.store.ledger import Ledger
from pipelines.store.outputs import read_stage

from .conftest import ROOT, TEST_DAGS

ITEMS = 20_000


def test_two_concurrent_runs_compute_each_item_once(tmp_path: Path) -> None:
    store, log = tmp_path / "store", tmp_path / "calls"
    env = {**os.environ, "SHARED_LOG": str(log), "SHARED_DELAY": "0.0005", "SHARED_ITEMS": str(ITEMS)}
    command = [sys.executable, "-m", "pipelines", "run", "shared", "--dags", str(TEST_DAGS), "--store", str(store)]
    drivers = [
        subprocess.Popen(
            [*command, "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [d.communicate()[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    calls = Counter(log.read_text().split())
    # without leases both drivers compute most batches: about 36,000 calls a stage
    assert calls == Counter({"squared": ITEMS, "plus_one": ITEMS})
    with Store(store) as s:
        runs = s.ledger.runs()
        assert len(runs) == 2 and all(r["status"] == "ok" for r in runs)
        computed_by = {
            r["run_id"]
            for r in s.ledger.query(
                "SELECT DISTINCT p.run_id FROM parts p JOIN objects o ON o.key = p.key WHERE o.stage='squared'"
            )
        }
        assert computed_by == {r["id"] for r in runs}, "the runs did not overlap: each should compute a share"
        assert s.ledger.query("SELECT COUNT(*) AS n FROM leases")[0]["n"] == 0  # all given back
        for run in runs:
            assert read_stage(s, run["id"], "total").to_pylist() == [{"sum": sum(x * x + 1 for x in range(ITEMS))}]


def ask(leases: Leases, key: str) -> bool:
    """One turn: ask for ``key``, write the request, and say whether ``leases`` may compute it."""
    if leases.may_compute(key, "stage"):
        return True
    leases.waiting.pop(key, None)  # ask now rather than after the retry interval
    leases.may_compute(key, "stage")
    leases.sync()
    return leases.may_compute(key, "stage")


def hold(ledger: Ledger, key: str, owner: str, heartbeat: float) -> None:
    with ledger.transaction() as db:
        db.execute("INSERT OR REPLACE INTO leases (key, owner, heartbeat) VALUES (?, ?, ?)", (key, owner, heartbeat))


def test_a_lease_is_held_against_a_live_driver_and_freed_from_a_dead_one(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        ours, theirs = Leases(ledger), Leases(ledger)
        assert ask(theirs, "k1")
        assert theirs.newly_granted("k1") and not theirs.newly_granted("k1")  # adopt once
        assert not ask(ours, "k1")  # a live holder (this process) keeps it
        assert "k1" in ours.waiting
        theirs.done("k1")
        theirs.sync()  # the batch is final: its lease goes after the turn
        assert ask(ours, "k1")

        # a driver that was killed on this host: its process is gone, its lease is free at once
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        hold(ledger, "k2", f"{socket.gethostname()}:{dead.pid}:x", time.time())
        assert ask(ours, "k2")

        # a driver elsewhere that stopped beating: free after LEASE_SECONDS; one that beats is not
        hold(ledger, "k3", "elsewhere:1:x", time.time() - LEASE_SECONDS - 1)
        assert ask(ours, "k3")
        hold(ledger, "k4", "elsewhere:1:x", time.time())
        assert not ask(ours, "k4")

        ours.release_all()
        assert {r["owner"] for r in ledger.query("SELECT owner FROM leases")} == {"elsewhere:1:x"}
    finally:
        ledger.close()


def test_a_lease_that_cannot_be_written_lets_the_batch_be_computed_unleased(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        leases = Leases(ledger)
        with ledger.transaction() as db:
            db.execute("DROP TABLE leases")  # every lease write now fails, as on a full disk
        assert ask(leases, "k")
        assert "k" in leases.unleased and "k" not in leases.held
        ledger.query("SELECT COUNT(*) FROM runs")  # the connection is usable: nothing was left open
    finally:
        ledger.close()
