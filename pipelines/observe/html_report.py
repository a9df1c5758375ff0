"""A run report to look at after the fact: one self-contained HTML file, no external URLs.

``python -m pipelines report RUN -o report.html`` draws, from the ledger alone (and the
pipeline's module, for the DAG's edges, when it can still be imported):

* the DAG as SVG, each stage in its colour;
* the per-stage table (the counts of ``RunResult``, as the run's summary showed them);
* a timeline of every computed task, one row per worker, coloured by stage;
* items per second over time, per stage (each task's items spread over its duration);
* the failed items, each with its whole traceback.

Everything is inline SVG and CSS: the file opens anywhere, offline, and can be mailed.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
from typing import TYPE_CHECKING, Any

from pipelines.cli import diagram
from pipelines.observe.display import printable
from pipelines.observe.report import plural
from pipelines.observe.tracebacks import readable

if TYPE_CHECKING:
    from pipelines.observe.result import RunResult
    from pipelines.store import Store


def escape(text: object) -> str:
    """Data as HTML text: markup escaped, and control and bidi characters written as escapes,
    so that a message cannot reorder what the report shows (newlines kept, for tracebacks)."""
    return html.escape(printable(text, multiline=True))


PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
)
WIDTH = 1000  # of the charts' plotting area, in px
BINS = 60

STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #555; } table { border-collapse: collapse; }
td, th { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
td:first-child, th:first-child, td.left, th.left { text-align: left; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.failed { color: #c0392b; } svg text { font-family: system-ui, sans-serif; font-size: 12px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
.legend span { margin-right: 14px; white-space: nowrap; }
"""


def render(
    store: Store, result: RunResult, edges: list[tuple[str, str]] | None, captions: dict[str, str] | None = None
) -> str:
    """The report of ``result`` as HTML text (``edges``: the DAG's, None when unknown)."""
    order = list(result.stages)
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(order)}
    tasks = [dict(row) for row in store.ledger.tasks(result.run_id)]
    run = store.ledger.run(result.run_id)
    started = dt.datetime.fromtimestamp(run["started"]).strftime("%Y-%m-%d %H:%M:%S") if run and run["started"] else ""
    if edges is None:  # the module is gone: the stages in their order
        edges = list(itertools.pairwise(order))
    captions = captions or {name: f"{s.backend}" for name, s in result.stages.items()}
    sections = [
        f"<h1>{escape(result.pipeline)} · {escape(result.run_id)}</h1>",
        f'<p class="meta">status <b>{escape(result.status.value)}</b> · started {started} · '
        f"{result.seconds:.1f}s · {plural(len(tasks), 'task')} on {plural(len({t['worker'] for t in tasks}), 'worker')}"
        "</p>",
        '<h2 id="dag">DAG</h2>',
        diagram.svg(order, edges, captions, colours),
        '<h2 id="stages">Stages</h2>',
        _stage_table(result, colours),
        '<h2 id="timeline">Tasks per worker</h2>',
        _timeline(tasks, colours, order),
        '<h2 id="throughput">Items per second</h2>',
        _throughput(tasks, colours, order),
        '<h2 id="failures">Failed items</h2>',
        _failures(result),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(result.pipeline)} {escape(result.run_id)}</title><style>{STYLE}</style></head>\n"
        "<body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _stage_table(result: RunResult, colours: dict[str, str]) -> str:
    head = (
        "<tr><th>stage</th><th class=left>executor</th><th>items</th><th>reused</th><th>failed</th>"
        "<th>rows</th><th>batches</th><th>busy s</th><th class=left>recomputed because</th></tr>"
    )
    rows = []
    for s in result.stages.values():
        failed = f'<span class="failed">{s.failed_items:,}</span>' if s.failed_items else "0"
        rows.append(
            f'<tr class="stage-row"><td><span class="swatch" style="background:{colours[s.stage]}"></span>'
            f"{escape(s.stage)}</td><td class=left>{escape(s.backend)}</td><td>{s.items:,}</td>"
            f"<td>{s.reused_items:,}</td><td>{failed}</td><td>{s.rows:,}</td><td>{s.batches:,}</td>"
            f"<td>{s.seconds:.2f}</td><td class=left>{escape(s.reason)}</td></tr>"
        )
    return f'<table class="stages">{head}{"".join(rows)}</table>'


def _legend(colours: dict[str, str], names: list[str]) -> str:
    return (
        '<p class="legend">'
        + "".join(
            f'<span><span class="swatch" style="background:{colours[n]}"></span>{escape(n)}</span>' for n in names
        )
        + "</p>"
    )


def _axis(x0: float, span: float, left: int, y: float) -> list[str]:
    """Seconds along the x axis: five ticks from the run's first task."""
    out = [f'<line x1="{left}" y1="{y}" x2="{left + WIDTH}" y2="{y}" stroke="#999"/>']
    for i in range(6):
        x = left + WIDTH * i / 5
        out.append(f'<text x="{x:.0f}" y="{y + 14}" text-anchor="middle" fill="#555">{span * i / 5:.1f}s</text>')
    return out


def _timeline(tasks: list[dict[str, Any]], colours: dict[str, str], order: list[str]) -> str:
    if not tasks:
        return "<p>No task was computed in this run (everything was reused).</p>"
    t0 = min(t["started"] for t in tasks)
    span = max(max(t["ended"] for t in tasks) - t0, 1e-3)
    workers = list(dict.fromkeys(t["worker"] for t in tasks))  # in the order they first started a task
    left, lane = 190, 20
    height = len(workers) * lane + 24
    parts = [
        f'<svg class="timeline" width="{left + WIDTH + 20}" height="{height}" '
        f'viewBox="0 0 {left + WIDTH + 20} {height}" role="img" style="max-width:100%;height:auto">'
    ]
    for i, worker in enumerate(workers):
        parts.append(f'<text x="{left - 8}" y="{i * lane + 14}" text-anchor="end" fill="#444">{escape(worker)}</text>')
    for t in tasks:
        x = left + WIDTH * (t["started"] - t0) / span
        w = max(WIDTH * (t["ended"] - t["started"]) / span, 1.0)
        y = workers.index(t["worker"]) * lane + 2
        title = (
            f"{t['stage']} batch {t['batch']}: {plural(t['items'] or 0, 'item')}, "
            f"{(t['ended'] - t['started']) * 1000:.0f} ms" + (f", {t['failed']} failed" if t["failed"] else "")
        )
        parts.append(
            f'<rect class="task" data-stage="{escape(t["stage"])}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{lane - 4}" fill="{colours.get(t["stage"], "#888")}" fill-opacity="0.85">'
            f"<title>{escape(title)}</title></rect>"
        )
    parts += _axis(t0, span, left, len(workers) * lane + 4)
    parts.append("</svg>")
    return _legend(colours, [n for n in order if any(t["stage"] == n for t in tasks)]) + "\n".join(parts)


def _throughput(tasks: list[dict[str, Any]], colours: dict[str, str], order: list[str]) -> str:
    if not tasks:
        return "<p>No task was computed in this run.</p>"
    t0 = min(t["started"] for t in tasks)
    span = max(max(t["ended"] for t in tasks) - t0, 1e-3)
    width = span / BINS
    rates: dict[str, list[float]] = {}
    for t in tasks:  # a task's items, spread evenly over its duration
        bins = rates.setdefault(t["stage"], [0.0] * BINS)
        a, b = t["started"] - t0, max(t["ended"] - t0, t["started"] - t0 + 1e-9)
        per_second = (t["items"] or 0) / (b - a)
        for i in range(int(a / width), min(int(b / width) + 1, BINS)):
            overlap = min(b, (i + 1) * width) - max(a, i * width)
            if overlap > 0:
                bins[i] += per_second * overlap / width
    top = max(max(v) for v in rates.values()) or 1.0
    left, plot_h, top_gap = 70, 220, 12
    size = f'width="{left + WIDTH + 30}" height="{plot_h + top_gap + 30}"'
    parts = [
        f'<svg class="throughput" {size} viewBox="0 {-top_gap} {left + WIDTH + 30} {plot_h + top_gap + 30}" '
        'role="img" style="max-width:100%;height:auto">'
    ]
    for i in range(5):
        y = plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.0f}" x2="{left + WIDTH}" y2="{y:.0f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end" fill="#555">{top * i / 4:,.0f}</text>'
        )
    for name in order:
        if name not in rates:
            continue
        points = " ".join(
            f"{left + WIDTH * (i + 0.5) / BINS:.1f},{plot_h - plot_h * v / top:.1f}" for i, v in enumerate(rates[name])
        )
        parts.append(
            f'<polyline class="rate" data-stage="{escape(name)}" points="{points}" fill="none" '
            f'stroke="{colours[name]}" stroke-width="2"/>'
        )
    parts += _axis(t0, span, left, plot_h)
    parts.append("</svg>")
    return _legend(colours, [n for n in order if n in rates]) + "\n".join(parts)


def _failures(result: RunResult) -> str:
    if not result.failures:
        return "<p>None.</p>"
    out = [f"<p>{plural(len(result.failures), 'failed item')}.</p>"]
    for e in result.failures:
        out.append(
            f'<details class="failure" open><summary><b>{escape(e.stage)}</b>, {escape(e.where)}: '
            f"{escape(e.error_type)}: {escape(e.message)} (attempts: {e.attempts})</summary>"
            + (f"<p>input: <code>{escape((e.input or '')[:500])}</code></p>" if e.input else "")
            + f"<pre>{escape(readable(e.traceback))}</pre></details>"
        )
    return "\n".join(out)


def edges_of(row: Any) -> tuple[list[tuple[str, str]], dict[str, str]] | None:
    """The DAG's edges and each stage's caption, from the run's pipeline module; None when it
    cannot be imported any more (the report then draws the stages in order)."""
    from pipelines._engine.plan import RunOptions, plan
    from pipelines.define import loader

    try:
        pipeline = (
            loader.load(row["pipeline"], row["dags_dir"])
            if row["dags_dir"]
            else loader.find_pipeline(__import__(row["module"], fromlist=["_"]), row["pipeline"])
        )
    except Exception:
        return None
    the_plan = plan(pipeline, RunOptions())
    edges = [(up, stage.name) for stage in pipeline.stages.values() for up in stage.upstream]
    captions = {
        name: f"{s.granularity} · {diagram.kind(s)}" for name, s in pipeline.stages.items() if name in the_plan.stages
    }
    return edges, captions


def write_report(store: Store, run: str, path: str, *, pipeline: str | None = None) -> tuple[str, RunResult]:
    """Write the report of run ``run`` (an id, ``latest`` or a pipeline's name) to ``path``."""
    import os

    from pipelines.store.past import _result, find_run

    row = find_run(store, run, pipeline)
    result = _result(store, row)
    found = edges_of(row)
    edges, captions = found if found is not None else (None, None)
    if captions is not None:
        captions = {n: f"{c} · {result.stages[n].backend}" if n in result.stages else c for n, c in captions.items()}
    html = render(store, result, edges, captions)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(tmp, path)
    return path, result
