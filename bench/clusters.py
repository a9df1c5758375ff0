"""Cluster overhead (``--clusters``): ``x*x`` per item through pipelines on Dask and Ray.

Anchors: ``client.map`` over batches of 10,000 items on a Dask ``LocalCluster`` (2
single-threaded worker processes, on 127.0.0.1), and Ray tasks over the same batches; each
task receives its batch's bounds and returns a NumPy array (``work.square_batch``).
Pipelines: ``bench/dags/tiny.py`` with ``executor="dask"`` (on the same cluster, through
``address=``) and ``executor="ray"``. Cluster start-up is not timed on either side.

Ray binds to every interface, so everything Ray runs in a child process inside a private
network namespace with only loopback (``tests/loopback_only.py``), where this module is
also the child's entry point: ``python -m bench.clusters ray-overhead|ray-cpu ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import ROOT, Context, Report, Row, Samples, Variant, fresh_store, interleave, load_pipeline
from .work import burn, square_batch

NAME = "clusters"
TITLE = "cluster overhead"
BATCH = 10_000


def batches(n: int) -> list[tuple[int, int]]:
    """The bounds of each batch of ``BATCH`` items: what an anchor task receives."""
    return [(i, min(n, i + BATCH)) for i in range(0, n, BATCH)]


def run_pipelines(pipeline: Any, n: int, store: Path, **options: Any) -> dict[str, float]:
    import pipelines

    result = pipelines.run(pipeline, {"n": n}, store=store, **options)
    if not result.ok:
        raise RuntimeError(f"run {result.status.value}: {result.error}")
    assert result.table("square").num_rows == n
    return {"tasks": result.stages["square"].batches}


# -- Dask, in this process -------------------------------------------------------------------------


def dask_part(ctx: Context, n: int, report: Report) -> None:
    from distributed import Client, LocalCluster

    pipeline = load_pipeline("bench_tiny")
    chunks = batches(n)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1")
    client = Client(cluster)
    try:
        client.submit(square_batch, (0, 1)).result()

        def anchor() -> None:
            out = client.gather(client.map(square_batch, chunks, pure=False))
            assert sum(len(o) for o in out) == n

        def with_pipelines() -> dict[str, float]:
            with fresh_store(ctx) as store:
                return run_pipelines(pipeline, n, store, executor="dask", address=cluster.scheduler_address)

        samples = interleave(
            [
                Variant("Dask client.map over batches", anchor),
                Variant("pipelines (dask)", with_pipelines, role="pipelines"),
            ],
            ctx.repeat,
            ctx.log,
        )
    finally:
        client.close()
        cluster.close()
    report.samples.update(samples)
    a, p = samples["Dask client.map over batches"], samples["pipelines (dask)"]
    report.rows.append(
        Row(f"{TITLE}: Dask ({n:,} × x*x)", a.name, a.median, p.median, "s", "(report ratio)", None, error=p.error)
    )


# -- Ray, in a loopback-only namespace ---------------------------------------------------------------


def ray_child(ctx: Context, mode: str, **args: Any) -> dict[str, Any]:
    """Run this module's Ray entry point inside ``unshare -n``; return what it wrote."""
    work = Path(tempfile.mkdtemp(prefix="bray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    result = work / "result.json"
    cmd = [
        sys.executable,
        str(ROOT / "tests" / "loopback_only.py"),
        sys.executable,
        "-m",
        "bench.clusters",
        mode,
        "--result",
        str(result),
        "--tmp",
        str(work),
        "--repeat",
        str(ctx.repeat),
    ]
    for key, value in args.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        if not result.exists():
            raise RuntimeError(f"the Ray child exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
        out = json.loads(result.read_text())
        if os.environ.get("PIPELINES_NETNS") != "1" and out.get("netns") != "1":
            out.setdefault("notes", []).append("no network namespace could be made: Ray was not run")
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ray_cpu_anchor(ctx: Context, items: list[int]) -> dict[str, Samples]:
    """Ray tasks for the CPU scaling workload (``burn`` per item)."""
    s = Samples("Ray tasks", "anchor", note="in its own process, not interleaved; ray.init not timed")
    try:
        out = ray_child(ctx, "ray-cpu", tasks=len(items), iterations=items[0])
        s.seconds = out["samples"]["Ray tasks"]
        s.error = out.get("error")
    except Exception as exc:
        s.error = f"{type(exc).__name__}: {exc}"
    return {"Ray tasks": s}


def ray_part(ctx: Context, n: int, report: Report) -> None:
    try:
        out = ray_child(ctx, "ray-overhead", n=n)
    except Exception as exc:
        report.rows.append(
            Row(
                f"{TITLE}: Ray ({n:,} × x*x)",
                None,
                None,
                None,
                "s",
                "(report ratio)",
                None,
                error=f"{type(exc).__name__}: {exc}",
            )
        )
        return
    a = Samples("Ray tasks over batches", "anchor", seconds=out["samples"].get("Ray tasks over batches", []))
    p = Samples(
        "pipelines (ray)",
        "pipelines",
        seconds=out["samples"].get("pipelines (ray)", []),
        error=out.get("errors", {}).get("pipelines (ray)"),
    )
    a.error = out.get("errors", {}).get("Ray tasks over batches") or out.get("error")
    report.samples.update({a.name: a, p.name: p})
    report.rows.append(
        Row(
            f"{TITLE}: Ray ({n:,} × x*x)",
            a.name,
            a.median,
            p.median,
            "s",
            "(report ratio)",
            None,
            error=p.error or a.error,
        )
    )
    report.notes += out.get("notes", [])


def run(ctx: Context) -> Report:
    n = 100_000 if ctx.quick else 1_000_000
    report = Report(NAME)
    try:
        dask_part(ctx, n, report)
    except Exception as exc:
        report.rows.append(
            Row(
                f"{TITLE}: Dask ({n:,} × x*x)",
                None,
                None,
                None,
                "s",
                "(report ratio)",
                None,
                error=f"{type(exc).__name__}: {exc}",
            )
        )
    ray_part(ctx, n, report)
    report.notes.append(f"anchors ship batches of {BATCH:,} items; cluster start-up is not timed")
    return report


# -- the child's entry point (inside the namespace) -----------------------------------------------------


def child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["ray-cpu", "ray-overhead"])
    parser.add_argument("--result", required=True)
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--tasks", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=0)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"netns": os.environ.get("PIPELINES_NETNS"), "samples": {}, "errors": {}, "notes": []}
    if os.environ.get("PIPELINES_NETNS") != "1":
        out["error"] = "no loopback-only network namespace (needs root or user namespaces); Ray not run"
        Path(args.result).write_text(json.dumps(out))
        return 0
    import ray

    t0 = time.perf_counter()
    ray.init(
        address="local", include_dashboard=False, num_cpus=2, _temp_dir=str(Path(args.tmp) / "r"), log_to_driver=False
    )
    out["notes"].append(f"ray.init: {time.perf_counter() - t0:.1f} s (not timed)")
    ctx = Context(
        quick=False,
        repeat=args.repeat,
        clusters=True,
        tmp=Path(args.tmp),
        cache=Path(args.tmp),
        log=lambda text: print(text, file=sys.stderr),
    )
    try:
        if args.mode == "ray-cpu":
            remote_burn = ray.remote(burn)
            ray.get(remote_burn.remote(1))
            items = [args.iterations] * args.tasks

            def ray_tasks() -> None:
                assert len(ray.get([remote_burn.remote(i) for i in items])) == len(items)

            variants = [Variant("Ray tasks", ray_tasks)]
        else:
            remote_square = ray.remote(square_batch)
            ray.get(remote_square.remote((0, 1)))
            chunks = batches(args.n)
            pipeline = load_pipeline("bench_tiny")

            def ray_batches() -> None:
                out_ = ray.get([remote_square.remote(c) for c in chunks])
                assert sum(len(o) for o in out_) == args.n

            def with_pipelines() -> dict[str, float]:
                with fresh_store(ctx) as store:
                    return run_pipelines(pipeline, args.n, store, executor="ray")

            variants = [
                Variant("Ray tasks over batches", ray_batches),
                Variant("pipelines (ray)", with_pipelines, role="pipelines"),
            ]
        samples = interleave(variants, args.repeat, ctx.log)
        out["samples"] = {k: v.seconds for k, v in samples.items()}
        out["errors"] = {k: v.error for k, v in samples.items() if v.error}
    finally:
        ray.shutdown()
        Path(args.result).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(child(sys.argv[1:]))
