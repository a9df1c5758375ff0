"""Tiny map: ``x*x`` over 1,000,000 ints — pure per-item overhead.

Anchors: a list comprehension; ``multiprocessing.Pool.map`` (default chunks); joblib
``Parallel(n_jobs=2)`` (auto batching); ``ProcessPoolExecutor.map`` (default chunksize 1 —
one round trip per item, far too slow for a million: it runs on 1 % and 2 % of the items
and its time is extrapolated linearly to the full count).
Pipelines: ``bench/dags/tiny.py`` on the process pool, output checkpointed, then the result
opened (memory-mapped) — the anchors hold their results too.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

from .harness import Context, Report, Row, Variant, best, fresh_store, interleave, load_pipeline
from .work import square

NAME = "tiny_map"
TITLE = "tiny map"
WORKERS = 2


def run(ctx: Context) -> Report:
    n = 100_000 if ctx.quick else 1_000_000
    workers = min(WORKERS, os.cpu_count() or 1)
    report = Report(NAME)
    pipeline = load_pipeline("bench_tiny")

    def loop() -> None:
        out = [x * x for x in range(n)]
        assert len(out) == n

    def pool_map() -> None:
        with multiprocessing.Pool(workers) as pool:
            out = pool.map(square, range(n))
        assert len(out) == n

    def joblib_parallel() -> None:
        from joblib import Parallel, delayed

        out = Parallel(n_jobs=workers)(delayed(square)(x) for x in range(n))
        assert len(out) == n

    small, larger = max(1, n // 100), max(2, n // 50)

    def ppe_map() -> dict[str, float]:
        times = []
        for count in (small, larger):
            t0 = time.perf_counter()
            with ProcessPoolExecutor(workers) as pool:
                out = list(pool.map(square, range(count)))
            times.append(time.perf_counter() - t0)
            assert len(out) == count
        per_item = (times[1] - times[0]) / (larger - small)
        return {"seconds": times[0] + per_item * (n - small), "measured_small": times[0], "measured_larger": times[1]}

    def with_pipelines() -> dict[str, float]:
        import pipelines

        with fresh_store(ctx) as store:
            t0 = time.perf_counter()
            result = pipelines.run(pipeline, {"n": n}, store=store)
            ran = time.perf_counter() - t0
            if not result.ok:
                raise RuntimeError(f"run {result.status.value}: {result.error}")
            table = result.table("square")
            assert table.num_rows == n
            seconds = time.perf_counter() - t0
            summary = result.stages["square"]
        return {"seconds": seconds, "run_seconds": ran, "tasks": summary.batches, "stage_seconds": summary.seconds}

    variants = [
        Variant("list comprehension", loop),
        Variant("Pool.map", pool_map),
        Variant("joblib Parallel(2)", joblib_parallel),
        Variant(
            "ProcessPoolExecutor.map", ppe_map, note=f"extrapolated from {small:,} and {larger:,} items (chunksize=1)"
        ),
        Variant("pipelines", with_pipelines, role="pipelines"),
    ]
    samples = interleave(variants, ctx.repeat, ctx.log)
    report.samples = samples
    label = f"{TITLE} ({n:,} × x*x)"
    p = samples["pipelines"]
    loop_s = samples["list comprehension"]
    parallel = best(samples, ["Pool.map", "joblib Parallel(2)", "ProcessPoolExecutor.map"])
    perr = p.error
    row1 = Row(f"{label} vs serial", loop_s.name, loop_s.median, p.median, "s", "speed ≥ 0.5× serial", None, error=perr)
    row1.ok = row1.ratio is not None and row1.ratio >= 0.5
    report.rows.append(row1)
    row2 = Row(
        f"{label} vs parallel",
        parallel.name if parallel else None,
        parallel.median if parallel else None,
        p.median,
        "s",
        "speed ≥ 1.5× best parallel",
        None,
        error=perr,
    )
    row2.ok = row2.ratio is not None and row2.ratio >= 1.5
    report.rows.append(row2)
    ppe = samples["ProcessPoolExecutor.map"]
    report.notes.append(f"ProcessPoolExecutor.map: {ppe.note}")
    for name in ("Pool.map", "joblib Parallel(2)", "ProcessPoolExecutor.map"):
        s = samples[name]
        report.notes.append(f"{name}: median {s.median:.3f} s" if s.median is not None else f"{name}: {s.error}")
    if p.median is not None:
        report.notes.append(
            f"pipelines: run {p.extra_median('run_seconds'):.3f} s + opening the result; "
            f"{p.extras[-1]['tasks']} source batches"
        )
    return report
