"""The runner on local executors: same results everywhere, streaming, backpressure, resources."""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

import pipelines
from pipelines import Pipeline, RunStatus
from pipelines.store import Store

from .conftest import TEST_DAGS, cli

LOCAL_EXECUTORS = ["inline", "threads", "processes", "asyncio"]


@pytest.fixture(scope="module")
def diamond_baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    from pipelines import loader

    result = pipelines.run(loader.load("diamond", TEST_DAGS), {"n": 1500}, store=tmp_path_factory.mktemp("base"),
                           executor="inline")
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
    assert backends == {"numbers": "driver", "label": "processes", "divisors": "processes",
                        "per_batch": "processes", "doubled": "asyncio", "summary": "processes"}
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


def test_source_read_ahead_is_bounded(load, store: Path, tmp_path: Path, monkeypatch) -> None:
    """With its consumer blocked, the source stops after a few batches instead of reading all 1,000."""
    gate = tmp_path / "gate"
    monkeypatch.setenv("GATE_FILE", str(gate))
    holder: dict[str, object] = {}
    runner = threading.Thread(target=lambda: holder.update(
        result=pipelines.run(load("gated"), store=store, executor="threads")))
    runner.start()
    source_dir = None
    deadline = time.monotonic() + 20
    counts = []
    while time.monotonic() < deadline:
        runs = list((store / "runs").glob("*/numbers")) if (store / "runs").exists() else []
        if runs:
            source_dir = runs[0]
            counts.append(len(list(source_dir.glob("*.arrow"))))
            if len(counts) > 20 and counts[-1] == counts[-20]:
                break
        time.sleep(0.05)
    written = counts[-1] if counts else 0
    gate.write_text("open")
    runner.join(60)
    assert 1 <= written <= 8, f"source wrote {written} batches while its consumer was blocked"
    result = holder["result"]
    assert result.status is RunStatus.OK  # type: ignore[attr-defined]
    assert result.stages["wait_for_gate"].items == 100_000  # type: ignore[attr-defined]


def test_resources_are_made_once_per_worker(load, store: Path, tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "resources.log"
    monkeypatch.setenv("RESOURCE_LOG", str(log))
    result = pipelines.run(load("resourced"), store=store)
    assert result.status is RunStatus.OK, result.error
    lines = [line.split() for line in log.read_text().splitlines()]
    opened = Counter(what for what, _, _ in lines if what.startswith("open"))
    # with_connection: 3 threads, one connection each; in_process: one per worker process (2 at most here
    # on 2 cores) -> at most 3 + cpu_count sync opens for 600 + 600 items; one async session for one loop.
    assert 1 <= opened["open-sync"] <= 3 + (os.cpu_count() or 1)
    assert opened["open-async"] == 1
    closed = Counter(what for what, _, _ in lines if what.startswith("close"))
    assert closed["close-async"] == 1  # closed at the end of the run, on its loop
    assert result.table("in_process").num_rows == 600


def test_spawn_start_method_needs_no_main_guard(store: Path) -> None:
    proc = cli("run", "counted", "--dags", str(TEST_DAGS), "--store", str(store), "--param", "n=500",
               env={"PIPELINES_START_METHOD": "spawn"}, check=0)
    assert "rows" in proc.stdout and "500" in proc.stdout


def test_fail_policy_stops_and_keeps_finished_items(load, store: Path, monkeypatch) -> None:
    monkeypatch.setenv("COUNTED_FAIL", "10")
    result = pipelines.run(load("counted"), {"n": 3000}, store=store, executor="threads")
    assert result.status is RunStatus.FAILED
    assert result.error is not None and result.error.stage == "square" and result.error.item == 10
    assert "item 10 is broken" in str(result.error)
    with Store(store) as s:
        done = sum(len(p.done) for row in s.ledger.query("SELECT key FROM objects WHERE stage='square'")
                   for p in s.ledger.parts(row["key"]))
    assert done > 0, "finished items of the failing stage were not kept"


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
    assert "stage 'value'" in error.message and "item 4" in error.message
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
