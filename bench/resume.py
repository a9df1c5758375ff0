"""Resume: a 100,000-item CPU pipeline killed with SIGKILL at about 90 %, then resumed.

Each round: (1) the uninterrupted run, in this process (``bench/dags/resumable.py``: a CPU
map of ~100 µs an item that appends every call to a log file with one unbuffered write,
then a total); (2) the same run through the CLI in a new session, killed — driver,
forkserver and workers, the whole process group — with SIGKILL once 90 % of the calls are
logged; (3) ``pipelines.resume`` of that run, in this process. The log says which items
were computed before the kill and which again during the resume; the ledger says which
were checkpointed. Goals: only work in flight at the kill (computed, not yet
checkpointed) is redone, and the resume's bookkeeping — its wall time minus its compute,
where compute = the uninterrupted run's time × (items the resume computed ÷ all items) —
stays under 5 % of the uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .harness import BENCH_DAGS, ROOT, Context, Report, Row, Samples, describe_error, load_pipeline
from .work import CALL_LOG_ENV

NAME = "resume"
TITLE = "resume after kill -9"
ITEM_SECONDS = 100e-6
KILL_AT = 0.9


def read_calls(log: Path) -> list[int]:
    if not log.exists():
        return []
    data = log.read_bytes()
    end = data.rfind(b"\n") + 1  # a write cut by the kill leaves no partial line: one os.write per call
    return [int(x) for x in data[:end].split()]


def count_lines(log: Path) -> int:
    try:
        with open(log, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def checkpointed(store: Path, stage: str, source: str) -> set[int]:
    """Items of ``stage`` the ledger holds as done, as positions in the source (ids are per batch)."""
    from pipelines._engine.idset import IdSet
    from pipelines.store import Store

    with Store(store) as s:
        sizes = {
            r["batch"]: r["rows"]
            for r in s.ledger.query(
                "SELECT o.batch AS batch, SUM(p.rows) AS rows FROM parts p JOIN objects o ON o.key = p.key "
                "WHERE o.stage = ? GROUP BY o.batch",
                (source,),
            )
        }
        rows = s.ledger.query(
            "SELECT o.batch AS batch, p.done AS done FROM parts p JOIN objects o ON o.key = p.key WHERE o.stage = ?",
            (stage,),
        )
    offsets, at = {}, 0  # a source batch is recorded before any stage reads it: every size is known
    for k in range(max([*sizes, *(r["batch"] for r in rows), -1]) + 1):
        offsets[k] = at
        at += sizes[k]
    done: set[int] = set()
    for row in rows:
        base = offsets[row["batch"]]
        done.update(base + i for i in IdSet.from_json(row["done"]))
    return done


def one_round(ctx: Context, n: int, iterations: int, r: int) -> dict[str, float]:
    import pipelines
    from pipelines.store import Store

    pipeline = load_pipeline("bench_resumable")
    params = {"n": n, "iterations": iterations}
    work = ctx.tempdir(f"resume-{r}-")
    full_log, kill_log = work / "full.log", work / "killed.log"

    # 1. uninterrupted
    os.environ[CALL_LOG_ENV] = str(full_log)
    t0 = time.perf_counter()
    full = pipelines.run(pipeline, params, store=work / "full-store")
    t_full = time.perf_counter() - t0
    if not full.ok:
        raise RuntimeError(f"uninterrupted run {full.status.value}: {full.error}")
    expected = full.table("total").to_pylist()
    full_calls = count_lines(full_log)

    # 2. killed at ~90 %
    store = work / "store"
    env = {**os.environ, CALL_LOG_ENV: str(kill_log), "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pipelines",
        "run",
        "bench_resumable",
        "--dags",
        str(BENCH_DAGS),
        "--store",
        str(store),
        "--param",
        f"n={n}",
        "--param",
        f"iterations={iterations}",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while count_lines(kill_log) < KILL_AT * n:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"the run ended before it was killed (exit {proc.returncode}): {out[-400:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the run to kill made no progress for 300 s")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started: one process group
    proc.wait()
    if proc.stdout:
        proc.stdout.close()
    _wait_group_gone(proc.pid)
    before = read_calls(kill_log)
    called = set(before)
    done = checkpointed(store, "work", "numbers")
    with Store(store) as s:
        run_id = s.ledger.latest_run()["id"]

    # 3. resume
    os.environ[CALL_LOG_ENV] = str(kill_log)
    t0 = time.perf_counter()
    resumed = pipelines.resume(run_id, store=store)
    t_resume = time.perf_counter() - t0
    if not resumed.ok:
        raise RuntimeError(f"resume {resumed.status.value}: {resumed.error}")
    if resumed.table("total").to_pylist() != expected:
        raise RuntimeError(f"resumed total {resumed.table('total').to_pylist()} != uninterrupted {expected}")
    after = read_calls(kill_log)[len(before) :]
    again = set(after)

    # 4. the same amount of work as a fresh run: what any run of that size costs, start-up included
    os.environ[CALL_LOG_ENV] = str(work / "same.log")
    t0 = time.perf_counter()
    same = pipelines.run(pipeline, {"n": max(1, len(after)), "iterations": iterations}, store=work / "same-store")
    t_same = time.perf_counter() - t0
    if not same.ok:
        raise RuntimeError(f"fresh run of {len(after)} items {same.status.value}: {same.error}")
    redone = len(again & called)
    in_flight = len(called - done)
    recomputed_checkpointed = len(again & done)
    compute = t_full * len(after) / n
    bookkeeping = t_resume - compute
    return {
        "t_full": t_full,
        "t_resume": t_resume,
        "full_calls": full_calls,
        "calls_before_kill": len(before),
        "distinct_before_kill": len(called),
        "checkpointed_at_kill": len(done),
        "in_flight_at_kill": in_flight,
        "resume_calls": len(after),
        "redone": redone,
        "recomputed_checkpointed": recomputed_checkpointed,
        "missing_after_resume": n - len(called | again),
        "compute_estimate": compute,
        "bookkeeping": bookkeeping,
        "bookkeeping_share": bookkeeping / t_full,
        "t_same_work": t_same,
        "resume_minus_same_work": t_resume - t_same,
    }


def _wait_group_gone(pgid: int, timeout: float = 10) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == pgid:
                    alive.append(p.pid)
            except (ProcessLookupError, PermissionError):
                continue
        if not alive:
            return
        time.sleep(0.05)


def run(ctx: Context) -> Report:
    from .work import calibrate_burn

    n = 10_000 if ctx.quick else 100_000
    iterations = calibrate_burn(ITEM_SECONDS)
    report = Report(NAME)
    rounds: list[dict[str, float]] = []
    s_full, s_resume = Samples("uninterrupted run", "anchor"), Samples("resume", "pipelines")
    for r in range(ctx.repeat):
        try:
            out = one_round(ctx, n, iterations, r)
        except Exception as exc:
            s_resume.error = describe_error(exc)
            ctx.log(f"    round {r + 1}: FAILED {s_resume.error}")
            break
        rounds.append(out)
        s_full.seconds.append(out["t_full"])
        s_resume.seconds.append(out["t_resume"])
        s_resume.extras.append(out)
        ctx.log(
            f"    round {r + 1}/{ctx.repeat}  full {out['t_full']:.2f} s, killed after {out['calls_before_kill']:,} "
            f"calls ({out['checkpointed_at_kill']:,} checkpointed), resume {out['t_resume']:.2f} s computing "
            f"{out['resume_calls']:,} (redone {out['redone']:,})"
        )
    report.samples = {"uninterrupted run": s_full, "resume": s_resume}
    label = f"{TITLE} ({n:,} items at {KILL_AT:.0%})"
    if not rounds:
        report.rows.append(Row(label, None, None, None, "", "", False, error=s_resume.error))
        return report
    worst = max(rounds, key=lambda o: o["redone"] - o["in_flight_at_kill"])
    redo_ok = all(
        o["redone"] <= o["in_flight_at_kill"] and o["recomputed_checkpointed"] == 0 and o["missing_after_resume"] == 0
        for o in rounds
    )
    row = Row(
        f"{label}: items redone",
        "in flight at the kill",
        worst["in_flight_at_kill"],
        worst["redone"],
        "items",
        "redone ≤ in flight",
        redo_ok,
        error=s_resume.error,
    )
    report.rows.append(row)
    share = statistics.median(o["bookkeeping_share"] for o in rounds)
    bookkeeping = statistics.median(o["bookkeeping"] for o in rounds)
    row = Row(
        f"{label}: resume bookkeeping",
        None,
        None,
        share * 100,
        "%",
        "< 5 % of the uninterrupted run",
        share < 0.05,
        error=s_resume.error,
    )
    report.rows.append(row)
    report.notes.append(
        f"bookkeeping = resume wall − uninterrupted × (items the resume computed ÷ {n:,}): median "
        f"{bookkeeping:.3f} s = {share:.1%} of the uninterrupted run ({s_full.median:.2f} s); "
        f"resume wall median {s_resume.median:.2f} s"
    )
    extra = statistics.median(o["resume_minus_same_work"] for o in rounds)
    report.notes.append(
        f"a fresh run of as many items as the resume computed takes "
        f"{statistics.median(o['t_same_work'] for o in rounds):.2f} s (median): the resume's own "
        f"machinery (ledger, reloading the source, reuse checks) costs {extra:+.3f} s beyond that"
    )
    for i, o in enumerate(rounds, 1):
        report.notes.append(
            f"round {i}: killed after {o['calls_before_kill']:,} calls; checkpointed {o['checkpointed_at_kill']:,}, "
            f"in flight {o['in_flight_at_kill']:,}; resume computed {o['resume_calls']:,} "
            f"(redone {o['redone']:,}, of them checkpointed already {o['recomputed_checkpointed']:,}) in "
            f"{o['t_resume']:.2f} s, compute estimate {o['compute_estimate']:.2f} s"
        )
    return report
