"""What a person sees of a run: progress (live bars or plain lines), the summary table, log records.

The CLI runs are real subprocesses on ``tests/dags/slowed.py`` (whose output is not a terminal,
so progress comes as plain lines); the hooks, totals and log handlers are also checked in
process, where a failure names the number that went wrong.
"""

from __future__ import annotations

import ast
import io
import logging
import re
from pathlib import Path

import pytest
from rich.console import Console

import pipelines
from pipelines.observe.hooks import Observers, StageStats
from pipelines.observe.report import ProgressLines, progress_line, summary_table
from tests.conftest import ROOT, TEST_DAGS, cli

N, DELAY, TALLY_DELAY = 100, 0.02, 0.3  # slowed: two maps of N items (DELAY s each) and a reduce
SLOWED = (
    "run",
    "slowed",
    "--dags",
    str(TEST_DAGS),
    "--param",
    f"n={N}",
    "--param",
    f"delay={DELAY}",
    "--param",
    f"tally_delay={TALLY_DELAY}",
    "--wide",
)
FAST = {"PIPELINES_PROGRESS_INTERVAL": "0.1"}
PROGRESS = re.compile(r"^(numbers|warm_up|cool_down|tally): (finished, )?[\d,]+(/[\d,]+)? items?,", re.MULTILINE)


LEFT_ALIGNED = {"stage", "executor", "recomputed because"}


def summary_rows(text: str) -> dict[str, dict[str, str]]:
    """The run's summary table as {stage: {column: cell}}, read from the printed text.

    A left-aligned cell starts under its header and runs to the next header; a right-aligned
    one ends where its header ends and starts where the cell before it ended.
    """
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["stage", "executor"])
    spans = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[header])]
    regions, end = [], 0
    for i, (start, stop, name) in enumerate(spans):
        region = (start, spans[i + 1][0] if i + 1 < len(spans) else 10_000) if name in LEFT_ALIGNED else (end, stop)
        regions.append(region)
        end = region[1]
    rows = {}
    for line in lines[header + 2 :]:
        if not line.strip() or not line.startswith(" "):
            break
        cells = [line[a:b].strip() for a, b in regions]
        rows[cells[0]] = {name: cell for (_, _, name), cell in zip(spans, cells, strict=False)}
    return rows


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CLI run whose output is a pipe, with progress lines every 0.1 s."""
    store = tmp_path_factory.mktemp("store")
    return cli(*SLOWED, "--store", str(store), env=FAST, check=0).stdout


class TestPlainProgress:
    def test_periodic_lines_show_counts_totals_rates_and_time(self, plain_run: str) -> None:
        moving = re.findall(
            r"^(warm_up|cool_down): (\d+)/(\d+) items, ([\d,.]+) items/s, (\d+\.\d)s$", plain_run, re.MULTILINE
        )
        assert moving, plain_run
        assert all(int(total) == N and int(done) <= N for _, done, total, _, _ in moving), moving
        assert all(float(rate.replace(",", "")) > 0 for *_, rate, _ in moving), moving

    def test_each_stage_says_when_it_finished(self, plain_run: str) -> None:
        for stage, items in (("numbers", N), ("warm_up", N), ("cool_down", N), ("tally", 1)):
            found = re.findall(rf"^{stage}: finished, {items:,} items?, .*s$", plain_run, re.MULTILINE)
            assert len(found) == 1, (stage, plain_run)

    def test_lines_come_before_the_summary(self, plain_run: str) -> None:
        last_line = max(m.start() for m in PROGRESS.finditer(plain_run))
        assert last_line < plain_run.index("slowed · ")

    def test_quiet_prints_no_progress_and_no_summary(self, tmp_path: Path) -> None:
        out = cli(*SLOWED, "--store", str(tmp_path), "-q", env={"PIPELINES_PROGRESS_INTERVAL": "0"}, check=0).stdout
        assert not PROGRESS.search(out), out
        assert "slowed · " in out and "stage" not in out  # the outcome, no table
        assert re.search(r"^tally: 1 row → .*tally\.parquet$", out, re.MULTILINE), out  # the results' paths

    def test_a_stage_that_did_not_move_is_not_repeated(self) -> None:
        out = Console(file=io.StringIO(), width=200)
        lines = ProgressLines(out, interval=0)
        still = stats("warm_up", done=5, total=10, wall=1.0)
        lines.update(still)
        lines.update(still)
        lines.update(stats("warm_up", done=20, total=20, wall=2.0, final=True))
        lines.update(stats("warm_up", done=20, total=20, wall=2.0, final=True))
        assert out.file.getvalue().splitlines() == [  # type: ignore[attr-defined]
            "warm_up: 5/10 items, 1.0s",
            "warm_up: finished, 20 items, 10 items/s, 2.0s",
        ]

    def test_a_long_task_still_says_it_is_alive(self, tmp_path: Path) -> None:
        """A reduce that works for a while, its count unchanged, gets a line every interval."""
        args = (*SLOWED[:-3], "--param", "tally_delay=2.5")
        out = cli(*args, "--store", str(tmp_path), env={"PIPELINES_PROGRESS_INTERVAL": "0.5"}, check=0).stdout
        alive = [float(t) for t in re.findall(r"^tally: 0/1 items, (\d+\.\d)s$", out, re.MULTILINE)]
        assert len(alive) >= 2 and alive == sorted(alive) and alive[-1] >= 1.0, out

    def test_line_without_a_total_and_with_reuse_and_failures(self) -> None:
        line = progress_line(stats("describe", done=1200, total=None, wall=3.0, reused=50, failed=3))
        assert line == "describe: 1,253 items, 50 reused, 3 failed, 400 items/s, 3.0s"


def stats(
    stage: str, *, done: int, total: int | None, wall: float, reused: int = 0, failed: int = 0, final: bool = False
) -> StageStats:
    return StageStats(
        stage=stage,
        backend="threads",
        items_done=done,
        items_reused=reused,
        items_failed=failed,
        items_in_flight=0,
        batches_final=0,
        batches_seen=1,
        final=final,
        seconds=wall,
        items_total=total,
        wall_seconds=wall,
    )


class TestSummary:
    def test_columns_and_throughput_is_items_over_wall(self, plain_run: str) -> None:
        rows = summary_rows(plain_run)
        run_seconds = float(re.search(r"slowed · \S+ · ok · ([\d.]+)s", plain_run).group(1))  # type: ignore[union-attr]
        assert list(rows["warm_up"]) == [
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
        ]
        for stage in ("warm_up", "cool_down"):
            row = rows[stage]
            wall, rate = float(row["wall s"]), float(row["items/s"].replace(",", ""))
            assert N * DELAY / 2 * 0.9 <= wall <= run_seconds + 0.05, row  # two workers at most
            assert rate == pytest.approx(N / wall, rel=0.05), row
            assert row["recomputed because"] == "new"
        assert float(rows["tally"]["wall s"]) >= TALLY_DELAY
        assert float(rows["tally"]["busy s"]) >= TALLY_DELAY

    def test_a_reused_stage_has_no_throughput(self, load, store: Path) -> None:
        pipelines.run(load("cli_squares"), {"n": 30}, store=store, executor="inline")
        again = pipelines.run(load("cli_squares"), {"n": 30}, store=store, executor="inline")
        square = again.stages["square"]
        assert square.reused_items == 30 and square.items_per_second is None and square.wall_seconds == 0
        out = Console(file=io.StringIO(), width=250)
        out.print(summary_table(again, wide=True))
        assert summary_rows(out.file.getvalue())["square"]["items/s"] == ""  # type: ignore[attr-defined]

    def test_batch_and_reduce_stages_count_the_same_items_computed_or_reused(self, load, store: Path) -> None:
        """A batch or reduce stage counts one item per batch, not its rows (``summary`` has 7 rows)."""
        first = pipelines.run(load("diamond"), {"n": 300}, store=store, executor="threads")
        again = pipelines.run(load("diamond"), {"n": 300}, store=store, executor="threads")
        for name in ("per_batch", "summary"):
            assert again.stages[name].reused_items == again.stages[name].items == first.stages[name].items
        assert first.stages["summary"].items == 1 and first.stages["summary"].rows == 7


class Collect(pipelines.RunObserver):
    def __init__(self) -> None:
        self.seen: list[StageStats] = []

    def stage_progress(self, stats: StageStats) -> None:
        self.seen.append(stats)


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pipelines.RunResult, list[StageStats]]:
    """An in-process run of slowed on threads, and every StageStats its observer got."""
    from pipelines.define import loader

    collect = Collect()
    result = pipelines.run(
        loader.load("slowed", TEST_DAGS),
        {"n": N, "delay": DELAY, "tally_delay": 0.1},
        store=tmp_path_factory.mktemp("store"),
        observers=[collect],
        executor="threads",
    )
    assert result.ok
    return result, collect.seen


class TestStageStats:
    @pytest.fixture
    def seen(self, observed_run: tuple[pipelines.RunResult, list[StageStats]]) -> list[StageStats]:
        return observed_run[1]

    def test_source_total_is_known_once_it_is_final(self, seen: list[StageStats]) -> None:
        source = [s for s in seen if s.stage == "numbers"]
        assert all(s.items_total is None for s in source if not s.final)
        assert source[-1].final and source[-1].items_total == N

    def test_map_totals_are_known_before_the_maps_finish(self, seen: list[StageStats]) -> None:
        for stage in ("warm_up", "cool_down"):  # cool_down's from warm_up's, before warm_up is final
            early = [s for s in seen if s.stage == stage and not s.final and s.items_total is not None]
            assert early and all(s.items_total == N for s in early), stage
            assert early[0].items_processed < N

    def test_a_reduce_counts_one(self, seen: list[StageStats]) -> None:
        assert {s.items_total for s in seen if s.stage == "tally"} == {1}

    def test_wall_time_is_the_stages_own(self, observed_run: tuple[pipelines.RunResult, list[StageStats]]) -> None:
        result, seen = observed_run
        final = {s.stage: s for s in seen if s.final}
        assert final["tally"].wall_seconds >= 0.1  # the reduce sleeps 0.1 s
        # the reduce starts once warm_up (and cool_down) are done: the run's time holds both, one after the other
        assert final["warm_up"].wall_seconds + final["tally"].wall_seconds <= result.seconds
        assert result.stages["tally"].wall_seconds == pytest.approx(final["tally"].wall_seconds)
        assert final["warm_up"].wall_seconds >= N * DELAY / 8 * 0.9  # eight threads at most
        assert final["warm_up"].items_per_second == pytest.approx(N / final["warm_up"].wall_seconds)


def test_totals_follow_the_chain_as_stages_finish() -> None:
    """source -> flat-map -> map -> map -> batch -> reduce: each total appears as soon as it can be known."""
    from types import SimpleNamespace

    from pipelines._engine.batching import TaskSizer
    from pipelines._engine.state import StageState, expected_totals

    shape = {
        "src": ("source", ()),
        "fm": ("flat_map", ("src",)),
        "m": ("map", ("fm",)),
        "m2": ("map", ("m",)),
        "b": ("batch", ("m2",)),
        "r": ("reduce", ("b",)),
    }
    stages = {
        n: SimpleNamespace(granularity=g, inputs=ins, itemwise=g in ("map", "flat_map"))
        for n, (g, ins) in shape.items()
    }
    states = {n: StageState(n, TaskSizer()) for n in shape}
    order = list(shape)
    assert expected_totals(order, stages, states) == {"src": None, "fm": None, "m": None, "m2": None, "b": None, "r": 1}
    src = states["src"]
    src.final, src.items_done, src.rows = True, 100, 100
    assert expected_totals(order, stages, states)["fm"] == 100
    assert expected_totals(order, stages, states)["m"] is None  # a flat-map's output is unknown until it ends
    fm = states["fm"]
    fm.final, fm.items_done, fm.rows = True, 100, 250
    states["m"].items_failed = 5
    totals = expected_totals(order, stages, states)
    assert (totals["m"], totals["m2"], totals["b"]) == (250, 245, None)


class TestLogging:
    def test_verbose_shows_info_records_and_default_does_not(self, tmp_path: Path) -> None:
        args = ("run", "cli_squares", "--dags", str(TEST_DAGS), "--store", str(tmp_path), "--executor", "inline")
        quiet = cli(*args, check=0)
        verbose = cli("-v", *args, check=0)  # the second run: it reuses what the first computed
        debug = cli("-v", *args, "-v", check=0)  # before and after the command: they add up
        assert "INFO" not in quiet.stdout + quiet.stderr
        assert re.search(r"INFO +pipelines\.run: run \S+ of pipeline 'cli_squares': 3 stages", verbose.stdout)
        assert re.search(r"INFO +pipelines\.run: stage 'square' finished: 20 items, 20 reused", verbose.stdout)
        assert "DEBUG" not in verbose.stdout
        assert re.search(r"DEBUG +executors\.base: <InlineExecutor inline running", debug.stdout), debug.stdout

    def test_other_libraries_info_stays_out_but_their_warnings_show(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The CLI's handler sits on the root logger: distributed's INFO chatter must not reach the user."""
        from pipelines.cli.commands import _logs_shown

        other = logging.getLogger("otherlib.scheduler")
        other.setLevel(logging.INFO)  # as distributed sets its loggers
        try:
            with _logs_shown(verbose=1):
                other.info("Remove client 1234")
                other.warning("a worker was lost")
                logging.getLogger("pipelines.run").info("our own record")
        finally:
            other.setLevel(logging.NOTSET)
        out = capsys.readouterr()
        assert "Remove client" not in out.out + out.err
        assert "a worker was lost" in out.err and "our own record" in out.out

    def test_package_loggers_have_null_handlers(self) -> None:
        import executors
        import stages

        for package in (pipelines, executors, stages):
            handlers = logging.getLogger(package.__name__).handlers
            assert any(isinstance(h, logging.NullHandler) for h in handlers), package.__name__

    def test_a_failing_observer_is_logged_once_and_disabled(self, caplog: pytest.LogCaptureFixture) -> None:
        class Broken(pipelines.RunObserver):
            def stage_progress(self, stats: StageStats) -> None:
                raise ValueError("bar broke")

        good = Collect()
        fan = Observers([Broken(), good])
        with caplog.at_level(logging.WARNING, logger="pipelines"):
            fan.stage_progress(stats("a", done=1, total=2, wall=1.0))
            fan.stage_progress(stats("a", done=2, total=2, wall=1.0))
        warnings = [r for r in caplog.records if r.name == "pipelines.observe.hooks" and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "failed in stage_progress" in warnings[0].getMessage()
        assert "bar broke" in warnings[0].getMessage()
        assert len(good.seen) == 2  # the others go on

    def test_run_messages_are_logged_and_still_reach_observers(self, caplog: pytest.LogCaptureFixture) -> None:
        got: list[tuple[str, str]] = []

        class Listen(pipelines.RunObserver):
            def message(self, text: str, *, level: str = "info") -> None:
                got.append((text, level))

        with caplog.at_level(logging.INFO, logger="pipelines"):
            Observers([Listen()]).message("checkpoint is truncated", level="warning")
            Observers([Listen()]).message("just so you know")
        assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "pipelines.observe.hooks"] == [
            (logging.WARNING, "checkpoint is truncated"),
            (logging.INFO, "just so you know"),
        ]
        assert got == [("checkpoint is truncated", "warning"), ("just so you know", "info")]


ALLOWED_TO_PRINT = {
    "pipelines/cli/commands.py",
    "pipelines/observe/report.py",
    "pipelines/cli/views.py",
    "pipelines/cli/upkeep.py",
    "executors/dask_tls.py",
    "executors/ray_output.py",  # passes Ray's own error lines through to the stderr they were written to
}  # command-line code: it talks to a person


def test_the_library_does_not_print() -> None:
    """Only the CLI's reporter talks to the terminal; the library logs."""
    found = []
    for package in ("pipelines", "executors", "stages"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED_TO_PRINT:
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if (isinstance(func, ast.Name) and func.id == "print") or (
                    isinstance(func, ast.Attribute)
                    and (
                        func.attr == "print"
                        or (func.attr == "write" and ast.unparse(func.value) in ("sys.stdout", "sys.stderr"))
                    )
                ):
                    found.append(f"{rel}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert found == []
