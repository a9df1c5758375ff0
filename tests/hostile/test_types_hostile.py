"""Items of mixed types: one schema per stage, misfits fail alone, stored stages stay readable.

A stage without a return annotation gets its schema from its first part; the schema is
recorded in the ledger, tasks convert to it, and a value that does not fit fails its own item
with its index, its type and the expected type. Nothing on disk disagrees, so ``inspect``,
``resume``, ``RunResult.table()`` and a downstream reduce never meet an ``ArrowTypeError``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines import Pipeline, resume
from pipelines._engine import schemas
from pipelines._engine.idset import IdSet
from pipelines._engine.task import TaskResult
from pipelines.errors import ConversionError
from pipelines.store import Store
from pipelines.store import arrow as batch_files
from pipelines.store.ledger import SCHEMA_VERSION
from tests.conftest import cli
from tests.helpers import write_dags

MIXED = '''
    """A map whose values change type half-way."""
    import pyarrow as pa

    from pipelines import Pipeline

    pipeline = Pipeline("mixed")


    @pipeline.source(batch_size=4)
    def numbers():
        yield from range(10)


    @pipeline.map(over=numbers, on_error="{on_error}")
    def mix(x):
        return x if x < 5 else f"s{{x}}"


    @pipeline.reduce(inputs=[mix])
    def total(mix: pa.Table) -> pa.Table:
        return pa.table({{"rows": [mix.num_rows], "sum": [sum(mix["mix"].to_pylist())]}})
'''


def mixed(on_error: str = "fail") -> Pipeline:
    pipeline = Pipeline("mixed")

    @pipeline.source(batch_size=4)
    def numbers():
        yield from range(10)

    @pipeline.map(over=numbers, on_error=on_error)  # type: ignore[arg-type]
    def mix(x):
        return x if x < 5 else f"s{x}"

    @pipeline.reduce(inputs=[mix])
    def total(mix: pa.Table) -> pa.Table:
        # the numbers only: in parallel, the string part may finish first and fix the type
        numbers = [v for v in mix["mix"].to_pylist() if isinstance(v, int)]
        return pa.table({"rows": [mix.num_rows], "sum": [sum(numbers)]})

    return pipeline


def part_types(store: Path, run_id: str, stage: str) -> set[str]:
    """The type of the stage's column in every part file the run uses."""
    with Store(store, read_only=True) as s:
        paths = [p.path for r in s.ledger.run_batches(run_id, stage) for p in s.ledger.parts(r["key"])]
    assert paths
    return {str(batch_files.read_table(p).schema.field(stage).type) for p in paths}


class TestMixedTypes:
    def test_each_misfit_fails_alone_and_the_parts_agree(self, store: Path) -> None:
        result = mixed("skip").run(executor="inline", store=store)
        assert result.status.value == "partial"
        failed = {e.position: e for e in result.failures}
        # every string fails, on its own item, naming its type and the expected one; no int fails
        assert sorted(failed) == [5, 6, 7, 8, 9]
        for position, error in failed.items():
            assert error.stage == "mix" and error.error_type == "ConversionError"
            assert (
                f"str value 's{position}' does not fit the stage's type int64" in error.message
                or "stage 'mix': cannot convert str value to Arrow: it does not fit with the items before it"
                in error.message
            )
        assert result.stages["mix"].rows == 5  # 0..4: nothing finished was lost
        assert part_types(store, result.run_id, "mix") == {"int64"}
        assert result.table("mix")["mix"].to_pylist() == [0, 1, 2, 3, 4]

    @pytest.mark.parametrize("executor", ["threads", "processes"])
    def test_in_parallel_the_first_part_to_finish_decides(self, executor: str, store: Path) -> None:
        """Which part finishes first is up to the workers; whatever it says, the parts agree."""
        result = mixed("skip").run(executor=executor, store=store)
        assert result.status.value == "partial"
        (kind,) = part_types(store, result.run_id, "mix")
        kept = result.table("mix")["mix"].to_pylist()
        assert len(kept) + len(result.failures) == 10
        assert all(e.stage == "mix" and e.error_type == "ConversionError" for e in result.failures)
        assert all(isinstance(v, int) for v in kept) if kind == "int64" else all(isinstance(v, str) for v in kept)
        assert result.table("total").to_pylist()[0]["rows"] == len(kept)

    def test_resume_fails_the_same_items_cleanly(self, tmp_path: Path, store: Path) -> None:
        from pipelines.define import loader

        dags = write_dags(tmp_path / "dags", mixed=MIXED.format(on_error="fail"))
        first = loader.load("mixed", dags).run(executor="inline", store=store)
        again = resume(first.run_id, store=store)
        assert again.status.value == "failed" and "ArrowTypeError" not in str(again.error)
        messages = [e.message for e in again.failures if e.stage == "mix"]
        assert messages and all("does not fit the stage's type int64" in m for m in messages), messages
        assert all(e.stage == "mix" for e in again.failures)  # the reduce never ran on broken parts
        assert part_types(store, first.run_id, "mix") == {"int64"}

    def test_a_downstream_reduce_gets_the_values_that_fit(self, store: Path) -> None:
        result = mixed("skip").run(executor="inline", store=store)
        assert result.status.value == "partial"
        assert result.table("total").to_pylist() == [{"rows": 5, "sum": 10}]
        assert sorted(e.position for e in result.failures) == [5, 6, 7, 8, 9]

    def test_the_cli_run_inspect_and_resume(self, tmp_path: Path, store: Path) -> None:
        dags = write_dags(tmp_path / "dags", mixed=MIXED.format(on_error="fail"))
        common = ("--dags", str(dags), "--store", str(store))
        proc = cli("run", "mixed", *common, "--executor", "inline", check=1)  # inline: the int part is first
        assert "Traceback" not in proc.stdout + proc.stderr
        assert re.search(r"item(s)? failed in stage 'mix' \(ConversionError: .*str value", proc.stdout), proc.stdout
        proc = cli("inspect", "latest", "mix", *common, check=0)
        assert "mix: int64" in proc.stdout and "ArrowTypeError" not in proc.stdout + proc.stderr
        # the run stops at its first failure: which of items 5..9 it met first depends on timing
        failed = [int(n) for n in re.findall(r"^item (\d+): ConversionError: stage 'mix': ", proc.stdout, re.M)]
        assert failed and set(failed) <= {5, 6, 7, 8, 9}, proc.stdout
        assert re.search(
            r"str value 's[5-9]' does not fit the stage's type int64|"
            r"cannot convert str value to Arrow: it does not fit with the items before it: .*'s[5-9]'.*int64",
            proc.stdout,
        ), proc.stdout
        proc = cli("resume", "latest", *common, check=1)
        assert "Traceback" not in proc.stdout + proc.stderr and "ArrowTypeError" not in proc.stdout


MIXED_SOURCE = """
    from pipelines import Pipeline

    pipeline = Pipeline("mixsrc")


    @pipeline.source(batch_size=4)
    def items():
        yield from [0, 1, 2, 3, 4, "s5", "s6"]


    @pipeline.map(over=items)
    def double(x):
        return x * 2
"""


def mixed_source(values: list[object], batch_size: int = 4, annotated: bool = False) -> Pipeline:
    pipeline = Pipeline("mixsrc")

    def plain():
        yield from values

    def typed() -> Iterator[float]:
        yield from values

    items = pipeline.source(typed if annotated else plain, name="items", batch_size=batch_size)

    @pipeline.map(over=items)
    def double(x):
        return None if x is None else x * 2

    return pipeline


def source_values(store: Path, run_id: str) -> tuple[set[str], list[object]]:
    """The types of the source's stored parts, and their values in order."""
    with Store(store, read_only=True) as s:
        paths = [p.path for r in s.ledger.run_batches(run_id, "items") for p in s.ledger.parts(r["key"])]
    tables = [batch_files.read_table(p) for p in paths]
    return {str(t.schema.field("items").type) for t in tables}, [v for t in tables for v in t["items"].to_pylist()]


class TestMixedSource:
    """A source is held to one schema like a map: its first items (or its annotation) fix it."""

    @pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
    def test_the_misfit_is_named_and_the_items_before_it_are_kept(self, executor: str, store: Path) -> None:
        result = mixed_source([0, 1, 2, 3, 4, "s5", "s6"]).run(executor=executor, store=store)
        assert result.status.value == "failed"
        message = str(result.error)
        # the value to blame, its index, its type and the expected type; not the int before it
        assert "stage 'items', item 5: str value 's5' does not fit the stage's type int64" in message, message
        assert "yield one type" in message and "int value" not in message
        assert source_values(store, result.run_id) == ({"int64"}, [0, 1, 2, 3, 4])

    @pytest.mark.parametrize("batch_size", [1, 4, 1000])
    def test_a_window_of_other_values_does_not_make_a_part_of_another_type(self, batch_size: int, store: Path) -> None:
        result = mixed_source([0, 1, 2, 3, "s4", "s5"], batch_size=batch_size).run(executor="inline", store=store)
        assert result.status.value == "failed"
        assert "item 4: str value 's4' does not fit the stage's type int64" in str(result.error)
        assert source_values(store, result.run_id) == ({"int64"}, [0, 1, 2, 3])

    def test_the_first_value_decides_even_when_the_next_disagrees(self, store: Path) -> None:
        result = mixed_source([0, "s1", 2]).run(executor="inline", store=store)
        assert "item 1: str value 's1' does not fit the stage's type int64" in str(result.error)
        assert source_values(store, result.run_id) == ({"int64"}, [0])

    def test_the_annotation_decides(self, store: Path) -> None:
        result = mixed_source([1, 2.5, "x"], annotated=True).run(executor="inline", store=store)
        message = str(result.error)
        assert "stage 'items', item 2: cannot convert str value to Arrow" in message, message
        assert "'x'" in message and "double" in message
        assert "first items" not in message  # the annotation, not the first items, fixed it
        assert source_values(store, result.run_id) == ({"double"}, [1.0, 2.5])

    def test_values_that_fit_are_converted_and_nones_wait(self, store: Path) -> None:
        result = mixed_source([None, None, 1, 2, 3.0, None, 4], batch_size=2).run(executor="inline", store=store)
        assert result.status.value == "ok", result.error
        kinds, values = source_values(store, result.run_id)
        assert kinds <= {"null", "int64"} and values == [None, None, 1, 2, 3, None, 4]
        assert result.table("double")["double"].to_pylist() == [None, None, 2, 4, 6, None, 8]

    def test_the_cli_run_inspect_and_resume(self, tmp_path: Path, store: Path) -> None:
        dags = write_dags(tmp_path / "dags", mixsrc=MIXED_SOURCE)
        common = ("--dags", str(dags), "--store", str(store))
        expected = "stage 'items', item 5: str value 's5' does not fit the stage's type int64"
        proc = cli("run", "mixsrc", *common, "--executor", "processes", check=1)
        assert "Traceback" not in proc.stdout + proc.stderr and expected in proc.stdout, proc.stdout
        proc = cli("inspect", "latest", "items", *common, check=0)
        assert "items: int64" in proc.stdout and "5 rows" in proc.stdout, proc.stdout
        proc = cli("resume", "latest", *common, check=1)  # the source is read again and fails the same way
        assert "Traceback" not in proc.stdout + proc.stderr and expected in proc.stdout, proc.stdout
        proc = cli("inspect", "latest", "double", *common, check=0)
        assert "Traceback" not in proc.stdout + proc.stderr  # how far the map got before the run stopped varies


class TestConversions:
    def test_ints_where_floats_are_expected_fit(self, store: Path) -> None:
        pipeline = Pipeline("widen")

        @pipeline.source(batch_size=2)
        def numbers():
            yield from range(6)

        @pipeline.map(over=numbers)
        def half(x):
            return x / 2 if x < 2 else x  # floats first, then ints: the ints become floats

        result = pipeline.run(executor="inline", store=store)
        assert result.ok, result.failures
        assert result.table("half")["half"].to_pylist() == [0.0, 0.5, 2.0, 3.0, 4.0, 5.0]
        assert part_types(store, result.run_id, "half") == {"double"}

    def test_nones_first_then_values(self, store: Path) -> None:
        pipeline = Pipeline("nones")

        @pipeline.source(batch_size=3)
        def numbers():
            yield from range(9)

        @pipeline.map(over=numbers)
        def maybe(x):
            return None if x < 3 else {"x": x, "name": f"n{x}"}

        result = pipeline.run(executor="inline", store=store)
        assert result.ok, result.failures
        rows = result.table("maybe").to_pylist()
        assert rows[:3] == [{"x": None, "name": None}] * 3 and rows[3] == {"x": 3, "name": "n3"}

    def test_a_float_that_would_lose_its_fraction_does_not_fit(self, store: Path) -> None:
        pipeline = Pipeline("lossy")

        @pipeline.source(batch_size=2)
        def numbers():
            yield from range(4)

        @pipeline.map(over=numbers, on_error="skip")
        def value(x):
            return x if x < 2 else (4.0 if x == 2 else 5.5)

        result = pipeline.run(executor="inline", store=store)
        assert result.table("value")["value"].to_pylist() == [0, 1, 4]
        (error,) = result.failures
        assert error.position == 3 and "float value 5.5 does not fit the stage's type int64" in error.message

    def test_records_whose_field_changes_type(self, store: Path) -> None:
        pipeline = Pipeline("records")

        @pipeline.source(batch_size=2)
        def numbers():
            yield from range(4)

        @pipeline.map(over=numbers, on_error="skip")
        def record(x):
            return {"id": x, "size": x if x != 3 else "big"}

        result = pipeline.run(executor="inline", store=store)
        assert result.table("record").to_pylist() == [{"id": i, "size": i} for i in range(3)]
        (error,) = result.failures
        assert error.position == 3
        assert "dict value" in error.message and "field 'size' of type int64" in error.message

    def test_an_annotated_stage_keeps_its_annotation(self, store: Path) -> None:
        pipeline = Pipeline("annotated")

        @pipeline.source(batch_size=2)
        def numbers():
            yield from range(4)

        @pipeline.map(over=numbers, on_error="skip")
        def label(x) -> str:
            return "ok" if x != 2 else 2

        result = pipeline.run(executor="inline", store=store)
        assert result.table("label")["label"].to_pylist() == ["ok", "ok", "ok"]
        assert [e.position for e in result.failures] == [2]


class TestTheDriversSide:
    """A part written before the schema was known, converted by the driver when it disagrees."""

    def _result(self, path: str, table: pa.Table, ids: list[int]) -> TaskResult:
        info = batch_files.write_table(path, table)
        return TaskResult("mix", 1, 0, info, IdSet.of(ids), (), len(ids), 0.0, schema=schemas.to_bytes(table.schema))

    def test_record_refine_and_convert(self, tmp_path: Path) -> None:
        pipeline = mixed("skip")
        stage = pipeline.stages["mix"]
        with Store(tmp_path / "s") as store:
            known = schemas.StageSchemas(store.ledger, {"mix": "fp1"})
            meta = {b"pipelines.shape": b"scalar"}
            first = pa.table({"mix": pa.array([None, None], pa.null()), "_item": [0, 1]}, metadata=meta)
            result = known.settle(stage, 0, self._result(str(tmp_path / "a.arrow"), first, [0, 1]))
            assert result.schema is None and known.expected("mix") is not None
            assert schemas.undecided(schemas.from_bytes(known.expected("mix")))  # nulls decide nothing
            ints = pa.table({"mix": [1, 2], "_item": [2, 3]}, metadata=meta)
            known.settle(stage, 0, self._result(str(tmp_path / "b.arrow"), ints, [2, 3]))
            assert schemas.from_bytes(store.ledger.stage_schema("mix", "fp1")).field("mix").type == pa.int64()
            strings = pa.table({"mix": ["s4", "5.0"], "_item": [4, 5]}, metadata=meta)
            settled = known.settle(stage, 1, self._result(str(tmp_path / "c.arrow"), strings, [4, 5]))
            assert [e.item for e in settled.errors] == [4, 5]
            assert "stage 'mix': str value 's4' does not fit the stage's type int64" in settled.errors[0].message
            assert not settled.done and settled.file is None and not (tmp_path / "c.arrow").exists()
            floats = pa.table({"mix": [6.0, 7.5], "_item": [6, 7]}, metadata=meta)
            settled = known.settle(stage, 1, self._result(str(tmp_path / "d.arrow"), floats, [6, 7]))
            assert [e.item for e in settled.errors] == [7] and list(settled.done) == [6]
            converted = batch_files.read_table(settled.file.path)
            assert converted.schema.field("mix").type == pa.int64() and converted["mix"].to_pylist() == [6]
        with Store(tmp_path / "s", read_only=True) as store:  # recorded for the next run and resumes
            assert schemas.StageSchemas(store.ledger, {"mix": "fp1"}).expected("mix") == known.expected("mix")
            assert schemas.StageSchemas(store.ledger, {"mix": "fp2"}).expected("mix") is None


class TestStoredPartsThatDisagree:
    """Stores written before the schema was fixed: a clear error, never an ArrowTypeError."""

    def test_concat_names_the_stage_and_the_cure(self) -> None:
        with pytest.raises(
            ConversionError,
            match=r"stage 'mix': its stored parts disagree on type .*int64.*"
            r"run --fresh mix",
        ):
            schemas.concat([pa.table({"mix": [1]}), pa.table({"mix": ["s"]})], stage="mix")
        assert schemas.concat([pa.table({"x": [1]}), pa.table({"x": pa.array([None], pa.null())})], stage="s")[
            "x"
        ].to_pylist() == [1, None]

    def test_inspect_and_table_of_such_a_stage(self, tmp_path: Path, store: Path) -> None:
        result = mixed("skip").run(executor="inline", store=store)
        # write the parts an older version left behind: a string part beside the int ones
        with Store(store) as s:
            key = s.ledger.run_batches(result.run_id, "mix")[-1]["key"]
            path = str(tmp_path / "legacy.arrow")
            table = pa.table({"mix": ["s8", "s9"], "_item": [0, 1]}, metadata={b"pipelines.shape": b"scalar"})
            info = batch_files.write_table(path, table)
            s.ledger.record_part(
                run_id=result.run_id, stage="mix", batch=2, key=key, fingerprint="old", info=info, done=IdSet.of([0, 1])
            )
        with pytest.raises(ConversionError, match="stage 'mix': its stored parts disagree on type"):
            result.table("mix")
        proc = cli("inspect", result.run_id, "mix", "--store", str(store), check=1)
        assert "Traceback" not in proc.stderr and "its stored parts disagree on type" in proc.stderr


class TestTheLedgerRecord:
    def test_the_first_record_wins_and_refinements_are_conditional(self, tmp_path: Path) -> None:
        """Runs sharing a store agree on one schema: a second first record, or a refinement of a
        schema another run changed meanwhile, is refused, and the caller reads it again."""
        with Store(tmp_path / "s") as store:
            ledger = store.ledger
            assert ledger.stage_schema("mix", "fp") is None
            assert ledger.save_stage_schema("mix", "fp", b"first")
            assert not ledger.save_stage_schema("mix", "fp", b"second")
            assert not ledger.save_stage_schema("mix", "fp", b"refined", replacing=b"stale")
            assert ledger.stage_schema("mix", "fp") == b"first"
            assert ledger.save_stage_schema("mix", "fp", b"refined", replacing=b"first")
            assert ledger.stage_schema("mix", "fp") == b"refined"

    def test_a_version_1_ledger_gains_the_table(self, tmp_path: Path) -> None:
        with Store(tmp_path / "s") as store:
            assert store.ledger.save_stage_schema("mix", "fp", b"first")
        db = sqlite3.connect(tmp_path / "s" / "ledger.sqlite")
        with db:  # as version 1 left it: no stage_schemas table
            db.execute("DROP TABLE stage_schemas")
            db.execute("PRAGMA user_version=1")
        db.close()
        with Store(tmp_path / "s") as store:
            assert store.ledger.version == SCHEMA_VERSION >= 2
            assert store.ledger.stage_schema("mix", "fp") is None
            assert store.ledger.save_stage_schema("mix", "fp", b"again")

    def test_settle_follows_a_schema_another_run_recorded(self, tmp_path: Path) -> None:
        stage = mixed("skip").stages["mix"]
        meta = {b"pipelines.shape": b"scalar"}
        with Store(tmp_path / "s") as store:
            ours = schemas.StageSchemas(store.ledger, {"mix": "fp"})
            assert ours.expected("mix") is None  # cached: nothing yet
            theirs = schemas.StageSchemas(store.ledger, {"mix": "fp"})
            ints = pa.table({"mix": [1], "_item": [0]}, metadata=meta)
            info = batch_files.write_table(str(tmp_path / "a.arrow"), ints)
            theirs.settle(
                stage, 0, TaskResult("mix", 0, 0, info, IdSet.of([0]), (), 1, 0.0, schema=schemas.to_bytes(ints.schema))
            )
            strings = pa.table({"mix": ["s1"], "_item": [1]}, metadata=meta)
            info = batch_files.write_table(str(tmp_path / "b.arrow"), strings)
            settled = ours.settle(
                stage,
                0,
                TaskResult("mix", 0, 0, info, IdSet.of([1]), (), 1, 0.0, schema=schemas.to_bytes(strings.schema)),
            )
            assert [e.item for e in settled.errors] == [1] and "type int64" in settled.errors[0].message
