"""A source is cut as finely as its consumers need: wide batches when every stage that follows
its batches reuses items one by one, small ones when a stage computes a batch as a whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines import Pipeline
from pipelines._engine import chunking
from pipelines._engine.graph import RunGraph
from pipelines._engine.item_reuse import wide_cuts
from pipelines._engine.plan import plan


def same(x: int) -> int:
    return x


def chain(*consumers: str, **options: object) -> Pipeline:
    """A source ``numbers`` and one stage per word of ``consumers``, each reading the one before."""
    pipeline = Pipeline("cuts")
    pipeline.source(lambda: range(10), name="numbers")
    previous = "numbers"
    for i, kind in enumerate(consumers):
        name = f"s{i}"
        if kind == "map":
            pipeline.map(same, over=previous, name=name, kind="io", **options)
        elif kind == "flat_map":
            pipeline.flat_map(lambda x: [x], over=previous, name=name, kind="io")
        elif kind == "batch":
            pipeline.batch(lambda t: t, over=previous, name=name)
        elif kind == "reduce":
            pipeline.reduce(lambda t: pa.table({"n": [t.num_rows]}), inputs=[previous], name=name)
        previous = name
    return pipeline


def wide(pipeline: Pipeline) -> bool:
    """What a run decides for the source ``numbers``, from the stages that follow its batches."""
    return wide_cuts(pipeline.stages, RunGraph(pipeline, plan(pipeline)).streams["numbers"])


def test_maps_and_flat_maps_that_reuse_items_allow_wide_cuts() -> None:
    assert wide(chain("map", "flat_map", "map"))
    assert wide(chain("map", "reduce"))  # a reduce reads every batch anyway
    assert wide(chain())


def test_a_stage_that_computes_whole_batches_keeps_them_small() -> None:
    assert not wide(chain("map", "batch"))
    assert not wide(chain("batch", "map"))
    assert not wide(chain("map", reuse="never"))


def test_past_a_reduce_nothing_follows_the_source_batches() -> None:
    assert wide(chain("map", "reduce", "batch"))


def test_wide_levels_cut_fewer_batches_from_the_same_content() -> None:
    values = np.arange(200_000, dtype=np.int64)
    hashes = chunking.row_hashes(pa.table({"x": values}))

    def count(wide: bool) -> int:
        at, n = 0, 0
        while at < len(hashes):
            cut = chunking.Cutter.for_source(None, at, wide=wide).next_cut(hashes[at:], final=True)
            assert cut is not None
            at, n = at + cut, n + 1
        return n

    fine, wide = count(False), count(True)
    assert wide * 5 < fine


def test_a_run_cuts_its_source_by_its_consumers(tmp_path: Path) -> None:
    def run(*consumers: str) -> int:
        pipeline = Pipeline("cuts")
        pipeline.source(lambda: np.arange(50_000), name="numbers")
        if consumers == ("batch",):
            pipeline.batch(lambda t: t, over="numbers", name="whole")
        else:
            pipeline.map(same, over="numbers", name="one", kind="io")
        result = pipeline.run(executor="threads", store=tmp_path / "_".join(consumers))
        assert result.ok
        return result.stages["numbers"].computed_batches

    assert run("map") * 5 < run("batch")


def test_a_batch_stage_recomputes_only_the_batch_around_an_insertion(tmp_path: Path) -> None:
    """Small cuts keep their promise where items are not reused one by one."""
    log = tmp_path / "rows.log"

    def build(items: list[int]) -> Pipeline:
        pipeline = Pipeline("inserted")
        pipeline.source(lambda: iter(items), name="numbers")

        def count(table: pa.Table) -> pa.Table:
            with log.open("a") as f:
                f.write(f"{table.num_rows}\n")
            return table

        pipeline.batch(count, over="numbers", name="whole")
        return pipeline

    items = list(range(30_000))
    assert build(items).run(executor="threads", store=tmp_path / "store").ok
    log.unlink()
    items.insert(15_000, -1)
    result = build(items).run(executor="threads", store=tmp_path / "store")
    assert result.ok
    assert result.table("whole").num_rows == 30_001
    recomputed = sum(int(n) for n in log.read_text().split())
    assert 0 < recomputed <= 2 * chunking.AVERAGE * 4  # the batch around the insertion, at most two
