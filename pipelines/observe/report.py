"""What a person sees: progress per stage, log records, the summary table, the resume hint.

Built on the run hooks (``hooks.RunObserver``) and ``logging``; the runner knows nothing
about terminals. On a terminal each stage has a live bar; elsewhere (CI, a pipe) every
``$PIPELINES_PROGRESS_INTERVAL`` seconds (default 10) a plain line per stage that moved,
and a line when a stage finishes. Log records, the run's warnings among them, are shown by
``LogView`` (a ``logging`` handler the CLI installs), above the bars while they are live.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from pipelines import settings
from pipelines.observe.display import markup, printable, safe_console
from pipelines.observe.hooks import RunObserver, StageStats

if TYPE_CHECKING:
    from executors import Executor
    from pipelines._engine.plan import Plan
    from pipelines.observe.result import RunResult


def console(stderr: bool = False) -> Console:
    """A console that never hard-wraps lines (a resume command must stay copyable) and never
    passes a control character from data to the terminal (``display.SafeConsole``)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "160"))
    return safe_console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


class ProgressReport(RunObserver):
    """Live progress (bars on a terminal, plain lines elsewhere) and the end-of-run summary."""

    def __init__(
        self,
        out: Console | None = None,
        *,
        store_flag: str = "",
        quiet: bool = False,
        interval: float | None = None,
        log_view: LogView | None = None,
        wide: bool = False,
    ) -> None:
        self.out = out or console()
        self.log_view = log_view
        self.store_flag = store_flag
        self.quiet = quiet
        self.wide = wide
        self.interval = settings.progress_interval() if interval is None else interval
        self._progress: Progress | None = None
        self._lines: ProgressLines | None = None
        self._tasks: dict[str, Any] = {}

    def run_started(self, run_id: str, pipeline: str, plan: Plan, *, resumed: bool) -> None:
        verb = "resuming" if resumed else "run"
        self.out.print(f"[bold]{verb} {run_id}[/bold] · pipeline [cyan]{pipeline}[/cyan]")
        if self.quiet:
            return
        if not self.out.is_terminal:
            self._lines = ProgressLines(self.out, self.interval)
            return
        width = max(len(name) for name in plan.stages)
        self._progress = Progress(  # the bar takes what the other columns leave of the line: nothing is cut
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[note]}"),
            StageTimeColumn(),
            console=self.out,
            transient=False,
            expand=True,
        )
        for name in plan.stages:
            self._tasks[name] = self._progress.add_task(
                markup(f"{name:<{width}}"), total=None, note="", rate="", wall=0.0, at=0.0, running=False
            )
        self._progress.start()
        if self.log_view is not None:
            self.log_view.live = self._progress.console

    def executor_started(self, slot: str, executor: Executor) -> None:
        link = executor.dashboard_link
        if link:
            self._print(f"Dask dashboard: [link={link}]{markup(link)}[/link]")

    def stage_progress(self, stats: StageStats) -> None:
        if self._lines is not None:
            self._lines.update(stats)
        if self._progress is None:
            return
        note = []
        if stats.items_reused:
            note.append(f"{stats.items_reused:,} reused")
        if stats.items_failed:
            note.append(f"[red]{stats.items_failed:,} failed[/red]")
        rate = None if stats.backend == "driver" else stats.items_per_second  # a source's pace is its reader's
        self._progress.update(
            self._tasks[stats.stage],
            completed=stats.items_processed,
            total=stats.items_total,
            note=", ".join(note),
            rate=f"{_rate(rate)}/s" if rate else "",
            wall=stats.wall_seconds,
            at=time.monotonic(),
            running=stats.wall_seconds > 0 and not stats.final,
        )

    def _print(self, text: str) -> None:
        (self._progress.console if self._progress is not None else self.out).print(text)

    def run_finished(self, result: RunResult) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            if self.log_view is not None:
                self.log_view.live = None
        if self.quiet:
            self.out.print(Text(title(result)))
        else:
            table = summary_table(result, wide=self.wide)
            # the wide table asked for every column: it takes the width it needs rather than cut one
            print_whole(self.out, table) if self.wide else self.out.print(table)
        line = outcome_line(result, self.store_flag)
        if line:
            self.out.print(line)
        for line in failed_items_lines(result):
            self.out.print(Text(line))


class ProgressLines:
    """Progress for logs and pipes: every ``interval`` seconds one line per stage that moved or
    has tasks running (a long reduce still says it is alive), and one when a stage finishes
    (a log that fills with bars' redraws helps nobody)."""

    def __init__(self, out: Console, interval: float) -> None:
        self.out = out
        self.interval = interval
        self._next = time.monotonic() + interval
        self._latest: dict[str, StageStats] = {}
        self._shown: dict[str, tuple[int, int | None]] = {}  # stage -> (processed, total) last printed
        self._finished: set[str] = set()

    def update(self, stats: StageStats) -> None:
        name = stats.stage
        self._latest[name] = stats
        if stats.final and name not in self._finished:
            self._finished.add(name)
            self._show(stats)
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        for s in self._latest.values():
            moved = self._shown.get(s.stage) != (s.items_processed, s.items_total)
            if (moved or s.items_in_flight) and s.stage not in self._finished and (s.items_processed or s.wall_seconds):
                self._show(s)

    def _show(self, s: StageStats) -> None:
        self._shown[s.stage] = (s.items_processed, s.items_total)
        self.out.print(progress_line(s), markup=False)


def progress_line(s: StageStats) -> str:
    """``describe: 1,200/2,010 items, 3 failed, 410 items/s, 2.9s`` (``finished`` once final)."""
    if s.final:
        parts = ["finished", _items(s.items_processed)]
    elif s.items_total is not None:
        parts = [f"{s.items_processed:,}/{s.items_total:,} items"]
    else:
        parts = [_items(s.items_processed)]
    if s.items_reused:
        parts.append(f"{s.items_reused:,} reused")
    if s.items_failed:
        parts.append(f"{s.items_failed:,} failed")
    if s.items_per_second and s.backend != "driver":  # a source's pace is its reader's
        parts.append(f"{_rate(s.items_per_second)} items/s")
    parts.append(f"{s.wall_seconds:.1f}s")
    return f"{s.stage}: " + ", ".join(parts)


def _items(n: int) -> str:
    return f"{n:,} item{'' if n == 1 else 's'}"


def _rate(rate: float | None) -> str:
    if rate is None:
        return ""
    return f"{rate:,.1f}" if rate < 10 else f"{rate:,.0f}"


class StageTimeColumn(ProgressColumn):
    """The stage's own wall time (first task to end), ticking while it runs."""

    def render(self, task: Task) -> Text:
        seconds = task.fields["wall"]
        if task.fields["running"]:
            seconds += time.monotonic() - task.fields["at"]
        minutes, secs = divmod(int(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours}:{minutes:02d}:{secs:02d}", style="progress.elapsed")


class LogView(logging.Handler):
    """Shows log records to a person, above the live progress: warnings and errors on stderr.

    By default a record is just its message, as the run's warnings always were; verbose
    lines (``-v``) also say when, how important and where from.
    """

    def __init__(self, *, verbose: bool = False) -> None:
        super().__init__()
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
            if verbose
            else logging.Formatter("%(message)s")
        )
        self._out, self._err = console(), console(stderr=True)
        self.live: Console | None = None  # while progress bars are shown: print there, above them

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            style = (
                "red"
                if record.levelno >= logging.ERROR
                else "yellow"
                if record.levelno >= logging.WARNING
                else "dim"
                if record.levelno < logging.INFO
                else ""
            )
            target = self.live or (self._err if record.levelno >= logging.WARNING else self._out)
            target.print(Text(printable(text, multiline=True), style=style))
        except Exception:
            self.handleError(record)


def title(result: RunResult) -> str:
    """``process_pool · 20261207-101502-7f3a · ok · 2.3s``: the run in one line."""
    since = " since it first started" if result.resumed else ""
    return f"{result.pipeline} · {result.run_id} · {result.status.value} · {result.seconds:.1f}s{since}"


# the wide table's columns; the default one keeps stage, executor, items, rows, time and reason
WIDE_COLUMNS = (
    "stage",
    "executor",
    "batches",
    "reused batches",
    "items",
    "reused items",
    "failed",
    "rows out",
    "wall s",
    "busy s",
    "items/s",
    "recomputed because",
)
NARROW_COLUMNS = ("stage", "executor", "items", "rows", "time", "recomputed because")


def summary_table(result: RunResult, *, wide: bool = False) -> Table:
    """Per stage: where it ran, what it did, what it cost and how fast it went.

    The default table fits 80 columns: stage, executor, items (with the reused and failed
    ones), rows out, the stage's wall time and why it was recomputed. ``wide`` (``--wide``,
    ``-v``) shows every count: ``wall s`` runs from the stage's first task to its end;
    ``busy s`` sums its tasks' times (compute and waiting alike), so ``busy s`` over ``wall s``
    is how many workers it kept busy; ``items/s`` counts the items computed in this run (not
    the reused ones) per wall second, and is left out for sources and tiny counts.
    Nothing is cut: a cell that does not fit wraps.
    """
    table = Table(title=Text(title(result)), title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for column in WIDE_COLUMNS if wide else NARROW_COLUMNS:
        left = column in ("stage", "executor", "recomputed because")
        table.add_column(
            column,
            justify="left" if left else "right",
            overflow="fold",
            no_wrap=wide or column not in ("stage", "recomputed because"),
        )
    for s in result.stages.values():
        failed = Text(f"{s.failed_items:,}", style="red" if s.failed_items else "")
        if wide:
            rate = None if s.backend == "driver" else s.items_per_second
            table.add_row(
                Text(s.stage),
                s.backend,
                str(s.batches),
                str(s.reused_batches),
                f"{s.items:,}",
                f"{s.reused_items:,}",
                failed,
                f"{s.rows:,}",
                f"{s.wall_seconds:.2f}",
                f"{s.seconds:.2f}",
                _rate(rate),
                Text(printable(s.reason or "")),
            )
        else:
            table.add_row(
                Text(s.stage),
                s.backend,
                _items_cell(s),
                f"{s.rows:,}",
                _duration(s.wall_seconds),
                Text(printable(s.reason or "")),
            )
    return table


def print_whole(out: Console, renderable: Any) -> None:
    """Print at the width the renderable needs, wider than the console if need be, rather than cut it."""
    needed = out.measure(renderable, options=out.options.update_width(10_000)).maximum
    width = out.width
    out.width = max(width, needed)
    try:
        out.print(renderable)
    finally:
        out.width = width


def _items_cell(s: Any) -> Text:
    """``1,500``, or ``1,500 (1,497 reused, 3 failed)``: a stage's items, the reused and failed among them."""
    text = Text(f"{s.items:,}")
    notes = []
    if s.reused_items:
        notes.append(Text(f"{s.reused_items:,} reused"))
    if s.failed_items:
        notes.append(Text(f"{s.failed_items:,} failed", style="red"))
    if notes:
        text.append(" (")
        text.append(Text(", ").join(notes))
        text.append(")")
    return text


def _duration(seconds: float) -> str:
    """``0.42s``, ``12.3s``, ``4m05s``: short, whatever the size."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def plural(n: int, word: str) -> str:
    """``1 row``, ``2 rows``, ``1,000 items``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def failed_items_lines(result: RunResult) -> list[str]:
    """What became of the failed items of stages that went on: skipped, or collected into a file."""
    from pipelines.observe.result import RunStatus

    if result.status not in (RunStatus.PARTIAL, RunStatus.FAILED):
        return []
    lines = []
    for s in result.stages.values():
        if not s.failed_items or s.on_error not in ("skip", "collect"):
            continue
        if s.on_error == "skip":
            lines.append(f"{s.stage}: skipped {plural(s.failed_items, 'failed item')}")
        else:
            path = result.dead_letter_path(s.stage) or "the dead-letter table"
            lines.append(f"{s.stage}: collected {plural(s.failed_items, 'failed item')} into {shown_path(path)}")
    return lines


def shown_path(path: str) -> str:
    """A path as a person reads it: relative to here when that is shorter."""
    if "://" in path:
        return path
    relative = os.path.relpath(path)
    return relative if len(relative) < len(path) else path


def outcome_line(result: RunResult, store_flag: str = "") -> str:
    """The one line to copy: what failed and where, with counts, and the command that resumes.

    Returns rich markup; the text that comes from users and exceptions is escaped (markup
    and control characters).
    """
    from pipelines.observe.result import RunStatus

    command = markup(f"{result.resume_command()}{store_flag}")
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
            what = f"{first.failed_items:,} of {plural(first.items, 'item')} failed in stage {first.stage!r}"
        else:
            what = f"{plural(first.failed_items, 'item')} failed in stage {first.stage!r}"
            cause += f" ({first.items - first.failed_items:,} done before the run stopped)"
        more = f" (and {plural(len(failing) - 1, 'more stage')})" if len(failing) > 1 else ""
        verb = "retry them" if result.status is RunStatus.PARTIAL else "resume"
        return f"[red]{markup(what + cause + more)}[/red]; {verb} with: {command}"
    if result.error is not None:
        return f"[red]{markup(result.error)}[/red]; resume with: {command}"
    return f"run {result.status.value}; resume with: {command}"


def _short(text: str, limit: int = 200) -> str:
    """The message on one line; a long one is cut between words, never inside one."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return f"{cut} … (inspect shows it whole)"


def print_error(text: str) -> None:
    """Print ``error: TEXT`` on stderr; never read as markup, control characters escaped."""
    console(stderr=True).print(Text.assemble(("error:", "red"), " ", printable(text)))


def print_table(
    rows: list[dict[str, Any]],
    columns: list[str],
    title: str = "",
    out: Console | None = None,
    whole: tuple[str, ...] = (),
    full: tuple[str, ...] = (),
) -> None:
    """Print rows of data as a table; names and values are shown as they are, not as markup.

    The columns in ``whole`` (ids a person copies) are never cut: on a console too narrow for
    the boxed table, the table drops its box and wraps the other cells rather than cut one.
    The cells of the columns in ``full`` (text a person reads) are shown whole, wrapped;
    other cells are cut at 60 characters.
    """
    out = out or console()
    table = _table(rows, columns, title, whole, full, compact=False)
    if whole and Measurement.get(out, out.options.update(max_width=10**6), table).maximum > out.width:
        table = _table(rows, columns, title, whole, full, compact=True)
    out.print(table)


def table_fits(
    rows: list[dict[str, Any]],
    columns: list[str],
    out: Console,
    whole: tuple[str, ...] = (),
    full: tuple[str, ...] = (),
) -> bool:
    """Whether ``print_table`` shows these rows within ``out``'s width.

    The wrapped table is drawn to see: rich's own measure can promise less than it draws.
    """
    import io

    boxed = _table(rows, columns, "", whole, full, compact=False)
    if Measurement.get(out, out.options.update(max_width=10**6), boxed).maximum <= out.width:
        return True
    sink = io.StringIO()
    Console(file=sink, width=out.width, color_system=None, soft_wrap=True).print(
        _table(rows, columns, "", whole, full, compact=True)
    )
    return all(len(line) <= out.width for line in sink.getvalue().splitlines())


def _table(
    rows: list[dict[str, Any]],
    columns: list[str],
    title: str,
    whole: tuple[str, ...],
    full: tuple[str, ...],
    compact: bool,
) -> Table:
    options: dict[str, Any] = (
        {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True} if compact else {}
    )
    table = Table(title=Text(printable(title)) if title else None, title_justify="left", **options)
    for c in columns:
        texts = [c, *(printable(row.get(c) or "") for row in rows)]
        if c in whole:
            table.add_column(Text(printable(c)), no_wrap=True, min_width=max(map(len, texts)))
        elif compact:  # wrapped between words; a word is split only if nothing else fits
            table.add_column(
                Text(printable(c)), overflow="fold", min_width=max(len(w) for t in texts for w in t.split() or [""])
            )
        else:
            table.add_column(Text(printable(c)))
    for row in rows:
        table.add_row(*(_cell(row.get(c), cut=c not in full) for c in columns))
    return table


def _cell(value: Any, cut: bool = True) -> Text:
    """A table cell: data is shown as it is (``[x]`` in a value is not markup; controls are escaped)."""
    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(f"{value:,.3f}".rstrip("0").rstrip("."))
    if isinstance(value, (bytes, bytearray)):
        return Text(f"<{len(value):,} bytes>")
    text = printable(value)
    return Text(text if len(text) <= 60 or not cut else text[:59] + "…")
