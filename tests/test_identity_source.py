"""Work identified by content at the source: content-defined batches, files as inputs,
declared side effects and per-field parameter fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines._engine import chunking

N = 100_000


def calls(log: Path) -> list[int]:
    """The items ``weigh`` was called with since the log was last cleared, and clear it."""
    if not log.exists():
        return []
    out = [int(x) for x in log.read_text().split()]
    log.unlink()
    return out


@pytest.fixture(scope="module")
def shifting(tmp_path_factory):
    """One full run of the 100,000-item source; each test reruns it with one change."""
    from pipelines.define import loader

    from .conftest import TEST_DAGS

    root = tmp_path_factory.mktemp("shifting")
    log = root / "calls.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIFTING_LOG", str(log))
        pipeline = loader.load("shifting", TEST_DAGS)
        first = pipeline.run({}, store=root / "store")
        assert first.ok
        assert len(calls(log)) == N
        yield pipeline, root / "store", log


@pytest.mark.slow
class TestContentDefinedBatches:
    def rerun(self, shifting, params: dict) -> tuple[list[int], list[dict]]:
        pipeline, store, log = shifting
        result = pipeline.run(params, store=store)
        assert result.ok
        return calls(log), result.table("total").to_pylist()

    def test_insert_one_item_in_the_middle(self, shifting) -> None:
        recomputed, total = self.rerun(shifting, {"insert_at": 50_000})
        assert recomputed == [10_000_000]  # the other items of its batch were computed before
        assert total == [{"rows": N + 1, "sum": 3 * (N * (N - 1) // 2 + 10_000_000)}]

    def test_remove_one_item(self, shifting) -> None:
        recomputed, total = self.rerun(shifting, {"remove_at": 20_000})
        assert 20_000 not in recomputed
        assert recomputed == []  # its batch changed, but each of its items was computed before
        assert total == [{"rows": N - 1, "sum": 3 * (N * (N - 1) // 2 - 20_000)}]

    def test_edit_one_item_recomputes_its_batch_at_most(self, shifting) -> None:
        recomputed, total = self.rerun(shifting, {"edit_at": 70_000})
        assert recomputed == [-70_000]
        assert total == [{"rows": N, "sum": 3 * (N * (N - 1) // 2 - 2 * 70_000)}]

    def test_unchanged_rerun_recomputes_nothing(self, shifting) -> None:
        recomputed, _ = self.rerun(shifting, {})
        assert recomputed == []


class TestCuts:
    def test_cuts_follow_content_not_position(self) -> None:
        cutter = chunking.Cutter()
        before = batches(cutter, np.arange(20_000))
        after = batches(cutter, np.concatenate([[-1], np.arange(20_000)]))
        assert set(map(tuple, before[3:])) <= set(map(tuple, after))  # the later batches are the same

    def test_sizes_stay_within_bounds(self) -> None:
        cutter = chunking.Cutter()
        sizes = [len(b) for b in batches(cutter, np.arange(200_000))]
        assert all(cutter.minimum <= s <= cutter.maximum for s in sizes[:-1])
        assert cutter.average / 2 < np.mean(sizes) < cutter.average * 2

    def test_big_items_end_a_batch_early(self) -> None:
        cutter = chunking.Cutter(max_bytes=1 << 20)
        table = pa.table({"blob": [b"x" * 300_000 + bytes([i % 256]) for i in range(20)]})
        cut = cutter.next_cut(chunking.row_hashes(table), final=True, sizes=chunking.row_sizes(table))
        assert cut == 4

    def test_row_hashes_tell_values_and_order_apart(self) -> None:
        table = pa.table({"s": ["ab", "ba", None, "", "a", "ab"], "n": [1, 1, 1, 1, 1, 1]})
        h = chunking.row_hashes(table).tolist()
        assert h[0] == h[5] and len(set(h[:5])) == 5

    @pytest.mark.parametrize(
        "values",
        [
            [{"x": 1, "y": "a"}, {"x": 2, "y": None}, None],
            [[1, 2], [], None, [2, 1]],
            [1.5, -0.0, 0.0, None],
            [b"\x00", b"", b"\x00\x00", None],
        ],
    )
    def test_a_slice_hashes_as_the_whole_does(self, values: list) -> None:
        arr = pa.array(values * 5)
        whole = chunking.array_hashes(arr)
        assert (chunking.array_hashes(arr.slice(3, 9)) == whole[3:12]).all()
        assert len(set(whole[: len(values)].tolist())) == len(values)

    def test_strings_hash_alike_however_they_are_grouped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Long windows are hashed a group of rows at a time (bounded memory); no hash may move."""
        values = [("x" * (i % 2500)) + str(i) for i in range(300)] + [None, "", "y" * 5000]
        whole = chunking.array_hashes(pa.array(values))  # under SEGMENT_BYTES: one group
        monkeypatch.setattr(chunking, "SEGMENT_BYTES", 1000)  # many groups, long strings alone
        assert (chunking.array_hashes(pa.array(values)) == whole).all()
        assert (chunking.array_hashes(pa.array(values).slice(5)) == whole[5:]).all()


class TestSourceReading:
    def run(self, tmp_path: Path, items: list, **options):
        from pipelines import Pipeline

        pipeline = Pipeline("items")
        pipeline.source(lambda: iter(items), name="items", **options)
        pipeline.map(lambda x: x, over="items", name="same", kind="io")
        return pipeline.run(executor="threads", store=tmp_path / "store")

    def test_an_item_arrow_cannot_hold_is_named_by_its_position(self, tmp_path: Path) -> None:
        result = self.run(tmp_path, [*range(700), object(), *range(10)])
        assert not result.ok
        assert str(result.error).startswith(
            "stage 'items', item 700: ConversionError: stage 'items', item 700: cannot convert object value"
        )

    def test_items_whose_types_change_along_the_source_stop_at_the_first_misfit(self, tmp_path: Path) -> None:
        """The source's first items fix its type, as a stage's first part does (``_engine/schemas.py``)."""
        window = chunking.AVERAGE  # items are read and encoded a window at a time
        items = [*range(window), *(f"s{i}" for i in range(window)), *(1.5 * i for i in range(5))]
        result = self.run(tmp_path, items)
        assert not result.ok
        assert f"item {window}: str value 's0' does not fit the stage's type int64" in str(result.error)
        assert result.table("items")["items"].to_pylist() == list(range(window))  # the items before it are kept

    def test_a_fixed_batch_size_cuts_by_count(self, tmp_path: Path) -> None:
        result = self.run(tmp_path, list(range(1000)), batch_size=300)
        assert result.ok
        assert result.stages["items"].computed_batches == 4

    def test_a_table_source_is_cut_by_content_too(self, tmp_path: Path) -> None:
        from pipelines import Pipeline

        def numbers(n: int) -> Pipeline:
            pipeline = Pipeline("table")
            pipeline.source(lambda: pa.table({"x": np.arange(n)}), name="numbers")
            return pipeline

        first = numbers(5_000).run(executor="threads", store=tmp_path / "store")
        second = numbers(5_001).run(executor="threads", store=tmp_path / "store")
        assert first.table("numbers")["x"].to_pylist() == list(range(5_000))
        assert first.stages["numbers"].computed_batches > 5
        assert second.table("numbers").num_rows == 5_001


def batches(cutter: chunking.Cutter, values: np.ndarray) -> list[list[int]]:
    hashes = chunking.row_hashes(pa.table({"x": values}))
    out, at = [], 0
    while at < len(values):
        cut = cutter.next_cut(hashes[at:], final=True)
        out.append(values[at : at + cut].tolist())
        at += cut
    return out


class TestSideEffects:
    def make(self, tmp_path: Path, **options):
        from pipelines import Pipeline

        out = tmp_path / "out"
        log = tmp_path / "calls.log"
        pipeline = Pipeline("effects")

        @pipeline.source
        def names() -> list[str]:
            return ["a", "b", "c"]

        @pipeline.map(over=names, kind="io", **options)
        def write(name: str) -> str:
            with open(log, "a") as f:
                f.write(name + "\n")
            out.mkdir(exist_ok=True)
            (out / f"{name}.txt").write_text(name)
            return name

        @pipeline.map(over=write, kind="io")
        def shout(name: str) -> str:
            with open(log, "a") as f:
                f.write(f"shout {name}\n")
            return name.upper()

        def run() -> list[str]:
            result = pipeline.run(executor="threads", store=tmp_path / "store")
            assert result.ok and result.table("shout")["shout"].to_pylist() == ["A", "B", "C"]
            lines = log.read_text().split("\n")[:-1] if log.exists() else []
            log.unlink(missing_ok=True)
            return sorted(lines)

        return pipeline, out, run

    def test_reuse_never_computes_again_on_every_run(self, tmp_path: Path) -> None:
        _, _, run = self.make(tmp_path, reuse="never")
        assert run() == ["a", "b", "c", "shout a", "shout b", "shout c"]
        assert run() == ["a", "b", "c"]  # the same values again: what follows is reused

    def test_declared_outputs_that_vanished_are_made_again(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        _, _, run = self.make(tmp_path, outputs=lambda: [out / f"{n}.txt" for n in "abc"])
        assert run() == ["a", "b", "c", "shout a", "shout b", "shout c"]
        assert run() == []  # every output is there: reused
        (out / "b.txt").unlink()
        assert run() == ["a", "b", "c"]
        assert (out / "b.txt").read_text() == "b"

    def test_without_a_declaration_a_deleted_output_is_not_noticed(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        _, _, run = self.make(tmp_path)
        run()
        (out / "b.txt").unlink()
        assert run() == []  # the reason to declare side effects
        assert not (out / "b.txt").exists()

    def test_the_reason_names_the_missing_output(self, tmp_path: Path) -> None:
        from pipelines.define import effects

        pipeline, out, run = self.make(tmp_path, outputs=str(tmp_path / "out" / "a.txt"))
        assert effects.why_recompute(pipeline["write"], None, resumed=False) == f"output {out / 'a.txt'} missing"
        run()
        assert effects.why_recompute(pipeline["write"], None, resumed=False) == ""

    def test_bad_options_are_definition_errors(self) -> None:
        from pipelines import DefinitionError, Pipeline

        pipeline = Pipeline("bad")
        pipeline.source(lambda: [1], name="one")
        with pytest.raises(DefinitionError, match="stage 'twice': reuse must be one of"):
            pipeline.map(lambda x: x, over="one", name="twice", reuse="sometimes")
        with pytest.raises(DefinitionError, match="stage 'twice': outputs must be paths"):
            pipeline.map(lambda x: x, over="one", name="twice", outputs=3)


def _folder_of(params) -> str:  # a helper the stage passes params to
    return params.folder


def _opaque(params, name: str = "folder") -> str:
    return getattr(params, name)


class TestParamsFingerprints:
    def make(self, tmp_path: Path):
        from pydantic import BaseModel

        from pipelines import Pipeline

        class Params(BaseModel):
            folder: str = "a"
            scale: int = 1
            verbose: bool = False

        log = tmp_path / "calls.log"
        pipeline = Pipeline("fields", params=Params)

        def note(stage: str) -> None:
            with open(log, "a") as f:
                f.write(stage + "\n")

        @pipeline.source
        def items() -> list[int]:
            return [1, 2, 3]

        @pipeline.map(over=items, kind="io")
        def direct(x: int, params: Params) -> str:
            note("direct")
            return f"{params.folder}/{x * params.scale}"

        @pipeline.map(over=items, kind="io")
        def helped(x: int, params: Params) -> str:
            note("helped")
            return f"{_folder_of(params)}/{x}"

        @pipeline.map(over=items, kind="io")
        def opaque(x: int, params: Params) -> str:
            note("opaque")
            return f"{_opaque(params)}/{x}"

        def run(**params) -> dict[str, int]:
            result = pipeline.run(params, executor="threads", store=tmp_path / "store")
            assert result.ok
            lines = log.read_text().split() if log.exists() else []
            log.unlink(missing_ok=True)
            return {stage: lines.count(stage) for stage in ("direct", "helped", "opaque")}

        return pipeline, run

    def test_reads_are_found_in_the_stage_and_its_helpers(self, tmp_path: Path) -> None:
        from pipelines._engine import fingerprint as fp

        pipeline, _ = self.make(tmp_path)
        fields = pipeline.params_model.model_fields
        assert fp.params_read(pipeline["direct"], fields).fields == {"folder", "scale"}
        assert fp.params_read(pipeline["helped"], fields).fields == {"folder"}
        opaque = fp.params_read(pipeline["opaque"], fields)
        assert opaque.fields is None and opaque.why == "params goes to getattr(), which cannot be followed"

    def test_an_unrelated_field_reuses_a_read_field_recomputes(self, tmp_path: Path) -> None:
        _, run = self.make(tmp_path)
        assert run() == {"direct": 3, "helped": 3, "opaque": 3}
        assert run(verbose=True) == {"direct": 0, "helped": 0, "opaque": 3}  # the fallback recomputes
        assert run(verbose=True, scale=2) == {"direct": 3, "helped": 0, "opaque": 3}
        assert run(verbose=True, scale=2, folder="b") == {"direct": 3, "helped": 3, "opaque": 3}

    def test_show_names_the_fallback(self, tmp_path: Path) -> None:
        from pipelines.cli import diagram

        pipeline, _ = self.make(tmp_path)
        assert not any(o.startswith("params=") for o in diagram.options(pipeline["helped"]))
        (note,) = [o for o in diagram.options(pipeline["opaque"]) if o.startswith("params=")]
        assert note == "params=all (params goes to getattr(), which cannot be followed)"


class TestFiles:
    def test_a_pipeline_on_the_file_source_sees_an_edit(self, tmp_path: Path) -> None:
        import os

        from pipelines import Pipeline
        from stages import files

        folder = tmp_path / "numbers"
        (folder / "sub").mkdir(parents=True)
        for i in range(6):
            (folder / ("sub" if i % 2 else ".") / f"n{i}.txt").write_text(str(i))
        pipeline = Pipeline("numbers")
        source = pipeline.source(files.source("**/*.txt", root=folder), name="numbers", batch_size=1)

        @pipeline.map(over=source, kind="io")
        def value(ref: files.FileRef) -> int:
            return int(files.read_bytes(ref, root=folder))

        @pipeline.reduce(inputs=[value])
        def total(value: pa.Table) -> pa.Table:
            return pa.table({"total": [sum(value["value"].to_pylist())]})

        first = pipeline.run(executor="threads", store=tmp_path / "store")
        assert first.table("total")["total"].to_pylist() == [15]
        assert first.table("numbers")["path"].to_pylist() == [
            "n0.txt",
            "n2.txt",
            "n4.txt",
            "sub/n1.txt",
            "sub/n3.txt",
            "sub/n5.txt",
        ]
        edited = folder / "sub" / "n3.txt"
        edited.write_text("30")
        os.utime(edited, ns=(1, 1))
        second = pipeline.run(executor="threads", store=tmp_path / "store")
        assert second.table("total")["total"].to_pylist() == [42]
        assert (second.stages["value"].items, second.stages["value"].reused_items) == (6, 5)

    def test_a_digest_tells_apart_what_size_and_mtime_do_not(self, tmp_path: Path) -> None:
        import os

        from stages import files

        path = tmp_path / "a.txt"
        path.write_text("one")
        os.utime(path, ns=(5, 5))
        before = files.FileRef.of(tmp_path, "a.txt", digest=True)
        path.write_text("two")
        os.utime(path, ns=(5, 5))  # same size, same mtime: only the bytes differ
        after = files.FileRef.of(tmp_path, "a.txt", digest=True)
        assert (before.size, before.mtime_ns) == (after.size, after.mtime_ns) and before.digest != after.digest
        assert files.FileRef.of(tmp_path, "a.txt").digest is None

    def test_reading_a_file_that_changed_since_it_was_listed_fails(self, tmp_path: Path) -> None:
        from stages import files

        (tmp_path / "a.txt").write_text("one")
        ref = files.FileRef.of(tmp_path, "a.txt")
        assert files.read_bytes(ref, root=tmp_path) == b"one"
        (tmp_path / "a.txt").write_text("three")
        with pytest.raises(ValueError, match=r"'a.txt' changed since it was listed \(3 bytes"):
            files.read_bytes(ref, root=tmp_path)

    def test_a_ref_cannot_leave_its_root(self, tmp_path: Path) -> None:
        from stages import files

        with pytest.raises(ValueError, match="escapes the folder"):
            files.FileRef.of(tmp_path, "../outside.txt")


@pytest.mark.slow
class TestIngestLocalData:
    """Ingest serving a local folder: the items carry the local files' identity."""

    def data(self, folder: Path, entries: list[dict]) -> Path:
        import json
        import shutil

        from .conftest import ROOT

        shutil.copytree(ROOT / "data" / "images", folder / "images")
        (folder / "catalog.json").write_text(json.dumps(entries))
        return folder

    def test_an_edited_catalog_or_image_is_fetched_again(self, tmp_path: Path) -> None:
        """A URL does not say what it served: without the folder's identity in the source's
        item, the second and third runs below would reuse the old catalog and image."""
        import json
        import os
        import shutil

        from pipelines.define import loader

        from .conftest import ROOT

        catalog = json.loads((ROOT / "data" / "catalog.json").read_text())
        folder = self.data(tmp_path / "data", catalog[:4])
        ingest = loader.load("ingest", ROOT / "dags")
        params = {"data_dir": str(folder)}
        first = ingest.run(params, executor="threads", store=tmp_path / "store")
        assert first.table("describe").num_rows == 4

        again = ingest.run(params, executor="threads", store=tmp_path / "store")
        assert again.stages["download"].reused_items == 4 and again.stages["parse_catalog"].reused_items == 1
        assert again.stages["fetch_catalog"].reused_items == 0  # fetched in every run: what a URL serves may change

        (folder / "catalog.json").write_text(json.dumps(catalog[:5]))  # the same name, one more entry
        grown = ingest.run(params, executor="threads", store=tmp_path / "store")
        assert grown.stages["download"].reused_items == 4  # the new entry alone is downloaded
        assert grown.table("describe").num_rows == 5

        image = folder / catalog[0]["path"]
        other = folder / catalog[1]["path"]
        shutil.copy(other, image)  # the first image now holds the second one's bytes
        os.utime(image, ns=(1, 1))
        changed = ingest.run(params, executor="threads", store=tmp_path / "store")
        described = {r["id"]: r["sha256"] for r in changed.table("describe").to_pylist()}
        assert described[catalog[0]["id"]] == described[catalog[1]["id"]]
