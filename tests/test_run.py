"""The runner on local executors: same results everywhere, streaming, backpressure, resources."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import pipelines
from pipelines import Pipeline, RunStatus
from pipelines._engine import feed
from pipelines.store.outputs import read_parts

from .conftest import TEST_DAGS
from .helpers import stage_parts

LOCAL_EXECUTORS = ["inline", "threads", "processes", "asyncio"]


@pytest.fixture(scope="module")
def diamond_baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    from pipelines.define import loader

    result = pipelines.run(
        loader.load("diamond", TEST_DAGS), {"n": 1500}, store=tmp_path_factory.mktemp("base"), executor="inline"
    )
    assert result.status is RunStatus.OK
    return {stage: result.table(stage) for stage in result.stages}


@pytest.mark.parametrize("executor", LOCAL_EXECUTORS)
def test_every_local_executor_gives_identical_results(executor: str, load, store: Path, diamond_baseline) -> None:
    result = pipelines.run(load("diamond"), {"n": 1500}, store=store, executor=executor)
    assert result.status is RunStatus.OK, result.error
    for stage, expected in diamond_baseline.items():
        assert result.table(stage).equals(expected), f"{stage} differs on {executor}"


def test_default_executors_follow_stage_kinds(load, store: Path, diamond_baseline) -> None:
    result = pipelines.run(load("diamond"), {"n": 1500}, store=store)
    backends = {name: s.backend for name, s in result.stages.items()}
    assert backends == {
        "numbers": "driver",
        "label": "processes",
        "divisors": "processes",
        "per_batch": "processes",
        "doubled": "asyncio",
        "summary": "processes",
    }
    assert result.table("summary").equals(diamond_baseline["summary"])


def test_outputs_keep_input_order_and_fan_in(load, store: Path) -> None:
    result = pipelines.run(load("diamond"), {"n": 1500}, store=store, executor="threads")
    assert result.table("label").column("x").to_pylist() == list(range(1500))
    assert result.table("doubled").column("doubled").to_pylist() == [2 * x for x in range(1500)]
    expected_divisors = [d for x in range(1500) for d in (2, 3, 5) if x and x % d == 0]
    assert result.table("divisors").column("divisors").to_pylist() == expected_divisors
    summary = result.table("summary").to_pylist()
    assert sum(row["count"] for row in summary) == 1500
    assert {row["divisors"] for row in summary} == {len(expected_divisors)}


def test_downstream_starts_before_upstream_finishes(load, store: Path, tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "stamps.log"
    monkeypatch.setenv("STREAMED_LOG", str(log))
    result = pipelines.run(load("streamed"), store=store)
    assert result.status is RunStatus.OK
    events = [line.split() for line in log.read_text().splitlines()]
    first_ends = [float(t) for stage, _, event, t in events if stage == "first" and event == "end"]
    second_starts = [float(t) for stage, _, event, t in events if stage == "second"]
    assert len(first_ends) == 400 and len(second_starts) == 400
    assert min(second_starts) < max(first_ends), "the second stage waited for the first to finish"
    assert result.table("second").column("second").to_pylist() == list(range(1, 401))


def test_a_task_spans_several_small_batches(store: Path, monkeypatch) -> None:
    """A cheap map over 200 source batches of 100 items runs in fewer tasks than batches, with
    one part per batch under that batch's key: a rerun reuses every batch."""
    from executors.base import ExecutorBase
    from pipelines._engine.group import TaskGroup

    submitted: list[object] = []
    submit = ExecutorBase.submit
    monkeypatch.setattr(ExecutorBase, "submit", lambda self, fn, key: submitted.append(fn) or submit(self, fn, key=key))
    pipeline = Pipeline("grouped")

    @pipeline.source(batch_size=100)
    def numbers() -> Iterator[int]:
        yield from range(20_000)

    @pipeline.map(over=numbers, kind="io")
    def inc(x: int) -> int:
        return x + 1

    result = pipelines.run(pipeline, store=store)
    assert result.ok
    assert result.table("inc").column("inc").to_pylist() == list(range(1, 20_001))
    assert result.stages["inc"].batches == 200
    groups = [t for t in submitted if isinstance(t, TaskGroup)]
    assert groups and len(submitted) < 200, f"{len(submitted)} tasks, {len(groups)} of them grouped"
    assert all(len({task.batch for task in g.tasks}) == len(g.tasks) > 1 for g in groups)
    again = pipelines.run(pipeline, store=store)
    assert again.stages["inc"].reused_batches == 200 and again.stages["inc"].computed_batches == 0


def test_source_read_ahead_is_bounded(load, store: Path, tmp_path: Path, monkeypatch) -> None:
    """With its consumer blocked, the source stops once its open batches hold enough items for the
    largest task, instead of reading all 1,000 batches (100 items each)."""
    gate = tmp_path / "gate"
    monkeypatch.setenv("GATE_FILE", str(gate))
    holder: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: holder.update(result=pipelines.run(load("gated"), store=store, executor="threads"))
    )
    runner.start()
    counts = [0]
    while not (counts[-1] and len(counts) > 20 and counts[-1] == counts[-20]):  # written, then a second still
        assert runner.is_alive(), f"the run ended with its consumer blocked: {holder}"
        runs = list((store / "runs").glob("*/numbers")) if (store / "runs").exists() else []
        counts.append(len(list(runs[0].glob("*.arrow"))) if runs else 0)
        time.sleep(0.05)
    written = counts[-1]
    gate.write_text("open")
    runner.join()  # pytest-timeout bounds a hang
    assert 1 <= written <= feed.MAX_OPEN_SOURCE_ITEMS // 100 + 1, f"source wrote {written} batches while blocked"
    result = holder["result"]
    assert result.status is RunStatus.OK  # type: ignore[attr-defined]
    assert result.stages["wait_for_gate"].items == 100_000  # type: ignore[attr-defined]


def test_resources_are_made_once_per_worker(load, store: Path, tmp_path: Path, monkeypatch) -> None:
    """Sync resources once per worker thread that ran a task (threads and processes alike), the
    async one once for the event loop; each where it is used, and closed there."""
    log = tmp_path / "resources.log"
    monkeypatch.setenv("RESOURCE_LOG", str(log))
    result = pipelines.run(load("resourced"), store=store)
    assert result.status is RunStatus.OK, result.error
    lines = [line.split() for line in log.read_text().splitlines()]
    where = {
        what: Counter((pid, tid) for w, pid, tid in lines if w == what)
        for what in ("open-sync", "call-sync", "open-async", "call-async", "close-async")
    }
    assert where["call-sync"].total() == 1200 and where["call-async"].total() == 600
    assert set(where["open-sync"]) == set(where["call-sync"]), "a worker ran a task without its own resource"
    assert set(where["open-sync"].values()) == {1}, f"made more than once by a worker: {where['open-sync']}"
    assert len(where["open-sync"]) >= 2  # the thread stage's workers and the process stage's are not one
    assert len(where["call-async"]) == 1  # one event loop thread ran every async call...
    assert where["open-async"] == where["close-async"] == Counter(set(where["call-async"]))  # ...made it once
    assert result.table("in_process").num_rows == 600


SCRIPT_WITHOUT_GUARD = """
import os
import sys
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import Pipeline

with open(os.environ["BODY_LOG"], "a") as f:  # once per run of this body
    f.write(f"{os.getpid()}\\n")

pipeline = Pipeline("unguarded")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(500)


@pipeline.map(over=numbers, kind="cpu")
def square(x: int) -> int:
    return x * x


@pipeline.reduce(inputs=[square])
def total(square: pa.Table) -> pa.Table:
    return pa.table({"rows": [square.num_rows], "sum": [pc.sum(square["square"]).as_py()]})


result = pipeline.run(store=sys.argv[1])
print("backend", result.stages["square"].backend)
print("total", result.table("total").to_pylist())
"""


def test_spawn_start_method_needs_no_main_guard(store: Path, tmp_path: Path) -> None:
    """A script that runs a pipeline at top level, on spawned worker processes, runs its body once."""
    script, body_log = tmp_path / "unguarded.py", tmp_path / "body.log"
    script.write_text(SCRIPT_WITHOUT_GUARD)
    proc = subprocess.run(
        [sys.executable, str(script), str(store)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PIPELINES_START_METHOD": "spawn", "BODY_LOG": str(body_log)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backend processes" in proc.stdout.splitlines()
    assert f"total {[{'rows': 500, 'sum': sum(x * x for x in range(500))}]}" in proc.stdout.splitlines()
    pids = body_log.read_text().split()
    assert len(pids) == 1, f"the script's body ran {len(pids)} times (pids {pids}): workers re-ran it"


def test_fail_policy_stops_and_keeps_finished_items(load, store: Path, tmp_path: Path, monkeypatch) -> None:
    """Every item ``square`` finished before the failure stopped the run is kept, readable, and
    reused by the resume, which computes exactly the others."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("COUNTED_LOG", str(log))
    monkeypatch.setenv("COUNTED_FAIL", "10")
    result = pipelines.run(load("counted"), {"n": 3000}, store=store, executor="threads")
    assert result.status is RunStatus.FAILED
    assert result.error is not None and result.error.stage == "square" and result.error.item == 10
    assert "item 10 is broken" in str(result.error)

    finished = squared(log) - {10}
    assert finished and len(finished) < 3000 - 1, "the run did not stop at the failure"
    parts = stage_parts(store, "square")
    summary = result.stages["square"]
    assert sum(len(p.done) for p in parts) == len(finished) == summary.items - summary.failed_items
    batches = {p.key for p in parts}  # item ids are per batch: read each batch's parts together
    kept = [v for key in batches for v in read_parts([p for p in parts if p.key == key]).column("square").to_pylist()]
    assert sorted(kept) == sorted(x * x for x in finished)

    before = len(log.read_text().splitlines())
    monkeypatch.delenv("COUNTED_FAIL")  # the cause is fixed
    resumed = pipelines.resume(result.run_id, store=store)
    assert resumed.status is RunStatus.OK, resumed.error
    assert squared(log, before) == set(range(3000)) - finished
    assert resumed.stages["square"].reused_items == len(finished)
    assert resumed.table("square").column("square").to_pylist() == [x * x for x in range(3000)]


def squared(log: Path, skip: int = 0) -> set[int]:
    """The items ``square`` was called with, after the first ``skip`` lines of the call log."""
    lines = log.read_text().splitlines()[skip:]
    return {int(item) for stage, item in (line.split() for line in lines) if stage == "square"}


def test_skip_policy_records_and_goes_on(load, store: Path, monkeypatch) -> None:
    monkeypatch.setenv("COUNTED_FAIL", "3,1000,2999")
    result = pipelines.run(load("counted_skip"), {"n": 3000}, store=store)
    assert result.status is RunStatus.PARTIAL
    assert sorted(e.position for e in result.failures) == [3, 1000, 2999]  # positions in the whole source
    assert {(e.stage, e.error_type) for e in result.failures} == {("square", "ValueError")}
    assert result.table("total").to_pylist()[0]["rows"] == 2997


def test_unconvertible_value_fails_its_item_naming_stage_and_item(store: Path) -> None:
    pipeline = Pipeline("convert", module=__name__)

    @pipeline.source
    def items() -> list[int]:
        return list(range(10))

    @pipeline.map(over=items, on_error="skip", kind="io")
    def value(x: int) -> int:
        return "not a number" if x == 4 else x  # type: ignore[return-value]

    result = pipelines.run(pipeline, store=store, executor="threads")
    assert result.status is RunStatus.PARTIAL
    (error,) = result.failures
    assert error.item == 4 and error.error_type == "ConversionError"
    # the record names the item (its place in the source); the message, the stage and the cause
    assert error.position == 4 and error.where == "item 4"
    assert "stage 'value': cannot convert str value to Arrow" in error.message
    assert result.table("value").column("value").to_pylist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]


def test_table_sources_and_side_inputs(store: Path) -> None:
    pipeline = Pipeline("tables", module=__name__)

    @pipeline.source
    def rows() -> pa.Table:
        return pa.table({"k": ["a", "b", "a", "c"], "v": [1, 2, 3, 4]})

    @pipeline.source
    def scale() -> range:
        return range(3)

    @pipeline.map(over=rows, side=[scale], kind="io")
    def scaled(row: dict, scale: pa.Table) -> int:
        return row["v"] * scale.num_rows

    result = pipelines.run(pipeline, store=store, executor="threads")
    assert result.status is RunStatus.OK, result.error
    assert result.table("scaled").column("scaled").to_pylist() == [3, 6, 9, 12]
    assert result.table("scale").column("scale").to_pylist() == [0, 1, 2]


def test_async_generator_source(store: Path) -> None:
    pipeline = Pipeline("agen", module=__name__)

    @pipeline.source
    async def ticks():
        for i in range(700):
            yield i

    @pipeline.map(over=ticks, kind="io")
    async def plus(x: int) -> int:
        return x + 1

    result = pipelines.run(pipeline, store=store)
    assert result.status is RunStatus.OK, result.error
    assert result.table("plus").column("plus").to_pylist() == list(range(1, 701))


def test_a_second_run_reuses_everything(load, store: Path, tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("COUNTED_LOG", str(log))
    first = pipelines.run(load("counted"), {"n": 2000}, store=store)
    calls_first = len(log.read_text().splitlines())
    second = pipelines.run(load("counted"), {"n": 2000}, store=store)
    calls_second = len(log.read_text().splitlines()) - calls_first
    assert first.status is second.status is RunStatus.OK
    assert calls_first == 2000 + 2000 + 1
    assert calls_second == 0
    assert all(s.reused_items == s.items for n, s in second.stages.items() if n != "numbers")
    assert second.table("total").equals(first.table("total"))


def test_the_readme_counter_loses_updates_by_hand_but_not_as_a_pipeline(load, store: Path) -> None:
    """The README's lost-update example: the shared counter loses updates; the pipeline cannot."""
    from concurrent.futures import ThreadPoolExecutor

    total = {"n": 0}

    def work(x: int) -> None:
        current = total["n"]
        time.sleep(0.001)
        total["n"] = current + 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(1000)))
    assert total["n"] < 1000  # updates were lost

    result = pipelines.run(load("lost_update"), store=store)
    assert result.table("total").to_pylist() == [{"total": 1000}]
