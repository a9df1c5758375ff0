"""What a person sees: progress bars per stage, the summary table, the resume hint.

Built on the run hooks (``hooks.RunObserver``); the runner knows nothing about terminals.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .hooks import RunObserver, StageStats

if TYPE_CHECKING:
    from .plan import Plan
    from .result import RunResult


def console(stderr: bool = False) -> Console:
    """A console that never hard-wraps lines (a resume command must stay copyable)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "160"))
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


class ProgressReport(RunObserver):
    """Live progress bars (on a terminal) and the end-of-run summary."""

    def __init__(self, out: Console | None = None, *, store_flag: str = "", quiet: bool = False) -> None:
        self.out = out or console()
        self.err = console(stderr=True)
        self.store_flag = store_flag
        self.quiet = quiet
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}

    def run_started(self, run_id: str, pipeline: str, plan: Plan, *, resumed: bool) -> None:
        verb = "resuming" if resumed else "run"
        self.out.print(f"[bold]{verb} {run_id}[/bold] · pipeline [cyan]{pipeline}[/cyan]")
        if self.quiet or not self.out.is_terminal:
            return
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=self.out, transient=False)
        for name, sp in plan.stages.items():
            self._tasks[name] = self._progress.add_task(f"{name:<16} [dim]{sp.backend}[/dim]", total=None, note="")
        self._progress.start()

    def executor_started(self, slot: str, executor: Any) -> None:
        link = getattr(executor, "dashboard_link", None)
        if link:
            self._print(f"Dask dashboard: [link={link}]{escape(link)}[/link]")

    def stage_progress(self, stats: StageStats) -> None:
        if self._progress is None:
            return
        done = stats.items_done + stats.items_reused
        note = []
        if stats.items_reused:
            note.append(f"{stats.items_reused} reused")
        if stats.items_failed:
            note.append(f"[red]{stats.items_failed} failed[/red]")
        self._progress.update(self._tasks[stats.stage], completed=done,
                              total=done if stats.final else None, note=", ".join(note))

    def message(self, text: str, *, level: str = "info") -> None:
        style = {"warning": "yellow", "error": "red"}.get(level, "")
        text = escape(text)
        self._print(f"[{style}]{text}[/{style}]" if style else text, stderr=level in ("warning", "error"))

    def _print(self, text: str, stderr: bool = False) -> None:
        target = self._progress.console if self._progress is not None else (self.err if stderr else self.out)
        target.print(text)

    def run_finished(self, result: RunResult) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.out.print(summary_table(result))
        line = outcome_line(result, self.store_flag)
        if line:
            self.out.print(line)


def summary_table(result: RunResult) -> Table:
    table = Table(title=f"{result.pipeline} · {result.run_id} · {result.status.value} · {result.seconds:.1f}s",
                  title_justify="left")
    for column, justify in (("stage", "left"), ("executor", "left"), ("batches", "right"),
                            ("reused batches", "right"), ("items", "right"), ("reused items", "right"),
                            ("failed", "right"), ("rows out", "right"), ("cpu s", "right"),
                            ("recomputed because", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for s in result.stages.values():
        table.add_row(s.stage, s.backend, str(s.batches), str(s.reused_batches), f"{s.items:,}",
                      f"{s.reused_items:,}", f"[red]{s.failed_items:,}[/red]" if s.failed_items else "0",
                      f"{s.rows:,}", f"{s.seconds:.2f}", Text(s.reason or ""))
    return table


def outcome_line(result: RunResult, store_flag: str = "") -> str:
    """The one line to copy: what failed and where, with counts, and the command that resumes.

    Returns rich markup; the text that comes from users and exceptions is escaped.
    """
    from .result import RunStatus

    command = escape(f"{result.resume_command()}{store_flag}")
    if result.status is RunStatus.OK:
        return ""
    if result.status is RunStatus.INTERRUPTED:
        return f"[yellow]interrupted[/yellow]; resume with: {command}"
    failing = [s for s in result.stages.values() if s.failed_items]
    if failing:
        first = failing[0]
        errors = [e for e in result.failures if e.stage == first.stage]
        cause = ""
        if errors:  # the first failed item: why, and where it is in the input
            where = f" at {errors[0].where}" if first.failed_items == 1 else f", the first at {errors[0].where}"
            cause = f" ({errors[0].error_type}: {_short(errors[0].message)}){where}"
        if result.status is RunStatus.PARTIAL:  # the stage went on: the counts are final
            what = f"{first.failed_items:,} of {first.items + first.failed_items:,} items failed in stage {first.stage!r}"
        else:
            what = (f"{first.failed_items:,} item{'s' if first.failed_items > 1 else ''} failed in stage "
                    f"{first.stage!r}")
            cause += f" ({first.items:,} done before the run stopped)"
        more = f" (and {len(failing) - 1} more stage(s))" if len(failing) > 1 else ""
        verb = "retry them" if result.status is RunStatus.PARTIAL else "resume"
        return f"[red]{escape(what + cause + more)}[/red]; {verb} with: {command}"
    if result.error is not None:
        return f"[red]{escape(str(result.error))}[/red]; resume with: {command}"
    return f"run {result.status.value}; resume with: {command}"


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_error(text: str) -> None:
    """Print ``error: TEXT`` on stderr; the text is printed as is, never read as markup."""
    console(stderr=True).print(Text.assemble(("error:", "red"), " ", text))


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str = "", out: Console | None = None) -> None:
    """Print rows of data as a table; names and values are shown as they are, not as markup."""
    table = Table(title=Text(title) if title else None, title_justify="left")
    for c in columns:
        table.add_column(Text(c))
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    (out or console()).print(table)


def _cell(value: Any) -> Text:
    """A table cell: data is shown as it is (``[x]`` in a value is not markup)."""
    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(f"{value:,.3f}".rstrip("0").rstrip("."))
    if isinstance(value, (bytes, bytearray)):
        return Text(f"<{len(value):,} bytes>")
    text = str(value)
    return Text(text if len(text) <= 60 else text[:59] + "…")


def is_terminal() -> bool:
    return sys.stdout.isatty()
