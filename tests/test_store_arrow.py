"""Batch files: written atomically, read memory-mapped, checked by size and checksum.

The crash test kills a real writer process with SIGKILL many times mid-loop and then reads
every ``*.arrow`` file it left: a file that exists is always whole.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines import CheckpointError
from pipelines.store import arrow as batch_files


def sample(rows: int = 1000, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "id": list(range(rows)),
            "text": [f"row {rng.random()}" for _ in range(rows)],
            "blob": [rng.randbytes(rng.randint(0, 40)) for _ in range(rows)],
        }
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


class TestWrite:
    def test_round_trip_and_info(self, tmp_path: Path) -> None:
        table = sample()
        info = batch_files.write_table(tmp_path / "a" / "b.arrow", table)  # makes the parent folder
        assert Path(info.path) == tmp_path / "a" / "b.arrow"
        assert info.rows == 1000
        assert info.bytes == os.path.getsize(info.path)
        assert info.checksum == batch_files.checksum(Path(info.path).read_bytes())
        assert batch_files.read_table(info.path).equals(table)
        assert batch_files.read_table(info.path, expect=info).equals(table)
        assert leftovers(tmp_path / "a") == []

    def test_overwrite_replaces_whole_file(self, tmp_path: Path) -> None:
        path = tmp_path / "b.arrow"
        batch_files.write_table(path, sample(2000, seed=1))
        info = batch_files.write_table(path, sample(10, seed=2))
        assert batch_files.read_table(path, expect=info).equals(sample(10, seed=2))
        assert leftovers(tmp_path) == []

    def test_without_fsync(self, tmp_path: Path) -> None:
        info = batch_files.write_table(tmp_path / "b.arrow", sample(5), fsync=False)
        assert batch_files.read_table(info.path, expect=info).num_rows == 5

    def test_empty_table(self, tmp_path: Path) -> None:
        table = pa.table({"a": pa.array([], pa.int64())})
        info = batch_files.write_table(tmp_path / "e.arrow", table)
        assert info.rows == 0
        assert batch_files.read_table(info.path, expect=info).equals(table)

    def test_failed_replace_leaves_no_temp_file(self, tmp_path: Path) -> None:
        target = tmp_path / "b.arrow"
        target.mkdir()  # os.replace cannot put a file over a non-empty directory
        (target / "keep").write_text("x")
        with pytest.raises(OSError):
            batch_files.write_table(target, sample())
        assert leftovers(tmp_path) == []
        assert (target / "keep").read_text() == "x"

    def test_write_that_fails_midway_leaves_nothing(self, tmp_path: Path) -> None:
        """A real EFBIG from the kernel part-way through the bytes (RLIMIT_FSIZE), in a child process."""
        code = textwrap.dedent(f"""
            import resource, signal, sys
            import pyarrow as pa
            from pipelines.store import arrow as batch_files
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            table = pa.table({{"x": list(range(200_000))}})
            assert batch_files.serialize(table).size > 100_000
            resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
            try:
                batch_files.write_table({str(tmp_path / "big.arrow")!r}, table)
            except OSError as exc:
                print("failed:", exc.errno)
                sys.exit(0)
            sys.exit("the write did not fail")
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("failed: 27")  # EFBIG
        assert list(tmp_path.iterdir()) == []

    def test_unserialisable_table_writes_nothing(self, tmp_path: Path) -> None:
        class NotATable:
            schema = "nope"

        with pytest.raises(Exception):  # noqa: B017 - whatever pyarrow raises for a non-table; the point is no file
            batch_files.write_table(tmp_path / "x.arrow", NotATable())  # type: ignore[arg-type]
        assert list(tmp_path.iterdir()) == []


class TestRead:
    @pytest.fixture
    def written(self, tmp_path: Path) -> batch_files.FileInfo:
        return batch_files.write_table(tmp_path / "b.arrow", sample())

    def test_memory_mapped_read_is_equal_and_zero_copy(self, written: batch_files.FileInfo) -> None:
        before = pa.total_allocated_bytes()
        table = batch_files.read_table(written.path)
        assert pa.total_allocated_bytes() - before < written.bytes // 2  # buffers point into the map
        assert table.equals(sample())

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(CheckpointError, match=r"checkpoint .*nope\.arrow is missing"):
            batch_files.read_table(tmp_path / "nope.arrow")

    def test_truncated_with_expect(self, written: batch_files.FileInfo) -> None:
        os.truncate(written.path, written.bytes - 100)
        with pytest.raises(
            CheckpointError, match=rf"is truncated: {written.bytes - 100} bytes, expected {written.bytes}"
        ):
            batch_files.read_table(written.path, expect=written)

    def test_truncated_without_expect(self, written: batch_files.FileInfo) -> None:
        os.truncate(written.path, written.bytes // 2)
        with pytest.raises(CheckpointError, match="not a valid Arrow file"):
            batch_files.read_table(written.path)

    @pytest.mark.parametrize("where", [0.01, 0.5, 0.99])
    def test_flipped_byte(self, written: batch_files.FileInfo, where: float) -> None:
        flip(written.path, int(written.bytes * where))
        with pytest.raises(CheckpointError, match="fails its checksum"):
            batch_files.read_table(written.path, expect=written)
        assert batch_files.verify(written) == "checksum mismatch"

    def test_not_arrow(self, tmp_path: Path) -> None:
        path = tmp_path / "junk.arrow"
        path.write_bytes(b"not an arrow file at all" * 10)
        with pytest.raises(CheckpointError, match="not a valid Arrow file"):
            batch_files.read_table(path)


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


class TestVerify:
    def test_whole(self, tmp_path: Path) -> None:
        assert batch_files.verify(batch_files.write_table(tmp_path / "b.arrow", sample())) is None

    def test_missing(self, tmp_path: Path) -> None:
        info = batch_files.write_table(tmp_path / "b.arrow", sample())
        os.unlink(info.path)
        assert batch_files.verify(info) == "missing"

    def test_truncated(self, tmp_path: Path) -> None:
        info = batch_files.write_table(tmp_path / "b.arrow", sample())
        os.truncate(info.path, 10)
        assert batch_files.verify(info) == f"truncated (10 of {info.bytes} bytes)"

    def test_replaced_by_another_table_of_another_size(self, tmp_path: Path) -> None:
        info = batch_files.write_table(tmp_path / "b.arrow", sample(100))
        batch_files.write_table(tmp_path / "b.arrow", sample(101))
        assert batch_files.verify(info).startswith("truncated")


WRITER = textwrap.dedent("""
    import itertools, sys
    import pyarrow as pa
    from pipelines.store import arrow as batch_files
    folder = sys.argv[1]
    for i in itertools.count():
        rows = 1000 + (i * 7919) % 20000
        table = pa.table({"i": [i] * rows, "v": list(range(rows))})
        batch_files.write_table(f"{folder}/f{i % 25:02d}.arrow", table)   # overwrites, too
        batch_files.write_table(f"{folder}/n{i:05d}.arrow", table)
        if i == 2:
            print("writing", flush=True)
""")


def test_sigkill_mid_write_never_leaves_a_half_file(tmp_path: Path) -> None:
    rng = random.Random(7)
    for attempt in range(4):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline() == "writing\n"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        files = sorted(folder.glob("*.arrow"))
        assert len(files) >= 6
        for path in files:
            table = batch_files.read_table(path)  # raises CheckpointError on a half file
            rows = table.num_rows
            assert rows == 1000 + (table["i"][0].as_py() * 7919) % 20000
            assert table["v"].to_pylist() == list(range(rows))
        # at most the one file being written when the signal came is left as a temp file
        assert len(leftovers(folder)) <= 1
