"""Ingest end to end: ``dags/ingest.py`` at ``scale=134`` (2,010 images) against a hand-written script.

Both serve the bundled ``data/`` folder from a loopback server thread in the driver, read
the catalog, make ``scale`` copies of each record (distinct ids and URLs), download every
image (asyncio + aiohttp, 64 in flight), describe it on 2 processes
(``stages.images.describe``) and aggregate by category. The script is the best hand-written
version: one ``ClientSession``, a semaphore, each image handed to a ``ProcessPoolExecutor``
as soon as it arrives (download and decode overlap), pandas ``groupby`` at the end, no
checkpoints. Pipelines checkpoints every stage and records every batch in its ledger.
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ProcessPoolExecutor
from urllib.parse import urljoin

from .harness import ROOT, Context, Report, Row, Variant, fresh_store, interleave
from .work import describe_image

NAME = "ingest"
TITLE = "ingest end to end"
CONCURRENCY = 64
WORKERS = 2


def by_hand(scale: int) -> dict[str, int]:
    """The hand-written ingest; returns images per category."""
    import aiohttp
    import pandas as pd

    from stages.serve import serve_directory

    with serve_directory(ROOT / "data") as base:

        async def main() -> tuple[list[dict], list[BaseException], list[dict]]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
                async with session.get(urljoin(base, "catalog.json")) as response:
                    response.raise_for_status()
                    catalog = json.loads(await response.read())
                entries = [
                    entry if n == 0 else {**entry, "id": f"{entry['id']}~{n}", "path": f"{entry['path']}?copy={n}"}
                    for n in range(scale)
                    for entry in catalog
                ]
                semaphore = asyncio.Semaphore(CONCURRENCY)
                loop = asyncio.get_running_loop()
                with ProcessPoolExecutor(WORKERS) as pool:

                    async def one(entry: dict) -> dict:
                        async with semaphore, session.get(urljoin(base, entry["path"])) as response:
                            response.raise_for_status()
                            if not response.content_type.startswith("image/"):
                                raise ValueError(f"{entry['path']}: not an image")
                            body = await response.read()
                        info = await loop.run_in_executor(pool, describe_image, body, entry["path"])
                        return {**info, "id": entry["id"], "category": entry["category"], "path": entry["path"]}

                    results = await asyncio.gather(*(one(e) for e in entries), return_exceptions=True)
            rows = [r for r in results if isinstance(r, dict)]
            errors = [r for r in results if isinstance(r, BaseException)]
            return rows, errors, entries

        rows, errors, entries = asyncio.run(main())
    if errors:
        raise RuntimeError(f"{len(errors)} images failed, first: {errors[0]!r}")
    described = pd.DataFrame(rows)
    by_category = described.groupby("category").agg(
        images=("id", "count"), bytes=("byte_size", "sum"), mean_width=("width", "mean"), mean_height=("height", "mean")
    )
    listed = pd.DataFrame(entries).groupby("category").size().rename("listed")
    report = pd.concat([listed, by_category["images"].rename("described")], axis=1).fillna(0)
    report["missing"] = report["listed"] - report["described"]
    return {k: int(v) for k, v in by_category["images"].items()}


def run(ctx: Context) -> Report:
    scale = 4 if ctx.quick else 134
    report = Report(NAME)
    from pipelines.define import loader

    pipeline = loader.load("ingest", ROOT / "dags")
    items = len(json.loads((ROOT / "data" / "catalog.json").read_text())) * scale
    counts: dict[str, dict[str, int]] = {}

    def hand() -> None:
        counts["hand"] = by_hand(scale)

    def with_pipelines() -> dict[str, float]:
        import pipelines

        with fresh_store(ctx) as store:
            result = pipelines.run(pipeline, {"scale": scale}, store=store)
            if not result.ok or result.failed_items:
                raise RuntimeError(f"run {result.status.value}: {result.error or result.failures[:1]}")
            table = result.table("by_category").to_pydict()
            counts["pipelines"] = dict(zip(table["category"], table["images"], strict=True))
            return {f"{name}_seconds": s.seconds for name, s in result.stages.items()}

    variants = [Variant("asyncio + ProcessPool + pandas", hand), Variant("pipelines", with_pipelines, role="pipelines")]
    samples = interleave(variants, ctx.repeat, ctx.log)
    report.samples = samples
    p = samples["pipelines"]
    a = samples["asyncio + ProcessPool + pandas"]
    error = p.error
    if not error and counts.get("hand") != counts.get("pipelines"):
        error = f"results differ: by hand {counts.get('hand')}, pipelines {counts.get('pipelines')}"
    row = Row(
        f"{TITLE} ({items:,} images, scale={scale})",
        a.name,
        a.median,
        p.median,
        "s",
        "time ≤ 1.1× script (speed ≥ 0.91)",
        None,
        error=error,
    )
    row.ok = row.ratio is not None and row.ratio >= 1 / 1.1 and not error
    report.rows.append(row)
    if p.extras:
        stages = {k.removesuffix("_seconds"): v for k, v in p.extras[-1].items() if k.endswith("_seconds")}
        report.notes.append(
            "pipelines, summed task seconds per stage (last round): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
        )
    report.notes.append(f"{os.cpu_count()} CPUs; describe runs on {WORKERS} processes in both")
    return report
