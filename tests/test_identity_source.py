"""Work identified by content at the source: content-defined batches, files as inputs,
declared side effects and per-field parameter fingerprints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines import chunking

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
    from pipelines import loader

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


class TestContentDefinedBatches:
    def rerun(self, shifting, params: dict) -> tuple[list[int], list[dict]]:
        pipeline, store, log = shifting
        result = pipeline.run(params, store=store)
        assert result.ok
        return calls(log), result.table("total").to_pylist()

    def test_insert_one_item_in_the_middle(self, shifting) -> None:
        recomputed, total = self.rerun(shifting, {"insert_at": 50_000})
        assert 10_000_000 in recomputed
        assert 1 <= len(recomputed) <= 1_000, len(recomputed)
        assert total == [{"rows": N + 1, "sum": 3 * (N * (N - 1) // 2 + 10_000_000)}]

    def test_remove_one_item(self, shifting) -> None:
        recomputed, total = self.rerun(shifting, {"remove_at": 20_000})
        assert 20_000 not in recomputed
        assert 1 <= len(recomputed) <= 1_000, len(recomputed)
        assert total == [{"rows": N - 1, "sum": 3 * (N * (N - 1) // 2 - 20_000)}]

    def test_edit_one_item_recomputes_its_batch_at_most(self, shifting) -> None:
        recomputed, total = self.rerun(shifting, {"edit_at": 70_000})
        assert -70_000 in recomputed
        assert len(recomputed) <= chunking.Cutter().maximum
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

    @pytest.mark.parametrize("values", [
        [{"x": 1, "y": "a"}, {"x": 2, "y": None}, None],
        [[1, 2], [], None, [2, 1]],
        [1.5, -0.0, 0.0, None],
        [b"\x00", b"", b"\x00\x00", None],
    ])
    def test_a_slice_hashes_as_the_whole_does(self, values: list) -> None:
        arr = pa.array(values * 5)
        whole = chunking.array_hashes(arr)
        assert (chunking.array_hashes(arr.slice(3, 9)) == whole[3:12]).all()
        assert len(set(whole[:len(values)].tolist())) == len(values)


def batches(cutter: chunking.Cutter, values: np.ndarray) -> list[list[int]]:
    hashes = chunking.row_hashes(pa.table({"x": values}))
    out, at = [], 0
    while at < len(values):
        cut = cutter.next_cut(hashes[at:], final=True)
        out.append(values[at:at + cut].tolist())
        at += cut
    return out
