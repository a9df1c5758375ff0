"""Memory: 2 GB of JSON lines → parse → per-category summary, peak RSS of the whole process tree.

The file (about 4 million seeded records of ~530 bytes) is generated once and cached (see
``BENCH_CACHE``; ``--quick`` uses 16 MB). Each side runs in a fresh process of its own
(``bench/memory_child.py``) while a sampler adds up the resident memory of that process and
all its descendants every 20 ms. Anchor: the hand-written loop that loads everything
(``json.loads`` per line into a list, then a pandas DataFrame and ``groupby``). Pipelines:
``bench/dags/jsonl.py`` (source = the file's lines, a CPU map parses, a reduce aggregates).
One round each: at full size each side takes minutes, and peak memory hardly varies.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .harness import MB, Context, Report, Row, Samples, fresh_store, run_measured
from .work import generate_jsonl

NAME = "memory"
TITLE = "memory"
WARM_UP = False  # both sides run in fresh processes
GOAL_MB = 600


def data_file(ctx: Context, size_mb: int) -> Path:
    path = ctx.cache / f"events-{size_mb}MB-seed1.jsonl"
    if not path.exists():
        ctx.log(f"    generating {path} ({size_mb:,} MB, once) ...")
        t0 = time.perf_counter()
        lines = generate_jsonl(str(path), size_mb * MB)
        ctx.log(f"    {lines:,} lines in {time.perf_counter() - t0:.0f} s")
    return path


def run(ctx: Context) -> Report:
    size_mb = 16 if ctx.quick else 2048
    path = data_file(ctx, size_mb)
    report = Report(NAME)
    results: dict[str, dict] = {}
    samples: dict[str, Samples] = {}
    for which, label, role in (
        ("anchor", "json.loads list + pandas", "anchor"),
        ("pipelines", "pipelines", "pipelines"),
    ):
        with fresh_store(ctx) as store:
            measured = run_measured([sys.executable, "-m", "bench.memory_child", which, str(path), str(store)])
        s = Samples(label, role)
        if measured["returncode"] != 0:
            s.error = f"exit {measured['returncode']}: {measured['stderr'].strip()[-400:]}"
        else:
            import json

            results[which] = json.loads(measured["stdout"].strip().splitlines()[-1])
            s.seconds.append(measured["seconds"])
        s.extras.append({k: v for k, v in measured.items() if k not in ("stdout", "stderr")})
        samples[label] = s
        ctx.log(
            f"    {label:<28} {measured['seconds']:8.1f} s  peak RSS {measured['peak_rss'] / MB:,.0f} MB "
            f"(anon {measured['peak_anon'] / MB:,.0f} MB, {measured['peak_processes']} processes)"
        )
    report.samples = samples
    a, p = samples["json.loads list + pandas"], samples["pipelines"]
    error = p.error
    if not error and a.error is None:
        mismatch = [k for k in results["anchor"] if results["anchor"][k][0] != results["pipelines"].get(k, [None])[0]]
        if mismatch or set(results["anchor"]) != set(results["pipelines"]):
            error = f"results differ (categories {mismatch[:3]})"
    a_mb = a.extras[0]["peak_rss"] / MB if a.extras and not a.error else None
    p_mb = p.extras[0]["peak_rss"] / MB if p.extras and not p.error else None
    label = f"{TITLE}: {size_mb / 1024:.1f} GB JSON lines" if size_mb >= 1024 else f"{TITLE}: {size_mb} MB JSON lines"
    row = Row(f"{label}, peak RSS", a.name, a_mb, p_mb, "MB", f"pipelines ≤ {GOAL_MB} MB", None, error=error)
    row.ok = p_mb is not None and p_mb <= GOAL_MB and not error
    report.rows.append(row)
    report.rows.append(Row(f"{label}, wall time", a.name, a.median, p.median, "s", "(reference)", None, error=error))
    for s in (a, p):
        if s.extras and "peak_anon" in s.extras[0]:
            e = s.extras[0]
            parts = ", ".join(
                f"{role} {rss / MB:,.0f} MB (anon {anon / MB:,.0f})"
                for _, role, rss, anon in sorted(e["peak_breakdown"], key=lambda x: -x[2])
            )
            report.notes.append(
                f"{s.name}: peak RSS {e['peak_rss'] / MB:,.0f} MB (anonymous "
                f"{e['peak_anon'] / MB:,.0f} MB, PSS {e['peak_pss'] / MB:,.0f} MB); at the RSS peak: {parts}"
            )
    report.notes.append(f"input {path.stat().st_size / MB:,.0f} MB; 1 round per side (fresh process each)")
    return report
