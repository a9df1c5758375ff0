"""``python -m pipelines``: run, resume, list, show, runs, inspect, export, report.

Exit codes scripts can rely on: 0 ok, 1 the run failed, 2 a usage, parameter or definition
error (a short message, no traceback; ``--debug`` shows it), 130 interrupted.
Heavy modules (pyarrow, pandas, executors' backends) load only when a command needs them,
so ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.observe.report import LogView, ProgressReport
    from pipelines.observe.result import RunResult
    from pipelines.store import Store


class ExitCode(enum.IntEnum):
    OK = 0
    RUN_FAILED = 1  # a stage failed beyond its error policy
    USAGE = 2  # bad arguments, unknown pipeline, --param validation, broken dags module
    INTERRUPTED = 130  # Ctrl-C


def _common(*, command: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command's name.

    A command's parser leaves an option it was not given unset (``SUPPRESS``), so that the
    value given before the command is kept rather than overwritten by a default.
    """
    unset = argparse.SUPPRESS if command else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store", metavar="PATH", default=unset, help="store folder (default: $PIPELINES_STORE or ./.pipelines)"
    )
    common.add_argument(
        "--dags", metavar="DIR", default=unset, help="folder of pipeline modules (default: $PIPELINES_DAGS or ./dags)"
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if command else False,
        help="show tracebacks for errors",
    )
    # counted apart after the command (a subcommand's count would replace the one before it); main adds them
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        dest="more_verbose" if command else "verbose",
        default=argparse.SUPPRESS if command else 0,
        help="log more: -v shows INFO records (run plan, stages finished), -vv DEBUG",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if command else False,
        help="no progress: only results, warnings and errors",
    )
    return common


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        metavar="NAME",
        help="run every stage on one executor: inline, threads, processes, asyncio, joblib, dask, ray "
        "(a stage's own executor= still wins)",
    )
    parser.add_argument("--address", metavar="ADDR", help="an existing Dask scheduler (tcp://...) or Ray cluster")
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default: CPU count)")
    parser.add_argument(
        "--keep-cluster",
        action="store_true",
        help="keep a started Dask cluster and its dashboard up after the run, until Ctrl-C",
    )
    parser.add_argument(
        "--output", metavar="DIR", help="write the final stages as Parquet here (default: the run's outputs/ folder)"
    )
    parser.add_argument(
        "--wide",
        action="store_true",
        help="the summary with every column: batches, reused batches, wall and busy seconds, items/s (-v too)",
    )


def build_parser() -> argparse.ArgumentParser:
    common = _common(command=True)
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        parents=[_common(command=False)],
        description="Declarative data pipelines: parallel stages, Arrow checkpoints, exact resume.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", parents=[common], help="run a pipeline", description="Run pipeline NAME from the dags folder."
    )
    run.add_argument("name", help="pipeline name (see `list`)")
    run.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pipeline parameter (repeatable); validated against the pipeline's params model",
    )
    run.add_argument(
        "--fresh",
        nargs="?",
        action="append",
        const="*",
        metavar="STAGE",
        help="recompute instead of reusing: all stages, or STAGE and what depends on it (repeatable)",
    )
    _run_options(run)

    resume = sub.add_parser(
        "resume",
        parents=[common],
        help="continue a failed or interrupted run",
        description="Reuse what RUN_ID finished; compute failed items and unfinished batches.",
    )
    resume.add_argument("run_id", help="a run id (see `runs`), `latest`, or a pipeline's name (its latest run)")
    resume.add_argument("--pipeline", metavar="NAME", help="`latest` means the latest run of pipeline NAME")
    resume.add_argument(
        "--module",
        metavar="MODULE",
        help="the module (a name, or a .py file) that defines the pipeline, for a run started from a script",
    )
    _run_options(resume)

    sub.add_parser("list", parents=[common], help="list the pipelines in the dags folder")
    show = sub.add_parser(
        "show",
        parents=[common],
        help="show a pipeline's DAG: stages, kinds, executors",
        description="Show pipeline NAME as a tree (default), a table, or Mermaid or Graphviz "
        "DOT text for docs (`show NAME --format mermaid > dag.mmd`).",
    )
    show.add_argument("name")
    show.add_argument(
        "--format",
        choices=("tree", "table", "mermaid", "dot"),
        default="tree",
        help="tree (default), table (every option and docstring), mermaid, dot",
    )
    show.add_argument("--executor", metavar="NAME", help="plan as if run with --executor NAME")
    runs = sub.add_parser("runs", parents=[common], help="list recent runs")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="runs to list, newest first (default 20)")
    inspect = sub.add_parser("inspect", parents=[common], help="show a run's stages, rows and failed items")
    inspect.add_argument("run_id", help="a run id, or `latest`")
    inspect.add_argument("stage", nargs="?")
    inspect.add_argument("--rows", type=int, default=5, metavar="N", help="rows and failed items to show (default 5)")
    inspect.add_argument("--pipeline", metavar="NAME", help="`latest` means the latest run of pipeline NAME")
    export = sub.add_parser(
        "export",
        parents=[common],
        help="write a stage of a past run to a file",
        description="Write stage STAGE of run RUN (a run id, `latest`, or a pipeline's name) "
        "to FILE: Parquet, CSV or Arrow IPC, after its extension.",
    )
    export.add_argument("run_id", metavar="RUN", help="a run id, `latest`, or a pipeline's name (its latest run)")
    export.add_argument("stage")
    export.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="the file to write: .parquet, .csv or .arrow (also .feather, .ipc)",
    )
    export.add_argument("--pipeline", metavar="NAME", help="`latest` means the latest run of pipeline NAME")
    report = sub.add_parser(
        "report",
        parents=[common],
        help="write a run's report as one HTML file",
        description="Write the report of run RUN (a run id, `latest`, or a pipeline's name) as "
        "one self-contained HTML file: the DAG, the stages, a timeline of every task "
        "per worker, items per second over time, the failed items.",
    )
    report.add_argument("run_id", metavar="RUN", help="a run id, `latest`, or a pipeline's name (its latest run)")
    report.add_argument(
        "-o", "--output", default="report.html", metavar="FILE", help="the HTML file to write (default report.html)"
    )
    report.add_argument("--pipeline", metavar="NAME", help="`latest` means the latest run of pipeline NAME")
    from pipelines.cli.upkeep import add_commands

    add_commands(sub, common)  # gc, repair
    return parser


# option: (smallest value allowed, what to call it); checked before anything runs
_COUNTS = {
    "workers": (1, "a positive integer"),
    "limit": (1, "a positive integer"),
    "rows": (0, "zero or a positive integer"),
}
# options that name something: an empty value would silently mean the default
_NAMES = ("store", "dags", "executor", "address", "output")


def max_local_workers() -> int:
    """The most ``--workers`` a run on this machine may ask for: 4 per CPU, at least 32.

    Each worker is a process started up front; thousands of them exhaust memory and
    process limits long before they help. A cluster given by ``--address`` has no limit here.
    """
    return max(32, 4 * (os.cpu_count() or 1))


def check_counts(args: argparse.Namespace) -> None:
    """Refuse ``--workers 0``, ``--limit -1``, ``--store ""``, ``--workers 10000`` and the like.

    Raises:
        UsageError: naming the option and the value.
    """
    from pipelines.errors import UsageError

    for option, (least, wanted) in _COUNTS.items():
        value = getattr(args, option, None)
        if value is not None and value < least:
            raise UsageError(f"--{option} must be {wanted}, not {value}")
    for option in _NAMES:
        value = getattr(args, option, None)
        if value is not None and not value.strip():
            raise UsageError(f"--{option} is empty; give a value, or leave the option out for the default")
    check_output_folder(getattr(args, "output", None))
    workers, most = getattr(args, "workers", None), max_local_workers()
    if workers is not None and workers > most and not getattr(args, "address", None):
        raise UsageError(
            f"--workers {workers} is more than this machine can run: at most {most} "
            f"(4 per CPU, at least 32), or use a cluster with --address"
        )


def check_output_folder(output: str | None) -> None:
    """Refuse an ``--output`` that cannot become a folder before the run, not after it.

    Raises:
        UsageError: ``output`` (or a folder above it) is an existing file.
    """
    from pipelines.errors import UsageError

    if not output or "://" in output:
        return
    path = os.path.abspath(output)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        shown = output if path == os.path.abspath(output) else path
        raise UsageError(f"--output {output} cannot be a folder: {shown} is a file; give a folder")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose += vars(args).pop("more_verbose", 0)
    try:
        code = int(_dispatch(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = ExitCode.INTERRUPTED
    except Exception as exc:
        known = _exit_code(exc)
        if args.debug or known is None:
            import traceback

            traceback.print_exc()
        from pipelines.observe.report import print_error

        print_error(str(exc))
        code = known if known is not None else ExitCode.RUN_FAILED
    if code == ExitCode.INTERRUPTED:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Exit without joining threads: after Ctrl-C a thread may be stuck inside an item
    (Python cannot stop it), and the interpreter would wait for it at exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_code(exc: BaseException) -> ExitCode | None:
    """USAGE for the errors a person fixes by editing a command or a module; None: a bug."""
    from executors import BackendUnavailableError, UnknownExecutorError
    from pipelines.errors import (
        CheckpointError,
        ConversionError,
        DefinitionError,
        LoadError,
        ParamError,
        RunLockedError,
        StageFailed,
        UsageError,
    )

    if isinstance(
        exc,
        (
            DefinitionError,
            LoadError,
            ParamError,
            UsageError,
            RunLockedError,
            UnknownExecutorError,
            BackendUnavailableError,
        ),
    ):
        return ExitCode.USAGE
    if isinstance(exc, (StageFailed, CheckpointError, ConversionError)):  # e.g. stored parts that disagree
        return ExitCode.RUN_FAILED
    if type(exc).__module__.startswith("executors"):  # e.g. an unreachable --address
        return ExitCode.USAGE
    return None


def _dispatch(args: argparse.Namespace) -> int:
    check_counts(args)
    if args.command == "list":
        return _list(args)  # reads files, logs nothing: it stays free of rich
    with _logs_shown(args.verbose) as view:
        if args.command in ("run", "resume"):
            return _run(args, view)
        from pipelines.cli import upkeep, views

        command: Callable[[argparse.Namespace], int] = getattr(
            upkeep if args.command in ("gc", "repair") else views, f"cmd_{args.command}"
        )
        return command(args)


LOGGERS = ("pipelines", "executors", "stages")


@contextlib.contextmanager
def _logs_shown(verbose: int) -> Iterator[LogView]:
    """Show log records while a command works: warnings and errors; with -v INFO, with -vv DEBUG.

    The handler sits on the root logger, so a warning from any library (or a stage) is shown
    the same way, above the progress bars; the levels of our own packages set how much more.
    """
    from pipelines.observe.report import LogView

    view = LogView(verbose=verbose > 0)
    # other libraries' chatter (distributed logs every worker leaving at INFO) stays out; their
    # warnings and errors are shown
    view.addFilter(lambda record: record.levelno >= logging.WARNING or record.name.partition(".")[0] in LOGGERS)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [lg.level for lg in loggers]
    root = logging.getLogger()
    root.addHandler(view)
    for lg in loggers:
        lg.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    try:
        yield view
    finally:
        root.removeHandler(view)
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def _list(args: argparse.Namespace) -> int:
    from pipelines.define.loader import dags_dir, discover

    folder = dags_dir(args.dags)
    found = discover(folder)
    if not found:
        print(f"no pipelines in {folder} (use --dags DIR or $PIPELINES_DAGS)", file=sys.stderr)
        return ExitCode.OK
    import shutil
    import textwrap

    from pipelines.observe.display import printable

    columns = shutil.get_terminal_size((160, 24)).columns  # $COLUMNS, else the terminal's width
    width = max(len(p.name) for p in found)
    narrow = columns - width - 2 < 30  # too little room beside the names: each doc goes under its name
    for info in found:  # a docstring is data too: no control character reaches the terminal
        name, doc = printable(info.name), printable(info.doc)
        if narrow:
            print(name)
            lead = follow = "    "
        else:
            lead, follow = f"{name:<{width}}  ", " " * (width + 2)
        # the doc is wrapped, never cut; the name is never split
        print(
            textwrap.fill(doc, columns, initial_indent=lead, subsequent_indent=follow, break_on_hyphens=False)
            or lead.rstrip()
        )
    return ExitCode.OK


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    from pipelines.errors import ParamError

    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"--param {pair!r} is not KEY=VALUE")
        key = key.strip()
        if key in params:
            raise ParamError(f"--param {key} is given twice ({key}={params[key]}, {key}={value}); give it once")
        params[key] = value
    return params


def _run(args: argparse.Namespace, view: LogView) -> int:
    import executors
    from pipelines._engine.plan import RunOptions
    from pipelines._engine.runner import Runner
    from pipelines.api import resume
    from pipelines.define import loader
    from pipelines.observe.report import ProgressReport
    from pipelines.observe.result import RunStatus
    from pipelines.store import Store

    if args.executor:
        executors.check_name(args.executor)
        executors.executor_class(args.executor)  # a missing optional dependency is a usage error now
    store_flag = f" --store {shlex.quote(args.store)}" if args.store else ""
    report = ProgressReport(store_flag=store_flag, quiet=args.quiet, log_view=view, wide=args.wide or args.verbose > 0)
    with Store(args.store) as store:
        if args.command == "run":
            pipeline = loader.load(args.name, args.dags)
            fresh: bool | frozenset[str] = False
            if args.fresh:
                fresh = True if "*" in args.fresh else frozenset(args.fresh)
            options = RunOptions(
                executor=args.executor,
                address=args.address,
                max_workers=args.workers,
                fresh=fresh,
                keep_cluster=args.keep_cluster,
            )
            runner = Runner(
                pipeline,
                params=parse_params(args.param),
                options=options,
                store=store,
                observers=[report],
                dags_dir=str(loader.dags_dir(args.dags)),
            )
            result = runner.run()
        else:
            from pipelines.store.past import find_run

            row = find_run(store, args.run_id, args.pipeline)
            in_module = loader.pipeline_in_module(args.module, row["pipeline"]) if args.module else None
            result = resume(
                row["id"],
                store=store,
                observers=[report],
                executor=args.executor,
                pipeline=in_module,
                address=args.address,
                max_workers=args.workers,
                keep_cluster=args.keep_cluster or None,
            )
        if result.ok:
            _write_outputs(result, store, args.output, report)
    for cluster in result.clusters:  # --keep-cluster: the dashboard stays up until Ctrl-C
        join = cluster.join_hint or f"--address {cluster.scheduler_address}"
        report.out.print(
            f"cluster kept up: dashboard {cluster.dashboard_link}, scheduler "
            f"{cluster.scheduler_address} (other runs join with: {join}); Ctrl-C to stop it",
            markup=False,
            soft_wrap=True,
        )
        cluster.wait_until_interrupted()
    if result.status is RunStatus.INTERRUPTED:
        return ExitCode.INTERRUPTED
    return ExitCode.OK if result.ok else ExitCode.RUN_FAILED


def _write_outputs(result: RunResult, store: Store, output: str | None, report: ProgressReport) -> None:
    """Write the final stages as Parquet and say where; show their first rows unless quiet."""
    from pipelines.observe.report import plural, print_table, shown_path
    from pipelines.store.outputs import export_parquet, read_stage

    directory = output or store.run_data(result.run_id, "outputs")
    for leaf in result.leaves:
        table = read_stage(store, result.run_id, leaf)
        if table.num_columns == 0:
            continue
        if not report.quiet:
            rows = table.slice(0, 20).to_pylist()
            more = f" (first 20 of {table.num_rows:,})" if table.num_rows > 20 else ""
            print_table(rows, table.column_names, title=f"{leaf}{more}", out=report.out)
        path = export_parquet(store, result.run_id, leaf, directory)
        line = f"{leaf}: {plural(table.num_rows, 'row')} → {shown_path(path)}"
        if len(line) > report.out.width:  # the path on a line of its own, whole, so that it can be copied
            line = f"{leaf}: {plural(table.num_rows, 'row')} →\n  {shown_path(path)}"
        report.out.print(line, markup=False)
