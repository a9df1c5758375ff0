"""Async IO: 2,000 downloads of 50 KB from a loopback aiohttp server that answers after 20 ms.

The server runs in its own process. Anchors: asyncio + one ``aiohttp.ClientSession`` with a
semaphore of 64; 64 threads with ``urllib``. Pipelines: ``bench/dags/fetch.py`` — the
library's ``stages.http.download`` at ``concurrency=64`` — with every response (status,
headers' content type, body) checkpointed to Arrow.
"""

from __future__ import annotations

import asyncio
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .harness import Context, Report, Row, Variant, best, fresh_store, interleave, load_pipeline
from .http_server import serving

NAME = "async_io"
TITLE = "async IO"
CONCURRENCY = 64
LATENCY = 0.020
SIZE = 50 * 1024


def run(ctx: Context) -> Report:
    n = 200 if ctx.quick else 2000
    report = Report(NAME)
    pipeline = load_pipeline("bench_fetch")
    with serving(LATENCY, SIZE) as base:
        urls = [f"{base}blob/{i}" for i in range(n)]

        def raw_aiohttp() -> None:
            import aiohttp

            async def main() -> list[bytes]:
                semaphore = asyncio.Semaphore(CONCURRENCY)
                async with aiohttp.ClientSession() as session:

                    async def one(url: str) -> bytes:
                        async with semaphore, session.get(url) as response:
                            response.raise_for_status()
                            return await response.read()

                    return await asyncio.gather(*(one(u) for u in urls))

            bodies = asyncio.run(main())
            assert len(bodies) == n and all(len(b) == SIZE for b in bodies)

        def threads_urllib() -> None:
            def one(url: str) -> bytes:
                with urllib.request.urlopen(url, timeout=30) as response:
                    return response.read()

            with ThreadPoolExecutor(CONCURRENCY) as pool:
                bodies = list(pool.map(one, urls))
            assert len(bodies) == n and all(len(b) == SIZE for b in bodies)

        def with_pipelines() -> dict[str, float]:
            import pipelines

            with fresh_store(ctx) as store:
                result = pipelines.run(pipeline, {"base_url": base, "n": n, "concurrency": CONCURRENCY}, store=store)
                if not result.ok or result.failed_items:
                    raise RuntimeError(f"run {result.status.value}: {result.error or result.failures[:1]}")
                summary = result.stages["download"]
                return {"tasks": summary.batches, "rows": summary.rows}

        variants = [
            Variant("asyncio+aiohttp (64)", raw_aiohttp),
            Variant("threads+urllib (64)", threads_urllib),
            Variant("pipelines", with_pipelines, role="pipelines"),
        ]
        samples = interleave(variants, ctx.repeat, ctx.log)
    report.samples = samples
    p = samples["pipelines"]
    raw = samples["asyncio+aiohttp (64)"]
    row = Row(
        f"{TITLE} ({n:,} × 50 KB, 20 ms, 64 in flight)",
        raw.name,
        raw.median,
        p.median,
        "s",
        "speed ≥ 0.95× aiohttp",
        None,
        error=p.error,
    )
    row.ok = row.ratio is not None and row.ratio >= 0.95
    report.rows.append(row)
    ideal = n / CONCURRENCY * LATENCY
    report.notes.append(f"latency floor at 64 in flight: {ideal:.2f} s")
    t = samples["threads+urllib (64)"]
    report.notes.append(f"threads+urllib (64): median {t.median:.3f} s" if t.median else f"threads+urllib: {t.error}")
    fastest = best(samples)
    if fastest is not None and fastest.name != raw.name:
        report.notes.append(f"the fastest anchor was {fastest.name} ({fastest.median:.3f} s)")
    return report
