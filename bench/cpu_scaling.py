"""CPU scaling: 200 equal tasks of about 19 ms of pure Python on 2 cores.

Anchors: a serial loop; joblib/loky ``Parallel(n_jobs=2)``; ``ProcessPoolExecutor.map``;
``multiprocessing.Pool.map``; with ``--clusters`` also ``client.map`` on a Dask
``LocalCluster`` (2 single-threaded workers; cluster start-up not timed) and Ray tasks
(in a loopback-only network namespace, in their own process; ``ray.init`` not timed).
Pipelines: ``bench/dags/cpu.py`` on the process pool (pool start-up timed, as for the
anchors that make a pool).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from .harness import Context, Report, Row, Variant, best, fresh_store, interleave, load_pipeline
from .work import burn, calibrate_burn

NAME = "cpu_scaling"
TITLE = "CPU scaling"
TASK_SECONDS = 0.019
WORKERS = 2


def run(ctx: Context) -> Report:
    tasks = 40 if ctx.quick else 200
    workers = min(WORKERS, os.cpu_count() or 1)
    iterations = calibrate_burn(TASK_SECONDS)
    report = Report(NAME)
    report.extra["iterations"] = iterations
    pipeline = load_pipeline("bench_cpu")
    items = [iterations] * tasks

    def serial() -> None:
        out = [burn(i) for i in items]
        assert len(out) == tasks

    def joblib_parallel() -> None:
        from joblib import Parallel, delayed

        out = Parallel(n_jobs=workers)(delayed(burn)(i) for i in items)
        assert len(out) == tasks

    def ppe() -> None:
        with ProcessPoolExecutor(workers) as pool:
            out = list(pool.map(burn, items))
        assert len(out) == tasks

    def pool_map() -> None:
        with multiprocessing.Pool(workers) as pool:
            out = pool.map(burn, items)
        assert len(out) == tasks

    def with_pipelines() -> dict[str, float]:
        import pipelines

        with fresh_store(ctx) as store:
            result = pipelines.run(pipeline, {"tasks": tasks, "iterations": iterations}, store=store)
            if not result.ok:
                raise RuntimeError(f"run {result.status.value}: {result.error}")
            summary = result.stages["burn"]
            return {"tasks": summary.batches, "stage_seconds": summary.seconds}

    variants = [
        Variant("serial loop", serial),
        Variant("joblib Parallel(2)", joblib_parallel),
        Variant("ProcessPoolExecutor.map", ppe),
        Variant("Pool.map", pool_map),
    ]
    dask_state: dict[str, object] = {}
    if ctx.clusters:
        variants.append(
            Variant(
                "Dask LocalCluster client.map",
                lambda: dask_map(dask_state, items),
                setup=lambda: start_dask(dask_state),
            )
        )
    variants.append(Variant("pipelines", with_pipelines, role="pipelines"))
    try:
        samples = interleave(variants, ctx.repeat, ctx.log)
    finally:
        close_dask(dask_state)
    if ctx.clusters:
        from .clusters import ray_cpu_anchor

        samples.update(ray_cpu_anchor(ctx, items))
    report.samples = samples

    label = f"{TITLE} ({tasks} × {TASK_SECONDS * 1000:.0f} ms)"
    p = samples["pipelines"]
    s = samples["serial loop"]
    anchor = best(samples, [n for n in samples if n not in ("serial loop", "pipelines")])
    row1 = Row(f"{label} vs serial", s.name, s.median, p.median, "s", "speed ≥ 1.95× serial", None, error=p.error)
    row1.ok = row1.ratio is not None and row1.ratio >= 1.95
    row2 = Row(
        f"{label} vs parallel",
        anchor.name if anchor else None,
        anchor.median if anchor else None,
        p.median,
        "s",
        "speed ≥ 0.98× best anchor",
        None,
        error=p.error,
    )
    row2.ok = row2.ratio is not None and row2.ratio >= 0.98
    report.rows += [row1, row2]
    report.notes.append(
        f"burn({iterations:,}) calibrated to {TASK_SECONDS * 1000:.0f} ms here; ideal on "
        f"{workers} cores: {tasks * TASK_SECONDS / workers:.2f} s"
    )
    for name, sample in samples.items():
        if name != "pipelines":
            report.notes.append(
                f"{name}: median {sample.median:.3f} s" if sample.median is not None else f"{name}: {sample.error}"
            )
    if p.extras:
        report.notes.append(f"pipelines cut the {tasks} items into {p.extras[-1]['tasks']} source batches")
    return report


def start_dask(state: dict[str, object]) -> None:
    """Start a LocalCluster once (untimed: a Dask user has a cluster running)."""
    if "client" in state:
        return
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    )
    state["cluster"], state["client"] = cluster, Client(cluster)
    state["client"].submit(burn, 1).result()  # type: ignore[attr-defined]


def dask_map(state: dict[str, object], items: list[int]) -> None:
    client = state["client"]
    futures = client.map(burn, items, pure=False)  # type: ignore[attr-defined]
    out = client.gather(futures)  # type: ignore[attr-defined]
    assert len(out) == len(items)


def close_dask(state: dict[str, object]) -> None:
    client, cluster = state.pop("client", None), state.pop("cluster", None)
    if client is not None:
        client.close()  # type: ignore[attr-defined]
    if cluster is not None:
        cluster.close()  # type: ignore[attr-defined]
