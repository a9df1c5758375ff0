"""Many small stages: a chain of 1,000 single-item stages, built in a loop — per-stage overhead.

Anchors: Dask's synchronous scheduler (``dask.get`` on a 1,000-task chain) and a chain of
``ThreadPoolExecutor`` futures (submit, wait, submit the next); with ``--clusters`` also a
chain of futures on a Dask ``LocalCluster`` (start-up not timed). Pipelines:
``bench/dags/chain.py`` on threads (``kind="io"``, like the anchors: in the driver
process), every stage's output a durable checkpoint (fsync) and a ledger record; the same
chain on the process pool is reported as a second row. Figures are milliseconds per stage.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from .harness import Context, Report, Row, Variant, best, fresh_store, interleave

NAME = "many_stages"
TITLE = "many small stages"
FALLBACK = (500, 250)  # chain lengths tried for a diagnostic figure when the full chain fails


def step(x: int) -> int:
    return x + 1


def run(ctx: Context) -> Report:
    stages = 100 if ctx.quick else 1000
    os.environ["BENCH_CHAIN_STAGES"] = str(stages)  # read when bench/dags/chain.py is imported
    from pipelines import Pipeline

    from .harness import load_pipeline

    on_threads = load_pipeline("bench_chain")
    on_processes = load_pipeline("bench_chain_cpu")
    chain_module = __import__(on_threads.module, fromlist=["extend"])
    report = Report(NAME)

    import dask  # imported before timing: the anchor is the scheduler, not its import

    def dask_sync() -> None:
        graph = {"s0": (step, 0)}
        for i in range(1, stages):
            graph[f"s{i}"] = (step, f"s{i - 1}")
        assert dask.get(graph, f"s{stages - 1}") == stages

    def thread_chain() -> None:
        x = 0
        with ThreadPoolExecutor(1) as pool:
            for _ in range(stages):
                x = pool.submit(step, x).result()
        assert x == stages

    def run_chain(pipeline, count: int) -> dict[str, float]:
        import pipelines

        with fresh_store(ctx) as store:
            t0 = time.perf_counter()
            result = pipelines.run(pipeline, store=store)
            seconds = time.perf_counter() - t0
            if not result.ok:
                raise RuntimeError(f"run {result.status.value}: {result.error}")
            value = result.table(result.leaves[-1]).column(0).to_pylist()
            assert value == [count], value
        return {"seconds": seconds, "per_stage_ms": seconds / count * 1000}

    variants = [Variant("dask.get (sync)", dask_sync), Variant("threads future chain", thread_chain)]
    dask_state: dict[str, object] = {}
    if ctx.clusters:
        from .cpu_scaling import close_dask, start_dask

        def dask_chain() -> None:
            client = dask_state["client"]
            future = client.submit(step, 0, pure=False)  # type: ignore[attr-defined]
            for _ in range(stages - 1):
                future = client.submit(step, future, pure=False)  # type: ignore[attr-defined]
            assert future.result() == stages

        variants.append(Variant("Dask LocalCluster futures chain", dask_chain, setup=lambda: start_dask(dask_state)))
    variants += [
        Variant("pipelines", lambda: run_chain(on_threads, stages), role="pipelines"),
        Variant("pipelines (processes)", lambda: run_chain(on_processes, stages), role="pipelines"),
    ]
    try:
        samples = interleave(variants, ctx.repeat, ctx.log)
    finally:
        if ctx.clusters:
            close_dask(dask_state)
    report.samples = samples

    anchor = best(samples)
    goal = "≤ 1 ms/stage"
    for name, label in (("pipelines", "threads"), ("pipelines (processes)", "processes")):
        p = samples[name]
        row = Row(
            f"{TITLE} ({stages:,}-stage chain, {label})",
            anchor.name if anchor else None,
            anchor.median / stages * 1000 if anchor and anchor.median else None,
            p.median / stages * 1000 if p.median is not None else None,
            "ms/stage",
            goal,
            None,
            error=p.error,
        )
        row.ok = row.pipelines_value is not None and row.pipelines_value <= 1.0
        report.rows.append(row)
    for name, s in samples.items():
        if s.role == "anchor" and s.median is not None:
            report.notes.append(f"{name}: {s.median * 1000 / stages * 1000:.1f} µs/stage")

    if samples["pipelines"].error:  # how far does the chain get, and what does a stage cost there?
        for count in FALLBACK:
            if count >= stages:
                continue
            shorter = chain_module.extend(Pipeline("bench_chain", module=on_threads.module), count, "io")
            try:
                t = [run_chain(shorter, count)["per_stage_ms"] for _ in range(max(1, min(ctx.repeat, 2)))]
            except Exception as exc:
                report.notes.append(f"{count}-stage chain on threads also fails: {type(exc).__name__}: {exc}")
                continue
            report.notes.append(f"diagnostic: a {count}-stage chain on threads runs, at {min(t):.2f} ms/stage")
            report.extra["fallback"] = {"stages": count, "per_stage_ms": t}
            break
    return report
