"""Read-only commands: ``show`` a pipeline, list ``runs``, ``inspect`` a run's stages, ``export`` one."""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import os
import re
import sys
import textwrap
from typing import TYPE_CHECKING

from rich.text import Text

from pipelines.errors import ConversionError, UsageError
from pipelines.observe.display import markup, printable
from pipelines.observe.report import console, plural, print_table, table_fits
from pipelines.store.past import find_run, run_items, run_status

if TYPE_CHECKING:
    from rich.console import Console

    from pipelines.store import Store


def cmd_show(args: argparse.Namespace) -> int:
    from pipelines._engine.plan import RunOptions, plan
    from pipelines.cli import diagram
    from pipelines.define import loader

    if args.executor:
        import executors

        executors.check_name(args.executor)  # UnknownExecutorError, with "did you mean"
    pipeline = loader.load(args.name, args.dags)
    the_plan = plan(pipeline, RunOptions(executor=args.executor))
    if args.format in ("mermaid", "dot"):  # plain text for files and docs: no colours, no wrapping
        sys.stdout.write(getattr(diagram, args.format)(pipeline, the_plan))
        return 0
    out = console()
    out.print(f"[bold]{pipeline.name}[/bold] ({markup(pipeline.module)})")
    if pipeline.description:  # the tree is a glance: the summary line; the table gives everything
        text = pipeline.description if args.format == "table" else pipeline.description_line()
        out.print(wrapped(printable(text, multiline=True), out.width, "  "), markup=False)
    if pipeline.params_model is not None:
        fields = pipeline.params_model.model_fields
        line = printable(f"params: {', '.join(f'{n}={f.default!r}' for n, f in fields.items())}")
        out.print(wrapped(line, out.width, more="  "), markup=False)
        for n, f in fields.items():  # what each one means, where the model says
            if f.description:
                out.print(wrapped(printable(f"{n}: {f.description}"), out.width, "  ", more="  "), markup=False)
    if args.format == "tree":
        out.print(diagram.tree(pipeline, the_plan), soft_wrap=False)  # a long label wraps under itself
        return 0
    rows = []
    for name in the_plan.order:
        stage = pipeline.stages[name]
        options = diagram.options(stage)
        if stage.side:
            options.append(f"side={','.join(stage.side)}")
        rows.append(
            {
                "stage": name,
                "granularity": stage.granularity,
                "kind": diagram.kind(stage),
                "executor": the_plan.stages[name].backend,
                "inputs": ", ".join(stage.inputs),
                "options": " ".join(options),
                "doc": stage.doc,
            }
        )
    columns = ["stage", "granularity", "kind", "executor", "inputs", "options", "doc"]
    whole, full = ("stage",), ("doc", "options", "inputs")
    if table_fits(rows, columns, out, whole, full):
        print_table(rows, columns, out=out, whole=whole, full=full)
        return 0
    for row in rows:  # too narrow for the table, even wrapped: a block of lines per stage
        out.print(printable(f"{row['stage']}  {row['granularity']} · {row['kind']} · {row['executor']}"), markup=False)
        for label in ("inputs", "options"):
            if row[label]:
                out.print(wrapped(printable(f"{label}: {row[label]}"), out.width, "    ", more="  "), markup=False)
        if row["doc"]:
            out.print(wrapped(printable(row["doc"], multiline=True), out.width, "    "), markup=False)
    return 0


def wrapped(text: str, width: int, indent: str = "", more: str | None = None) -> str:
    """``text`` indented and wrapped to ``width``, never cut.

    Lines that fit are kept as they are (a docstring's own layout). A paragraph of prose
    (unindented lines up to a blank line or a list item) with a line too long is filled
    again as a whole; a longer indented line (code, a table) is wrapped alone, its
    continuation indented by ``more`` (default four spaces) beyond its own indent.
    """
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        lead = line[: len(line) - len(line.lstrip())]
        if not line.strip():
            out.append("")
            i += 1
            continue
        if not lead and more is None:
            j = i + 1
            while j < len(lines) and lines[j].strip() and not lines[j][0].isspace() and not _LIST_ITEM.match(lines[j]):
                j += 1
            paragraph, i = lines[i:j], j
            if all(len(indent) + len(p) <= width for p in paragraph):
                out += [indent + p for p in paragraph]
            else:
                text = " ".join(p.strip() for p in paragraph)
                out += textwrap.wrap(
                    text,
                    max(width, len(indent) + 20),
                    initial_indent=indent,
                    subsequent_indent=indent,
                    break_on_hyphens=False,
                )
            continue
        i += 1
        if len(indent) + len(line) <= width:
            out.append(indent + line)
            continue
        first = indent + lead
        extra = "    " if more is None else more
        room = max(width, len(first) + len(extra) + 20)  # a narrow terminal: wrap as little as it takes
        out += textwrap.wrap(
            line.strip(), room, initial_indent=first, subsequent_indent=first + extra, break_on_hyphens=False
        )
    return "\n".join(out)


_LIST_ITEM = re.compile(r"[-*•] |\d+[.)] ")


def _store(args: argparse.Namespace) -> Store:
    from pipelines.store import Store

    return Store(args.store, read_only=True)  # these commands only read: a read-only mount works


def cmd_runs(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = []
        for r in store.ledger.runs(args.limit):
            started = dt.datetime.fromtimestamp(r["started"]).strftime("%Y-%m-%d %H:%M:%S") if r["started"] else ""
            duration = f"{r['ended'] - r['started']:.1f}s" if r["ended"] and r["started"] else ""
            rows.append(
                {
                    "run": r["id"],
                    "pipeline": r["pipeline"],
                    "status": run_status(store, r),
                    "started": started,
                    "duration": duration,
                    "items": f"{run_items(store, r):,}",
                    "failed": f"{r['failed'] or 0:,}",
                }
            )
        if not rows:
            console().print(f"no runs in {store.root}", markup=False)
            return 0
        print_table(
            rows, ["run", "pipeline", "status", "started", "duration", "items", "failed"], whole=("run", "pipeline")
        )
        from pipelines.cli.upkeep import size_line

        console().print(size_line(store), markup=False)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pipelines.store.outputs import read_stage

    with _store(args) as store:
        row = find_run(store, args.run_id, getattr(args, "pipeline", None))
        run_id = row["id"]
        stages = store.ledger.stages(run_id)
        out = console()
        out.print(
            f"[bold]{markup(run_id)}[/bold] · {markup(row['pipeline'])} · {run_status(store, row)} · files under "
            f"{markup(os.path.relpath(store.run_dir(run_id)))}"
        )
        if args.stage is None:
            rows = [
                {
                    "stage": s["stage"],
                    "status": s["status"],
                    "executor": s["executor"],
                    "batches": s["batches"],
                    "reused": s["reused"],
                    "items": s["items"],
                    "failed": s["failed"],
                    "reason": s["reason"],
                }
                for s in stages.values()
            ]
            print_table(
                rows, ["stage", "status", "executor", "batches", "reused", "items", "failed", "reason"], out=out
            )
            errors = store.ledger.open_errors(run_id)
            if errors:
                out.print(f"{plural(len(errors), 'failed item')}; `inspect {run_id} STAGE` shows them", markup=False)
            return 0
        if args.stage not in stages:
            close = difflib.get_close_matches(args.stage, list(stages), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"run {run_id} has no stage {args.stage!r}{hint}; stages: {', '.join(stages)}")
        try:
            table = read_stage(store, run_id, args.stage)
        except ConversionError as exc:  # parts written before the stage's schema was fixed
            from pipelines.observe.report import print_error

            print_error(str(exc))
            _print_errors(out, store, run_id, args.stage, shown=max(args.rows, 1), everything=args.debug)
            return 1
        out.print(f"stage [cyan]{markup(args.stage)}[/cyan]: {table.num_rows:,} rows")
        out.print("schema:")  # the engine's own metadata (how values were encoded) is not the user's business
        out.print(
            textwrap.indent(
                printable(
                    table.schema.to_string(show_field_metadata=False, show_schema_metadata=False), multiline=True
                ),
                "  ",
            ),
            markup=False,
        )
        if table.num_rows and args.rows:
            print_table(
                table.slice(0, args.rows).to_pylist(), table.column_names, title=f"first {args.rows} rows", out=out
            )
        _print_errors(out, store, run_id, args.stage, shown=max(args.rows, 1), everything=args.debug)
    return 0


def _print_errors(out: Console, store: Store, run_id: str, stage: str, *, shown: int, everything: bool) -> None:
    """Each failed item (the first ``shown``): where, why, its input and its whole traceback."""
    from pipelines.observe.report import plural
    from pipelines.observe.tracebacks import readable
    from pipelines.store.deadletter import dead_letter_path

    errors = store.ledger.open_errors(run_id, stage)
    if not errors:
        return
    more = f"; the first {shown} (--rows N for more)" if len(errors) > shown else ""
    out.print(Text(f"{plural(len(errors), 'failed item')}{more}:", style="red"))
    for e in errors[:shown]:
        where = e.where
        out.print(printable(f"{where}: {e.error_type}: {e.message} (attempts: {e.attempts})"), markup=False)
        if e.input:
            out.print(printable(f"    input: {e.input[:200]}"), markup=False)
        if e.traceback.strip():
            out.print(
                textwrap.indent(printable(readable(e.traceback, everything=everything), multiline=True), "    "),
                markup=False,
            )
    path = dead_letter_path(store, run_id, stage)
    if os.path.exists(path):
        out.print(f"dead-letter table: {os.path.relpath(path)}", markup=False)


def cmd_export(args: argparse.Namespace) -> int:
    from pipelines.cli.export import write
    from pipelines.store.outputs import read_stage

    with _store(args) as store:
        row = find_run(store, args.run_id, args.pipeline)
        table = read_stage(store, row["id"], args.stage)
    path = write(table, args.output)
    console().print(f"{args.stage} of run {row['id']}: {plural(table.num_rows, 'row')} → {path}", markup=False)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.observe.html_report import write_report

    with _store(args) as store:
        path, result = write_report(store, args.run_id, args.output, pipeline=args.pipeline)
    console().print(f"report of run {result.run_id} ({result.pipeline}) → {path}", markup=False)
    return 0
