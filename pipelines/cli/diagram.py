"""A pipeline's DAG drawn three ways: a text tree for the terminal, Mermaid and Graphviz DOT for docs.

Every function takes the pipeline and the plan (which executor each stage gets) and returns
text; ``python -m pipelines show NAME --format tree|mermaid|dot`` prints it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.tree import Tree

    from pipelines._engine.plan import Plan
    from pipelines.define.model import Pipeline, Stage


def kind(stage: Stage) -> str:
    """``cpu``, ``io`` or ``io async``: the work a stage declared."""
    return f"{stage.kind} async" if stage.is_async else stage.kind


def label(stage: Stage, backend: str) -> str:
    """``map · cpu · processes``: what the stage is, what kind of work, where it runs."""
    return f"{stage.granularity} · {kind(stage)} · {backend}"


def options(stage: Stage) -> list[str]:
    """The policies a stage sets away from their defaults, as ``name=value``."""
    found = [
        f"{name}={value}"
        for name, value in (
            ("concurrency", stage.concurrency),
            ("retries", stage.retries),
            ("timeout", stage.timeout),
            ("rate", stage.rate),
            ("batch_size", stage.batch_size),
            ("task_size", stage.task_size),
        )
        if value
    ]
    if stage.on_error != "fail":
        found.append(f"on_error={stage.on_error}")
    if stage.executor:
        found.append(f"executor={stage.executor}")
    if stage.reuse != "auto":
        found.append(f"reuse={stage.reuse}")
    if stage.outputs:
        found.append("outputs=...")
    if stage.takes_params:
        from pipelines._engine import paramreads

        read = paramreads.reads(stage.fn)
        if read.fields is None:  # its fingerprint covers every field: say why
            found.append(f"params=all ({read.why})")
    return found


def parent_in_tree(pipeline: Pipeline, name: str, order: list[str]) -> str | None:
    """The upstream a stage hangs under in the tree: its latest input in run order.

    Every stage appears once; its other inputs are named on its line. Hanging it under the
    latest one puts it below everything it reads.
    """
    upstream = pipeline.stages[name].upstream
    return max(upstream, key=order.index) if upstream else None


def tree(pipeline: Pipeline, the_plan: Plan) -> Tree:
    """A rich ``Tree``: sources at the roots, each stage under the input it waits for last."""
    from rich.markup import escape
    from rich.tree import Tree

    order = list(the_plan.order)
    root = Tree(f"[bold]{escape(pipeline.name)}[/bold]", guide_style="dim")
    nodes: dict[str, Tree] = {}
    for name in order:
        stage = pipeline.stages[name]
        text = f"[cyan]{escape(name)}[/cyan]  {escape(label(stage, the_plan.stages[name].backend))}"
        extra = options(stage)
        parent = parent_in_tree(pipeline, name, order)
        others = [u for u in stage.inputs if u != parent]
        if others:
            extra.append("also from " + ", ".join(others))
        side = [s for s in stage.side if s != parent]
        if side:
            extra.append("side " + ", ".join(side))
        if extra:
            text += f"  [dim]{escape(' '.join(extra))}[/dim]"
        nodes[name] = (nodes[parent] if parent else root).add(text)
    return root


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid(pipeline: Pipeline, the_plan: Plan) -> str:
    """A Mermaid ``flowchart``: sources as parallelograms, reduces as hexagons, side inputs dotted."""
    ids = {name: f"s{i}" for i, name in enumerate(the_plan.order)}
    lines = ["flowchart TD"]
    shapes = {"source": ('[/"', '"/]'), "reduce": ('{{"', '"}}')}
    for name in the_plan.order:
        stage = pipeline.stages[name]
        opening, closing = shapes.get(stage.granularity, ('["', '"]'))
        text = _mermaid_text(f"<b>{name}</b><br/>{label(stage, the_plan.stages[name].backend)}")
        lines.append(f"    {ids[name]}{opening}{text}{closing}")
    for name in the_plan.order:
        stage = pipeline.stages[name]
        lines += [f"    {ids[up]} --> {ids[name]}" for up in stage.inputs]
        lines += [f"    {ids[up]} -. side .-> {ids[name]}" for up in stage.side]
    return "\n".join(lines) + "\n"


def _dot_id(text: str) -> str:
    """A DOT quoted string: any stage name is safe, and ``\\n`` breaks a label's line."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot(pipeline: Pipeline, the_plan: Plan) -> str:
    """A Graphviz ``digraph`` (render with ``dot -Tsvg``); names are quoted, so any name is safe."""
    shapes = {"source": "parallelogram", "reduce": "hexagon"}
    lines = [
        f"digraph {_dot_id(pipeline.name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
    ]
    for name in the_plan.order:
        stage = pipeline.stages[name]
        text = f"{name}\n{label(stage, the_plan.stages[name].backend)}"
        shape = shapes.get(stage.granularity)
        attrs = f"label={_dot_id(text)}" + (f", shape={shape}, style=solid" if shape else "")
        lines.append(f"    {_dot_id(name)} [{attrs}];")
    for name in the_plan.order:
        stage = pipeline.stages[name]
        lines += [f"    {_dot_id(up)} -> {_dot_id(name)};" for up in stage.inputs]
        lines += [f'    {_dot_id(up)} -> {_dot_id(name)} [style=dashed, label="side"];' for up in stage.side]
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(order: list[str], edges: list[tuple[str, str]], captions: dict[str, str], colours: dict[str, str]) -> str:
    """The DAG as inline SVG: stages in columns by depth (longest path from a source), arrows
    between them; each box shows the stage's name and caption, edged in its colour.

    Plain data in, text out (no pipeline needed), so a report of a past run can draw it from
    what the ledger and the module say.
    """
    from html import escape

    depth: dict[str, int] = {}
    inputs: dict[str, list[str]] = {name: [] for name in order}
    for a, b in edges:
        inputs.setdefault(b, []).append(a)
    for name in order:  # topological order: inputs first
        depth[name] = 1 + max((depth.get(up, 0) for up in inputs.get(name, [])), default=-1)
    columns: dict[int, list[str]] = {}
    for name in order:
        columns.setdefault(depth[name], []).append(name)
    box_w, box_h, gap_x, gap_y = 160, 44, 36, 18
    height = max(len(c) for c in columns.values()) * (box_h + gap_y) + gap_y
    width = len(columns) * (box_w + gap_x) + gap_x
    where: dict[str, tuple[float, float]] = {}
    for d, names in columns.items():
        top = (height - len(names) * (box_h + gap_y) + gap_y) / 2
        for i, name in enumerate(names):
            where[name] = (gap_x + d * (box_w + gap_x), top + i * (box_h + gap_y))
    parts = [
        f'<svg class="dag" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'style="max-width:100%;height:auto">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>',
    ]
    for a, b in edges:
        if a not in where or b not in where:
            continue
        (xa, ya), (xb, yb) = where[a], where[b]
        x1, y1, x2, y2 = xa + box_w, ya + box_h / 2, xb, yb + box_h / 2
        mid = (x1 + x2) / 2
        curve = f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
        parts.append(f'<path class="edge" d="{curve}" fill="none" stroke="#666" marker-end="url(#arrow)"/>')
    for name in order:
        x, y = where[name]
        parts.append(
            f'<g class="stage" data-stage="{escape(name)}"><rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" '
            f'height="{box_h}" rx="6" fill="#fff" stroke="{colours.get(name, "#888")}" stroke-width="3"/>'
            f'<text x="{x + box_w / 2:.0f}" y="{y + 18:.0f}" text-anchor="middle" font-weight="bold">'
            f'{escape(name)}</text><text x="{x + box_w / 2:.0f}" y="{y + 35:.0f}" text-anchor="middle" '
            f'font-size="11" fill="#555">{escape(captions.get(name, ""))}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)
