"""``show NAME``: the DAG as a text tree, as Mermaid and as Graphviz DOT (parsed back with pydot)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa
import pydot
import pytest

from pipelines import Pipeline
from pipelines._engine.plan import RunOptions, plan
from pipelines.cli import diagram

from .conftest import TEST_DAGS, cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pydot")  # pydot's own pyparsing calls


def with_side_input() -> Pipeline:
    """Stage names that are DOT keywords on purpose (``node``, ``graph``): quoting must keep them names."""
    pipeline = Pipeline("side")

    @pipeline.source(name="node")
    def rows() -> Iterator[int]:
        yield from range(3)

    @pipeline.reduce(inputs=["node"], name="graph")
    def scale(node: pa.Table) -> pa.Table:
        return node

    @pipeline.map(over="node", side=["graph"], kind="io", retries=2)
    def scaled(x: int, graph: pa.Table) -> int:
        return x

    return pipeline


@pytest.fixture
def diamond(load):
    pipeline = load("diamond")
    return pipeline, plan(pipeline, RunOptions())


class TestTree:
    def test_every_stage_once_under_the_input_it_waits_for_last(self, diamond) -> None:
        pipeline, the_plan = diamond
        from rich.console import Console

        console = Console(width=200, record=True, color_system=None)
        console.print(diagram.tree(pipeline, the_plan))
        lines = console.export_text().splitlines()
        assert lines[0] == "diamond"
        names = [re.sub(r"^[\s│├└─]+", "", line).split()[0] for line in lines[1:]]
        assert sorted(names) == sorted(pipeline.stages)  # each stage exactly once
        summary = next(line for line in lines if "summary" in line)
        assert "reduce · cpu · processes" in summary
        # summary reads four inputs; it hangs under the last one in run order and names the others
        parent = diagram.parent_in_tree(pipeline, "summary", list(the_plan.order))
        assert parent in ("per_batch", "doubled")
        others = {"label", "divisors", "per_batch", "doubled"} - {parent}
        assert all(o in summary.split("also from", 1)[1] for o in others)
        doubled = next(line for line in lines if "doubled" in line and "summary" not in line)
        assert "map · io async · asyncio" in doubled
        # indentation: a child is deeper than its parent
        depth = {n: len(line) - len(line.lstrip(" │├└─")) for n, line in zip(names, lines[1:], strict=False)}
        assert depth["numbers"] < depth["label"] < depth["doubled"]

    def test_cli_tree_shows_kinds_executors_and_options(self) -> None:
        out = cli("show", "cli_skipping", "--executor", "inline", "--dags", str(TEST_DAGS), check=0).stdout
        assert re.search(r"parse\s+map · io · inline\s+on_error=skip", out)
        assert "└──" in out

    def test_side_input_named(self) -> None:
        pipeline = with_side_input()
        from rich.console import Console

        console = Console(width=200, record=True, color_system=None)
        console.print(diagram.tree(pipeline, plan(pipeline, RunOptions())))
        scaled = next(line for line in console.export_text().splitlines() if "scaled" in line)
        assert "retries=2" in scaled


class TestMermaid:
    def test_nodes_shapes_and_edges(self, diamond) -> None:
        pipeline, the_plan = diamond
        text = diagram.mermaid(pipeline, the_plan)
        lines = text.splitlines()
        assert lines[0] == "flowchart TD"
        ids = dict(re.findall(r'^\s+(s\d+)[\[{/(]+"<b>(\w+)</b>', text, re.M))
        assert sorted(ids.values()) == sorted(pipeline.stages)
        by_name = {name: node for node, name in ids.items()}
        edges = set(re.findall(r"^\s+(s\d+) --> (s\d+)$", text, re.M))
        wanted = {(by_name[u], by_name[name]) for name, s in pipeline.stages.items() for u in s.inputs}
        assert edges == wanted
        assert re.search(rf'{by_name["numbers"]}\[/".*"/\]', text)  # a source is a parallelogram
        assert re.search(rf'{by_name["summary"]}\{{\{{".*"\}}\}}', text)  # a reduce is a hexagon

    def test_side_edges_dotted(self) -> None:
        pipeline = with_side_input()
        text = diagram.mermaid(pipeline, plan(pipeline, RunOptions()))
        assert re.search(r"s1 -\. side \.-> s2", text)

    def test_cli_prints_plain_text(self) -> None:
        out = cli("show", "diamond", "--format", "mermaid", "--dags", str(TEST_DAGS), check=0).stdout
        assert out.startswith("flowchart TD\n") and "\x1b[" not in out


class TestDot:
    def test_parses_with_every_stage_and_edge(self, diamond) -> None:
        pipeline, the_plan = diamond
        (graph,) = pydot.graph_from_dot_data(diagram.dot(pipeline, the_plan))
        nodes = {n.get_name().strip('"') for n in graph.get_nodes()} - {"node"}
        assert nodes == set(pipeline.stages)
        edges = {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in graph.get_edges()}
        assert edges == {(u, name) for name, s in pipeline.stages.items() for u in s.inputs}
        summary = graph.get_node('"summary"')[0]
        assert summary.get_shape() == "hexagon"
        assert "reduce · cpu · processes" in summary.get_label()

    def test_keywords_as_names_and_side_edges(self) -> None:
        pipeline = with_side_input()
        (graph,) = pydot.graph_from_dot_data(diagram.dot(pipeline, plan(pipeline, RunOptions())))
        nodes = {n.get_name().strip('"') for n in graph.get_nodes()}
        assert {"node", "graph", "scaled"} <= nodes
        edges = {(e.get_source().strip('"'), e.get_destination().strip('"'), e.get_style()) for e in graph.get_edges()}
        assert edges == {("node", "graph", None), ("node", "scaled", None), ("graph", "scaled", "dashed")}

    def test_cli(self) -> None:
        out = cli("show", "diamond", "--format", "dot", "--dags", str(TEST_DAGS), check=0).stdout
        (graph,) = pydot.graph_from_dot_data(out)
        assert graph.get_name().strip('"') == "diamond"
