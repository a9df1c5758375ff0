"""Batch keys from lineage: the same inputs give the same key, any change to an input a new one.

A batch key names a stored batch for reuse, so a key that ignored an input would hand back
stale results, and a key that moved without cause would recompute for nothing. The run's
state is built by hand here: each test sets what the producers have reached and reads the
key the consumer would get.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines import Pipeline
from pipelines._engine import fingerprint as fp
from pipelines._engine.batching import TaskSizer
from pipelines._engine.idset import IdSet
from pipelines._engine.keys import Keys
from pipelines._engine.state import StageState
from pipelines.observe.hooks import RunObserver
from pipelines.store.ledger import Ledger

FOUR = IdSet.span(0, 4)
pipeline = Pipeline("keyed")


@pipeline.source
def numbers() -> Iterator[int]:
    yield from range(10)


@pipeline.map(over=numbers)
def square(x: int) -> int:
    return x * x


@pipeline.flat_map(over=numbers)
def repeat(x: int) -> Iterator[int]:
    yield from [x] * (x % 3)


@pipeline.map(over=repeat)
def negate(x: int) -> int:
    return -x


@pipeline.batch(over=numbers)
def per_batch(table: pa.Table) -> pa.Table:
    return table


@pipeline.reduce(inputs=[square])
def total(table: pa.Table) -> pa.Table:
    return table


@pipeline.map(over=numbers, side=[total])
def share(x: int, total: pa.Table) -> float:
    return x / total.num_rows


class Run:
    """The state a runner would hold, and the ``Keys`` that read it."""

    def __init__(self, ledger: Ledger, fingerprints: dict[str, str] | None = None) -> None:
        self.fingerprints = fingerprints or {name: f"fp-{name}" for name in pipeline.stages}
        self.states = {name: StageState(name, TaskSizer()) for name in pipeline.stages}
        self.keys = Keys(pipeline.stages, self.states, self.fingerprints, ledger, RunObserver(), set())

    def produced(self, stage: str, k: int, key: str, ids: IdSet = FOUR, *, final: bool = True) -> None:
        batch = self.states[stage].batch(k)
        batch.key, batch.done, batch.final = key, ids, final

    def finish(self, stage: str) -> None:
        self.states[stage].final = True


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    yield ledger
    ledger.close()


@pytest.fixture
def run(ledger: Ledger) -> Run:
    return Run(ledger)


def test_a_map_waits_for_its_input_batch_to_have_a_key(run):
    assert run.keys.key_for("square", 0) is None
    run.states["numbers"].batch(0)  # the batch exists, its key does not yet
    assert run.keys.key_for("square", 0) is None


def test_a_map_over_a_source_is_keyed_by_the_source_batch_key(run, ledger):
    run.produced("numbers", 0, "src-0", final=False)
    key = run.keys.key_for("square", 0)
    assert key == fp.batch_key("fp-square", ["src-0"])
    # a map keeps item ids: its key is known before the source batch is whole, and stays put
    run.produced("numbers", 0, "src-0", IdSet.span(0, 9), final=True)
    assert run.keys.key_for("square", 0) == key

    assert Run(ledger).keys.key_for("square", 0) is None  # another run, before its source...
    again = Run(ledger)
    again.produced("numbers", 0, "src-0")
    assert again.keys.key_for("square", 0) == key  # ...and once it has the same input


def test_any_change_to_a_map_input_or_fingerprint_is_a_new_key(run, ledger):
    run.produced("numbers", 0, "src-0")
    run.produced("numbers", 1, "src-1")
    key0, key1 = run.keys.key_for("square", 0), run.keys.key_for("square", 1)
    assert key0 != key1

    run.produced("numbers", 0, "src-0-edited")
    assert run.keys.key_for("square", 0) not in (key0, key1)

    edited = Run(ledger, {**run.fingerprints, "square": "fp-square-edited"})
    edited.produced("numbers", 0, "src-0")
    assert edited.keys.key_for("square", 0) != key0


def test_a_map_over_a_renumbering_stage_waits_for_its_whole_batch_and_its_content(run):
    run.produced("repeat", 0, "rep-0", IdSet.span(0, 5), final=False)
    assert run.keys.key_for("negate", 0) is None  # a flat map's rows are not final until its batch is

    run.produced("repeat", 0, "rep-0", IdSet.span(0, 5), final=True)
    key = run.keys.key_for("negate", 0)
    assert key is not None and key == run.keys.key_for("negate", 0)

    run.produced("repeat", 0, "rep-0", IdSet.span(0, 6), final=True)  # same key, one more row
    assert run.keys.key_for("negate", 0) != key


def test_a_batch_stage_is_keyed_by_the_content_of_its_input_batch(run):
    run.produced("numbers", 0, "src-0", IdSet.span(0, 4))
    key = run.keys.key_for("per_batch", 0)
    assert key == fp.batch_key("fp-per_batch", [fp.digest("src-0", IdSet.span(0, 4).to_json())])

    run.produced("numbers", 0, "src-0", IdSet.of([0, 1, 3]))  # an item failed: different content
    assert run.keys.key_for("per_batch", 0) != key


def test_a_reduce_is_keyed_by_every_input_batch(run):
    run.produced("square", 0, "sq-0")
    run.produced("square", 1, "sq-1")
    key = run.keys.key_for("total", 0)
    assert key == run.keys.key_for("total", 0)

    run.produced("square", 2, "sq-2")
    with_more = run.keys.key_for("total", 0)
    assert with_more != key

    run.produced("square", 1, "sq-1-edited")
    assert run.keys.key_for("total", 0) not in (key, with_more)


def test_a_side_input_counts_once_final(run):
    run.produced("numbers", 0, "src-0")
    run.produced("total", 0, "total-0")
    assert run.keys.key_for("share", 0) is None  # the side input is not final yet

    run.finish("total")
    key = run.keys.key_for("share", 0)
    assert key is not None and key != fp.batch_key("fp-share", ["src-0"])

    run.produced("total", 0, "total-0-edited")
    assert run.keys.key_for("share", 0) != key


def test_content_names_the_key_and_the_exact_ids(run):
    run.produced("numbers", 0, "src-0", IdSet.span(0, 4))
    content = run.keys.content("numbers", 0)
    assert content == fp.digest("src-0", IdSet.span(0, 4).to_json())
    run.produced("numbers", 0, "src-0", IdSet.span(0, 4) | IdSet.of([7]))
    assert run.keys.content("numbers", 0) != content
