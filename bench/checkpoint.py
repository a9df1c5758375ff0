"""Checkpoint cost: what writing and reading Arrow costs, directly and inside a run.

1. A 200 MB table (int64, 2 × float64, a 24-character string column) written and read back
   directly — Arrow IPC (file + fsync), Parquet (snappy + fsync) — and through the engine's
   own batch-file functions (``pipelines.store.arrow``: atomic rename, CRC-32, fsync of file
   and folder; read memory-mapped). Reads follow writes, so they come from the page cache.
2. A CPU stage with a large output (``bench/dags/features.py``: 2 ms of pure Python per
   item, 1,000 float64 = 8 KB out per item, i.e. 4 MB/s of output per worker). Its tasks'
   own timings (``TaskResult.write_seconds`` = Arrow conversion + write + fsync, recorded by
   ``bench/recording.py``) give the share of the stage's time spent checkpointing; its twin
   with an 8-byte output gives the same cost in wall time. A batch stage downstream reports
   the bytes in Arrow's memory pool while it holds its input: near zero when memory-mapped.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from .harness import MB, Context, Report, Row, Variant, best, fresh_store, interleave, load_pipeline
from .work import calibrate_burn

NAME = "checkpoint"
TITLE = "checkpoint"
ITEM_SECONDS = 0.002
WIDTH = 1000


def make_table(target_bytes: int) -> pa.Table:
    rng = np.random.default_rng(7)
    chars = 24
    rows = target_bytes // (8 + 8 + 8 + 8 + chars)
    offsets = np.arange(0, chars * rows + 1, chars, dtype=np.int64)
    data = rng.integers(97, 123, chars * rows, dtype=np.uint8)
    text = pa.LargeStringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(data))
    return pa.table(
        {"id": np.arange(rows, dtype=np.int64), "x": rng.random(rows), "y": rng.standard_normal(rows), "name": text}
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def direct(ctx: Context, report: Report) -> None:
    from pipelines.store import arrow as batch_files

    size = 20 * MB if ctx.quick else 200 * MB
    table = make_table(size)
    mb = table.nbytes / MB
    folder = ctx.tempdir("direct-")
    ipc_path, pq_path, engine_path = folder / "t.arrow", folder / "t.parquet", folder / "engine.arrow"
    info: dict[str, object] = {}

    def ipc_write() -> None:
        with pa.OSFile(str(ipc_path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        _fsync(ipc_path)

    def parquet_write() -> None:
        pq.write_table(table, pq_path, compression="snappy")
        _fsync(pq_path)

    def engine_write() -> None:
        info["file"] = batch_files.write_table(engine_path, table)

    def ipc_read() -> dict[str, float]:
        before = pa.total_allocated_bytes()
        t0 = time.perf_counter()
        with pa.memory_map(str(ipc_path)) as source:
            read = ipc.open_file(source).read_all()
            opened = time.perf_counter() - t0
            total = pc.sum(read["x"]).as_py()
        assert total is not None
        return {"open_seconds": opened, "pool_mb": (pa.total_allocated_bytes() - before) / MB}

    def parquet_read() -> dict[str, float]:
        read = pq.read_table(pq_path)
        assert read.num_rows == table.num_rows
        return {}

    def engine_read() -> dict[str, float]:
        before = pa.total_allocated_bytes()
        t0 = time.perf_counter()
        read = batch_files.read_table(engine_path)
        opened = time.perf_counter() - t0
        total = pc.sum(read["x"]).as_py()
        assert total is not None
        pool = (pa.total_allocated_bytes() - before) / MB
        del read
        return {"open_seconds": opened, "pool_mb": pool}

    def engine_read_verified() -> dict[str, float]:
        read = batch_files.read_table(engine_path, expect=info["file"])  # type: ignore[arg-type]
        assert read.num_rows == table.num_rows
        return {}

    writes = interleave(
        [
            Variant("Arrow IPC write+fsync", ipc_write),
            Variant("Parquet snappy write+fsync", parquet_write),
            Variant("engine write_table", engine_write, role="pipelines"),
        ],
        ctx.repeat,
        ctx.log,
    )
    reads = interleave(
        [
            Variant("Arrow IPC read (mmap)", ipc_read),
            Variant("Parquet read", parquet_read),
            Variant("engine read_table (mmap)", engine_read, role="pipelines"),
            Variant("engine read_table + CRC check", engine_read_verified, role="info"),
        ],
        ctx.repeat,
        ctx.log,
    )
    report.samples.update(writes)
    report.samples.update(reads)
    sizes = {"Arrow IPC": ipc_path.stat().st_size / MB, "Parquet snappy": pq_path.stat().st_size / MB}
    report.extra["direct"] = {"table_mb": mb, "rows": table.num_rows, "file_mb": sizes}

    w_anchor, w_engine = best(writes), writes["engine write_table"]
    row = Row(
        f"{TITLE}: write a {mb:.0f} MB table",
        w_anchor.name if w_anchor else None,
        w_anchor.median if w_anchor else None,
        w_engine.median,
        "s",
        "(reference)",
        None,
        error=w_engine.error,
    )
    report.rows.append(row)
    r_anchor, r_engine = reads["Arrow IPC read (mmap)"], reads["engine read_table (mmap)"]
    pool = r_engine.extra_median("pool_mb")
    row = Row(
        f"{TITLE}: read it back + sum a column",
        r_anchor.name,
        r_anchor.median,
        r_engine.median,
        "s",
        "memory-mapped (pool +0 MB)",
        None,
        error=r_engine.error,
    )
    row.ok = pool is not None and pool < 0.01 * mb
    report.rows.append(row)
    for name, s in {**writes, **reads}.items():
        if s.median is not None:
            report.notes.append(f"{name}: {s.median * 1000:.0f} ms ({mb / s.median:,.0f} MB/s)")
    report.notes.append(
        f"files: Arrow IPC {sizes['Arrow IPC']:.0f} MB, Parquet snappy {sizes['Parquet snappy']:.0f} MB; "
        f"engine read_table opened in {r_engine.extra_median('open_seconds') * 1000:.2f} ms, "
        f"Arrow pool +{pool:.1f} MB"
    )


def in_a_run(ctx: Context, report: Report) -> None:
    import pipelines

    from . import recording

    backend = recording.register()
    n = 500 if ctx.quick else 4_000
    iterations = calibrate_burn(ITEM_SECONDS)
    params = {"n": n, "iterations": iterations, "width": WIDTH}
    heavy, lean = load_pipeline("bench_features"), load_pipeline("bench_features_lean")
    tasks: dict[str, list] = {}
    probes: dict[str, dict] = {}

    def run_one(pipeline, stage: str) -> dict[str, float]:
        recording.take()
        with fresh_store(ctx) as store:
            result = pipelines.run(pipeline, params, store=store, executor=backend)
            if not result.ok:
                raise RuntimeError(f"run {result.status.value}: {result.error}")
            probe = result.table("probe").to_pydict()
        recorded = [r for r in recording.take() if r.stage == stage]
        tasks[stage] = recorded
        probes[stage] = probe
        compute = sum(r.seconds for r in recorded)
        write = sum(r.write_seconds for r in recorded)
        read = sum(r.read_seconds for r in recorded)
        return {
            "compute_s": compute,
            "write_s": write,
            "read_s": read,
            "tasks": len(recorded),
            "share": write / (compute + write + read) if recorded else None,
        }

    samples = interleave(
        [
            Variant("same stage, 8-byte output", lambda: run_one(lean, "features_lean")),
            Variant("pipelines", lambda: run_one(heavy, "features"), role="pipelines"),
        ],
        ctx.repeat,
        ctx.log,
    )
    report.samples.update({f"run: {k}": v for k, v in samples.items()})
    p, twin = samples["pipelines"], samples["same stage, 8-byte output"]
    out_mb = n * WIDTH * 8 / MB
    share = p.extra_median("share")
    row = Row(
        f"{TITLE}: share of a CPU stage ({n:,} × 2 ms → {out_mb:.0f} MB)",
        None,
        None,
        share * 100 if share is not None else None,
        "%",
        "≤ 5 % in checkpoint writes",
        None,
        error=p.error,
    )
    row.ok = share is not None and share <= 0.05
    report.rows.append(row)
    row = Row(
        f"{TITLE}: same run vs 8-byte output",
        twin.name,
        twin.median,
        p.median,
        "s",
        "time ≤ 1.05× (speed ≥ 0.95)",
        None,
        error=p.error or twin.error,
    )
    row.ok = row.ratio is not None and row.ratio >= 1 / 1.05
    report.rows.append(row)
    if p.extras:
        e = p.extras[len(p.extras) // 2]
        report.notes.append(
            f"features: {e['tasks']} tasks; summed over tasks: compute {e['compute_s']:.2f} s, "
            f"checkpoint write {e['write_s']:.2f} s (Arrow conversion + IPC + CRC + fsync), "
            f"input read {e['read_s']:.2f} s"
        )
        writes = sorted(r.write_seconds / max(1, r.items) * 1e6 for r in tasks.get("features", []))
        if writes:
            report.notes.append(
                f"checkpoint write per item: median {statistics.median(writes):.0f} µs (8 KB of float64 each)"
            )
    probe = probes.get("features")
    if probe:
        pool_mb = max(probe["pool_bytes"]) / MB
        input_mb = max(probe["input_bytes"]) / MB
        mapped = pool_mb < 0.5 * input_mb
        report.notes.append(
            f"downstream batch stage: largest input {input_mb:.1f} MB, Arrow pool "
            f"{pool_mb:.1f} MB while holding it → {'memory-mapped' if mapped else 'COPIED into memory'}"
        )
        report.extra["downstream_mapped"] = mapped


def run(ctx: Context) -> Report:
    report = Report(NAME)
    direct(ctx, report)
    in_a_run(ctx, report)
    return report
