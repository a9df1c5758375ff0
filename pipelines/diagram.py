"""A pipeline's DAG drawn three ways: a text tree for the terminal, Mermaid and Graphviz DOT for docs.

Every function takes the pipeline and the plan (which executor each stage gets) and returns
text; ``python -m pipelines show NAME --format tree|mermaid|dot`` prints it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.tree import Tree

    from .model import Pipeline, Stage
    from .plan import Plan

GRANULARITY = {"source": "source", "item": "map", "flat": "flat_map", "batch": "batch", "all": "reduce"}


def kind(stage: Stage) -> str:
    """``cpu``, ``io`` or ``io async``: the work a stage declared."""
    return f"{stage.kind} async" if stage.is_async else stage.kind


def label(stage: Stage, backend: str) -> str:
    """``map · cpu · processes``: what the stage is, what kind of work, where it runs."""
    return f"{GRANULARITY[stage.granularity]} · {kind(stage)} · {backend}"


def options(stage: Stage) -> list[str]:
    """The policies a stage sets away from their defaults, as ``name=value``."""
    found = [f"{name}={value}" for name, value in (("concurrency", stage.concurrency), ("retries", stage.retries),
                                                    ("timeout", stage.timeout), ("rate", stage.rate),
                                                    ("batch_size", stage.batch_size)) if value]
    if stage.on_error != "fail":
        found.append(f"on_error={stage.on_error}")
    if stage.executor:
        found.append(f"executor={stage.executor}")
    if stage.reuse != "auto":
        found.append(f"reuse={stage.reuse}")
    if stage.outputs:
        found.append("outputs=...")
    if stage.takes_params:
        from . import paramreads

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
    shapes = {"source": ('[/"', '"/]'), "all": ('{{"', '"}}')}
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
    shapes = {"source": "parallelogram", "all": "hexagon"}
    lines = [f"digraph {_dot_id(pipeline.name)} {{", "    rankdir=TB;",
             '    node [shape=box, style=rounded, fontname="Helvetica"];']
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
