"""One measurement for ``bench.ab``, in a fresh interpreter; prints one JSON line.

Run by path with ``PYTHONPATH`` and the working directory set to the tree under test, so it
imports that tree's ``pipelines`` and ``bench`` (it uses only what older trees also have).
Arguments after the probe's name are ``key=value`` (e.g. ``n=100000``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SQUARES = """
from collections.abc import Iterator

from pipelines import Pipeline

pipeline = Pipeline("squares")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(10)


@pipeline.map(over=numbers, kind="cpu")
def square(x: int) -> int:
    return x * x
"""


def _dags(tmp: Path) -> Path:
    folder = tmp / "dags"
    folder.mkdir(exist_ok=True)
    (folder / "squares.py").write_text(SQUARES)
    return folder


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (forked pool workers, once joined)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _load(name: str, folder: Path):
    from pipelines.define.loader import load

    return load(name, folder)


def _count_tasks() -> list[int]:
    """Count the tasks handed to process pools (a one-element list, updated in place)."""
    from executors.processes import ProcessExecutor

    count = [0]
    submit = ProcessExecutor._submit

    def counted(self, fn, key):
        count[0] += 1
        return submit(self, fn, key)

    ProcessExecutor._submit = counted
    return count


def probe_tiny(tmp: Path, n: str = "1000000") -> dict:
    """``bench_tiny`` over ``n`` ints, after a small warm-up run (as the bench's own warm-up)."""
    import pipelines

    pipeline = _load("bench_tiny", Path("bench/dags"))
    pipelines.run(pipeline, {"n": 1000}, store=tmp / "warm")
    count = _count_tasks()
    c0, t0 = _cpu(), time.perf_counter()
    result = pipelines.run(pipeline, {"n": int(n)}, store=tmp / "store")
    assert result.ok, result.error
    assert result.table("square").num_rows == int(n)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu": _cpu() - c0, "batches": result.stages["square"].batches, "tasks": count[0]}


def probe_cpu(tmp: Path, tasks: str = "200", iterations: str = "0") -> dict:
    """``bench_cpu``: ``tasks`` items of about 19 ms (``iterations`` calibrated unless given)."""
    import pipelines
    from bench.work import burn, calibrate_burn

    its = int(iterations) or calibrate_burn(0.019)
    pipeline = _load("bench_cpu", Path("bench/dags"))
    pipelines.run(pipeline, {"tasks": 4, "iterations": 1000}, store=tmp / "warm")
    t0 = time.perf_counter()
    serial = [burn(its) for _ in range(20)]
    per_item = (time.perf_counter() - t0) / len(serial)
    c0, t0 = _cpu(), time.perf_counter()
    result = pipelines.run(pipeline, {"tasks": int(tasks), "iterations": its}, store=tmp / "store")
    seconds = time.perf_counter() - t0
    assert result.ok, result.error
    return {"seconds": seconds, "cpu": _cpu() - c0, "speedup": per_item * int(tasks) / seconds, "iterations": its}


def probe_cli10(tmp: Path) -> dict:
    """``python -m pipelines run squares -q``: 10 items on processes, a fresh interpreter."""
    folder = _dags(tmp)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "squares", "-q", "--dags", str(folder), "--store", str(tmp / "s")],
        check=True,
        capture_output=True,
    )
    return {"seconds": time.perf_counter() - t0}


def probe_warm(tmp: Path, executor: str = "processes", rounds: str = "7") -> dict:
    """The 10-item pipeline run again and again in one process: median of the warm runs."""
    import pipelines

    pipeline = _load("squares", _dags(tmp))
    t0 = time.perf_counter()
    pipelines.run(pipeline, store=tmp / "cold", executor=executor)
    cold = time.perf_counter() - t0
    times = []
    for i in range(int(rounds)):
        t0 = time.perf_counter()
        result = pipelines.run(pipeline, store=tmp / f"warm{i}", executor=executor)
        times.append(time.perf_counter() - t0)
        assert result.ok
    return {"seconds": statistics.median(times), "cold": cold}


def probe_ingest(tmp: Path, scale: str = "20") -> dict:
    """``dags/ingest.py`` end to end at ``scale`` (15 images per unit)."""
    import pipelines

    pipeline = _load("ingest", Path("dags"))
    c0, t0 = _cpu(), time.perf_counter()
    result = pipelines.run(pipeline, {"scale": int(scale)}, store=tmp / "store")
    seconds = time.perf_counter() - t0
    assert result.ok and not result.failed_items, result.error
    return {"seconds": seconds, "cpu": _cpu() - c0}


def probe_chain(tmp: Path, stages: str = "200", cpu: str = "0") -> dict:
    """A chain of single-item stages: seconds per stage."""
    os.environ["BENCH_CHAIN_STAGES"] = stages
    import pipelines

    mod = _load("bench_chain_cpu" if cpu == "1" else "bench_chain", Path("bench/dags"))
    t0 = time.perf_counter()
    result = pipelines.run(mod, store=tmp / "store")
    assert result.ok
    return {"seconds": (time.perf_counter() - t0) / int(stages)}


def main() -> None:
    name, *rest = sys.argv[1:]
    kwargs = dict(arg.split("=", 1) for arg in rest)
    tmp = Path(tempfile.mkdtemp(prefix="ab-"))
    try:
        out = globals()[f"probe_{name}"](tmp, **kwargs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
