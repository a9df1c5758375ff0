"""A randomized fault-injection run: kills, exits and faults at random, and the result still exact.

Test pipelines are ``tests/dags/fault_*.py``; their stages log what they do to files named by
environment variables, so each test checks what really happened, not only what the run reports.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines.store import Store
from pipelines.store.outputs import read_stage
from tests.failure_support import (
    _no_run_left_behind,  # noqa: F401 - fixtures this module's tests use
    finish,
    kill_and_count_leftovers,
    lines,
    start,
)

# == 9. randomized fault injection =============================================================

CHAOS_N = 600
CHAOS_BUDGET_S = 55.0  # no new scenario after this; one scenario takes up to ~25 s


def _chaos_faults(rng: random.Random, strength: float, exit: bool | None = None) -> dict[str, str]:
    """Faults for one run: items that raise, maybe an item that kills its worker, a per-item delay."""
    raising = rng.sample(range(CHAOS_N), rng.randint(0, round(3 * strength)))
    if exit is None:
        exit = rng.random() < 0.25 * strength
    exiting = rng.sample(range(150), 1 if exit else 0)  # early, so a run reaches it
    return {
        "FAULT_RAISE": ",".join(map(str, raising)),
        "FAULT_EXIT": ",".join(map(str, exiting)),
        "FAULT_DELAY": "0.004",
    }


@pytest.mark.slow
def test_randomized_fault_injection(tmp_path: Path) -> None:
    expected_rows = [x**3 - 1 for x in range(CHAOS_N)]
    expected_total = [{"rows": CHAOS_N, "sum": sum(expected_rows)}]
    stats: Counter[str] = Counter()
    started = time.monotonic()
    scenario = 0
    while scenario < 4 or (scenario < 12 and time.monotonic() - started < CHAOS_BUDGET_S):
        store, log = tmp_path / f"store{scenario}", tmp_path / f"log{scenario}"
        rng = random.Random(20240611 + scenario)  # each scenario's faults are fixed, whatever the timing did
        name = rng.choice(["fault_chaos", "fault_chaos_skip"])
        faults = _chaos_faults(rng, 1.0, exit=scenario % 3 == 1)
        # a run with a worker-killing item is not killed itself (its resumes may be)
        kill_after = rng.uniform(0.8, 3.0) if not faults["FAULT_EXIT"] and rng.random() < 0.7 else None
        command: tuple[str, ...] = ("run", name, "--param", f"n={CHAOS_N}", "--workers", "2")
        for attempt in range(6):
            proc = start(*command, store=store, env={"FAULT_LOG": str(log), **faults})
            stats["runs" if attempt == 0 else "resumes"] += 1
            if kill_after is not None:
                try:
                    proc.wait(kill_after)
                except subprocess.TimeoutExpired:
                    stats["kills"] += 1
                    # none may outlive it, not even a worker forked just before the kill
                    stats["orphans"] += kill_and_count_leftovers(proc, log)
            output = finish(proc)
            assert "Traceback" not in output, output
            assert proc.returncode in (0, 1, -signal.SIGKILL), output
            with Store(store) as s:
                latest = s.ledger.latest_run()
            if proc.returncode == 0 and latest["status"] == "ok":
                break
            # next: a resume (or a new run if the kill came before the run was recorded), with fewer faults
            command = ("resume", "latest") if latest is not None else command
            last = attempt >= 3
            kill_after = rng.uniform(0.5, 2.0) if not last and rng.random() < 0.25 else None
            faults = {"FAULT_DELAY": "0.004"} if last or rng.random() < 0.5 else _chaos_faults(rng, 0.5)
        else:
            pytest.fail(f"scenario {scenario}: no ok run after 6 attempts:\n{output}")
        with Store(store) as s:
            latest = s.ledger.latest_run()
            assert read_stage(s, latest["id"], "total").to_pylist() == expected_total
            assert read_stage(s, latest["id"], "shift").column("shift").to_pylist() == expected_rows
            stats["failed items"] += s.ledger.query("SELECT count(*) AS n FROM errors")[0]["n"]
        stats["crashed workers"] += sum(1 for e in lines(log) if e[0] == "exit")
        scenario += 1
    print(
        f"\nfault injection: {scenario} scenarios, {stats['runs']} runs + {stats['resumes']} resumes, "
        f"{stats['kills']} driver kills, {stats['crashed workers']} crashed workers, {stats['failed items']} "
        f"failed items, {stats['orphans']} processes outliving a killed driver; final output always equal to the "
        f"fault-free output ({time.monotonic() - started:.0f} s)"
    )
    assert scenario >= 4
    assert stats["kills"] and stats["crashed workers"] and stats["failed items"], "the faults were not injected"
    assert stats["orphans"] == 0, "processes of a killed driver lived on (they were killed by the test)"
