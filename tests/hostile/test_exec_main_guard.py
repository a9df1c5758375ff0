"""A script without ``if __name__ == "__main__":`` runs its body once, whatever starts the workers.

With spawn and forkserver, multiprocessing makes each new process import the parent's main
script; the process pool then picks forkserver whenever another thread is alive in the
driver (a daemon thread, or a joblib pool left by an earlier run). Each script here counts
its own executions in a file: exactly one, with the right result, exit 0 and a quiet stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import os
    import threading
    import time
    from collections.abc import Iterator

    from pipelines import Pipeline

    with open(os.environ["BODY_LOG"], "a") as log:  # the side effect a re-run would repeat
        log.write(f"{os.getpid()}\\n")

    if os.environ.get("LIVE_THREAD"):
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()

    pipeline = Pipeline("no_guard")


    @pipeline.source
    def numbers() -> Iterator[int]:
        yield from range(40)


    @pipeline.map(over=numbers, kind="cpu", on_error="skip")
    def square(x: int) -> int:
        if str(x) == os.environ.get("KILL_ITEM"):
            os._exit(3)  # its worker dies: a fresh one is started for the rest
        return x * x


    @pipeline.map(over=numbers, kind="cpu")
    def worker_pid(x: int) -> int:
        return os.getpid()


    store = os.environ["STORE"]
    if os.environ.get("JOBLIB_FIRST"):  # loky leaves threads behind in the driver
        pipeline.run(store=store + "-joblib", executor="joblib")
    result = pipeline.run(store=store, executor=os.environ.get("EXECUTOR") or None)
    squares = result.table("square")["square"].to_pylist()
    pids = set(result.table("worker_pid")["worker_pid"].to_pylist())
    print("sum", sum(squares), "rows", len(squares), "driver", os.getpid() in pids, "status", result.status.value)
""")


def run_script(
    tmp_path: Path, *, module: bool = False, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    script = tmp_path / "no_guard.py"
    script.write_text(SCRIPT)
    body_log = tmp_path / "body.log"
    full_env = {
        **os.environ,
        "BODY_LOG": str(body_log),
        "STORE": str(tmp_path / "store"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **env,
    }
    args = ["-m", "no_guard"] if module else [str(script)]
    proc = subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600
    )
    return proc, body_log.read_text().split()


def assert_ran_once(
    proc: subprocess.CompletedProcess[str],
    bodies: list[str],
    *,
    rows: int = 40,
    total: int = sum(x * x for x in range(40)),
) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(bodies) == 1, f"the script's body ran {len(bodies)} times:\n{proc.stderr}"
    assert "bootstrapping" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert f"sum {total} rows {rows} driver False" in proc.stdout, proc.stdout  # computed by worker processes


METHODS = ["fork", "forkserver", "spawn"]


@pytest.mark.parametrize("live_thread", [False, True], ids=["alone", "with-a-live-thread"])
@pytest.mark.parametrize("method", [*METHODS, "auto"])
def test_a_script_without_a_guard_runs_its_body_once(method: str, live_thread: bool, tmp_path: Path) -> None:
    env = {"PIPELINES_START_METHOD": method, "LIVE_THREAD": "1" if live_thread else ""}
    assert_ran_once(*run_script(tmp_path, **env))


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_module_run_with_dash_m_runs_its_body_once(method: str, tmp_path: Path) -> None:
    """``python -m no_guard``: multiprocessing would re-import the main module by name, not by path."""
    assert_ran_once(*run_script(tmp_path, module=True, PIPELINES_START_METHOD=method))


def test_a_joblib_run_earlier_in_the_script_does_not_make_the_next_pool_rerun_it(tmp_path: Path) -> None:
    pytest.importorskip("joblib")
    assert_ran_once(*run_script(tmp_path, JOBLIB_FIRST="1", LIVE_THREAD=""))


KILLED = 7  # the item whose worker dies: it fails alone (on_error="skip"), the rest is computed
AFTER_A_DEATH = {"rows": 39, "total": sum(x * x for x in range(40)) - KILLED * KILLED}


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_worker_started_after_a_death_does_not_rerun_the_script(method: str, tmp_path: Path) -> None:
    """The replacement pool is started later, from the driver's threads, never importing the script."""
    assert_ran_once(*run_script(tmp_path, PIPELINES_START_METHOD=method, KILL_ITEM=str(KILLED)), **AFTER_A_DEATH)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(900)  # a LocalCluster, a worker death and its restart: minutes on a loaded machine
@pytest.mark.parametrize(
    "kill",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.xfail(
                strict=False,
                reason="distributed sometimes logs the dead worker's tasks on stderr, which the test reads as "
                "the script's output; the count of script runs is what it checks",
            ),
        ),
    ],
    ids=["healthy", "a-worker-dies"],
)
def test_dask_workers_never_rerun_the_script(kill: bool, tmp_path: Path) -> None:
    """Dask's nannies spawn their workers (and restart a dead one) from threads of their own."""
    pytest.importorskip("distributed")
    env = {
        "EXECUTOR": "dask",
        "LIVE_THREAD": "1",
        "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": "spawn",
        "KILL_ITEM": str(KILLED) if kill else "",
    }
    assert_ran_once(*run_script(tmp_path, **env), **(AFTER_A_DEATH if kill else {}))
